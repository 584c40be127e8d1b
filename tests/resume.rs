//! Kill/resume: a run stopped after epoch k and resumed from its last checkpoint produces the
//! same per-epoch metrics as an uninterrupted run with the same seed. One test in its own
//! binary, because Burn's initialisation seed is process-global.

#[macro_use]
mod common;

use std::path::PathBuf;

use statten_train::config::RunConfig;
use statten_train::train::{train, RunOptions};

const CFG: &str = concat!(
    tiny_fmnist_model!(),
    r#"
[data]
dataset = "fashion-mnist"
train_limit = 256
test_limit = 128
workers = 2
[data.mnist]
translate = 2
hflip = 0.5
[optimizer]
kind = "lamb"
lr = 5e-3
weight_decay = 1e-2
[schedule]
epochs = 3
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

/// A fresh path for a run directory (not created: the run creates it).
fn tmp(name: &str) -> PathBuf {
    let d = common::scratch_dir("resume", name);
    let _ = std::fs::remove_dir(&d);
    d
}

use common::epoch_key as key;

#[test]
fn resumed_run_equals_uninterrupted_run() {
    let cfg = RunConfig::parse(CFG, &[]).unwrap();
    let full = train(
        &cfg,
        &RunOptions {
            output: tmp("full"),
            ..Default::default()
        },
    )
    .unwrap();
    assert_eq!(full.history.len(), 3);

    let out = tmp("killed");
    let part = train(
        &cfg,
        &RunOptions {
            output: out.clone(),
            stop_after: 1,
            ..Default::default()
        },
    )
    .unwrap();
    assert_eq!(part.history.len(), 1);
    // A stray temporary file from a kill mid-write must not matter.
    std::fs::write(out.join("checkpoints/last.tmp99999"), b"half a checkpoint").unwrap();
    let resumed = train(
        &cfg,
        &RunOptions {
            output: out.clone(),
            resume: Some(out.join("checkpoints/last.safetensors")),
            ..Default::default()
        },
    )
    .unwrap();
    assert_eq!(resumed.history.len(), 3);
    assert_eq!(full.history.len(), 3);
    for (a, b) in full.history.iter().zip(&resumed.history) {
        assert_eq!(
            key(a),
            key(b),
            "epoch {}: uninterrupted {a:?} vs resumed {b:?}",
            a.epoch
        );
    }
    let csv = std::fs::read_to_string(out.join("summary.csv")).unwrap();
    assert_eq!(csv.lines().count(), 4, "{csv}");
}
