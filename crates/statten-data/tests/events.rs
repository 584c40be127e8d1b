//! Event readers and SpikingJelly frame integration: the real N-MNIST recording against the
//! golden frames computed by SpikingJelly, AEDAT 2.0 files written here with known events, and
//! every bad input the data issue lists.

use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};
use statten_data::events::aedat::{encode_aedat2, parse_aedat2, read_aedat2};
use statten_data::events::atis::{encode_atis_bin, read_atis_bin};
use statten_data::events::frames::{integrate, segment_indices, EmptyWindow, SplitBy};
use statten_data::events::Events;

fn shared_data() -> PathBuf {
    let d =
        PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR"))
            .join("../../../shared/data");
    assert!(d.is_dir(), "shared data folder missing at {}", d.display());
    d
}

fn tmp(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("statten-events-{}-{name}", std::process::id()));
    std::fs::create_dir_all(&d).unwrap();
    d
}

struct Golden {
    split: SplitBy,
    t: usize,
    j_l: Vec<usize>,
    j_r: Vec<usize>,
    counts: Vec<(usize, usize)>,
    max: f32,
    sha: String,
}

fn list(s: &str) -> Vec<usize> {
    s.trim_matches(|c| c == '[' || c == ']')
        .split(',')
        .map(|v| v.trim().parse().unwrap())
        .collect()
}

/// Parse `tools/golden_frames_nmnist_sample.txt`.
fn goldens() -> Vec<Golden> {
    let text = std::fs::read_to_string(shared_data().join("tools/golden_frames_nmnist_sample.txt"))
        .unwrap();
    let lines: Vec<&str> = text.lines().collect();
    let mut out = Vec::new();
    let mut i = 1;
    while i + 1 < lines.len() {
        let head = lines[i];
        let body = lines[i + 1];
        i += 2;
        let split = if head.starts_with("number") {
            SplitBy::Number
        } else {
            SplitBy::Time
        };
        let t: usize = head
            .split("T=")
            .nth(1)
            .unwrap()
            .split_whitespace()
            .next()
            .unwrap()
            .parse()
            .unwrap();
        let j_l = list(
            head.split("j_l=")
                .nth(1)
                .unwrap()
                .split(" j_r=")
                .next()
                .unwrap(),
        );
        let j_r = list(head.split("j_r=").nth(1).unwrap());
        let counts_s = body
            .split("counts=")
            .nth(1)
            .unwrap()
            .split(" max=")
            .next()
            .unwrap();
        let nums: Vec<usize> = counts_s
            .split(|c: char| !c.is_ascii_digit())
            .filter(|s| !s.is_empty())
            .map(|s| s.parse().unwrap())
            .collect();
        let counts = nums.chunks(2).map(|c| (c[0], c[1])).collect();
        let max: f32 = body
            .split("max=")
            .nth(1)
            .unwrap()
            .split_whitespace()
            .next()
            .unwrap()
            .parse()
            .unwrap();
        let sha = body.split("[:16]=").nth(1).unwrap().trim().to_string();
        out.push(Golden {
            split,
            t,
            j_l,
            j_r,
            counts,
            max,
            sha,
        });
    }
    out
}

#[test]
fn nmnist_reader_matches_the_documented_events() {
    let ev = read_atis_bin(&shared_data().join("events/nmnist_sample.bin")).unwrap();
    assert_eq!(ev.len(), 4325);
    let first: Vec<(u16, u16, u8, u64)> = (0..5)
        .map(|i| (ev.x[i], ev.y[i], ev.p[i], ev.t[i]))
        .collect();
    assert_eq!(
        first,
        vec![
            (7, 15, 1, 654),
            (19, 18, 0, 2999),
            (21, 17, 0, 3017),
            (10, 18, 0, 3893),
            (12, 9, 1, 4023)
        ]
    );
    assert_eq!(ev.p.iter().filter(|&&p| p == 1).count(), 2145);
    assert_eq!((ev.t[0], *ev.t.last().unwrap()), (654, 311175));
    // The writer is the reader's inverse.
    let bytes = std::fs::read(shared_data().join("events/nmnist_sample.bin")).unwrap();
    assert_eq!(encode_atis_bin(&ev), bytes);
}

