//! Training: a tiny model learns Fashion-MNIST, every shipped config parses and builds its model,
//! the CIFAR recipe's learning rates equal timm's, and bad configs give clear errors.

mod common;

use std::path::PathBuf;

use statten_train::config::RunConfig;
use statten_train::train::{train, RunOptions};

fn repo() -> PathBuf {
    PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR"))
}

/// A tiny SDT + STAtten (the quick start's model) on the first 1,600 / 500 Fashion-MNIST
/// images.
pub const TINY: &str = r#"
[model]
preset = "cifar10-2-256"
depth = 1
embed_dim = 64
num_heads = 4
pooling_stat = "1011"
time_steps = 2
chunk_size = 2
in_channels = 1
img_size = 28
num_classes = 10
[data]
dataset = "fashion-mnist"
train_limit = 1600
test_limit = 500
workers = 2
[optimizer]
lr = 2e-3
weight_decay = 1e-2
[schedule]
epochs = 5
warmup_epochs = 0
min_lr = 1e-4
cooldown_epochs = 0
[train]
batch_size = 32
plot = true
"#;

fn tmp(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("statten-train-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    d
}

#[test]
fn tiny_model_learns_fashion_mnist_far_above_chance() {
    let cfg = RunConfig::parse(TINY, &[]).unwrap();
    let out = tmp("tiny");
    let opts = RunOptions {
        output: out.clone(),
        ..Default::default()
    };
    let s = train(&cfg, &opts).unwrap();
    assert_eq!(s.history.len(), 5);
    let last = s.history.last().unwrap();
    println!(
        "eval top-1 per epoch: {:?}",
        s.history.iter().map(|r| r.eval_top1).collect::<Vec<_>>()
    );
    assert!(
        last.eval_top1 >= 60.0,
        "eval top-1 {:.2} % after 5 epochs: {:?}",
        last.eval_top1,
        s.history
    );
    assert!(s.history[4].train_loss < s.history[0].train_loss);
    // What a run leaves behind.
    for f in [
        "config.toml",
        "summary.csv",
        "metrics.jsonl",
        "curves.png",
        "energy.json",
        "checkpoints/last.safetensors",
        "checkpoints/best.safetensors",
        "best_weights.safetensors",
    ] {
        assert!(out.join(f).is_file(), "{f} missing");
    }
    let csv = std::fs::read_to_string(out.join("summary.csv")).unwrap();
    assert_eq!(csv.lines().count(), 6);
    assert!(csv
        .starts_with("epoch,train_loss,train_top1,eval_loss,eval_top1,eval_top5,lr,images_per_s"));
    let energy: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("energy.json")).unwrap()).unwrap();
    let e = energy["energy_mj"].as_f64().unwrap();
    let rate = energy["mean_rate"].as_f64().unwrap();
    assert!(e > 0.0 && rate > 0.0 && rate < 1.0, "{energy}");
    // The resolved config reproduces the run's config.
    let back = RunConfig::parse(
        &std::fs::read_to_string(out.join("config.toml")).unwrap(),
        &[],
    )
    .unwrap();
    assert_eq!(back, cfg);
    // The checkpoint's metadata reads from its header; reference weights are told apart.
    let meta =
        statten_train::checkpoint::read_meta(&out.join("checkpoints/last.safetensors")).unwrap();
    assert_eq!(meta.epochs_done, 5);
    assert_eq!(meta.history, s.history);
    let e = statten_train::checkpoint::read_meta(&out.join("best_weights.safetensors"))
        .unwrap_err()
        .to_string();
    assert!(e.contains("not a statten checkpoint"), "{e}");
    // The exported weights load as a reference state_dict.
    let mut m = cfg.model.init(&burn::tensor::Device::flex()).unwrap();
    statten_core::checkpoint::load_reference(&mut m, &out.join("best_weights.safetensors"))
        .unwrap();
}

#[test]
fn every_shipped_config_parses_and_builds_its_model() {
    let dir = repo().join("configs");
    let mut n = 0;
    for e in std::fs::read_dir(&dir).unwrap() {
        let p = e.unwrap().path();
        if p.extension().is_none_or(|x| x != "toml") {
            continue;
        }
        let cfg = RunConfig::load(&p, &[]).unwrap_or_else(|e| panic!("{e}"));
        // Building the biggest models is slow in debug builds; check their shapes by
        // parameter count instead and build the rest.
        if cfg.model.embed_dim <= 512 && cfg.model.depth <= 4 {
            cfg.model
                .init(&burn::tensor::Device::flex())
                .unwrap_or_else(|e| panic!("{}: {e}", p.display()));
        } else {
            assert!(
                cfg.model.reference_param_count() > 20_000_000,
                "{}",
                p.display()
            );
        }
        let first = std::fs::read_to_string(&p).unwrap();
        assert!(
            first.starts_with("# "),
            "{} needs a one-line description",
            p.display()
        );
        n += 1;
    }
    assert!(n >= 23, "expected the 10 reference configs, their SDSA baselines, Spikformer and the quick start; found {n}");
}

