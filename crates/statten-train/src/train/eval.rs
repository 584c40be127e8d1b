//! Evaluation: a model on a loader's batches (sharded over ranks, the sums reduced), and a
//! checkpoint on a split of the config's dataset.

use std::path::Path;

use burn::prelude::*;
use statten_core::models::StattenModel;
use statten_core::monitor::Monitor;
use statten_data::cifar::Split;
use statten_data::loader::Loader;

use super::data::{check_classes, test_loader};
use super::progress_bar;
use crate::checkpoint;
use crate::config::RunConfig;
use crate::device::{device_failure, device_from_name, probe_device};
use crate::energy::{EnergyReport, RateAccumulator};
use crate::error::{Error, Result};
use crate::loss::cross_entropy;
use crate::metrics::{top1_top5, Mean};
use crate::objective::input_of;
use crate::parallel::Collective;

/// Eval results.
#[derive(Debug, Clone)]
pub struct EvalResult {
    /// Mean plain CE.
    pub loss: f64,
    /// Top-1 (%).
    pub top1: f64,
    /// Top-5 (%).
    pub top5: f64,
    /// Images evaluated.
    pub images: usize,
    /// Firing statistics.
    pub rates: RateAccumulator,
}

/// How to evaluate: the model's T, how many batches, whether to record firing statistics,
/// the ranks to shard over, and a progress bar's prefix.
#[derive(Debug, Clone, Copy, Default)]
pub struct EvalSpec<'a> {
    /// Time steps the input is encoded to.
    pub time_steps: usize,
    /// The first this many batches (0 = all).
    pub max_batches: usize,
    /// Record firing statistics (the energy report).
    pub monitor: bool,
    /// Shard over these ranks and reduce the sums (`None`: this process alone).
    pub world: Option<&'a dyn Collective>,
    /// Show a progress bar on stderr with this prefix.
    pub progress: Option<&'a str>,
}

/// Evaluate `model` (non-autodiff copy) on `loader`'s epoch 0.
pub fn evaluate(
    model: &StattenModel,
    loader: &Loader,
    t: usize,
    device: &Device,
    max_batches: usize,
    monitor: bool,
) -> Result<EvalResult> {
    let spec = EvalSpec {
        time_steps: t,
        max_batches,
        monitor,
        ..Default::default()
    };
    evaluate_sharded(model, loader, device, &spec)
}

/// [`evaluate`] over ranks: rank `r` of `R` takes the batches `i` with `i mod R = r`, and the
/// sums (loss, hits, samples, firing statistics) are reduced, so every rank gets the result
/// of the whole split.
pub fn evaluate_sharded(
    model: &StattenModel,
    loader: &Loader,
    device: &Device,
    spec: &EvalSpec,
) -> Result<EvalResult> {
    let EvalSpec {
        time_steps: t,
        max_batches,
        monitor,
        world,
        progress,
    } = *spec;
    let (rank, ranks) = world.map(|w| (w.rank(), w.size())).unwrap_or((0, 1));
    let (mut loss, mut n, mut c1, mut c5) = (Mean::default(), 0usize, 0usize, 0usize);
    let mut rates = RateAccumulator::default();
    let total = match max_batches {
        0 => loader.num_batches(),
        m => m.min(loader.num_batches()),
    };
    let pb = progress_bar(
        progress.is_some(),
        total.div_ceil(ranks),
        progress.unwrap_or("").to_string(),
    );
    for (i, b) in loader.epoch(0).enumerate() {
        if max_batches > 0 && i >= max_batches {
            break;
        }
        if i % ranks != rank {
            continue;
        }
        pb.inc(1);
        let b = b?;
        if b.is_empty() {
            continue;
        }
        let mut mon = if monitor {
            Monitor::enabled()
        } else {
            Monitor::disabled()
        };
        let x = input_of(&b, device).encode(t);
        let logits = model.forward_monitored(x, &mut mon);
        let l = cross_entropy(logits.clone(), b.targets(device), 0.0)
            .try_into_scalar::<f64>()
            .map_err(|e| Error::Device(device_failure(device, &e.to_string())))?;
        loss.add(l, b.len());
        let (a, b5) = top1_top5(logits, &b.labels);
        c1 += a;
        c5 += b5;
        n += b.len();
        if monitor {
            rates.add(&mon.stats(), b.len());
        }
        pb.set_message(format!(
            "loss {:.4} top-1 {:.2}%",
            loss.get(),
            100.0 * c1 as f64 / n.max(1) as f64
        ));
    }
    pb.finish_and_clear();
    let mut sums = EvalSums {
        loss,
        images: n,
        top1: c1,
        top5: c5,
        rates,
    };
    if let Some(w) = world.filter(|_| ranks > 1) {
        sums.all_reduce(w, monitor);
    }
    Ok(sums.result())
}

