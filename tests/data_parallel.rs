//! One meaning of the batch: `train.batch_size` is the global batch, and splitting it over
//! devices (replicas in threads) or over micro-batches on one device is the same optimization.
//!
//! Runs hold `LOCK`: Burn's initialisation seed is process-global.

#[macro_use]
mod common;

use std::path::PathBuf;
use std::sync::Mutex;

use burn::tensor::Device;
use statten_core::checkpoint::named_tensors;
use statten_train::config::RunConfig;
use statten_train::parallel::batch_plan;
use statten_train::parallel::{Collective, ThreadWorld};
use statten_train::train::{train, RunOptions};

static LOCK: Mutex<()> = Mutex::new(());

const CFG: &str = concat!(
    tiny_fmnist_model!(),
    r#"
[data]
dataset = "fashion-mnist"
train_limit = 128
test_limit = 64
workers = 2
[optimizer]
lr = 3e-3
weight_decay = 1e-2
[schedule]
epochs = 2
warmup_epochs = 0
min_lr = 1e-4
cooldown_epochs = 0
[train]
batch_size = 32
plot = false
"#
);

fn tmp(name: &str) -> PathBuf {
    let d = common::scratch_dir("dp", name);
    let _ = std::fs::remove_dir(&d);
    d
}

/// Train with `sets`; the history's train columns and the final parameters (not the running
/// statistics).
/// Train columns per epoch, and the named final parameters.
type Outcome = (Vec<[f64; 3]>, Vec<(String, Vec<f32>)>);

fn run(name: &str, sets: &[&str]) -> Outcome {
    run_ranks(name, sets, 1)
}

/// The same over `ranks` ranks of a [`ThreadWorld`] (threads standing in for MPI processes).
fn run_ranks(name: &str, sets: &[&str], ranks: usize) -> Outcome {
    let sets: Vec<String> = sets.iter().map(|s| s.to_string()).collect();
    let cfg = RunConfig::parse(CFG, &sets).unwrap();
    let out = tmp(name);
    let s = if ranks == 1 {
        train(
            &cfg,
            &RunOptions {
                output: out.clone(),
                ..Default::default()
            },
        )
        .unwrap()
    } else {
        let worlds = ThreadWorld::new(ranks);
        let mut all: Vec<_> = std::thread::scope(|sc| {
            let hs: Vec<_> = worlds
                .into_iter()
                .map(|w| {
                    let (cfg, out) = (&cfg, &out);
                    sc.spawn(move || {
                        let w: std::rc::Rc<dyn Collective> = std::rc::Rc::new(w);
                        train(
                            cfg,
                            &RunOptions {
                                output: out.clone(),
                                world: Some(w),
                                ..Default::default()
                            },
                        )
                        .unwrap()
                    })
                })
                .collect();
            hs.into_iter().map(|h| h.join().unwrap()).collect()
        });
        // Every rank reports the same history (reduced metrics).
        for s in &all[1..] {
            let key = |s: &statten_train::train::RunSummary| {
                s.history
                    .iter()
                    .map(|r| [r.train_loss, r.train_top1, r.eval_loss, r.eval_top1])
                    .collect::<Vec<_>>()
            };
            assert_eq!(key(s), key(&all[0]), "ranks disagree");
        }
        all.swap_remove(0)
    };
    let hist = s
        .history
        .iter()
        .map(|r| [r.train_loss, r.train_top1, r.lr])
        .collect();
    let device = Device::flex().autodiff();
    let mut model = cfg.model.init(&device).unwrap();
    statten_train::checkpoint::load(
        &out.join("checkpoints/last.safetensors"),
        &mut model,
        None,
        &device,
    )
    .unwrap();
    let params = named_tensors(&model)
        .into_iter()
        .filter(|t| t.param_id.is_some())
        .map(|t| (t.name, t.values))
        .collect();
    (hist, params)
}