#[test]
fn nmnist_frames_equal_spikingjelly_for_all_six_settings() {
    let path = shared_data().join("events/nmnist_sample.bin");
    let ev = read_atis_bin(&path).unwrap();
    let gs = goldens();
    assert_eq!(gs.len(), 6, "golden file has six T/split combinations");
    for g in gs {
        let (j_l, j_r) = segment_indices(&ev.t, g.split, g.t, EmptyWindow::Error, &path).unwrap();
        assert_eq!(
            (j_l, j_r),
            (g.j_l.clone(), g.j_r.clone()),
            "{:?} T={}",
            g.split,
            g.t
        );
        let f = integrate(&ev, g.split, g.t, 34, 34, EmptyWindow::Error, &path).unwrap();
        assert_eq!(f.shape(), [g.t, 2, 34, 34]);
        let counts: Vec<(usize, usize)> = f
            .data
            .chunks(2 * 34 * 34)
            .map(|fr| {
                let off: f32 = fr[..34 * 34].iter().sum();
                let on: f32 = fr[34 * 34..].iter().sum();
                (off as usize, on as usize)
            })
            .collect();
        assert_eq!(counts, g.counts, "{:?} T={}", g.split, g.t);
        assert_eq!(f.data.iter().cloned().fold(0f32, f32::max), g.max);
        let digest = Sha256::digest(f.to_le_bytes());
        let hex: String = digest.iter().take(8).map(|b| format!("{b:02x}")).collect();
        assert_eq!(hex, g.sha, "sha256 of {:?} T={} frames", g.split, g.t);
    }
}

#[test]
fn aedat2_known_events_give_hand_computed_frames() {
    // Events in SpikingJelly coordinates (x, y, p, t).
    let mut ev = Events::default();
    let pts = [
        (0u16, 0u16, 1u8),
        (127, 0, 0),
        (5, 7, 1),
        (5, 7, 1),
        (64, 100, 0),
        (3, 3, 0),
        (3, 3, 1),
    ];
    for (i, (x, y, p)) in pts.iter().enumerate() {
        ev.push(100 + 10 * i as u64, *x, *y, *p);
    }
    let dir = tmp("aedat");
    let path = dir.join("cifar10_airplane_0.aedat");
    std::fs::write(&path, encode_aedat2(&ev)).unwrap();
    let back = read_aedat2(&path).unwrap();
    assert_eq!(back, ev);
    // number, T=2: di = 3 → frame 0 = events 0..3, frame 1 = events 3..7.
    let f = integrate(
        &back,
        SplitBy::Number,
        2,
        128,
        128,
        EmptyWindow::Error,
        &path,
    )
    .unwrap();
    let at = |t: usize, c: usize, y: usize, x: usize| f.data[((t * 2 + c) * 128 + y) * 128 + x];
    assert_eq!(at(0, 1, 0, 0), 1.0);
    assert_eq!(at(0, 0, 0, 127), 1.0);
    assert_eq!(at(0, 1, 7, 5), 1.0);
    assert_eq!(at(1, 1, 7, 5), 1.0);
    assert_eq!(at(1, 0, 100, 64), 1.0);
    assert_eq!((at(1, 0, 3, 3), at(1, 1, 3, 3)), (1.0, 1.0));
    assert_eq!(f.data.iter().sum::<f32>(), 7.0);
    // time, T=3: t = 100..160, dt = 20 → windows [100,120) [120,140) [140,…end].
    let f = integrate(&back, SplitBy::Time, 3, 128, 128, EmptyWindow::Error, &path).unwrap();
    let sums: Vec<f32> = f
        .data
        .chunks(2 * 128 * 128)
        .map(|c| c.iter().sum())
        .collect();
    assert_eq!(sums, vec![2.0, 2.0, 3.0]);
    // Raw address decoding: the spec's worked example 0x3A55 → (x=69, y=85, p=0).
    let mut raw = b"#!AER-DAT2.0\r\n".to_vec();
    raw.extend_from_slice(&0x3A55u32.to_be_bytes());
    raw.extend_from_slice(&7u32.to_be_bytes());
    let e = parse_aedat2(&raw, Path::new("raw.aedat")).unwrap();
    assert_eq!((e.x[0], e.y[0], e.p[0], e.t[0]), (69, 85, 0, 7));
}

