//! jAER AEDAT 2.0 files as distributed in CIFAR10-DVS (DVS128 sensor, 128×128).
//!
//! Layout: ASCII header lines starting with `#` (the first is `#!AER-DAT2.0`), ended by the
//! first line that does not start with `#`; then 8-byte records of big-endian `u32 address`,
//! `u32 timestamp` (µs). Addresses are decoded with SpikingJelly's mapping
//! (`CIFAR10DVS._load_origin_data`), the one the published numbers use:
//! `x = 127 − ((a >> 8) & 0x7F)`, `y = 127 − ((a >> 1) & 0x7F)`, `p = 1 − (a & 1)`.
//! Like SpikingJelly, special events (bit 15) are kept and timestamps are not unwrapped.

use std::path::Path;

use super::Events;
use crate::error::{DataError, Result};

/// Decode a DVS128 address the SpikingJelly way: `(x, y, p)`.
pub fn decode_dvs128(addr: u32) -> (u16, u16, u8) {
    let x = 127 - ((addr >> 8) & 0x7F) as u16;
    let y = 127 - ((addr >> 1) & 0x7F) as u16;
    let p = 1 - (addr & 1) as u8;
    (x, y, p)
}

/// Byte offset where the event data starts (after the `#` header lines).
pub fn header_len(bytes: &[u8]) -> usize {
    let mut pos = 0;
    while pos < bytes.len() && bytes[pos] == b'#' {
        match bytes[pos..].iter().position(|&b| b == b'\n') {
            Some(nl) => pos += nl + 1,
            None => return bytes.len(),
        }
    }
    pos
}

/// Parse AEDAT 2.0 bytes; `path` names the file in errors.
pub fn parse_aedat2(bytes: &[u8], path: &Path) -> Result<Events> {
    if !bytes.starts_with(b"#!AER-DAT") {
        return Err(DataError::new(
            path,
            "not an AEDAT file: no `#!AER-DAT` header line (CIFAR10-DVS files start with `#!AER-DAT2.0`)",
        ));
    }
    if !bytes.starts_with(b"#!AER-DAT2") {
        let line: String = bytes
            .iter()
            .take_while(|&&b| b != b'\r' && b != b'\n')
            .map(|&b| b as char)
            .collect();
        return Err(DataError::new(
            path,
            format!("unsupported AEDAT version `{line}`: only AEDAT 2.0 is read"),
        ));
    }
    let start = header_len(bytes);
    let data = &bytes[start..];
    if !data.len().is_multiple_of(8) {
        return Err(DataError::new(
            path,
            format!(
                "event data is {} bytes after the {start}-byte header, not a multiple of 8 \
                 (truncated or corrupt file)",
                data.len()
            ),
        ));
    }
    let mut ev = Events::with_capacity(data.len() / 8);
    for rec in data.chunks_exact(8) {
        let addr = u32::from_be_bytes([rec[0], rec[1], rec[2], rec[3]]);
        let ts = u32::from_be_bytes([rec[4], rec[5], rec[6], rec[7]]);
        let (x, y, p) = decode_dvs128(addr);
        ev.push(ts as u64, x, y, p);
    }
    Ok(ev)
}

/// Read an AEDAT 2.0 file.
pub fn read_aedat2(path: &Path) -> Result<Events> {
    let bytes =
        std::fs::read(path).map_err(|e| DataError::new(path, format!("cannot read: {e}")))?;
    parse_aedat2(&bytes, path)
}

/// Encode events as an AEDAT 2.0 file (the inverse of the SpikingJelly mapping), for tests and
/// tools. Coordinates must be below 128.
pub fn encode_aedat2(events: &Events) -> Vec<u8> {
    let mut out = b"#!AER-DAT2.0\r\n# This is a raw AE data file created by statten\r\n".to_vec();
    for i in 0..events.len() {
        let y_raw = 127 - events.x[i] as u32;
        let x_raw = 127 - events.y[i] as u32;
        let addr = (y_raw << 8) | (x_raw << 1) | (1 - events.p[i] as u32);
        out.extend_from_slice(&addr.to_be_bytes());
        out.extend_from_slice(&(events.t[i] as u32).to_be_bytes());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn worked_example_of_the_spec() {
        // datasets.md §1.4: addr 0x3A55 → spikingjelly (x=69, y=85, p=0).
        assert_eq!(decode_dvs128(0x3A55), (69, 85, 0));
    }

    #[test]
    fn encode_decode_round_trip() {
        let mut ev = Events::default();
        ev.push(5, 0, 127, 1);
        ev.push(9, 69, 85, 0);
        let bytes = encode_aedat2(&ev);
        assert_eq!(parse_aedat2(&bytes, Path::new("x")).unwrap(), ev);
    }
}
