//! The workflows of issue #29: starting from weights (and transfer to another class count),
//! model EMA, TensorBoard event files and per-step curves; and mixed precision (#28).

mod common;

use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard};

use statten_core::checkpoint::named_tensors;
use statten_train::config::RunConfig;
use statten_train::train::{train, RunOptions, Trainer};

/// Burn's initialisation seed is process-global: runs hold this lock.
static LOCK: Mutex<()> = Mutex::new(());

fn lock() -> MutexGuard<'static, ()> {
    LOCK.lock().unwrap_or_else(|e| e.into_inner())
}

/// The tiny Fashion-MNIST run (256 / 128 images, one epoch of 8 steps).
fn fmnist(extra: &str) -> RunConfig {
    let text = concat!(
        tiny_fmnist_model!(),
        "
[data]
dataset = \"fashion-mnist\"
train_limit = 256
test_limit = 128
workers = 1
[schedule]
epochs = 1
warmup_epochs = 0
cooldown_epochs = 0
[train]
batch_size = 32
plot = false
log_every = 2
"
    );
    with(RunConfig::parse(text, &[]).unwrap(), extra).unwrap()
}

/// `cfg` with `KEY=VALUE` lines applied as `--set` would.
fn with(cfg: RunConfig, sets: &str) -> Result<RunConfig, statten_train::Error> {
    let sets: Vec<String> = sets
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .map(String::from)
        .collect();
    RunConfig::parse(&cfg.to_toml(), &sets)
}

fn run(cfg: &RunConfig, out: &Path) -> statten_train::train::RunSummary {
    let opts = RunOptions {
        output: out.to_path_buf(),
        overwrite: true,
        ..Default::default()
    };
    train(cfg, &opts).unwrap_or_else(|e| panic!("{}: {e}", out.display()))
}

fn opts(out: &Path) -> RunOptions {
    RunOptions {
        output: out.to_path_buf(),
        overwrite: true,
        ..Default::default()
    }
}

/// The model's tensors by reference name.
fn tensors(m: &statten_core::models::StattenModel) -> Vec<(String, Vec<f32>)> {
    named_tensors(m)
        .into_iter()
        .map(|t| (t.name, t.values))
        .collect()
}

fn init_from(path: &Path) -> String {
    format!("train.init_from={:?}", path.to_string_lossy())
}

#[test]
fn a_run_started_from_another_runs_weights_evaluates_as_that_run_at_step_0() {
    let _guard = lock();
    let dir = common::scratch_dir("workflows", "init");
    let a_out = dir.join("a");
    let cfg = fmnist("");
    let a = run(&cfg, &a_out);
    let want = &a.history[0];
    for source in [
        a_out.join("checkpoints/last.safetensors"),
        a_out.join("best_weights.safetensors"),
    ] {
        let b_cfg = with(cfg.clone(), &init_from(&source)).unwrap();
        let b_opts = opts(&dir.join("b"));
        let b = Trainer::setup(&b_cfg, &b_opts).unwrap();
        let ev = b.evaluate_now().unwrap();
        assert_eq!(
            (ev.loss, ev.top1, ev.top5),
            (want.eval_loss, want.eval_top1, want.eval_top5),
            "{}",
            source.display()
        );
        // Weights only: a new run from epoch 0 with a fresh optimizer.
        let s = b.run().unwrap();
        assert_eq!(s.history.len(), 1);
        assert_eq!(s.history[0].epoch, 0);
        let meta =
            statten_train::checkpoint::read_meta(&dir.join("b/checkpoints/last.safetensors"))
                .unwrap();
        assert!(meta.optim_steps.values().all(|&s| s == 8), "{meta:?}");
    }
    // A resume ignores init_from: it continues from its checkpoint.
}