#[test]
fn cifar_recipe_learning_rates_equal_timms() {
    let cfg = RunConfig::load(&repo().join("configs/cifar10-2-512.toml"), &[]).unwrap();
    let lr = |e: usize| cfg.schedule.lr_for(cfg.optimizer.lr, e, 0, 782);
    let cos =
        |e: f64| 1e-5 + 0.5 * (3e-4 - 1e-5) * (1.0 + (std::f64::consts::PI * e / 200.0).cos());
    let want = [
        (0, 1e-6),
        (19, 1e-6 + 19.0 * (3e-4 - 1e-6) / 20.0),
        (20, cos(20.0)),
        (100, cos(100.0)),
        (199, cos(199.0)),
        (205, 1e-5),
    ];
    for (e, w) in want {
        assert!((lr(e) - w).abs() < 1e-15, "epoch {e}: {} vs {w}", lr(e));
    }
    assert_eq!(cfg.total_epochs(), 210);
}

#[test]
fn bad_configs_give_clear_errors() {
    let e = RunConfig::parse(&TINY.replace("[train]", "[train]\nbatch_sise = 3"), &[])
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("train.batch_sise") && e.contains("train.batch_size"),
        "{e}"
    );
    let e = RunConfig::parse(&TINY.replace("chunk_size = 2", "chunk_size = 3"), &[])
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("chunk_size") && e.contains("time_steps") || e.contains("divisible"),
        "{e}"
    );
    let e = RunConfig::parse(TINY, &["data.dataset=\"cifar10\"".into()])
        .unwrap_err()
        .to_string();
    assert!(e.contains("in_channels") || e.contains("img_size"), "{e}");
    // Missing data folder: the error names it and says where to get the data.
    let cfg = RunConfig::parse(TINY, &["data.root=\"/nonexistent/fmnist\"".into()]).unwrap();
    let e = train(
        &cfg,
        &RunOptions {
            output: tmp("missing"),
            ..Default::default()
        },
    )
    .unwrap_err()
    .to_string();
    assert!(
        e.contains("/nonexistent/fmnist") && e.contains("dataset-fashion-mnist"),
        "{e}"
    );
    let cfg = RunConfig::load(
        &repo().join("configs/cifar10-2-256.toml"),
        &["data.root=\"/nonexistent/cifar\"".into()],
    )
    .unwrap();
    let e = train(
        &cfg,
        &RunOptions {
            output: tmp("missing2"),
            ..Default::default()
        },
    )
    .unwrap_err()
    .to_string();
    assert!(
        e.contains("/nonexistent/cifar") && e.contains("cifar-10-binary.tar.gz"),
        "{e}"
    );
}

#[test]
fn data_parallel_over_two_cpu_devices_learns_as_one_device() {
    let one = RunConfig::parse(TINY, &["train.plot=false".into()]).unwrap();
    let two = RunConfig::parse(
        TINY,
        &[
            "train.plot=false".into(),
            "train.devices=[\"cpu:0\", \"cpu:1\"]".into(),
        ],
    )
    .unwrap();
    let a = train(
        &one,
        &RunOptions {
            output: tmp("dp1"),
            ..Default::default()
        },
    )
    .unwrap();
    let b = train(
        &two,
        &RunOptions {
            output: tmp("dp2"),
            ..Default::default()
        },
    )
    .unwrap();
    let (ta, tb) = (
        a.history.last().unwrap().eval_top1,
        b.history.last().unwrap().eval_top1,
    );
    println!("single device {ta:.2} %, two devices {tb:.2} %");
    assert!(tb >= 60.0, "data-parallel run reached only {tb:.2} %");
    assert!(
        (ta - tb).abs() <= 10.0,
        "single {ta:.2} % vs data parallel {tb:.2} %"
    );
    // The first epoch's training loss is close: same data, same initial weights, gradients of
    // the same mean loss (only the BatchNorm batch statistics differ, per half batch).
    let (la, lb) = (a.history[0].train_loss, b.history[0].train_loss);
    assert!((la - lb).abs() < 0.15, "epoch-0 train loss {la} vs {lb}");
}

#[test]
#[cfg_attr(statten_skip_wgpu, ignore = "STATTEN_SKIP_WGPU is set")]
fn one_epoch_trains_on_wgpu() {
    // On CI this is Mesa's software Vulkan: it checks the code path, not speed. The initial
    // weights come from each backend's own generator, so wgpu and flex start from different
    // models; one epoch of 32 images leaves both near chance, ln 10 ≈ 2.303, which NaN, Inf,
    // an untrained-at-all path (loss 0) or exploding logits would miss.
    let cfg = RunConfig::parse(
        TINY,
        &[
            "train.device=\"wgpu\"".into(),
            "data.train_limit=32".into(),
            "data.test_limit=32".into(),
            "schedule.epochs=1".into(),
            "train.plot=false".into(),
        ],
    )
    .unwrap();
    let s = train(
        &cfg,
        &RunOptions {
            output: tmp("wgpu"),
            ..Default::default()
        },
    )
    .unwrap();
    let r = &s.history[0];
    println!("wgpu epoch: {r:?}");
    let chance = 10f64.ln();
    assert!(
        (r.train_loss - chance).abs() < 0.3 && (r.eval_loss - chance).abs() < 0.3,
        "{r:?}"
    );
    assert!(
        (0.0..=100.0).contains(&r.eval_top1) && r.images_per_s > 0.0,
        "{r:?}"
    );
}
