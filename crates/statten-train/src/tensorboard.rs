//! TensorBoard event files (`tb/` in a run directory), written without TensorFlow.
//!
//! An event file is a sequence of TFRecords — `u64` length, masked CRC-32C of the length,
//! the bytes, masked CRC-32C of the bytes (little-endian) — each holding one `Event` protocol
//! buffer. statten writes the first `Event` with `file_version = "brain.Event:2"`, then one per
//! logged step with its scalars (`Summary.Value { tag, simple_value }`), which TensorBoard shows
//! as scalar charts. The few protobuf fields are encoded by hand; [`read_events`] parses the
//! records back (lengths and CRCs checked) for resumes and tests.

use std::io::Write;
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};

/// The CRC-32C (Castagnoli) lookup table, reflected polynomial 0x82F63B78.
const CRC_TABLE: [u32; 256] = {
    let mut t = [0u32; 256];
    let mut i = 0;
    while i < 256 {
        let mut c = i as u32;
        let mut k = 0;
        while k < 8 {
            c = if c & 1 != 0 {
                (c >> 1) ^ 0x82F6_3B78
            } else {
                c >> 1
            };
            k += 1;
        }
        t[i] = c;
        i += 1;
    }
    t
};

/// CRC-32C of `data`.
pub fn crc32c(data: &[u8]) -> u32 {
    !data.iter().fold(!0u32, |c, &b| {
        CRC_TABLE[((c ^ b as u32) & 0xFF) as usize] ^ (c >> 8)
    })
}

/// The TFRecord checksum: the CRC rotated right by 15 bits plus a constant.
pub fn masked_crc(data: &[u8]) -> u32 {
    let c = crc32c(data);
    c.rotate_right(15).wrapping_add(0xA282_EAD8)
}

/// One event: when, at which step, and its scalars (or the file's version line).
#[derive(Debug, Clone, PartialEq)]
pub struct Event {
    /// Seconds since the Unix epoch.
    pub wall_time: f64,
    /// The global step.
    pub step: i64,
    /// `brain.Event:2` in a file's first event.
    pub file_version: Option<String>,
    /// `(tag, value)` scalars.
    pub scalars: Vec<(String, f32)>,
}

fn varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8 & 0x7F) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

fn bytes_field(out: &mut Vec<u8>, field: u64, b: &[u8]) {
    varint(out, field << 3 | 2);
    varint(out, b.len() as u64);
    out.extend_from_slice(b);
}

impl Event {
    /// The `Event` protocol buffer.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::new();
        // wall_time = 1 (double), step = 2 (int64), file_version = 3, summary = 5.
        varint(&mut out, 1 << 3 | 1);
        out.extend_from_slice(&self.wall_time.to_le_bytes());
        if self.step != 0 {
            varint(&mut out, 2 << 3);
            varint(&mut out, self.step as u64);
        }
        if let Some(v) = &self.file_version {
            bytes_field(&mut out, 3, v.as_bytes());
        }
        if !self.scalars.is_empty() {
            let mut summary = Vec::new();
            for (tag, v) in &self.scalars {
                // Summary.value = 1: Value { tag = 1, simple_value = 2 (float) }.
                let mut value = Vec::new();
                bytes_field(&mut value, 1, tag.as_bytes());
                varint(&mut value, 2 << 3 | 5);
                value.extend_from_slice(&v.to_le_bytes());
                bytes_field(&mut summary, 1, &value);
            }
            bytes_field(&mut out, 5, &summary);
        }
        out
    }

    /// Parse an `Event` (the fields above; others are skipped).
    pub fn decode(b: &[u8]) -> std::result::Result<Self, String> {
        let mut e = Event {
            wall_time: 0.0,
            step: 0,
            file_version: None,
            scalars: Vec::new(),
        };
        for (field, v) in fields(b)? {
            match (field, v) {
                (1, Wire::Fixed64(x)) => e.wall_time = f64::from_bits(x),
                (2, Wire::Varint(x)) => e.step = x as i64,
                (3, Wire::Bytes(s)) => {
                    e.file_version = Some(String::from_utf8_lossy(s).into_owned())
                }
                (5, Wire::Bytes(summary)) => {
                    for (f, value) in fields(summary)? {
                        let (1, Wire::Bytes(value)) = (f, value) else {
                            continue;
                        };
                        let (mut tag, mut x) = (String::new(), None);
                        for (f, v) in fields(value)? {
                            match (f, v) {
                                (1, Wire::Bytes(t)) => tag = String::from_utf8_lossy(t).into(),
                                (2, Wire::Fixed32(bits)) => x = Some(f32::from_bits(bits)),
                                _ => {}
                            }
                        }
                        if let Some(x) = x {
                            e.scalars.push((tag, x));
                        }
                    }
                }
                _ => {}
            }
        }
        Ok(e)
    }
}