/// A CIFAR folder of the shared 20-image samples: every CIFAR-10 batch file (and CIFAR-100's
/// train and test files) holds them.
fn cifar_root(dir: &Path) -> PathBuf {
    let data = common::shared_dir().join("data/cifar");
    let c10 = dir.join("cifar-10-batches-bin");
    std::fs::create_dir_all(&c10).unwrap();
    for f in (1..=5)
        .map(|i| format!("data_batch_{i}.bin"))
        .chain(["test_batch.bin".to_string()])
    {
        std::fs::copy(data.join("cifar10_test_batch_first20.bin"), c10.join(f)).unwrap();
    }
    let c100 = dir.join("cifar-100-binary");
    std::fs::create_dir_all(&c100).unwrap();
    for f in ["train.bin", "test.bin"] {
        std::fs::copy(data.join("cifar100_test_first20.bin"), c100.join(f)).unwrap();
    }
    dir.to_path_buf()
}

fn cifar(dataset: &str, classes: usize, root: &Path) -> RunConfig {
    let text = format!(
        "
[model]
preset = \"cifar10-2-256\"
depth = 1
embed_dim = 32
num_heads = 4
time_steps = 1
chunk_size = 1
num_classes = {classes}
[data]
dataset = \"{dataset}\"
root = {root:?}
workers = 1
[schedule]
epochs = 1
warmup_epochs = 0
cooldown_epochs = 0
[train]
batch_size = 20
plot = false
"
    );
    RunConfig::parse(&text, &[]).unwrap()
}

#[test]
fn a_cifar10_checkpoint_transfers_to_a_100_class_recipe() {
    let _guard = lock();
    let dir = common::scratch_dir("workflows", "transfer");
    let root = cifar_root(&dir.join("data"));
    let c10 = cifar("cifar10", 10, &root);
    run(&c10, &dir.join("c10"));
    let ck = dir.join("c10/checkpoints/last.safetensors");
    let c10_weights = {
        let mut m = c10.model.init(&burn::tensor::Device::flex()).unwrap();
        statten_train::checkpoint::load_weights(&ck, &mut m, &[]).unwrap();
        tensors(&m)
    };
    let c100 = with(cifar("cifar100", 100, &root), &init_from(&ck)).unwrap();
    // Strict by default: the head's shapes are named, with the way out.
    let err = match Trainer::setup(&c100, &opts(&dir.join("strict"))) {
        Ok(_) => panic!("a 10-class head loaded into a 100-class model"),
        Err(e) => e.to_string(),
    };
    for want in [
        "train.init_from",
        "head.weight",
        "head.bias",
        "[100",
        "--transfer",
    ] {
        assert!(err.contains(want), "`{want}` not in: {err}");
    }
    // Nothing was written for the refused run.
    assert!(!dir.join("strict/config.toml").exists());
    // --transfer: the backbone from CIFAR-10, the head drawn from the seed.
    let transfer = with(c100.clone(), "train.init_exclude=[\"head\"]").unwrap();
    let t_opts = opts(&dir.join("c100"));
    let t = Trainer::setup(&transfer, &t_opts).unwrap();
    let fresh = {
        let d = burn::tensor::Device::flex();
        d.seed(transfer.train.seed);
        tensors(&transfer.model.init(&d).unwrap())
    };
    let got = tensors(t.model());
    assert_eq!(got.len(), fresh.len());
    assert_eq!(got.len(), c10_weights.len());
    let mut heads = 0;
    for ((name, v), (fresh_name, init)) in got.iter().zip(&fresh) {
        assert_eq!(name, fresh_name);
        if name.starts_with("head.") {
            heads += 1;
            assert_eq!(
                v.len(),
                if name.ends_with("weight") {
                    100 * 32
                } else {
                    100
                }
            );
            assert_eq!(v, init, "{name}: not the seed's initial values");
        } else {
            let (_, want) = c10_weights.iter().find(|(n, _)| n == name).unwrap();
            assert_eq!(v, want, "{name}: not the CIFAR-10 weights");
        }
    }
    assert_eq!(heads, 2);
    let s = t.run().unwrap();
    assert!(s.history[0].train_loss.is_finite() && s.history[0].eval_top1.is_finite());
}

