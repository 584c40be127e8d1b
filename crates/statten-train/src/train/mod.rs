//! The training loop behind `statten train` and `statten eval`.
//!
//! Per epoch: batches from the threaded loader (order and augmentation from `(seed, epoch)`),
//! batch-level mixup while it is on, the [`Objective`](crate::objective) (forward
//! over T, the configured loss, backward) on every device's share, optional gradient clipping,
//! the optimizer step at the schedule's learning rate; then eval (top-1/5, plain CE on the
//! mean-over-T logits, firing rates for the energy report), `summary.csv`, `metrics.jsonl`,
//! `energy.json`, `curves.png`, and checkpoints `last`, `best` and every N.
//!
//! The files: [`setup`](Trainer::setup) (devices, data, model, resume) in `setup.rs`, the epoch
//! loop in `epoch.rs`, one optimizer step in `step.rs`, evaluation in `eval.rs`, checkpoints in
//! `save.rs`, datasets and loaders in `data.rs`.

mod data;
mod epoch;
mod eval;
mod save;
mod setup;
mod step;

use std::path::PathBuf;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::Instant;

use burn::prelude::*;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use statten_core::models::StattenModel;
use statten_data::loader::Loader;

use crate::checkpoint::{EpochRecord, PartialEpoch};
use crate::config::RunConfig;
use crate::energy::EnergyReport;
use crate::error::Result;
use crate::metrics::Mean;
use crate::objective::Objective;
use crate::optim::Optimizer;
use crate::parallel::{Collective, Replicas};
use crate::rundir::RunDir;

pub use data::{batches_per_epoch, datasets, TrainTest};
pub use eval::{
    eval_checkpoint, eval_checkpoint_weights, evaluate, evaluate_sharded, EvalResult, EvalSpec,
};

/// Options of a run that are not part of the config.
#[derive(Debug, Clone, Default)]
pub struct RunOptions {
    /// Run directory.
    pub output: PathBuf,
    /// Resume from this checkpoint.
    pub resume: Option<PathBuf>,
    /// Stop after this many epochs in this process (for tests of kill/resume); 0 = no limit.
    pub stop_after: usize,
    /// Draw progress bars (when stderr is a terminal).
    pub progress: bool,
    /// Print per-epoch lines (with the one-line energy figure of each eval) and the per-layer
    /// energy table at the end of the run.
    pub verbose: bool,
    /// Also print the per-layer energy table after every eval (`--verbose`).
    pub energy_table_each_eval: bool,
    /// Replace the run in `output` if there is one (without it, an existing run is an error
    /// unless resumed).
    pub overwrite: bool,
    /// Resume with a config that differs from the checkpoint's.
    pub allow_config_change: bool,
    /// Set (e.g. by a SIGINT/SIGTERM handler) to stop after the current step: a checkpoint
    /// with the position in the epoch is written and the run returns with
    /// [`RunSummary::stopped`] set.
    pub stop: Option<Arc<AtomicBool>>,
    /// Stop as on a signal after this many steps in this process (0 = no limit), for tests.
    pub stop_after_steps: usize,
    /// The ranks of a multi-process run ([`crate::parallel`]); `None` (or a world of one) trains
    /// in this process alone. Rank 0 alone writes the run directory. (`Rc`: collectives are
    /// called from the training thread only.)
    pub world: Option<std::rc::Rc<dyn Collective>>,
}

/// The outcome of a run.
#[derive(Debug, Clone)]
pub struct RunSummary {
    /// Per-epoch records (including those before a resume).
    pub history: Vec<EpochRecord>,
    /// Best eval top-1.
    pub best_top1: f64,
    /// Last energy report.
    pub energy: Option<EnergyReport>,
    /// Samples skipped as undecodable.
    pub skipped: usize,
    /// Steps skipped for a non-finite loss (`train.skip_nonfinite`), over the whole run.
    pub skipped_steps: usize,
    /// Where the run stopped when a stop was requested before its end.
    pub stopped: Option<StopPoint>,
}

/// Where a run stopped before its end, and how to continue it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StopPoint {
    /// The epoch (0-based) in progress.
    pub epoch: usize,
    /// Batches of that epoch done.
    pub batches_done: usize,
    /// The checkpoint that holds the run at that point.
    pub checkpoint: PathBuf,
}

/// How an epoch's training phase ended.
enum EpochEnd {
    /// All its batches ran; the running statistics.
    Done(PartialEpoch),
    /// A stop was requested after this many batches (checkpoint written).
    Stopped(StopPoint),
}

