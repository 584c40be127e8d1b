//! MPI data parallelism (`--features mpi`; `.ci/run` installs Open MPI): `mpirun -np 2` runs
//! the same optimization as one process with the global batch split over two devices, resumes
//! exactly, a rank with another config stops the whole run with an error, and a rank killed
//! mid-run stops the others within a bounded time.
#![cfg(feature = "mpi")]

#[macro_use]
mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

const CFG: &str = concat!(
    tiny_fmnist_model!(),
    r#"
[data]
dataset = "fashion-mnist"
train_limit = 256
test_limit = 128
workers = 1
[data.mnist]
translate = 2
hflip = 0.5
[optimizer]
lr = 3e-3
weight_decay = 1e-2
[schedule]
epochs = 2
warmup_epochs = 1
warmup_lr = 1e-3
min_lr = 1e-4
cooldown_epochs = 0
per_iteration = true
[train]
batch_size = 32
eval_batch_size = 32
plot = false
"#
);

fn tmp(name: &str) -> PathBuf {
    common::scratch_dir("mpi", name)
}

fn mpirun() -> Command {
    let mut c = Command::new("mpirun");
    c.args(["--oversubscribe", "--allow-run-as-root", "-np", "2"]);
    c
}

/// `statten train` arguments for `cfg` into `out`.
fn train_args(cfg: &Path, out: &Path, extra: &[&str]) -> Vec<String> {
    let mut v: Vec<String> = vec![
        env!("CARGO_BIN_EXE_statten").into(),
        "train".into(),
        "--quiet".into(),
        "--threads".into(),
        "1".into(),
        "--config".into(),
        cfg.display().to_string(),
        "--output".into(),
        out.display().to_string(),
    ];
    v.extend(extra.iter().map(|s| s.to_string()));
    v
}

/// `statten train` in one process, the global batch over two devices.
fn one_process_two_devices(cfg: &Path, out: &Path) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_statten"));
    c.args(&train_args(cfg, out, &["--set", "train.devices=[\"cpu:0\",\"cpu:1\"]"])[1..]);
    c
}

fn check(mut c: Command) -> String {
    let o = c.output().expect("start");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    assert!(o.status.success(), "{text}");
    text
}

/// summary.csv rows: epoch, train loss, train top-1 exact; eval loss to 1e-12 relative (the
/// shards' sums are added in another order); eval top-1/top-5 exact (counts); lr exact.
fn rows(out: &Path) -> Vec<Vec<f64>> {
    std::fs::read_to_string(out.join("summary.csv"))
        .unwrap()
        .lines()
        .skip(1)
        .map(|l| l.split(',').take(7).map(|v| v.parse().unwrap()).collect())
        .collect()
}

fn assert_same(a: &[Vec<f64>], b: &[Vec<f64>]) {
    assert_eq!(a.len(), b.len(), "{a:?} vs {b:?}");
    assert!(!a.is_empty());
    for (x, y) in a.iter().zip(b) {
        assert!(x.iter().all(|v| v.is_finite()), "{x:?}");
        assert_eq!(x.len(), y.len());
        for (i, (p, q)) in x.iter().zip(y).enumerate() {
            let ok = if i == 3 {
                (p - q).abs() <= 1e-12 * p.abs().max(1.0)
            } else {
                p == q
            };
            assert!(ok, "column {i}: {x:?} vs {y:?}");
        }
    }
}

#[test]
fn two_ranks_train_as_one_process_with_two_devices_and_resume_exactly() {
    let dir = tmp("ranks");
    let cfg = dir.join("cfg.toml");
    std::fs::write(&cfg, CFG).unwrap();
    // One process, the global batch over two devices.
    let single = dir.join("single");
    check(one_process_two_devices(&cfg, &single));
    let want = rows(&single);
    assert_eq!(want.len(), 2);

    // Two ranks, one device each.
    let ranks = dir.join("ranks");
    let mut c = mpirun();
    c.args(train_args(&cfg, &ranks, &[]));
    check(c);
    assert_same(&rows(&ranks), &want);

    // Two ranks stopped after the first epoch (train.epochs = 1, the schedule unchanged: said
    // explicitly), then resumed for the second: the same as the uninterrupted run.
    let resumed = dir.join("resumed");
    let mut c = mpirun();
    c.args(train_args(
        &cfg,
        &resumed,
        &[
            "--set",
            "train.epochs=1",
            "--set",
            "schedule.fit_to_run=false",
        ],
    ));
    check(c);
    assert_eq!(rows(&resumed).len(), 1);
    let mut c = mpirun();
    c.args(train_args(
        &cfg,
        &resumed,
        &[
            "--set",
            "train.epochs=2",
            "--set",
            "schedule.fit_to_run=false",
            "--resume",
            "--allow-config-change",
        ],
    ));
    check(c);
    assert_same(&rows(&resumed), &want);
}