#[test]
fn init_from_mismatches_name_the_keys() {
    let _guard = lock();
    let dir = common::scratch_dir("workflows", "mismatch");
    let two = with(fmnist(""), "model.depth=2\ntrain.max_batches=1").unwrap();
    run(&two, &dir.join("two"));
    let ck = dir.join("two/checkpoints/last.safetensors");
    let setup_err = |cfg: &RunConfig| match Trainer::setup(cfg, &opts(&dir.join("b"))) {
        Ok(_) => panic!("loaded"),
        Err(e) => e.to_string(),
    };
    // One block fewer: the second block's keys are unexpected.
    let err = setup_err(&with(fmnist(""), &init_from(&ck)).unwrap());
    assert!(
        err.contains("unexpected key(s)")
            && err.contains("block.1.")
            && err.contains("last.safetensors"),
        "{err}"
    );
    // One block more: the third block's keys are missing.
    let err = setup_err(&with(fmnist("model.depth=3"), &init_from(&ck)).unwrap());
    assert!(
        err.contains("missing key(s)") && err.contains("block.2."),
        "{err}"
    );
    // Another width: every mismatched tensor with both shapes.
    let err =
        setup_err(&with(fmnist("model.embed_dim=64\nmodel.depth=2"), &init_from(&ck)).unwrap());
    assert!(
        err.contains("do not fit the model") && err.contains("patch_embed"),
        "{err}"
    );
    assert!(err.contains("model [") && err.contains("file ["), "{err}");
    // No file.
    let err = setup_err(&with(fmnist(""), &init_from(&dir.join("nope.safetensors"))).unwrap());
    assert!(
        err.contains("train.init_from") && err.contains("nope.safetensors"),
        "{err}"
    );
}

#[test]
fn the_cli_takes_init_from_and_transfer() {
    let _guard = lock();
    let dir = common::scratch_dir("workflows", "cli");
    let cfg = dir.join("run.toml");
    std::fs::write(&cfg, fmnist("train.max_batches=1").to_toml()).unwrap();
    let cfg = cfg.to_string_lossy().into_owned();
    let (ok, text) = common::statten(&["train", "--config", &cfg, "--transfer", "--dry-run"]);
    assert!(
        !ok && text.contains("--transfer") && text.contains("--init-from"),
        "{text}"
    );
    let nope = dir.join("nope.pth").to_string_lossy().into_owned();
    let out = dir.join("run").to_string_lossy().into_owned();
    let (ok, text) = common::statten(&[
        "train",
        "--config",
        &cfg,
        "--init-from",
        &nope,
        "--transfer",
        "--output",
        &out,
        "--quiet",
    ]);
    assert!(
        !ok && text.contains("train.init_from") && text.contains("nope.pth"),
        "{text}"
    );
    assert!(!dir.join("run/config.toml").exists());
}

/// The model EMA's tensors in a checkpoint.
fn ema_tensors(cfg: &RunConfig, ck: &Path) -> Vec<(String, Vec<f32>)> {
    let mut m = cfg.model.init(&burn::tensor::Device::flex()).unwrap();
    statten_train::checkpoint::load_ema_weights(ck, &mut m).unwrap();
    tensors(&m)
}

