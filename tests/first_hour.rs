//! What a new user meets in the first hour, each fixed and kept fixed: the resume command
//! printed after a stop works as printed, a refused resume names what differs, one setting
//! for the run's length, non-finite settings refused with their key, device failures named,
//! `eval` scoring the whole split and saying how many images, checkpoint faults told apart,
//! and the small things (epoch numbering, file modes, the written config, error wording).
#![deny(clippy::undocumented_unsafe_blocks)]

#[macro_use]
mod common;

use common::{scratch_dir, statten_in, summary_metrics};
use std::path::Path;
use std::process::{Command, Stdio};

const CFG: &str = concat!(
    tiny_fmnist_model!(),
    r#"
[data]
dataset = "fashion-mnist"
train_limit = 96
test_limit = 48
workers = 1
[schedule]
epochs = 2
warmup_epochs = 0
cooldown_epochs = 0
per_iteration = true
[train]
batch_size = 16
plot = false
"#
);

fn write_cfg(dir: &Path, text: &str) -> String {
    let p = dir.join("cfg.toml");
    std::fs::write(&p, text).unwrap();
    p.display().to_string()
}

/// `statten train --threads 1 --config CFG EXTRA…` in `dir`.
fn train(dir: &Path, cfg: &str, extra: &[&str]) -> (bool, String) {
    let mut args = vec!["train", "--threads", "1", "--config", cfg];
    args.extend(extra);
    statten_in(dir, &args)
}

/// `statten train --config CFG --dry-run EXTRA…` in `dir`.
fn dry_run(dir: &Path, cfg: &str, extra: &[&str]) -> (bool, String) {
    let mut args = vec!["train", "--config", cfg, "--dry-run"];
    args.extend(extra);
    statten_in(dir, &args)
}

/// Stopped by SIGINT in the middle of a run started with `--set` overrides, `statten train`
/// prints a command; run exactly as printed (with `statten` being this binary), it continues
/// the run to the same numbers as a run that never stopped.
#[cfg(unix)]
#[test]
fn the_printed_resume_command_resumes() {
    let dir = scratch_dir("first-hour", "resume");
    let cfg = write_cfg(&dir, CFG);
    let sets = [
        "--set",
        "optimizer.lr=2e-3",
        "--set",
        "train.checkpoint_every_steps=1",
        "--set",
        "train.log_every=1",
    ];
    // `statten train` of this test's run into `out`, with the overrides.
    let run_args = |out: &Path| -> Vec<String> {
        let mut a: Vec<String> = ["train", "--quiet", "--threads", "1", "--config", &cfg]
            .map(String::from)
            .to_vec();
        a.extend(["--output".to_string(), out.display().to_string()]);
        a.extend(sets.map(String::from));
        a
    };
    let full = dir.join("full");
    let full_args = run_args(&full);
    let (ok, text) = statten_in(
        &dir,
        &full_args.iter().map(String::as_str).collect::<Vec<_>>(),
    );
    assert!(ok, "{text}");

    let out = dir.join("stopped");
    let mut child = Command::new(env!("CARGO_BIN_EXE_statten"))
        .current_dir(&dir)
        .args(run_args(&out))
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // A SIGINT once the run has logged a step of its second epoch.
    let t0 = std::time::Instant::now();
    loop {
        let steps = std::fs::read_to_string(out.join("steps.csv")).unwrap_or_default();
        if steps.lines().count() > 8 {
            break;
        }
        assert!(
            child.try_wait().unwrap().is_none(),
            "the run ended before the signal"
        );
        assert!(t0.elapsed().as_secs() < 600, "no progress in 600 s");
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    // SAFETY: kill(2) on our own child's pid; no memory is involved.
    unsafe {
        libc::kill(child.id() as i32, libc::SIGINT);
    }
    let o = child.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&o.stderr).to_string();
    if o.status.success() {
        println!("the signal came after the last step; nothing to resume: {err}");
        return;
    }
    assert_eq!(o.status.code(), Some(130), "{err}");
    let printed = err
        .lines()
        .skip_while(|l| !l.contains("continue it with"))
        .nth(1)
        .unwrap_or_else(|| panic!("no command printed: {err}"))
        .trim()
        .to_string();
    let rest = printed
        .strip_prefix("statten ")
        .unwrap_or_else(|| panic!("not a statten command: {printed}"));
    let run = Command::new("sh")
        .current_dir(&dir)
        .arg("-c")
        .arg(format!("'{}' {rest}", env!("CARGO_BIN_EXE_statten")))
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&run.stdout),
        String::from_utf8_lossy(&run.stderr)
    );
    assert!(run.status.success(), "`{printed}` failed:\n{text}");
    assert_eq!(
        summary_metrics(&out),
        summary_metrics(&full),
        "`{printed}` did not continue the run"
    );
}

