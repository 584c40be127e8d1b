//! Faults a long run meets, each ending in a clear message and a run that resumes exactly:
//! a stop request (SIGTERM) mid-epoch, `kill -9` after a mid-epoch checkpoint, a full disk
//! while a checkpoint is written, a truncated or corrupted checkpoint, a diverged loss, and an
//! existing run directory written into by mistake.
//!
//! In-process runs hold `LOCK`: Burn's initialisation seed is process-global, so two runs that
//! must be bit-identical cannot overlap.
#![deny(clippy::undocumented_unsafe_blocks)]

#[macro_use]
mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use statten_train::checkpoint::{read_meta, EpochRecord};
use statten_train::config::RunConfig;
use statten_train::train::{train, RunOptions};

static LOCK: Mutex<()> = Mutex::new(());

/// 8 batches per epoch, 2 epochs, mixup-free; per-iteration schedule so that the learning rate
/// depends on the step.
const CFG: &str = concat!(
    tiny_fmnist_model!(),
    r#"
[data]
dataset = "fashion-mnist"
train_limit = 256
test_limit = 64
workers = 2
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
plot = false
"#
);

/// Options that resume the run in `out` from `checkpoint`.
fn resuming(out: &Path, checkpoint: &Path) -> RunOptions {
    RunOptions {
        output: out.to_path_buf(),
        resume: Some(checkpoint.to_path_buf()),
        ..Default::default()
    }
}

fn tmp(name: &str) -> PathBuf {
    let d = common::scratch_dir("faults", name);
    let _ = std::fs::remove_dir(&d);
    d
}

use common::epoch_key as key;

fn assert_same(a: &[EpochRecord], b: &[EpochRecord]) {
    assert_eq!(a.len(), b.len(), "{a:?} vs {b:?}");
    for (x, y) in a.iter().zip(b) {
        assert!(
            key(x).iter().all(|v| v.is_finite()),
            "non-finite metric in {x:?}"
        );
        assert_eq!(key(x), key(y), "epoch {}: {x:?} vs {y:?}", x.epoch);
    }
}

fn cfg(sets: &[&str]) -> RunConfig {
    let sets: Vec<String> = sets.iter().map(|s| s.to_string()).collect();
    RunConfig::parse(CFG, &sets).unwrap()
}

fn run(cfg: &RunConfig, opts: RunOptions) -> Result<statten_train::train::RunSummary, String> {
    train(cfg, &opts).map_err(String::from)
}