#[test]
fn model_ema_is_evaluated_saved_and_resumed_exactly_mid_epoch() {
    let _guard = lock();
    let dir = common::scratch_dir("workflows", "ema");
    let cfg = fmnist(
        "schedule.epochs=2
         train.model_ema=true
         train.model_ema_decay=0.9
         train.model_ema_warmup=true",
    );
    let full = run(&cfg, &dir.join("full"));
    let last = dir.join("full/checkpoints/last.safetensors");
    assert_eq!(
        statten_train::checkpoint::read_meta(&last)
            .unwrap()
            .ema_updates,
        Some(16)
    );
    for r in &full.history {
        assert!(r.has_ema_eval(), "{r:?}");
        assert!((0.0..=100.0).contains(&r.ema_eval_top1) && r.ema_eval_loss > 0.0);
    }
    // The EMA differs from the model, and summary.csv has its columns.
    let csv = std::fs::read_to_string(dir.join("full/summary.csv")).unwrap();
    assert!(csv
        .lines()
        .next()
        .unwrap()
        .ends_with(",ema_eval_loss,ema_eval_top1,ema_eval_top5"));
    let ema = ema_tensors(&cfg, &last);
    let model = {
        let mut m = cfg.model.init(&burn::tensor::Device::flex()).unwrap();
        statten_train::checkpoint::load_weights(&last, &mut m, &[]).unwrap();
        tensors(&m)
    };
    assert_ne!(ema, model);
    // The plot's series: every logged step (a row every 2 of 16) and the EMA's evaluations.
    let c = statten_train::plot::Curves::from_run_dir(&dir.join("full")).unwrap();
    assert_eq!(c.step_x.len(), 8);
    assert_eq!(c.step_x.last(), Some(&2.0));
    assert!(c.ema_eval_top1.iter().all(Option::is_some));
    // The saved EMA weights give the last epoch's EMA figures (statten eval --ema).
    let (ev, _) = statten_train::train::eval_checkpoint_weights(
        &cfg,
        &last,
        statten_data::cifar::Split::Test,
        0,
        false,
        true,
    )
    .unwrap();
    let want = full.history.last().unwrap();
    assert_eq!(
        (ev.loss, ev.top1, ev.top5),
        (want.ema_eval_loss, want.ema_eval_top1, want.ema_eval_top5)
    );
    // Stopped after 5 steps (inside the first epoch) and resumed: the same EMA, bit for bit.
    let out = dir.join("stopped");
    let stopped = train(
        &cfg,
        &RunOptions {
            stop_after_steps: 5,
            ..opts(&out)
        },
    )
    .unwrap();
    assert_eq!(stopped.stopped.as_ref().map(|p| p.batches_done), Some(5));
    let resumed = train(
        &cfg,
        &RunOptions {
            resume: Some(out.join("checkpoints/last.safetensors")),
            ..opts(&out)
        },
    )
    .unwrap();
    let key = |h: &[statten_train::checkpoint::EpochRecord]| {
        h.iter()
            .map(|r| {
                let k = common::epoch_key(r);
                [
                    k[1],
                    k[2],
                    k[3],
                    k[4],
                    k[5],
                    r.ema_eval_loss,
                    r.ema_eval_top1,
                    r.ema_eval_top5,
                ]
            })
            .collect::<Vec<_>>()
    };
    assert_eq!(key(&resumed.history), key(&full.history));
    assert_eq!(
        ema_tensors(&cfg, &out.join("checkpoints/last.safetensors")),
        ema
    );
}

#[test]
fn the_best_checkpoint_follows_the_configured_metric() {
    let _guard = lock();
    let dir = common::scratch_dir("workflows", "best");
    let err = RunConfig::parse(
        &fmnist("").to_toml(),
        &["train.best_metric=\"ema_top1\"".into()],
    )
    .unwrap_err()
    .to_string();
    assert!(
        err.contains("train.best_metric") && err.contains("model_ema"),
        "{err}"
    );
    let cfg = fmnist("train.model_ema=true\ntrain.best_metric=\"ema_top1\"\ntrain.max_batches=2");
    run(&cfg, &dir.join("run"));
    // best_weights holds the EMA's weights (the model's differ).
    let mut best = cfg.model.init(&burn::tensor::Device::flex()).unwrap();
    statten_core::checkpoint::load_reference(&mut best, &dir.join("run/best_weights.safetensors"))
        .unwrap();
    let ema = ema_tensors(&cfg, &dir.join("run/checkpoints/best.safetensors"));
    assert_eq!(tensors(&best), ema);
    // A checkpoint without EMA weights says so.
    let plain = fmnist("train.max_batches=1");
    run(&plain, &dir.join("plain"));
    let mut m = plain.model.init(&burn::tensor::Device::flex()).unwrap();
    let e = statten_train::checkpoint::load_ema_weights(
        &dir.join("plain/checkpoints/last.safetensors"),
        &mut m,
    )
    .unwrap_err()
    .to_string();
    assert!(e.contains("no EMA weights"), "{e}");
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        if e.file_type().unwrap().is_dir() {
            copy_dir(&e.path(), &to.join(e.file_name()));
        } else {
            std::fs::copy(e.path(), to.join(e.file_name())).unwrap();
        }
    }
}