/// The EMA weights of a run's last checkpoint.
fn ema_weights(cfg: &Path, out: &Path) -> Vec<(String, Vec<f32>)> {
    let text = std::fs::read_to_string(cfg).unwrap();
    let cfg = statten_train::config::RunConfig::parse(&text, &[]).unwrap();
    let mut m = cfg.model.init(&burn::tensor::Device::flex()).unwrap();
    statten_train::checkpoint::load_ema_weights(&out.join("checkpoints/last.safetensors"), &mut m)
        .unwrap();
    statten_core::checkpoint::named_tensors(&m)
        .into_iter()
        .map(|t| (t.name, t.values))
        .collect()
}

#[test]
fn rank_0s_model_ema_is_the_one_process_ema() {
    let dir = tmp("ema");
    let cfg = dir.join("cfg.toml");
    std::fs::write(
        &cfg,
        format!("{CFG}model_ema = true\nmodel_ema_decay = 0.9\n"),
    )
    .unwrap();
    let single = dir.join("single");
    check(one_process_two_devices(&cfg, &single));
    let ranks = dir.join("ranks");
    let mut c = mpirun();
    c.args(train_args(&cfg, &ranks, &[]));
    check(c);
    assert_same(&rows(&ranks), &rows(&single));
    let want = ema_weights(&cfg, &single);
    assert!(!want.is_empty());
    assert_eq!(ema_weights(&cfg, &ranks), want);
}

#[test]
fn a_rank_with_another_config_stops_every_rank_with_an_error() {
    let dir = tmp("mismatch");
    let cfg = dir.join("cfg.toml");
    std::fs::write(&cfg, CFG).unwrap();
    let out = dir.join("run");
    let mut a = train_args(&cfg, &out, &[]);
    let mut b = train_args(&cfg, &out, &["--set", "optimizer.lr=1e-3"]);
    let mut c = Command::new("mpirun");
    c.args(["--oversubscribe", "--allow-run-as-root", "-np", "1"]);
    c.args(a.drain(..));
    c.arg(":");
    c.args(["-np", "1"]);
    c.args(b.drain(..));
    let t0 = Instant::now();
    let o = c.output().expect("start mpirun");
    let text = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success(), "{text}");
    assert!(text.contains("differs from rank 0's"), "{text}");
    assert!(
        t0.elapsed() < Duration::from_secs(120),
        "took {:?}",
        t0.elapsed()
    );
}

/// The pid of the `statten` process of MPI rank `rank` whose command line mentions `marker`.
fn rank_pid(rank: usize, marker: &str) -> Option<u32> {
    for e in std::fs::read_dir("/proc").ok()?.flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
            continue;
        };
        let cmd = std::fs::read(e.path().join("cmdline")).unwrap_or_default();
        let cmd = String::from_utf8_lossy(&cmd);
        if !cmd.contains(marker) || !cmd.contains("train") {
            continue;
        }
        let env = std::fs::read(e.path().join("environ")).unwrap_or_default();
        let want = format!("OMPI_COMM_WORLD_RANK={rank}");
        if env.split(|b| *b == 0).any(|v| v == want.as_bytes()) {
            return Some(pid);
        }
    }
    None
}

#[test]
fn a_killed_rank_stops_the_others_within_a_bounded_time() {
    let dir = tmp("killed");
    let cfg = dir.join("cfg.toml");
    std::fs::write(&cfg, CFG).unwrap();
    let out = dir.join("run");
    // Long enough that the ranks are still training when rank 1 dies.
    let mut c = mpirun();
    c.args(train_args(&cfg, &out, &["--set", "train.epochs=500"]));
    c.stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    let mut child = c.spawn().expect("start mpirun");
    let marker = out.display().to_string();
    // Wait for rank 0 to have written the run's config (setup done, every rank in the loop).
    let t0 = Instant::now();
    let victim = loop {
        if out.join("config.toml").exists() {
            if let Some(pid) = rank_pid(1, &marker) {
                break pid;
            }
        }
        if let Some(st) = child.try_wait().unwrap() {
            panic!("mpirun ended before rank 1 could be killed: {st}");
        }
        if t0.elapsed() > Duration::from_secs(120) {
            let _ = child.kill();
            panic!("rank 1 of the run was not found within 120 s");
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    std::thread::sleep(Duration::from_millis(500));
    let killed = Command::new("kill")
        .args(["-9", &victim.to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    let t_kill = Instant::now();
    let status = loop {
        if let Some(st) = child.try_wait().unwrap() {
            break st;
        }
        if t_kill.elapsed() > Duration::from_secs(60) {
            let _ = child.kill();
            panic!("the surviving rank still ran 60 s after rank 1 was killed (a hang)");
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let o = child.wait_with_output().unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    assert!(
        !status.success(),
        "mpirun succeeded after a rank was killed: {text}"
    );
    assert!(rank_pid(0, &marker).is_none(), "rank 0 outlived mpirun");
    println!(
        "stopped {:.1} s after the kill: {}",
        t_kill.elapsed().as_secs_f64(),
        text.lines().last().unwrap_or("")
    );
}