#[test]
fn two_micro_batches_equal_two_devices() {
    let _g = LOCK.lock().unwrap_or_else(|e| e.into_inner());
    let (ha, pa) = run("micro", &["train.micro_batch=16"]);
    let (hb, pb) = run("devices", &["train.devices=[\"cpu:0\", \"cpu:1\"]"]);
    assert_eq!(ha.len(), 2);
    assert!(ha.iter().flatten().all(|v| v.is_finite()), "{ha:?}");
    // The same pieces, the same weighting, the gradients summed in the same order: equal to
    // the last bit, while the replica of the second device ran on a thread of its own.
    assert_eq!(ha, hb, "micro-batches {ha:?} vs devices {hb:?}");
    assert_eq!(pa.len(), pb.len());
    assert!(!pa.is_empty());
    for ((na, va), (nb, vb)) in pa.iter().zip(&pb) {
        assert_eq!(na, nb);
        assert_eq!(va, vb, "{na} differs");
    }
    // Two ranks (each one device, the gradients all-reduced) take the same steps too.
    let (hr, pr) = run_ranks("ranks", &[], 2);
    assert_eq!(ha, hr, "micro-batches {ha:?} vs ranks {hr:?}");
    for ((na, va), (_, vr)) in pa.iter().zip(&pr) {
        assert_eq!(va, vr, "{na} differs between micro-batches and ranks");
    }
    // And not the same as the whole batch at once (BatchNorm statistics per piece), so the
    // comparison above could fail.
    let (hc, _) = run("whole", &[]);
    assert_ne!(ha, hc);
}

/// The EMA weights (parameters and running statistics) of a run's last checkpoint.
fn ema_of(name: &str, sets: &[&str]) -> Vec<(String, Vec<f32>)> {
    let sets: Vec<String> = sets.iter().map(|s| s.to_string()).collect();
    let cfg = RunConfig::parse(CFG, &sets).unwrap();
    let mut model = cfg.model.init(&Device::flex()).unwrap();
    let ck = common::scratch_path("dp", name).join("checkpoints/last.safetensors");
    statten_train::checkpoint::load_ema_weights(&ck, &mut model).unwrap();
    named_tensors(&model)
        .into_iter()
        .map(|t| (t.name, t.values))
        .collect()
}

#[test]
fn ranks_keep_the_model_ema_of_one_process_with_as_many_devices() {
    let _g = LOCK.lock().unwrap_or_else(|e| e.into_inner());
    let ema = ["train.model_ema=true", "train.model_ema_decay=0.9"];
    let devices = [&ema[..], &["train.devices=[\"cpu:0\", \"cpu:1\"]"]].concat();
    let (hd, _) = run("ema-devices", &devices);
    let (hr, _) = run_ranks("ema-ranks", &ema, 2);
    assert_eq!(hd, hr);
    let (d, r) = (ema_of("ema-devices", &devices), ema_of("ema-ranks", &ema));
    assert!(d.iter().any(|(n, _)| n.ends_with("running_mean")));
    // Rank 0's EMA (the one it saves) is the single process's, running statistics included.
    assert_eq!(d, r);
}

#[test]
fn the_plan_splits_the_global_batch_contiguously() {
    assert_eq!(batch_plan(32, 1, 0), vec![vec![(0, 32)]]);
    assert_eq!(batch_plan(32, 2, 0), vec![vec![(0, 16)], vec![(16, 32)]]);
    assert_eq!(
        batch_plan(10, 3, 2),
        vec![
            vec![(0, 2), (2, 3)],
            vec![(3, 5), (5, 6)],
            vec![(6, 8), (8, 10)]
        ]
    );
    assert_eq!(batch_plan(2, 4, 0), vec![vec![(0, 1)], vec![(1, 2)]]);
    // Every sample exactly once, in order.
    for (n, d, m) in [(7, 2, 0), (64, 3, 5), (5, 5, 1), (100, 4, 64)] {
        let flat: Vec<usize> = batch_plan(n, d, m)
            .concat()
            .into_iter()
            .flat_map(|(a, e)| {
                assert!(m == 0 || e - a <= m);
                a..e
            })
            .collect();
        assert_eq!(flat, (0..n).collect::<Vec<_>>(), "{n} {d} {m}");
    }
}