/// A protobuf field's value by wire type.
enum Wire<'a> {
    Varint(u64),
    Fixed64(u64),
    Bytes(&'a [u8]),
    Fixed32(u32),
}

/// The `(field number, value)` pairs of a protobuf message.
fn fields(mut b: &[u8]) -> std::result::Result<Vec<(u64, Wire<'_>)>, String> {
    fn read_varint(b: &mut &[u8]) -> std::result::Result<u64, String> {
        let mut v = 0u64;
        for shift in (0..64).step_by(7) {
            let (&byte, rest) = b.split_first().ok_or("truncated varint")?;
            *b = rest;
            v |= u64::from(byte & 0x7F) << shift;
            if byte & 0x80 == 0 {
                return Ok(v);
            }
        }
        Err("varint longer than 10 bytes".into())
    }
    fn take<'a>(b: &mut &'a [u8], n: usize) -> std::result::Result<&'a [u8], String> {
        if b.len() < n {
            return Err(format!("field of {n} bytes, {} left", b.len()));
        }
        let (head, rest) = b.split_at(n);
        *b = rest;
        Ok(head)
    }
    let mut out = Vec::new();
    while !b.is_empty() {
        let key = read_varint(&mut b)?;
        let v = match key & 7 {
            0 => Wire::Varint(read_varint(&mut b)?),
            1 => Wire::Fixed64(u64::from_le_bytes(take(&mut b, 8)?.try_into().unwrap())),
            2 => {
                let n = read_varint(&mut b)? as usize;
                Wire::Bytes(take(&mut b, n)?)
            }
            5 => Wire::Fixed32(u32::from_le_bytes(take(&mut b, 4)?.try_into().unwrap())),
            t => return Err(format!("wire type {t} not supported")),
        };
        out.push((key >> 3, v));
    }
    Ok(out)
}

/// `data` as one TFRecord.
pub fn record(data: &[u8]) -> Vec<u8> {
    let len = (data.len() as u64).to_le_bytes();
    let mut out = Vec::with_capacity(data.len() + 16);
    out.extend_from_slice(&len);
    out.extend_from_slice(&masked_crc(&len).to_le_bytes());
    out.extend_from_slice(data);
    out.extend_from_slice(&masked_crc(data).to_le_bytes());
    out
}

/// The events of an event file, every record's length and checksums verified. A record cut
/// short at the end of the file (a crash while writing it) ends the list; any other damage is
/// an error naming the file and the byte.
pub fn read_events(path: &Path) -> Result<Vec<Event>> {
    let b = std::fs::read(path)
        .map_err(|e| Error::run_dir(path, format!("{}: {e}", path.display())))?;
    let bad = |at: usize, what: &str| {
        Error::run_dir(
            path,
            format!("{}: {what} in the record at byte {at}", path.display()),
        )
    };
    let mut events = Vec::new();
    let mut at = 0;
    while at < b.len() {
        let Some(head) = b.get(at..at + 12) else {
            break;
        };
        let len_bytes = &head[..8];
        if u32::from_le_bytes(head[8..12].try_into().unwrap()) != masked_crc(len_bytes) {
            return Err(bad(at, "length checksum mismatch"));
        }
        let n = u64::from_le_bytes(len_bytes.try_into().unwrap()) as usize;
        let Some(data) = b.get(at + 12..at + 12 + n) else {
            break;
        };
        let Some(crc) = b.get(at + 12 + n..at + 16 + n) else {
            break;
        };
        if u32::from_le_bytes(crc.try_into().unwrap()) != masked_crc(data) {
            return Err(bad(at, "data checksum mismatch"));
        }
        events.push(Event::decode(data).map_err(|e| bad(at, &e))?);
        at += 16 + n;
    }
    Ok(events)
}

/// The event files of a `tb/` folder, by name.
fn event_files(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path())
        .filter(|p| {
            p.file_name()
                .is_some_and(|n| n.to_string_lossy().contains("tfevents"))
        })
        .collect();
    v.sort();
    v
}

/// Appends events to a run's event file (rank 0 alone writes one).
#[derive(Debug)]
pub struct EventWriter {
    path: PathBuf,
    file: std::fs::File,
}