impl super::Trainer<'_> {
    /// Evaluate the model as it stands on the run's evaluation split, as an epoch's evaluation
    /// does (before the first step: the figures of its initial or `train.init_from` weights).
    pub fn evaluate_now(&self) -> Result<EvalResult> {
        let spec = EvalSpec {
            time_steps: self.cfg.model.time_steps,
            max_batches: self.cfg.train.max_batches,
            monitor: true,
            world: self.world(),
            progress: None,
        };
        let precision = self.replicas.precision;
        statten_core::conv::with_algorithm(self.cfg.train.conv_algorithm, || {
            statten_core::precision::with_precision(precision, || {
                evaluate_sharded(&self.model().valid(), &self.test_loader, &self.base, &spec)
            })
        })
    }
}

/// The sums of an evaluation (on one rank, or over all after [`EvalSums::all_reduce`]).
struct EvalSums {
    loss: Mean,
    images: usize,
    top1: usize,
    top5: usize,
    rates: RateAccumulator,
}

impl EvalSums {
    /// Every rank's sums on every rank (the firing statistics too when recorded).
    fn all_reduce(&mut self, w: &dyn Collective, monitor: bool) {
        let (ls, ln) = self.loss.parts();
        let mut sums = [
            ls,
            ln,
            self.images as f64,
            self.top1 as f64,
            self.top5 as f64,
        ];
        w.all_reduce_sum_f64(&mut sums);
        self.loss = Mean::from_parts(sums[0], sums[1]);
        self.images = sums[2] as usize;
        self.top1 = sums[3] as usize;
        self.top5 = sums[4] as usize;
        if monitor {
            self.rates.all_reduce(w);
        }
    }

    /// Mean loss and top-1/top-5 in % (0 without images).
    fn result(self) -> EvalResult {
        let n = self.images;
        let pct = |c: usize| {
            if n > 0 {
                100.0 * c as f64 / n as f64
            } else {
                0.0
            }
        };
        EvalResult {
            loss: self.loss.get(),
            top1: pct(self.top1),
            top5: pct(self.top5),
            images: n,
            rates: self.rates,
        }
    }
}

/// Evaluate a checkpoint (a statten checkpoint, or reference weights `.safetensors`/`.pth`) on
/// `split` of the config's dataset (eval transforms), the whole split or its first
/// `max_batches` batches (0 = all; `train.max_batches` is a training setting and does not
/// apply), with a progress bar when `progress`.
pub fn eval_checkpoint(
    cfg: &RunConfig,
    ckpt: &Path,
    split: Split,
    max_batches: usize,
    progress: bool,
) -> Result<(EvalResult, EnergyReport)> {
    eval_checkpoint_weights(cfg, ckpt, split, max_batches, progress, false)
}

/// [`eval_checkpoint`] on the EMA weights of a statten checkpoint when `ema` (`train.model_ema`;
/// a checkpoint without them is an error).
pub fn eval_checkpoint_weights(
    cfg: &RunConfig,
    ckpt: &Path,
    split: Split,
    max_batches: usize,
    progress: bool,
    ema: bool,
) -> Result<(EvalResult, EnergyReport)> {
    let base = device_from_name(&cfg.train.device)?;
    probe_device(&cfg.train.device, &base)?;
    let precision = cfg.train.precision.resolve(&base);
    statten_core::precision::check_support(precision, &base).map_err(|why| {
        Error::Config(format!(
            "train.precision = \"{}\" ({precision}): device `{}` cannot compute it: {why}",
            cfg.train.precision, cfg.train.device
        ))
    })?;
    let mut model = cfg.model.init(&base)?;
    if ema {
        checkpoint::load_ema_weights(ckpt, &mut model)?;
    } else {
        checkpoint::load_weights(ckpt, &mut model, &[])?;
    }
    let name = match split {
        Split::Train => "train",
        Split::Test => "test",
    };
    let ds = cfg.data.build_eval(split, cfg.model.time_steps)?;
    check_classes(&*ds, name, cfg)?;
    let loader = test_loader(cfg, ds);
    let ev = statten_core::conv::with_algorithm(cfg.train.conv_algorithm, || {
        statten_core::precision::with_precision(precision, || {
            let prefix = progress.then(|| format!("eval {name}"));
            let spec = EvalSpec {
                time_steps: cfg.model.time_steps,
                max_batches,
                monitor: true,
                world: None,
                progress: prefix.as_deref(),
            };
            evaluate_sharded(&model, &loader, &base, &spec)
        })
    })?;
    let rep = ev.rates.report_at(&cfg.model, 0, cfg.energy.precision);
    Ok((ev, rep))
}