/// CRC-32C bit by bit (independent of the writer's table).
fn crc32c_bitwise(data: &[u8]) -> u32 {
    let mut c = !0u32;
    for &b in data {
        c ^= b as u32;
        for _ in 0..8 {
            c = if c & 1 == 1 {
                (c >> 1) ^ 0x82F6_3B78
            } else {
                c >> 1
            };
        }
    }
    !c
}

/// The scalars of a run's event file, `tag → [(step, value)]`, every record's framing and
/// checksums verified here.
fn tb_scalars(run: &Path) -> std::collections::BTreeMap<String, Vec<(i64, f32)>> {
    let files: Vec<PathBuf> = std::fs::read_dir(run.join("tb"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(files.len(), 1, "{files:?}");
    let name = files[0].file_name().unwrap().to_string_lossy().into_owned();
    assert!(name.starts_with("events.out.tfevents."), "{name}");
    let b = std::fs::read(&files[0]).unwrap();
    let mask = |c: u32| c.rotate_right(15).wrapping_add(0xA282_EAD8);
    let mut out: std::collections::BTreeMap<String, Vec<(i64, f32)>> = Default::default();
    let (mut at, mut records) = (0, 0);
    while at < b.len() {
        let n = u64::from_le_bytes(b[at..at + 8].try_into().unwrap()) as usize;
        let len_crc = u32::from_le_bytes(b[at + 8..at + 12].try_into().unwrap());
        assert_eq!(
            len_crc,
            mask(crc32c_bitwise(&b[at..at + 8])),
            "record at {at}"
        );
        let data = &b[at + 12..at + 12 + n];
        let data_crc = u32::from_le_bytes(b[at + 12 + n..at + 16 + n].try_into().unwrap());
        assert_eq!(data_crc, mask(crc32c_bitwise(data)), "record at {at}");
        let e = statten_train::tensorboard::Event::decode(data).unwrap();
        if records == 0 {
            assert_eq!(e.file_version.as_deref(), Some("brain.Event:2"));
        }
        for (tag, v) in e.scalars {
            out.entry(tag).or_default().push((e.step, v));
        }
        at += 16 + n;
        records += 1;
    }
    out
}

#[test]
fn tensorboard_files_hold_the_runs_figures_and_resume_without_repeats() {
    let _guard = lock();
    let dir = common::scratch_dir("workflows", "tb");
    let cfg = fmnist("schedule.epochs=2\ntrain.model_ema=true");
    let full = run(&cfg, &dir.join("full"));
    let tb = tb_scalars(&dir.join("full"));
    // The steps.csv rows, at their global steps.
    let steps: Vec<i64> = std::fs::read_to_string(dir.join("full/steps.csv"))
        .unwrap()
        .lines()
        .skip(1)
        .map(|l| l.split(',').next().unwrap().parse().unwrap())
        .collect();
    assert_eq!(steps, vec![2, 4, 6, 8, 10, 12, 14, 16]);
    for tag in ["train/loss", "train/lr", "train/images_per_s"] {
        let got: Vec<i64> = tb[tag].iter().map(|p| p.0).collect();
        assert_eq!(got, steps, "{tag}");
    }
    // Each epoch's figures at the step of its end (8 steps an epoch).
    type Figure = fn(&statten_train::checkpoint::EpochRecord) -> f64;
    let figures: [(&str, Figure); 5] = [
        ("eval/top1", |r| r.eval_top1),
        ("eval/loss", |r| r.eval_loss),
        ("eval/top5", |r| r.eval_top5),
        ("eval_ema/top1", |r| r.ema_eval_top1),
        ("train/epoch_loss", |r| r.train_loss),
    ];
    for (tag, f) in figures {
        let want: Vec<(i64, f32)> = full
            .history
            .iter()
            .map(|r| (8 * (r.epoch as i64 + 1), f(r) as f32))
            .collect();
        assert_eq!(tb[tag], want, "{tag}");
    }
    let energy: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("full/energy.json")).unwrap())
            .unwrap();
    assert_eq!(
        tb["energy/mj_per_image"].last().unwrap().1,
        energy["energy_mj"].as_f64().unwrap() as f32
    );
    let layers = energy["layers"].as_array().unwrap();
    assert!(!layers.is_empty());
    for l in layers {
        let tag = format!("firing_rate/{}", l["name"].as_str().unwrap());
        assert_eq!(tb[&tag].len(), 2, "{tag}");
    }
    // A crash after step 16 whose last checkpoint is from step 5: the full run's folder with
    // the checkpoint of a run stopped after step 5 (the same steps up to there). The resume
    // drops the events after step 5 and writes them again: the same steps, none twice.
    let stopped = dir.join("stopped");
    train(
        &cfg,
        &RunOptions {
            stop_after_steps: 5,
            ..opts(&stopped)
        },
    )
    .unwrap();
    let out = dir.join("crashed");
    copy_dir(&dir.join("full"), &out);
    std::fs::copy(
        stopped.join("checkpoints/last.safetensors"),
        out.join("checkpoints/last.safetensors"),
    )
    .unwrap();
    train(
        &cfg,
        &RunOptions {
            resume: Some(out.join("checkpoints/last.safetensors")),
            ..opts(&out)
        },
    )
    .unwrap();
    let again = tb_scalars(&out);
    assert_eq!(
        again.keys().collect::<Vec<_>>(),
        tb.keys().collect::<Vec<_>>()
    );
    for (tag, points) in &tb {
        let s = |p: &[(i64, f32)]| p.iter().map(|p| p.0).collect::<Vec<_>>();
        assert_eq!(s(&again[tag]), s(points), "{tag}");
    }
    assert_eq!(again["eval/top1"], tb["eval/top1"]);
    // TensorBoard's own reader, where the `tensorboard` Python package is installed.
    tensorboard_reads(&dir.join("full"), &tb);
}