impl EventWriter {
    /// A writer into `dir` (created): for a new run a fresh event file (earlier ones removed);
    /// for a resumed run (`resume_at` = the global step its checkpoint holds) the existing
    /// file, rewritten without the events after that step — those a crash lost — and appended
    /// to, so that TensorBoard shows no step twice.
    pub fn open(dir: &Path, resume_at: Option<u64>) -> Result<Self> {
        let io = |p: &Path, e: std::io::Error| Error::run_dir(p, format!("{}: {e}", p.display()));
        std::fs::create_dir_all(dir).map_err(|e| io(dir, e))?;
        let old = event_files(dir);
        let mut kept = Vec::new();
        if let Some(step) = resume_at {
            for f in &old {
                kept.extend(
                    read_events(f)?
                        .into_iter()
                        .filter(|e| e.file_version.is_none() && e.step as u64 <= step),
                );
            }
        }
        for f in &old {
            std::fs::remove_file(f).map_err(|e| io(f, e))?;
        }
        let host = std::env::var("HOSTNAME")
            .ok()
            .filter(|h| !h.is_empty() && h.chars().all(|c| c.is_ascii_alphanumeric() || c == '-'))
            .unwrap_or_else(|| "statten".into());
        let path = dir.join(format!(
            "events.out.tfevents.{}.{host}",
            crate::rundir::unix_now()
        ));
        let mut bytes = record(
            &Event {
                wall_time: now(),
                step: 0,
                file_version: Some("brain.Event:2".into()),
                scalars: Vec::new(),
            }
            .encode(),
        );
        for e in &kept {
            bytes.extend(record(&e.encode()));
        }
        crate::rundir::atomic_write(&path, &bytes)?;
        let file = std::fs::OpenOptions::new()
            .append(true)
            .open(&path)
            .map_err(|e| io(&path, e))?;
        Ok(Self { path, file })
    }

    /// The event file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// One event at `step` with `scalars` (non-finite values left out), flushed.
    pub fn scalars<T: AsRef<str>>(&mut self, step: u64, scalars: &[(T, f64)]) -> Result<()> {
        let scalars: Vec<(String, f32)> = scalars
            .iter()
            .filter(|(_, v)| v.is_finite())
            .map(|(t, v)| (t.as_ref().to_string(), *v as f32))
            .collect();
        if scalars.is_empty() {
            return Ok(());
        }
        let e = Event {
            wall_time: now(),
            step: step as i64,
            file_version: None,
            scalars,
        };
        self.file
            .write_all(&record(&e.encode()))
            .and_then(|_| self.file.flush())
            .map_err(|e| Error::run_dir(&self.path, format!("{}: {e}", self.path.display())))
    }
}

fn now() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crc32c_matches_the_standard_check_value() {
        // The CRC catalogue's check value of CRC-32/ISCSI.
        assert_eq!(crc32c(b"123456789"), 0xE306_9283);
        assert_eq!(crc32c(b""), 0);
    }

    #[test]
    fn events_round_trip_and_damage_is_caught() {
        let dir = std::env::temp_dir().join(format!("statten-tb-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let mut w = EventWriter::open(&dir, None).unwrap();
        w.scalars(
            3,
            &[("train/loss", 1.5), ("train/lr", 1e-3), ("skip", f64::NAN)],
        )
        .unwrap();
        w.scalars(300_000_000_000, &[("eval/top1", 87.25)]).unwrap();
        let path = w.path().to_path_buf();
        drop(w);
        let ev = read_events(&path).unwrap();
        assert_eq!(ev.len(), 3);
        assert_eq!(ev[0].file_version.as_deref(), Some("brain.Event:2"));
        assert_eq!(ev[1].step, 3);
        assert_eq!(
            ev[1].scalars,
            vec![("train/loss".into(), 1.5), ("train/lr".into(), 1e-3f32)]
        );
        assert_eq!(ev[2].step, 300_000_000_000);
        assert!(ev[2].wall_time > 1.7e9);
        // A resume at step 3 drops the later event and appends after it.
        let mut w = EventWriter::open(&dir, Some(3)).unwrap();
        w.scalars(4, &[("train/loss", 1.0)]).unwrap();
        let ev = read_events(w.path()).unwrap();
        assert_eq!(ev.iter().map(|e| e.step).collect::<Vec<_>>(), vec![0, 3, 4]);
        assert_eq!(event_files(&dir).len(), 1);
        // A flipped byte fails its checksum; a record cut short ends the list.
        let mut b = std::fs::read(w.path()).unwrap();
        let n = b.len();
        std::fs::write(w.path(), &b[..n - 3]).unwrap();
        assert_eq!(read_events(w.path()).unwrap().len(), 2);
        b[n - 6] ^= 1;
        std::fs::write(w.path(), &b).unwrap();
        let e = read_events(w.path()).unwrap_err().to_string();
        assert!(e.contains("checksum") && e.contains("tfevents"), "{e}");
        let _ = std::fs::remove_dir_all(dir);
    }
}