#[test]
fn a_stop_mid_epoch_and_a_full_disk_lose_nothing() {
    let _g = LOCK.lock().unwrap_or_else(|e| e.into_inner());
    let c = cfg(&[]);
    let full = run(
        &c,
        RunOptions {
            output: tmp("full"),
            ..Default::default()
        },
    )
    .unwrap();
    assert!(full.stopped.is_none());

    // A stop request after 11 steps: epoch 2, batch 3.
    let out = tmp("stopped");
    let s = run(
        &c,
        RunOptions {
            output: out.clone(),
            stop_after_steps: 11,
            ..Default::default()
        },
    )
    .unwrap();
    let p = s.stopped.expect("the run reports where it stopped");
    assert_eq!((p.epoch, p.batches_done), (1, 3));
    let meta = read_meta(&p.checkpoint).unwrap();
    assert_eq!((meta.epochs_done, meta.batches_done), (1, 3));
    assert!(meta.partial.is_some());
    assert_eq!(s.history.len(), 1);

    // Resuming with another config is refused unless asked for.
    let other = cfg(&["optimizer.lr=1e-3"]);
    let e = run(&other, resuming(&out, &p.checkpoint))
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("another config") && e.contains("--allow-config-change"),
        "{e}"
    );
    // The error names what differs, with both values.
    assert!(
        e.contains("optimizer.lr: 0.003 in the checkpoint, 0.001 now"),
        "{e}"
    );
    // Even when allowed, another optimizer's state does not load into this one.
    let sgd = cfg(&["optimizer.kind=\"sgd\"", "optimizer.momentum=0.9"]);
    let e = run(
        &sgd,
        RunOptions {
            output: out.clone(),
            resume: Some(p.checkpoint.clone()),
            allow_config_change: true,
            ..Default::default()
        },
    )
    .unwrap_err()
    .to_string();
    assert!(
        e.contains("adamw optimizer state") && e.contains("sgd"),
        "{e}"
    );

    // A full disk while the next checkpoint is written: the error says so and the mid-epoch
    // checkpoint is untouched. (/dev/full answers every write with ENOSPC; the checkpoint's
    // temporary file is made a link to it.)
    let before = std::fs::read(&p.checkpoint).unwrap();
    let tmp_name = p
        .checkpoint
        .with_extension(format!("tmp{}", std::process::id()));
    #[cfg(unix)]
    {
        std::os::unix::fs::symlink("/dev/full", &tmp_name).unwrap();
        let e = run(&c, resuming(&out, &p.checkpoint))
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("last.safetensors") && e.to_lowercase().contains("no space"),
            "{e}"
        );
        assert_eq!(
            std::fs::read(&p.checkpoint).unwrap(),
            before,
            "checkpoint changed"
        );
        assert!(
            !tmp_name.exists(),
            "the failed temporary file was left behind"
        );
    }
    #[cfg(not(unix))]
    println!("skipped: the full-disk case needs /dev/full (unix)");

    // The intact checkpoint resumes to exactly the uninterrupted run.
    let resumed = run(&c, resuming(&out, &p.checkpoint)).unwrap();
    assert_same(&full.history, &resumed.history);
    // metrics.jsonl lists every epoch once.
    let text = std::fs::read_to_string(out.join("metrics.jsonl")).unwrap();
    let epochs: Vec<u64> = text
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .filter(|v| v.get("event").is_none())
        .map(|v| v["epoch"].as_u64().unwrap())
        .collect();
    assert_eq!(epochs, vec![1, 2], "epochs numbered from 1: {text}");

    // Mid-epoch checkpoints every 3 steps: the run is unchanged by writing them, and resuming
    // from the last one written in epoch 1 (batch 6) gives the same run again.
    let out = tmp("every");
    let every = cfg(&["train.checkpoint_every_steps=3"]);
    let s = run(
        &every,
        RunOptions {
            output: out.clone(),
            stop_after_steps: 7,
            ..Default::default()
        },
    )
    .unwrap();
    assert_eq!(s.stopped.as_ref().map(|p| p.batches_done), Some(7));
    let resumed = run(
        &every,
        RunOptions {
            output: out.clone(),
            resume: Some(out.join("checkpoints/last.safetensors")),
            ..Default::default()
        },
    )
    .unwrap();
    assert_same(&full.history, &resumed.history);

    // Writing into an existing run without --resume is refused; --overwrite replaces it.
    let e = run(
        &c,
        RunOptions {
            output: out.clone(),
            ..Default::default()
        },
    )
    .unwrap_err()
    .to_string();
    assert!(
        e.contains("already holds a run") && e.contains("--overwrite"),
        "{e}"
    );
    let again = run(
        &c,
        RunOptions {
            output: out.clone(),
            overwrite: true,
            ..Default::default()
        },
    )
    .unwrap();
    assert_same(&full.history, &again.history);
}

#[test]
fn a_diverged_loss_names_the_step_or_is_skipped_when_asked() {
    let _g = LOCK.lock().unwrap_or_else(|e| e.into_inner());
    // A learning rate this large overflows the weights in one step.
    let c = cfg(&["optimizer.lr=1e38", "schedule.warmup_epochs=0"]);
    let out = tmp("nan");
    let e = run(
        &c,
        RunOptions {
            output: out.clone(),
            ..Default::default()
        },
    )
    .unwrap_err()
    .to_string();
    assert!(
        e.contains("epoch 1/2, step ") && e.contains("diverged") && e.contains("skip_nonfinite"),
        "{e}"
    );
    let skip = cfg(&[
        "optimizer.lr=1e38",
        "schedule.warmup_epochs=0",
        "train.skip_nonfinite=true",
    ]);
    let s = run(
        &skip,
        RunOptions {
            output: tmp("nan-skip"),
            ..Default::default()
        },
    )
    .unwrap();
    assert!(s.skipped_steps > 0, "no step was skipped");
    assert_eq!(s.history.len(), 2);
}