/// Settings that cannot be right are refused with their full key; the run's length is one
/// setting; a folder left by a run that failed before it logged anything is reused.
#[test]
fn bad_settings_name_their_key_and_one_setting_is_the_runs_length() {
    let dir = scratch_dir("first-hour", "settings");
    let cfg = write_cfg(&dir, CFG);
    for (set, want) in [
        (
            "optimizer.lr=nan",
            "optimizer.lr = NaN: must be a finite number",
        ),
        (
            "optimizer.lr=inf",
            "optimizer.lr = inf: must be a finite number",
        ),
        (
            "schedule.min_lr=-inf",
            "schedule.min_lr = -inf: must be a finite number",
        ),
        (
            "optimizer.weight_decay=-0.1",
            "optimizer.weight_decay = -0.1: must be ≥ 0",
        ),
        (
            "loss.label_smoothing=1.5",
            "loss.label_smoothing = 1.5: must be in [0, 1)",
        ),
        (
            "train.epochs=\"abc\"",
            "train.epochs = \"abc\": expected an integer",
        ),
        (
            "train.epochs=abc",
            "train.epochs = \"abc\": expected an integer",
        ),
    ] {
        let (ok, text) = dry_run(&dir, &cfg, &["--set", set]);
        assert!(!ok, "{set} was accepted:\n{text}");
        assert!(text.contains(want), "{set}: {text}");
        assert!(!text.contains("panicked"), "{text}");
    }
    // --set train.epochs=5 trains 5 epochs and the schedule runs over 5.
    let (ok, text) = dry_run(&dir, &cfg, &["--set", "train.epochs=5"]);
    assert!(ok, "{text}");
    assert!(text.contains("cosine over 5 epochs"), "{text}");
    assert!(text.contains("the run lasts 5 epochs"), "{text}");
    // Unless asked otherwise, which the dry run says.
    let (ok, text) = dry_run(
        &dir,
        &cfg,
        &[
            "--set",
            "train.epochs=5",
            "--set",
            "schedule.fit_to_run=false",
        ],
    );
    assert!(ok, "{text}");
    assert!(
        text.contains("cosine over 2 epochs") && text.contains("more than the schedule's 2"),
        "{text}"
    );
    // A cooldown longer than the run.
    let (ok, text) = dry_run(
        &dir,
        &cfg,
        &[
            "--set",
            "train.epochs=2",
            "--set",
            "schedule.cooldown_epochs=3",
        ],
    );
    // The cosine then takes the whole run, as the dry run says.
    assert!(ok, "{text}");
    assert!(
        text.contains("cosine over 2 epochs") && !text.contains("cooldown epochs at"),
        "{text}"
    );

    // A run that fails before it logs anything does not block its folder.
    let out = dir.join("early");
    std::fs::create_dir_all(out.join("checkpoints")).unwrap();
    std::fs::write(out.join("config.toml"), "# from a run that failed\n").unwrap();
    let out_s = out.display().to_string();
    let (ok, text) = train(
        &dir,
        &cfg,
        &[
            "--quiet",
            "--output",
            &out_s,
            "--set",
            "train.max_batches=1",
            "--set",
            "train.epochs=1",
        ],
    );
    assert!(ok, "{text}");

    // The small things: a recipe that is not there, a file given as the data folder.
    let (ok, text) = statten_in(&dir, &["configs", "show", "nope"]);
    assert!(!ok && text.contains("configs show `nope`"), "{text}");
    assert!(!text.contains("--config"), "{text}");
    let (ok, text) = dry_run(&dir, &cfg, &["--data-dir", &cfg]);
    assert!(!ok && text.contains("a file, not a folder"), "{text}");
}