/// Whether a stop has been asked for.
fn stop_requested(opts: &RunOptions, steps_run: usize) -> bool {
    opts.stop
        .as_ref()
        .is_some_and(|s| s.load(std::sync::atomic::Ordering::SeqCst))
        || (opts.stop_after_steps > 0 && steps_run >= opts.stop_after_steps)
}

/// The training loop, in phases: [`Trainer::setup`] (devices, data, model, resume), then per
/// epoch `train_epoch` (steps, mid-epoch checkpoints, stop requests), evaluation and
/// `end_epoch` (records, plots, checkpoints). Every output file goes through the
/// [`RunDir`].
pub struct Trainer<'a> {
    cfg: &'a RunConfig,
    opts: &'a RunOptions,
    dir: RunDir,
    /// This process's devices (data parallel: the first is the main one) and its rank.
    replicas: Replicas,
    /// The ranks of a multi-process run (none: one process).
    world: Option<std::rc::Rc<dyn Collective>>,
    /// A stop all ranks agreed on in the last step's reduction.
    stop_agreed: bool,
    /// The main device without autodiff (evaluation).
    base: Device,
    train_loader: Loader,
    test_loader: Loader,
    mixup: statten_data::mixup::MixupConfig,
    objective: Objective,
    /// Always `Some` between steps (the optimizer takes the model by value).
    model: Option<StattenModel>,
    /// The model's moving average (`train.model_ema`), on the main device without autodiff.
    ema: Option<crate::ema::ModelEma>,
    opt: Optimizer,
    history: Vec<EpochRecord>,
    best: f64,
    /// Where this process starts: epoch and batch.
    start: (usize, usize),
    /// The resumed partial epoch's statistics.
    partial: Option<PartialEpoch>,
    /// Batches per epoch (after `train.max_batches`).
    nb: usize,
    energy: Option<EnergyReport>,
    skipped_steps: usize,
    /// The f16 loss scaler (`train.precision` resolved to f16).
    loss_scale: Option<crate::amp::LossScale>,
    /// Steps and epochs run by this process.
    steps_run: usize,
    epochs_run: usize,
    last_checkpoint_at: Instant,
    /// The steps since the last `steps.csv` row.
    log: LogWindow,
    /// The TensorBoard event file (rank 0, `train.tensorboard`).
    tb: Option<crate::tensorboard::EventWriter>,
}

/// The optimizer steps since the last `steps.csv` row.
struct LogWindow {
    loss: Mean,
    images: usize,
    since: Instant,
}

impl Default for LogWindow {
    fn default() -> Self {
        Self {
            loss: Mean::default(),
            images: 0,
            since: Instant::now(),
        }
    }
}

impl Trainer<'_> {
    /// The run directory.
    pub fn dir(&self) -> &RunDir {
        &self.dir
    }

    /// The EMA model (`train.model_ema`).
    pub fn ema(&self) -> Option<&crate::ema::ModelEma> {
        self.ema.as_ref()
    }

    /// The model as it stands (before the first step: its initial or `train.init_from`
    /// weights).
    pub fn model(&self) -> &StattenModel {
        self.model.as_ref().expect("model present between steps")
    }

    /// The ranks' collective when there are several.
    fn world(&self) -> Option<&dyn Collective> {
        self.world.as_deref().filter(|_| self.replicas.ranks > 1)
    }

    /// Run the remaining epochs.
    pub fn run(self) -> Result<RunSummary> {
        // Evaluation and the first device's steps run on this thread.
        let precision = self.replicas.precision;
        statten_core::conv::with_algorithm(self.cfg.train.conv_algorithm, || {
            statten_core::precision::with_precision(precision, || self.run_epochs())
        })
    }
}

/// Train as configured (see [`Trainer`]).
pub fn train(cfg: &RunConfig, opts: &RunOptions) -> Result<RunSummary> {
    Trainer::setup(cfg, opts)?.run()
}

/// A progress bar on stderr with `prefix` for `len` batches (hidden when `show` is false).
fn progress_bar(show: bool, len: usize, prefix: String) -> ProgressBar {
    let pb = if show {
        ProgressBar::with_draw_target(Some(len as u64), ProgressDrawTarget::stderr())
    } else {
        ProgressBar::hidden()
    };
    pb.set_style(
        ProgressStyle::with_template("{prefix} [{bar:28}] {pos}/{len} {msg} eta {eta}")
            .unwrap()
            .progress_chars("=> "),
    );
    pb.set_prefix(prefix);
    pb
}