#[test]
fn truncated_or_corrupted_checkpoints_are_errors_naming_the_file() {
    let _g = LOCK.lock().unwrap_or_else(|e| e.into_inner());
    let out = tmp("corrupt");
    run(
        &cfg(&[
            "schedule.epochs=1",
            "train.max_batches=1",
            "train.keep_checkpoints=1",
        ]),
        RunOptions {
            output: out.clone(),
            ..Default::default()
        },
    )
    .unwrap();
    let good = std::fs::read(out.join("checkpoints/last.safetensors")).unwrap();
    let bad = out.join("bad.safetensors");
    let c = cfg(&["schedule.epochs=1"]);
    let model_cfg = c.model.clone();
    let device = burn::tensor::Device::flex().autodiff();
    let mut rng = 12345u64;
    let mut next = || {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        rng
    };
    // Which fault, said plainly: not found, truncated (at byte N of M), not a checkpoint.
    let load_err = |path: &Path| {
        let mut model = model_cfg.init(&device).unwrap();
        let mut opt = statten_train::optim::Optimizer::new(&c.optimizer);
        statten_train::checkpoint::load(path, &mut model, Some(&mut opt), &device)
            .unwrap_err()
            .to_string()
    };
    let e = load_err(&out.join("missing.safetensors"));
    assert!(e.contains("missing.safetensors: not found"), "{e}");
    for cut in [good.len() / 2, good.len() - 1, 100] {
        std::fs::write(&bad, &good[..cut]).unwrap();
        let e = load_err(&bad);
        assert!(
            e.contains(&format!("truncated at byte {cut} of")),
            "cut at {cut}: {e}"
        );
        if cut > 100 {
            assert!(e.contains(&format!("of {}", good.len())), "{e}");
        }
    }
    std::fs::write(&bad, b"not a checkpoint at all, just some text").unwrap();
    let e = load_err(&bad);
    assert!(e.contains("not a statten checkpoint"), "{e}");
    let mut cases = 0;
    for i in 0..160 {
        let mut bytes = good.clone();
        if i % 2 == 0 {
            // Truncated anywhere, the header included.
            bytes.truncate((next() as usize) % good.len());
        } else {
            // A few bytes changed anywhere.
            for _ in 0..1 + next() % 4 {
                let at = (next() as usize) % bytes.len();
                bytes[at] = next() as u8;
            }
        }
        std::fs::write(&bad, &bytes).unwrap();
        let mut model = model_cfg.init(&device).unwrap();
        let mut opt = statten_train::optim::Optimizer::new(&c.optimizer);
        match statten_train::checkpoint::load(&bad, &mut model, Some(&mut opt), &device) {
            Err(e) => {
                assert!(
                    e.to_string().contains("bad.safetensors"),
                    "error without the file: {e}"
                );
                cases += 1;
            }
            // A change inside tensor data can leave a loadable file; it must still be whole.
            Ok(_) => assert_eq!(bytes.len(), good.len()),
        }
    }
    assert!(
        cases >= 80,
        "only {cases} of 160 damaged files were refused"
    );
}

/// `statten train` as a child process.
fn spawn_train(cfg_path: &Path, out: &Path, extra: &[&str]) -> std::process::Child {
    Command::new(env!("CARGO_BIN_EXE_statten"))
        .args(["train", "--quiet", "--threads", "1", "--config"])
        .arg(cfg_path)
        .arg("--output")
        .arg(out)
        .args(extra)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start statten")
}

