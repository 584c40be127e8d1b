//! CPU threads: `--threads` and `RAYON_NUM_THREADS` are honoured and checked, and the training
//! metrics do not depend on the thread count (nor change between two runs at one count).

#[macro_use]
mod common;

use std::path::{Path, PathBuf};

use common::statten;

const CFG: &str = concat!(
    tiny_fmnist_model!(),
    r#"
[data]
dataset = "fashion-mnist"
train_limit = 192
test_limit = 96
workers = 2
[optimizer]
lr = 2e-3
weight_decay = 1e-2
[schedule]
epochs = 2
warmup_epochs = 0
cooldown_epochs = 0
[train]
batch_size = 32
plot = false
"#
);

fn tmp(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("statten-threads-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    d
}

/// summary.csv without the timing columns (images/s, seconds).
fn metrics(dir: &Path) -> Vec<String> {
    let csv = std::fs::read_to_string(dir.join("summary.csv")).expect("summary.csv");
    csv.lines()
        .map(|l| l.split(',').take(7).collect::<Vec<_>>().join(","))
        .collect()
}

fn train(threads: &str, name: &str) -> Vec<String> {
    let dir = tmp(name);
    std::fs::create_dir_all(&dir).unwrap();
    let cfg = dir.join("cfg.toml");
    std::fs::write(&cfg, CFG).unwrap();
    let out = dir.join("run");
    let (ok, text) = statten(&[
        "train",
        "--config",
        cfg.to_str().unwrap(),
        "--output",
        out.to_str().unwrap(),
        "--quiet",
        "--threads",
        threads,
    ]);
    assert!(ok, "{text}");
    let m = metrics(&out);
    assert_eq!(m.len(), 3, "{m:?}");
    // Equal strings would also pass for two NaN runs: every metric must be a finite number.
    for row in &m[1..] {
        for v in row.split(',') {
            let x: f64 = v
                .parse()
                .unwrap_or_else(|_| panic!("not a number in {row}"));
            assert!(x.is_finite(), "non-finite metric in {row}");
        }
    }
    m
}

#[test]
fn metrics_do_not_depend_on_the_thread_count() {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let two = train(&cores.min(2).to_string(), "two");
    let again = train(&cores.min(2).to_string(), "again");
    assert_eq!(two, again, "two runs at one thread count differ");
    let one = train("1", "one");
    assert_eq!(one, two, "1 thread and {} threads differ", cores.min(2));
}

#[test]
fn bad_thread_counts_are_clear_errors() {
    let (ok, text) = statten(&["bench", "--only", "core", "--threads", "0"]);
    assert!(!ok && text.contains("--threads 0"), "{text}");
    let (ok, text) = statten(&["bench", "--only", "core", "--threads", "many"]);
    assert!(!ok && text.contains("many"), "{text}");
    let (ok, text) = statten(&["bench", "--only", "core", "--threads", "100000"]);
    assert!(!ok && text.contains("cores"), "{text}");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_statten"))
        .args(["bench", "--only", "core", "--iters", "1", "--warmup", "0"])
        .env("RAYON_NUM_THREADS", "lots")
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && text.contains("RAYON_NUM_THREADS"),
        "{text}"
    );
}

#[test]
fn rayon_num_threads_sizes_the_pool() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_statten"))
        .args(["bench", "--only", "core", "--iters", "1", "--warmup", "0"])
        .env("RAYON_NUM_THREADS", "1")
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");
    assert!(text.starts_with("threads 1 "), "{text}");
}
