//! Shared test helpers: locating `../shared` relative to the workspace root.

#![allow(dead_code)]

use std::path::PathBuf;

/// `../shared` beside the workspace root; panics loudly when it is missing.
pub fn shared_dir() -> PathBuf {
    let root =
        PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR"));
    let shared = std::env::var_os("STATTEN_SHARED")
        .map(PathBuf::from)
        .unwrap_or_else(|| root.join("..").join("shared"));
    assert!(
        shared.join("fixtures").is_dir(),
        "the shared folder with the reference fixtures was not found at {} \
         (expected ../shared beside the workspace root, or set STATTEN_SHARED)",
        shared.display()
    );
    shared
}

/// The fixtures folder.
pub fn fixtures_dir() -> PathBuf {
    shared_dir().join("fixtures")
}

/// Every fixture directory (those holding a config.json), sorted.
pub fn fixture_dirs() -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(fixtures_dir())
        .expect("read fixtures dir")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.join("config.json").is_file())
        .collect();
    v.sort();
    v
}

/// Run every parity check of fixture `name` on `device`; panics listing the failed groups.
pub fn check_parity(name: &str, device: burn::tensor::Device) {
    let dir = fixtures_dir().join(name);
    let report =
        statten::parity::run_parity(&dir, &device, &statten::parity::ParityOptions::default())
            .expect("parity run");
    for g in &report.groups {
        println!("{g}");
    }
    let failed: Vec<String> = report
        .groups
        .iter()
        .filter(|g| !g.pass)
        .map(|g| g.to_string())
        .collect();
    assert!(
        failed.is_empty(),
        "{name}: failed groups:\n{}",
        failed.join("\n")
    );
    assert!(
        report.groups.iter().all(|g| g.compared > 0),
        "{name}: a group compared nothing"
    );
}

/// `statten parity --precision`: the half path of fixture `name` on `device` within the stated
/// tolerances of `precision` against f32 (and its control), with every layer compared.
pub fn check_parity_half(
    name: &str,
    device: burn::tensor::Device,
    precision: statten_core::precision::Precision,
) {
    let dir = fixtures_dir().join(name);
    let report =
        statten::parity::run_parity_half(&dir, &device, precision).expect("half parity run");
    println!("{name} {precision}:\n{report}");
    assert!(report.pass(), "{name} {precision}:\n{report}");
    assert!(
        report.layers.len() >= 10 && report.grads_compared >= 30,
        "{report}"
    );
    // The half path is not the f32 path: a scope that did not reach the products would show
    // as full agreement.
    assert!(
        report.logits_train.vs_f32 > 0.0,
        "{name} {precision}: {report}"
    );
}

/// Run the `statten` binary; returns (success, stdout + stderr).
pub fn statten(args: &[&str]) -> (bool, String) {
    statten_in(std::path::Path::new("."), args)
}

/// [`statten`] with `dir` as the working directory.
pub fn statten_in(dir: &std::path::Path, args: &[&str]) -> (bool, String) {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_statten"))
        .args(args)
        .current_dir(dir)
        .output()
        .expect("run statten");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

/// The tiny SDT + STAtten 1-32 (T = 2) on 28×28 Fashion-MNIST that the run tests train: the
/// `[model]` table, for `concat!` with the rest of a test's config.
#[macro_export]
macro_rules! tiny_fmnist_model {
    () => {
        "
[model]
preset = \"cifar10-2-256\"
depth = 1
embed_dim = 32
num_heads = 4
time_steps = 2
chunk_size = 2
in_channels = 1
img_size = 28
num_classes = 10
"
    };
}

/// The path [`scratch_dir`] gives `what` and `name` (without touching it).
pub fn scratch_path(what: &str, name: &str) -> PathBuf {
    std::env::temp_dir().join(format!("statten-{what}-{}-{name}", std::process::id()))
}

/// An empty scratch folder `statten-<what>-<pid>-<name>` under the system temp dir (left
/// behind for inspection; removed at the next run of the same test).
pub fn scratch_dir(what: &str, name: &str) -> PathBuf {
    let d = scratch_path(what, name);
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// A run's `summary.csv` rows without the timing columns (images/s, seconds, finished_at): the
/// numbers two runs that should agree must share.
pub fn summary_metrics(out: &std::path::Path) -> Vec<String> {
    std::fs::read_to_string(out.join("summary.csv"))
        .unwrap_or_else(|e| panic!("{}: {e}", out.join("summary.csv").display()))
        .lines()
        .map(|l| l.split(',').take(7).collect::<Vec<_>>().join(","))
        .collect()
}

/// An epoch's record as the figures two runs must share: epoch, train loss and top-1, eval
/// loss, top-1 and top-5, learning rate (not the timings).
pub fn epoch_key(r: &statten_train::checkpoint::EpochRecord) -> [f64; 7] {
    [
        r.epoch as f64,
        r.train_loss,
        r.train_top1,
        r.eval_loss,
        r.eval_top1,
        r.eval_top5,
        r.lr,
    ]
}