/// What a finished run leaves: epochs numbered from 1 in every file, every file readable by
/// others as the rest (mode 0644 under the usual umask), a config that holds what the run used;
/// `eval` scores the whole test split although the run's config limits its batches, says how
/// many images, and `--max-batches` limits it on request. A checkpoint that is missing,
/// truncated or not a checkpoint is told apart.
#[test]
fn a_run_and_its_evaluation_say_what_they_did() {
    let dir = scratch_dir("first-hour", "eval");
    let cfg = write_cfg(&dir, &format!("{CFG}max_batches = 2\n"));
    let out = dir.join("run");
    let out_s = out.display().to_string();
    let (ok, text) = train(&dir, &cfg, &["--output", &out_s]);
    assert!(ok, "{text}");
    assert!(
        text.lines()
            .any(|l| l.starts_with("epoch") && l.contains(" 1/2 ")),
        "{text}"
    );
    let summary = summary_metrics(&out);
    assert_eq!(
        summary[1..]
            .iter()
            .map(|l| l.split(',').next().unwrap())
            .collect::<Vec<_>>(),
        ["1", "2"]
    );
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = |f: &str| std::fs::metadata(out.join(f)).unwrap().permissions().mode() & 0o777;
        assert_eq!(
            mode("best_weights.safetensors"),
            mode("summary.csv"),
            "best_weights.safetensors has another mode than the other files"
        );
        assert_eq!(
            mode("config.toml") & 0o044,
            0o044,
            "group and others can read"
        );
    }
    let written = std::fs::read_to_string(out.join("config.toml")).unwrap();
    assert!(written.contains("[data.mnist]"), "{written}");
    for unused in ["[data.transform]", "frame_size", "event_aug", "224"] {
        assert!(
            !written.contains(unused),
            "{unused} in a Fashion-MNIST config:\n{written}"
        );
    }

    let ck = out
        .join("checkpoints/last.safetensors")
        .display()
        .to_string();
    let eval = |extra: &[&str]| {
        let mut args = vec!["eval", "--threads", "1", "--json", "--checkpoint", &ck];
        args.extend(extra);
        let (ok, text) = statten_in(&dir, &args);
        assert!(ok, "{text}");
        serde_json::from_str::<serde_json::Value>(text.trim())
            .unwrap_or_else(|e| panic!("{e}: {text}"))
    };
    assert_eq!(eval(&[])["images"], 48, "the whole test split");
    assert_eq!(eval(&["--max-batches", "1"])["images"], 16);
    let (ok, text) = statten_in(&dir, &["eval", "--threads", "1", "--checkpoint", &ck]);
    assert!(ok && text.contains("test split, 48 images"), "{text}");

    let bytes = std::fs::read(&ck).unwrap();
    let cut = dir.join("cut.safetensors");
    std::fs::write(&cut, &bytes[..bytes.len() / 2]).unwrap();
    for (path, want) in [
        (
            dir.join("nowhere.safetensors"),
            "nowhere.safetensors: not found".to_string(),
        ),
        (
            cut.clone(),
            format!("truncated at byte {} of {}", bytes.len() / 2, bytes.len()),
        ),
        (dir.join("cfg.toml"), "not a statten checkpoint".to_string()),
    ] {
        let p = path.display().to_string();
        let (ok, text) = statten_in(&dir, &["eval", "--checkpoint", &p]);
        assert!(!ok && text.contains(&want), "{p}: {text}");
        assert!(!text.contains("failed to fill whole buffer"), "{text}");
    }
}

/// A device that is not there is an error naming it and the cause, from `--device` as from
/// `train.devices` (one grammar): never a worker thread's `RecvError`.
#[test]
#[cfg_attr(statten_skip_wgpu, ignore = "STATTEN_SKIP_WGPU is set")]
fn a_missing_device_is_named_with_its_cause() {
    let dir = scratch_dir("first-hour", "device");
    let cfg = write_cfg(&dir, CFG);
    for args in [
        vec!["--device", "wgpu:7"],
        vec!["--device", "wgpu", "--devices", "7"],
        vec!["--set", "train.devices=[\"cpu:0\", \"wgpu:7\"]"],
    ] {
        let mut all = vec!["train", "--quiet", "--threads", "1", "--config", &cfg];
        let out = dir.join("out").display().to_string();
        all.extend(["--output", &out]);
        all.extend(args.iter().copied());
        let (ok, text) = statten_in(&dir, &all);
        assert!(!ok, "{args:?}: {text}");
        assert!(
            text.contains("wgpu:7") && text.contains("not available"),
            "{args:?}: {text}"
        );
        for leak in ["RecvError", "called `Result::unwrap()`", "panicked"] {
            assert!(!text.contains(leak), "{args:?} leaked {leak}: {text}");
        }
    }
    let (ok, text) = statten_in(
        &dir,
        &[
            "train",
            "--config",
            &cfg,
            "--device",
            "wgpu:1",
            "--devices",
            "0,1",
        ],
    );
    assert!(!ok && text.contains("--devices takes indices"), "{text}");
}