/// TensorBoard's `EventAccumulator` finds the same scalars; skipped (and said so) without
/// Python's `tensorboard` package.
fn tensorboard_reads(run: &Path, want: &std::collections::BTreeMap<String, Vec<(i64, f32)>>) {
    let script = r#"
import json, sys
try:
    from tensorboard.backend.event_processing import event_accumulator as ea
except ImportError:
    print("NO-TENSORBOARD")
    sys.exit(0)
acc = ea.EventAccumulator(sys.argv[1], size_guidance={ea.SCALARS: 0})
acc.Reload()
print(json.dumps({t: [[s.step, s.value] for s in acc.Scalars(t)] for t in acc.Tags()["scalars"]}))
"#;
    let out = match std::process::Command::new("python3")
        .args(["-c", script, &run.join("tb").to_string_lossy()])
        .output()
    {
        Ok(o) => o,
        Err(e) => {
            eprintln!("skipped: TensorBoard's reader (python3 does not run: {e})");
            return;
        }
    };
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    if text.trim() == "NO-TENSORBOARD" {
        eprintln!("skipped: TensorBoard's reader (the `tensorboard` Python package is not installed; pip install tensorboard)");
        return;
    }
    let got: std::collections::BTreeMap<String, Vec<(i64, f32)>> =
        serde_json::from_str(text.trim()).unwrap();
    assert_eq!(&got, want, "TensorBoard reads other scalars");
    eprintln!("TensorBoard's reader found {} scalar tags", got.len());
}