/// Wait until `out` has a mid-epoch checkpoint (batches_done > 0).
fn wait_for_mid_epoch_checkpoint(child: &mut std::process::Child, out: &Path) {
    let ck = out.join("checkpoints/last.safetensors");
    let t0 = Instant::now();
    loop {
        if let Ok(m) = read_meta(&ck) {
            if m.batches_done > 0 {
                return;
            }
        }
        if let Some(status) = child.try_wait().unwrap() {
            panic!("statten ended ({status}) before a mid-epoch checkpoint");
        }
        assert!(
            t0.elapsed() < Duration::from_secs(600),
            "no mid-epoch checkpoint in 600 s"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[cfg(unix)]
#[test]
fn sigterm_and_kill_9_mid_epoch_resume_to_the_uninterrupted_run() {
    let dir = tmp("signals");
    std::fs::create_dir_all(&dir).unwrap();
    let cfg_path = dir.join("cfg.toml");
    std::fs::write(
        &cfg_path,
        format!("{CFG}checkpoint_every_steps = 2\nmax_batches = 8\n"),
    )
    .unwrap();
    let reference = dir.join("full");
    let st = spawn_train(&cfg_path, &reference, &[])
        .wait_with_output()
        .unwrap();
    assert!(
        st.status.success(),
        "{}",
        String::from_utf8_lossy(&st.stderr)
    );
    let want = common::summary_metrics(&reference);
    assert_eq!(want.len(), 3);

    // SIGTERM: the current step finishes, a checkpoint is written, exit status 143.
    let out = dir.join("term");
    let mut child = spawn_train(&cfg_path, &out, &[]);
    wait_for_mid_epoch_checkpoint(&mut child, &out);
    // SAFETY: kill(2) on our own child's pid; no memory is involved.
    unsafe {
        libc::kill(child.id() as i32, libc::SIGTERM);
    }
    let o = child.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    if o.status.success() {
        // The run was in its last step when the signal came: nothing to resume.
        println!("SIGTERM arrived after the last step; the run completed: {err}");
    } else {
        assert_eq!(o.status.code(), Some(143), "{err}");
        assert!(
            err.contains("--resume") && err.contains("stopped at epoch"),
            "{err}"
        );
        let r = spawn_train(&cfg_path, &out, &["--resume"])
            .wait_with_output()
            .unwrap();
        assert!(r.status.success(), "{}", String::from_utf8_lossy(&r.stderr));
    }
    assert_eq!(
        common::summary_metrics(&out),
        want,
        "SIGTERM + resume differs"
    );

    // kill -9 after a mid-epoch checkpoint: resume continues from that step.
    let out = dir.join("kill");
    let mut child = spawn_train(&cfg_path, &out, &[]);
    wait_for_mid_epoch_checkpoint(&mut child, &out);
    child.kill().unwrap();
    let _ = child.wait();
    let meta = read_meta(&out.join("checkpoints/last.safetensors")).unwrap();
    let r = spawn_train(&cfg_path, &out, &["--resume"])
        .wait_with_output()
        .unwrap();
    assert!(r.status.success(), "{}", String::from_utf8_lossy(&r.stderr));
    println!(
        "killed after epoch {} batch {}",
        meta.epochs_done + 1,
        meta.batches_done
    );
    assert_eq!(
        common::summary_metrics(&out),
        want,
        "kill -9 + resume differs"
    );
}

/// A binary PPM (P6) image of `w × h` pixels, colour from `seed`.
fn ppm(w: usize, h: usize, seed: usize) -> Vec<u8> {
    let mut out = format!("P6\n{w} {h}\n255\n").into_bytes();
    for i in 0..w * h * 3 {
        out.push(((i * 7 + seed * 31) % 251) as u8);
    }
    out
}

#[test]
fn skipped_undecodable_images_with_mixup_keep_training() {
    let _g = LOCK.lock().unwrap_or_else(|e| e.into_inner());
    // An image folder whose train split holds one corrupt file: with data.on_error = "skip" it
    // leaves a batch of 3 where mixup pairs samples; the run must go on, not abort.
    let root = tmp("skip-mixup-data");
    for split in ["train", "val"] {
        for (c, class) in ["n01", "n02"].iter().enumerate() {
            let d = root.join(split).join(class);
            std::fs::create_dir_all(&d).unwrap();
            for i in 0..4 {
                std::fs::write(d.join(format!("{i}.ppm")), ppm(36, 36, c * 10 + i)).unwrap();
            }
        }
    }
    std::fs::write(root.join("train/n01/0.ppm"), b"P6\n36 36\n255\ntruncated").unwrap();
    let text = format!(
        r#"
[model]
preset = "cifar10-2-256"
depth = 1
embed_dim = 32
num_heads = 4
time_steps = 2
chunk_size = 2
img_size = 32
num_classes = 1000
[data]
dataset = "imagenet"
root = "{}"
on_error = "skip"
workers = 1
[data.transform]
size = 32
auto_augment = ""
[data.mixup]
mixup_alpha = 0.8
cutmix_alpha = 1.0
[optimizer]
lr = 1e-3
[schedule]
epochs = 1
warmup_epochs = 0
cooldown_epochs = 0
[train]
batch_size = 4
plot = false
"#,
        root.display()
    );
    let c = RunConfig::parse(&text, &[]).unwrap();
    let s = run(
        &c,
        RunOptions {
            output: tmp("skip-mixup-run"),
            ..Default::default()
        },
    )
    .unwrap();
    assert_eq!(s.skipped, 1, "the corrupt image is counted once");
    assert_eq!(s.history.len(), 1);
    assert!(s.history[0].train_loss.is_finite(), "{:?}", s.history[0]);
}

#[test]
fn devices_that_do_not_exist_are_errors_naming_them() {
    for (dev, want) in [
        ("cpu:x", "`x` is not an index"),
        ("wgpu:integrated:y", "`y` is not an index"),
        ("wgpu:tpu:0", "unknown adapter kind `tpu`"),
        ("tpu", "unknown device `tpu`"),
    ] {
        let e = statten_train::device::device_from_name(dev)
            .unwrap_err()
            .to_string();
        assert!(e.contains(want), "{dev}: {e}");
    }
    // An adapter index far past any machine's: an error naming it, not a panic in the runtime.
    let name = "wgpu:97";
    let d = statten_train::device::device_from_name(name).unwrap();
    let e = statten_train::device::probe_device(name, &d)
        .unwrap_err()
        .to_string();
    assert!(e.contains("wgpu:97") && e.contains("not available"), "{e}");
}
