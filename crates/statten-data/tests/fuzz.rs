//! Bounded, seeded fuzzing of every binary reader: thousands of truncated and mutated copies of
//! a valid file (AEDAT 2.0, ATIS, IDX, CIFAR binary), each read and, where it parses, turned
//! into frames or samples. No input may panic, and every error must name the file.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};

use statten_data::cifar::{read_records, CifarKind, CifarSet};
use statten_data::events::aedat::{encode_aedat2, parse_aedat2};
use statten_data::events::atis::{encode_atis_bin, parse_atis_bin};
use statten_data::events::frames::{integrate, EmptyWindow, SplitBy};
use statten_data::events::Events;
use statten_data::mnist::parse_idx;

const CASES: usize = 3000;

/// xorshift64*: the fuzz inputs are a function of the seed alone.
struct Fuzz(u64);

impl Fuzz {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
    /// A damaged copy: truncated, bytes overwritten, a run of bytes set to 0x00/0xFF, or bytes
    /// inserted.
    fn damage(&mut self, good: &[u8]) -> Vec<u8> {
        let mut b = good.to_vec();
        match self.below(4) {
            0 => b.truncate(self.below(good.len())),
            1 => {
                for _ in 0..1 + self.below(8) {
                    let at = self.below(b.len());
                    b[at] = self.next() as u8;
                }
            }
            2 => {
                let at = self.below(b.len());
                let len = 1 + self.below(16);
                let v = if self.below(2) == 0 { 0x00 } else { 0xFF };
                for x in b.iter_mut().skip(at).take(len) {
                    *x = v;
                }
            }
            _ => {
                let at = self.below(b.len());
                let extra: Vec<u8> = (0..1 + self.below(12)).map(|_| self.next() as u8).collect();
                b.splice(at..at, extra);
            }
        }
        b
    }
}

fn sample_events(n: usize, w: u16, h: u16) -> Events {
    let mut e = Events::with_capacity(n);
    for i in 0..n as u64 {
        e.push(
            i * 37,
            (i * 7 % w as u64) as u16,
            (i * 11 % h as u64) as u16,
            (i % 2) as u8,
        );
    }
    e
}

/// Run `read` on every damaged copy of `good`; every error must name `path`.
fn fuzz(
    name: &str,
    seed: u64,
    good: &[u8],
    path: &Path,
    read: impl Fn(&[u8]) -> Result<(), String>,
) {
    let mut f = Fuzz(seed);
    let (mut errors, mut ok) = (0, 0);
    for case in 0..CASES {
        let bytes = f.damage(good);
        match catch_unwind(AssertUnwindSafe(|| read(&bytes))) {
            Err(_) => panic!("{name}: case {case} ({} bytes) panicked", bytes.len()),
            Ok(Err(e)) => {
                assert!(
                    e.contains(&path.display().to_string()),
                    "{name}: case {case}: error without the file name: {e}"
                );
                errors += 1;
            }
            Ok(Ok(())) => ok += 1,
        }
    }
    println!("{name}: {CASES} damaged inputs, {errors} errors, {ok} still readable, no panic");
    assert!(
        errors > CASES / 10,
        "{name}: only {errors} errors; is the reader checking anything?"
    );
}

#[test]
fn aedat2_reader_never_panics() {
    let path = PathBuf::from("/fuzz/cifar10_cat_0.aedat");
    let good = encode_aedat2(&sample_events(300, 128, 128));
    fuzz("aedat2", 1, &good, &path, |b| {
        let ev = parse_aedat2(b, &path).map_err(|e| e.to_string())?;
        for split in [SplitBy::Number, SplitBy::Time] {
            integrate(&ev, split, 10, 128, 128, EmptyWindow::Error, &path)
                .map_err(|e| e.to_string())?;
        }
        Ok(())
    });
}

#[test]
fn atis_reader_never_panics() {
    let path = PathBuf::from("/fuzz/image_0001.bin");
    let good = encode_atis_bin(&sample_events(300, 240, 180));
    fuzz("atis", 2, &good, &path, |b| {
        let ev = parse_atis_bin(b, &path).map_err(|e| e.to_string())?;
        for split in [SplitBy::Number, SplitBy::Time] {
            integrate(&ev, split, 16, 180, 240, EmptyWindow::Error, &path)
                .map_err(|e| e.to_string())?;
        }
        Ok(())
    });
}

#[test]
fn idx_reader_never_panics() {
    let path = PathBuf::from("/fuzz/train-images-idx3-ubyte");
    let mut good = vec![0, 0, 8, 3, 0, 0, 0, 3, 0, 0, 0, 28, 0, 0, 0, 28];
    good.extend((0..3 * 28 * 28).map(|i| (i % 251) as u8));
    fuzz("idx", 3, &good, &path, |b| {
        parse_idx(&path, b, 3)
            .map(|_| ())
            .map_err(|e| e.to_string())
    });
    let path = PathBuf::from("/fuzz/train-labels-idx1-ubyte");
    let good = vec![0, 0, 8, 1, 0, 0, 0, 4, 1, 2, 3, 4];
    fuzz("idx labels", 4, &good, &path, |b| {
        parse_idx(&path, b, 1)
            .map(|_| ())
            .map_err(|e| e.to_string())
    });
}

#[test]
fn cifar_reader_never_panics() {
    let dir = std::env::temp_dir().join(format!("statten-fuzz-cifar-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    for (kind, rec) in [(CifarKind::Cifar10, 3073usize), (CifarKind::Cifar100, 3074)] {
        let path = dir.join(format!("{kind:?}.bin"));
        let good: Vec<u8> = (0..3 * rec).map(|i| (i % 7) as u8).collect();
        fuzz(&format!("{kind:?}"), 5, &good, &path, |b| {
            std::fs::write(&path, b).unwrap();
            let mut set = CifarSet::default();
            read_records(&path, kind, &mut set).map_err(|e| e.to_string())?;
            // Every record read must be a whole image with a label of the dataset.
            for i in 0..set.len() {
                assert_eq!(set.image(i).len(), 3072);
            }
            Ok(())
        });
    }
}