#[test]
fn real_aedat2_header_is_skipped() {
    let path = shared_data().join("events/aedat2_header_davis346red.aedat");
    let ev = read_aedat2(&path).unwrap();
    assert!(ev.is_empty());
    // …and an empty recording cannot become frames: the error names the file.
    let err = integrate(&ev, SplitBy::Number, 4, 128, 128, EmptyWindow::Error, &path).unwrap_err();
    assert!(
        err.to_string().contains("aedat2_header_davis346red.aedat")
            && err.to_string().contains("no events"),
        "{err}"
    );
}

#[test]
fn bad_event_files_are_clear_errors() {
    let dir = tmp("bad");
    // AEDAT data not a multiple of 8 bytes.
    let p = dir.join("short.aedat");
    let mut b = b"#!AER-DAT2.0\r\n".to_vec();
    b.extend_from_slice(&[0u8; 12]);
    std::fs::write(&p, &b).unwrap();
    let e = read_aedat2(&p).unwrap_err().to_string();
    assert!(
        e.contains("short.aedat") && e.contains("multiple of 8"),
        "{e}"
    );
    // No #!AER-DAT header.
    let p = dir.join("noheader.aedat");
    std::fs::write(&p, [0u8; 16]).unwrap();
    let e = read_aedat2(&p).unwrap_err().to_string();
    assert!(
        e.contains("noheader.aedat") && e.contains("#!AER-DAT"),
        "{e}"
    );
    // N-Caltech101 file not a multiple of 5 bytes.
    let p = dir.join("image_0001.bin");
    std::fs::write(&p, [1u8; 12]).unwrap();
    let e = read_atis_bin(&p).unwrap_err().to_string();
    assert!(
        e.contains("image_0001.bin") && e.contains("multiple of the 5-byte"),
        "{e}"
    );
    // Empty file.
    let p = dir.join("empty.bin");
    std::fs::write(&p, []).unwrap();
    let ev = read_atis_bin(&p).unwrap();
    let e = integrate(&ev, SplitBy::Time, 4, 180, 240, EmptyWindow::Error, &p)
        .unwrap_err()
        .to_string();
    assert!(e.contains("empty.bin") && e.contains("no events"), "{e}");
    // Missing file.
    let e = read_atis_bin(&dir.join("missing.bin"))
        .unwrap_err()
        .to_string();
    assert!(e.contains("missing.bin"), "{e}");
    // Event outside the sensor.
    let mut ev = Events::default();
    ev.push(0, 300, 2, 1);
    let e = integrate(&ev, SplitBy::Number, 1, 180, 240, EmptyWindow::Error, &p)
        .unwrap_err()
        .to_string();
    assert!(e.contains("outside"), "{e}");
}

#[test]
fn empty_time_window_errors_by_default_and_can_be_allowed() {
    // Events at t = 0, 1 and 100: with T = 4, dt = 25 → windows 1 and 2 are empty.
    let mut ev = Events::default();
    for t in [0u64, 1, 100] {
        ev.push(t, 1, 1, 1);
    }
    let p = Path::new("gap.bin");
    let e = segment_indices(&ev.t, SplitBy::Time, 4, EmptyWindow::Error, p)
        .unwrap_err()
        .to_string();
    assert!(e.contains("gap.bin") && e.contains("window 1"), "{e}");
    let (j_l, j_r) = segment_indices(&ev.t, SplitBy::Time, 4, EmptyWindow::Allow, p).unwrap();
    assert_eq!(j_l, vec![0, 2, 2, 2]);
    assert_eq!(j_r, vec![2, 2, 2, 3]);
}