/// Mixed precision (#28): `train.precision = "f16"` trains on the CPU with the loss scaled, the
/// scaler's state goes into checkpoints, and a run stopped mid-epoch and resumed is bit-identical
/// to the uninterrupted one (scale included); `amp` is f32 on the CPU, bit for bit; `bf16` runs.
#[test]
fn half_precision_trains_saves_its_loss_scale_and_resumes_exactly() {
    let _guard = lock();
    let dir = common::scratch_dir("workflows", "precision");
    let f32_run = run(&fmnist(""), &dir.join("f32"));
    let amp = run(&fmnist("train.precision=\"amp\""), &dir.join("amp"));
    let key = |h: &[statten_train::checkpoint::EpochRecord]| {
        h.iter().map(common::epoch_key).collect::<Vec<_>>()
    };
    assert_eq!(
        key(&amp.history),
        key(&f32_run.history),
        "amp is f32 on the CPU"
    );

    let cfg = fmnist("schedule.epochs=2\ntrain.precision=\"f16\"");
    let full = run(&cfg, &dir.join("f16"));
    assert_eq!(full.history.len(), 2);
    for r in &full.history {
        assert!(r.train_loss.is_finite() && r.eval_loss.is_finite(), "{r:?}");
        assert!((0.0..=100.0).contains(&r.eval_top1));
    }
    assert_ne!(
        key(&full.history)[0],
        key(&run(&fmnist("schedule.epochs=2"), &dir.join("f32x2")).history)[0],
        "f16 products are not f32's"
    );
    let meta = |p: &Path| statten_train::checkpoint::read_meta(p).unwrap();
    let last = dir.join("f16/checkpoints/last.safetensors");
    let row = meta(&last).loss_scale.expect("the loss scale is saved");
    let scale = statten_train::amp::LossScale::from_row(&row).unwrap();
    // 16 steps: no growth yet (2000), and each skipped step halves the scale.
    assert_eq!(scale.growth_tracker as usize + scale.skipped, 16, "{row}");
    assert_eq!(
        scale.scale,
        statten_train::amp::INIT_SCALE * 0.5f64.powi(scale.skipped as i32),
        "{row}"
    );
    assert_eq!(
        meta(&dir.join("f32/checkpoints/last.safetensors")).loss_scale,
        None
    );

    let out = dir.join("f16-stopped");
    let stopped = train(
        &cfg,
        &RunOptions {
            stop_after_steps: 5,
            ..opts(&out)
        },
    )
    .unwrap();
    assert_eq!(stopped.stopped.as_ref().map(|p| p.batches_done), Some(5));
    let mid = statten_train::amp::LossScale::from_row(
        &meta(&out.join("checkpoints/last.safetensors"))
            .loss_scale
            .unwrap(),
    )
    .unwrap();
    assert_eq!(mid.growth_tracker as usize + mid.skipped, 5);
    let resumed = train(
        &cfg,
        &RunOptions {
            resume: Some(out.join("checkpoints/last.safetensors")),
            ..opts(&out)
        },
    )
    .unwrap();
    assert_eq!(key(&resumed.history), key(&full.history));
    assert_eq!(
        meta(&out.join("checkpoints/last.safetensors")).loss_scale,
        Some(row)
    );
    let bf16 = run(&fmnist("train.precision=\"bf16\""), &dir.join("bf16"));
    assert!(bf16.history[0].eval_loss.is_finite());
    assert_eq!(
        meta(&dir.join("bf16/checkpoints/last.safetensors")).loss_scale,
        None
    );
}

/// A device without the half type is refused with an error naming the setting (WGSL has no
/// bf16), before the run directory is touched.
#[test]
#[cfg_attr(statten_skip_wgpu, ignore = "STATTEN_SKIP_WGPU is set")]
fn a_half_format_the_device_lacks_is_refused_naming_the_setting() {
    let _guard = lock();
    let dir = common::scratch_dir("workflows", "bf16-wgpu");
    let cfg = fmnist("train.device=\"wgpu\"\ntrain.precision=\"bf16\"");
    let out = dir.join("run");
    let e = train(&cfg, &opts(&out)).unwrap_err().to_string();
    assert!(
        e.contains("train.precision = \"bf16\"") && e.contains("no bf16 type"),
        "{e}"
    );
    assert!(!out.exists(), "nothing written");
}
