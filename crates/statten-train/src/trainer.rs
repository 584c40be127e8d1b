//! The training loop behind `statten train` and `statten eval`.
//!
//! Per epoch: batches from the threaded loader (order and augmentation from `(seed, epoch)`),
//! batch-level mixup while it is on, forward over T, the configured loss, backward, optional
//! gradient clipping, the optimizer step at the schedule's learning rate; then eval (top-1/5,
//! plain CE on the mean-over-T logits, firing rates for the energy report), `summary.csv`,
//! `metrics.jsonl`, `energy.json`, `curves.png`, and checkpoints `last`, `best` and every N.

use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::Instant;

use burn::optim::GradientsParams;
use burn::prelude::*;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use statten_core::models::{Input, StattenModel};
use statten_core::monitor::Monitor;
use statten_data::cifar::Split;
use statten_data::loader::{HostBatch, Loader, LoaderConfig};
use statten_data::mixup::mix_batch;
use statten_data::{Dataset, Rng};

use crate::checkpoint::{self, CheckpointMeta, EpochRecord, PartialEpoch};
use crate::config::{LossKind, RunConfig};
use crate::dist::{fingerprint, Collective};
use crate::energy::{EnergyReport, RateAccumulator};
use crate::error::{Error, Result};
use crate::loss::{cross_entropy, soft_target_cross_entropy, tet_loss};
use crate::metrics::{top1_top5, Mean};
use crate::optim::{clip_grad_norm, Optimizer};
use crate::rundir::{Existing, RunDir};

/// The Burn device for a name (`cpu` = flex). `wgpu:N` selects the N-th discrete GPU;
/// `wgpu:integrated:N`, `wgpu:virtual:N` and `wgpu:cpu` (a software adapter such as lavapipe)
/// select the other adapter kinds; `cpu:N` is the CPU again (data-parallel tests on one machine).
pub fn device_from_name(name: &str) -> Result<Device> {
    let lower = name.to_ascii_lowercase();
    let kind = lower.split(':').next().unwrap_or("");
    let feature = match kind {
        "cpu" | "flex" => "flex",
        "wgpu" | "gpu" => "wgpu",
        k => k,
    };
    let built = match feature {
        "flex" => cfg!(feature = "flex"),
        "wgpu" => cfg!(feature = "wgpu"),
        "ndarray" => cfg!(feature = "ndarray"),
        _ => true,
    };
    if !built {
        return Err(Error::Device(format!(
            "device `{name}`: this build has no {feature} backend (enable statten-train's \
             `{feature}` cargo feature)"
        )));
    }
    device_in_build(name, &lower)
}

fn device_in_build(name: &str, lower: &str) -> Result<Device> {
    let bad_index = |idx: &str| Error::Device(format!("device `{name}`: `{idx}` is not an index"));
    if let Some((kind, rest)) = lower.split_once(':') {
        return match kind {
            #[cfg(feature = "flex")]
            "cpu" | "flex" => {
                rest.parse::<usize>().map_err(|_| bad_index(rest))?;
                Ok(Device::flex())
            }
            #[cfg(feature = "ndarray")]
            #[allow(deprecated)]
            "ndarray" => {
                rest.parse::<usize>().map_err(|_| bad_index(rest))?;
                Ok(Device::ndarray())
            }
            #[cfg(feature = "wgpu")]
            "wgpu" | "gpu" => {
                use burn::tensor::DeviceKind as K;
                let kind = match rest.split_once(':') {
                    None if rest == "cpu" => K::Cpu,
                    None => K::DiscreteGpu(rest.parse().map_err(|_| bad_index(rest))?),
                    Some((k, i)) => {
                        let i: usize = i.parse().map_err(|_| bad_index(i))?;
                        match k {
                            "discrete" => K::DiscreteGpu(i),
                            "integrated" => K::IntegratedGpu(i),
                            "virtual" => K::VirtualGpu(i),
                            o => {
                                return Err(Error::Device(format!(
                                    "device `{name}`: unknown adapter kind `{o}` (discrete, \
                                     integrated, virtual, or wgpu:cpu)"
                                )))
                            }
                        }
                    }
                };
                Ok(Device::wgpu(kind))
            }
            o => Err(Error::Device(format!(
                "unknown device `{o}` (cpu, flex, ndarray, wgpu)"
            ))),
        };
    }
    match lower {
        #[cfg(feature = "flex")]
        "cpu" | "flex" => Ok(Device::flex()),
        #[cfg(feature = "ndarray")]
        #[allow(deprecated)]
        "ndarray" => Ok(Device::ndarray()),
        #[cfg(feature = "wgpu")]
        "wgpu" | "gpu" => Ok(Device::wgpu(Default::default())),
        o => Err(Error::Device(format!(
            "train.device: unknown device `{o}` (cpu, flex, ndarray, wgpu)"
        ))),
    }
}

/// Check that `device` can run: a wgpu device without an adapter (no GPU and no software
/// Vulkan, or an adapter index that does not exist) panics deep inside the runtime on first
/// use; this turns that into an error naming the device.
pub fn probe_device(name: &str, device: &Device) -> Result<()> {
    if !name.to_ascii_lowercase().starts_with("wgpu")
        && !name.to_ascii_lowercase().starts_with("gpu")
    {
        return Ok(());
    }
    let d = device.clone();
    // The runtime's own threads may fail first (no such adapter) and the probe then sees only
    // a closed channel: every panic during the probe is recorded, and the first that is not a
    // channel's is the cause.
    let seen = Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
    let hook = std::panic::take_hook();
    let record = seen.clone();
    std::panic::set_hook(Box::new(move |info| {
        let msg = panic_message(info.payload());
        if let Ok(mut v) = record.lock() {
            v.push(msg);
        }
    }));
    let r = std::panic::catch_unwind(move || {
        let t: Tensor<1> = Tensor::ones([4], &d);
        t.sum().into_scalar::<f32>()
    });
    std::panic::set_hook(hook);
    match r {
        Ok(4.0) => Ok(()),
        Ok(v) => Err(Error::Device(format!(
            "device `{name}`: a test sum gave {v}, not 4"
        ))),
        Err(p) => {
            let own = panic_message(&*p);
            let seen = seen.lock().map(|v| v.clone()).unwrap_or_default();
            let why = root_cause(&seen).unwrap_or(own);
            Err(Error::Device(format!(
                "device `{name}` is not available: {why}. Is there a GPU (or Mesa's lavapipe for \
                 software Vulkan) and the Vulkan loader? wgpu:N counts discrete GPUs; use \
                 wgpu:integrated:N, wgpu:virtual:N or wgpu:cpu for other adapters"
            )))
        }
    }
}

/// A panic's message (its `String` or `&str` payload).
fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    payload
        .downcast_ref::<String>()
        .cloned()
        .or_else(|| payload.downcast_ref::<&str>().map(|s| s.to_string()))
        .unwrap_or_else(|| "the thread panicked".into())
}

/// The first of `messages` (panics, in order) that is not a closed channel's: the cause, where
/// a device's worker thread failed and the caller saw only its channel close.
fn root_cause(messages: &[String]) -> Option<String> {
    let channel = |m: &String| {
        ["RecvError", "SendError", "channel closed", "disconnected"]
            .iter()
            .any(|c| m.contains(c))
    };
    messages
        .iter()
        .find(|m| !channel(m))
        .or(messages.first())
        .cloned()
}

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
    /// The ranks of a multi-process run ([`crate::dist`]); `None` (or a world of one) trains
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

fn to_input(b: &HostBatch, device: &Device) -> Input {
    if b.shape.len() == 5 {
        Input::Events(b.inputs::<5>(device))
    } else {
        Input::Static(b.inputs::<4>(device))
    }
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
    evaluate_sharded(model, loader, t, device, max_batches, monitor, None, None)
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

/// [`evaluate`] over ranks: rank `r` of `R` takes the batches `i` with `i mod R = r`, and the
/// sums (loss, hits, samples, firing statistics) are reduced, so every rank gets the result
/// of the whole split. With `progress`, a progress bar with that prefix runs on stderr.
#[allow(clippy::too_many_arguments)]
pub fn evaluate_sharded(
    model: &StattenModel,
    loader: &Loader,
    t: usize,
    device: &Device,
    max_batches: usize,
    monitor: bool,
    world: Option<&dyn Collective>,
    progress: Option<&str>,
) -> Result<EvalResult> {
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
        let x = to_input(&b, device).encode(t);
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
    if let Some(w) = world.filter(|_| ranks > 1) {
        let (ls, ln) = loss.parts();
        let mut sums = [ls, ln, n as f64, c1 as f64, c5 as f64];
        w.all_reduce_sum_f64(&mut sums);
        loss = Mean::from_parts(sums[0], sums[1]);
        (n, c1, c5) = (sums[2] as usize, sums[3] as usize, sums[4] as usize);
        if monitor {
            rates.all_reduce(w);
        }
    }
    let pct = |c: usize| {
        if n > 0 {
            100.0 * c as f64 / n as f64
        } else {
            0.0
        }
    };
    Ok(EvalResult {
        loss: loss.get(),
        top1: pct(c1),
        top5: pct(c5),
        images: n,
        rates,
    })
}

/// A train and a test dataset.
pub type TrainTest = (Arc<dyn Dataset>, Arc<dyn Dataset>);

/// Build the train and test datasets of a config, checking their labels against
/// `model.num_classes`.
pub fn datasets(cfg: &RunConfig) -> Result<TrainTest> {
    let t = cfg.model.time_steps;
    let train = cfg.data.build(Split::Train, t)?;
    check_classes(&*train, "train", cfg)?;
    let test = cfg.data.build(Split::Test, t)?;
    check_classes(&*test, "test", cfg)?;
    Ok((train, test))
}

/// Every label must be a class of the model: a dataset folder with more class folders, a labels
/// file with larger indices, or an N-Caltech101 root with other than 101 classes is an error
/// before training, not an index panic (or a silently shifted class) inside it.
fn check_classes(ds: &dyn Dataset, split: &str, cfg: &RunConfig) -> Result<()> {
    let k = cfg.model.num_classes;
    let root = cfg
        .data
        .resolved_root()
        .map(|p| p.display().to_string())
        .unwrap_or_else(|_| "the data folder".into());
    let n = ds.num_classes();
    let exact = cfg.data.dataset == statten_data::config::DatasetName::Ncaltech101;
    if n > k || (exact && n != k) {
        return Err(Error::Data(format!(
            "{root}: the {split} set has {n} classes but model.num_classes = {k} ({:?} has {k})",
            cfg.data.dataset
        )));
    }
    if let Some((i, l)) = (0..ds.len())
        .map(|i| (i, ds.label(i)))
        .find(|&(_, l)| l >= k)
    {
        return Err(Error::Data(format!(
            "{root}: {split} sample {i} has label {l}, not below model.num_classes = {k}"
        )));
    }
    Ok(())
}

fn workers(cfg: &RunConfig) -> usize {
    if cfg.data.workers > 0 {
        cfg.data.workers
    } else {
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1)
    }
}

/// Loss of `model` on batch `b` (scaled by `scale`), its gradients, and the number of top-1
/// hits against `labels`.
#[allow(clippy::too_many_arguments)]
fn step_grads(
    model: &StattenModel,
    b: &HostBatch,
    labels: &[usize],
    soft: Option<&[f32]>,
    cfg: &RunConfig,
    loss_kind: LossKind,
    device: &Device,
    scale: f64,
) -> Result<(f64, usize, GradientsParams)> {
    let t = cfg.model.time_steps;
    let k = cfg.model.num_classes;
    let x = to_input(b, device).encode(t);
    let mut mon = Monitor::disabled();
    let targets = b.targets(device);
    let (loss, logits) = match loss_kind {
        LossKind::Tet => {
            let out = model.forward_time_monitored(x, &mut mon);
            let [_, bb, kk] = out.dims();
            let logits = out.clone().mean_dim(0).reshape([bb, kk]);
            let l = tet_loss(
                out,
                targets,
                cfg.loss.label_smoothing,
                cfg.loss.tet_lambda,
                cfg.loss.tet_means,
            );
            (l, logits)
        }
        LossKind::SoftTarget => {
            let logits = model.forward_monitored(x, &mut mon);
            let s = soft.expect("soft targets").to_vec();
            let st: Tensor<2> = Tensor::from_data(TensorData::new(s, [b.len(), k]), device);
            (soft_target_cross_entropy(logits.clone(), st), logits)
        }
        LossKind::Ce | LossKind::Auto => {
            let logits = model.forward_monitored(x, &mut mon);
            (
                cross_entropy(logits.clone(), targets, cfg.loss.label_smoothing),
                logits,
            )
        }
    };
    let loss = if scale != 1.0 {
        loss.mul_scalar(scale)
    } else {
        loss
    };
    // The first read of this step: a failure of its forward (or of the previous step's
    // backward and update, which run lazily on a GPU) surfaces here as an error, not a panic.
    let value = loss
        .clone()
        .try_into_scalar::<f64>()
        .map_err(|e| Error::Device(device_failure(device, &e.to_string())))?;
    let grads = GradientsParams::from_grads(loss.backward(), model);
    let correct = top1_top5(logits.inner(), labels).0;
    Ok((value, correct, grads))
}

/// The usual cause of a step that fails on a device, for its error message.
pub const DEVICE_FAILURE_CAUSE: &str = "a tensor larger than the device's largest buffer (wgpu \
    binds at most 2 GiB, whatever the GPU's memory) or more memory than the device has is the \
    usual cause";

/// The message of a step that failed on `device`, with the usual cause.
fn device_failure(device: &Device, what: &str) -> String {
    format!(
        "a step failed on {device:?}: {what}\n{DEVICE_FAILURE_CAUSE}: lower train.batch_size \
         (or set train.micro_batch to split each batch) or, in evaluation, \
         train.eval_batch_size"
    )
}

/// Rows `[a, b)` of a batch.
fn rows(b: &HostBatch, a: usize, e: usize) -> HostBatch {
    let per = b.data.len() / b.len().max(1);
    let mut shape = b.shape.clone();
    shape[0] = e - a;
    HostBatch {
        data: b.data[a * per..e * per].to_vec(),
        shape,
        labels: b.labels[a..e].to_vec(),
        indices: b.indices[a..e].to_vec(),
    }
}

/// How a global batch of `n` samples is run: per device a contiguous share
/// (`i·n/d .. (i+1)·n/d`, so shares differ by at most one sample), each cut into micro-batches of
/// at most `micro` samples (0 = the whole share). With fewer samples than devices (a last,
/// short batch) the first `n` devices take one each.
pub fn batch_plan(n: usize, devices: usize, micro: usize) -> Vec<Vec<(usize, usize)>> {
    let d = devices.min(n).max(1);
    (0..d)
        .map(|i| {
            let (a, e) = (i * n / d, (i + 1) * n / d);
            let m = if micro == 0 { (e - a).max(1) } else { micro };
            (a..e).step_by(m).map(|s| (s, (s + m).min(e))).collect()
        })
        .collect()
}

/// A replica of `model` for another device: fresh autodiff leaves (`fork`) and running
/// statistics of its own. A plain clone shares its BatchNorm running-state cells with `model`,
/// and Burn averages the updates several threads make to one cell; DDP keeps the first
/// replica's statistics and drops the others'.
fn detached_replica(model: &StattenModel, device: &Device) -> StattenModel {
    model.valid().train().fork(device)
}

/// The loss, top-1 hits and gradients of one device's share (its micro-batches in turn), each
/// piece's loss weighted by its part of the global batch of `n`, gradients moved to `main`.
#[allow(clippy::too_many_arguments)]
fn share_grads(
    replica: &StattenModel,
    share: &[(usize, usize)],
    n: usize,
    b: &HostBatch,
    labels: &[usize],
    soft: Option<&[f32]>,
    cfg: &RunConfig,
    loss_kind: LossKind,
    device: &Device,
    main: &Device,
) -> Result<(f64, usize, GradientsParams)> {
    let k = cfg.model.num_classes;
    let mut total = GradientsParams::new();
    let (mut loss, mut correct) = (0.0, 0);
    for &(a, e) in share {
        // The whole batch in one piece is used as it is (weight 1: the plain step).
        let owned;
        let part = if (a, e) == (0, n) {
            b
        } else {
            owned = rows(b, a, e);
            &owned
        };
        let sp = soft.map(|s| &s[a * k..e * k]);
        // On this thread (a device's replica runs on its own): the forward and the backward.
        let (l, c, g) = statten_core::conv::with_algorithm(cfg.train.conv_algorithm, || {
            step_grads(
                replica,
                part,
                &labels[a..e],
                sp,
                cfg,
                loss_kind,
                device,
                (e - a) as f64 / n as f64,
            )
        })?;
        add_grads(replica, &mut total, g);
        loss += l;
        correct += c;
    }
    Ok((loss, correct, total.to_device(main, replica)))
}

/// One step's gradients over `devices` and micro-batches ([`batch_plan`]): the first device's
/// share runs on this thread with the main model, every other device's at the same time on a
/// thread of its own with a [`detached_replica`]; the gradients are summed on the first device in
/// device order (the result does not depend on which thread finishes first).
#[allow(clippy::too_many_arguments)]
fn parallel_grads(
    model: &StattenModel,
    b: &HostBatch,
    labels: &[usize],
    soft: Option<&[f32]>,
    cfg: &RunConfig,
    loss_kind: LossKind,
    devices: &[Device],
    names: &[String],
    (rank, ranks): (usize, usize),
) -> Result<(f64, usize, GradientsParams)> {
    let n = b.len();
    // This rank's devices take parts rank·D .. (rank+1)·D of the global plan (none of a batch
    // shorter than the ranks × devices).
    let d = devices.len();
    let global = batch_plan(n, ranks * d, cfg.train.micro_batch);
    let plan: Vec<Vec<(usize, usize)>> = global.into_iter().skip(rank * d).take(d).collect();
    if plan.is_empty() {
        return Ok((0.0, 0, GradientsParams::new()));
    }
    let main = &devices[0];
    let run = |replica: &StattenModel, i: usize| {
        share_grads(
            replica,
            &plan[i],
            n,
            b,
            labels,
            soft,
            cfg,
            loss_kind,
            &devices[i],
            main,
        )
    };
    if plan.len() == 1 {
        return run(model, 0);
    }
    let results = std::thread::scope(|s| {
        let others: Vec<_> = (1..plan.len())
            .map(|i| {
                let replica = detached_replica(model, &devices[i]);
                let run = &run;
                s.spawn(move || run(&replica, i))
            })
            .collect();
        let mut out = vec![run(model, 0)];
        for (i, h) in others.into_iter().enumerate() {
            out.push(
                h.join()
                    .map_err(|p| {
                        let why = panic_message(&*p);
                        let name = names.get(i + 1).map(String::as_str).unwrap_or("?");
                        Error::Device(format!("the replica on device `{name}` failed: {why}"))
                    })
                    .and_then(|r| r),
            );
        }
        out
    });
    let mut total = GradientsParams::new();
    let (mut loss, mut correct) = (0.0, 0);
    for r in results {
        let (l, c, g) = r?;
        add_grads(model, &mut total, g);
        loss += l;
        correct += c;
    }
    Ok((loss, correct, total))
}

/// `into += from`, parameter by parameter.
fn add_grads<M: burn::module::Module>(
    module: &M,
    into: &mut GradientsParams,
    from: GradientsParams,
) {
    struct Add<'a> {
        into: &'a mut GradientsParams,
        from: GradientsParams,
    }
    impl burn::module::ModuleVisitor for Add<'_> {
        fn visit_float<const D: usize>(&mut self, p: &burn::module::Param<Tensor<D>>) {
            if let Some(g) = self.from.remove::<D>(p.id) {
                let sum = match self.into.remove::<D>(p.id) {
                    Some(acc) => acc + g,
                    None => g,
                };
                self.into.register::<D>(p.id, sum);
            }
        }
    }
    module.visit(&mut Add { into, from });
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

/// Batches per epoch: the loader's, or `train.max_batches` when fewer.
fn nb_of(cfg: &RunConfig, loader: &Loader) -> usize {
    match cfg.train.max_batches {
        0 => loader.num_batches(),
        m => m.min(loader.num_batches()),
    }
}

/// The training loop, in phases: [`Trainer::setup`] (devices, data, model, resume), then per
/// epoch `train_epoch` (steps, mid-epoch checkpoints, stop requests), evaluation and
/// `end_epoch` (records, plots, checkpoints). Every output file goes through the
/// [`RunDir`].
pub struct Trainer<'a> {
    cfg: &'a RunConfig,
    opts: &'a RunOptions,
    dir: RunDir,
    /// Autodiff devices of the data-parallel replicas (the first is the main one).
    replicas: Vec<Device>,
    /// Their names, for messages.
    names: Vec<String>,
    /// The ranks of a multi-process run (none: one process).
    world: Option<std::rc::Rc<dyn Collective>>,
    rank: usize,
    ranks: usize,
    /// A stop all ranks agreed on in the last step's reduction.
    stop_agreed: bool,
    /// The main device without autodiff (evaluation).
    base: Device,
    train_loader: Loader,
    test_loader: Loader,
    mixup: statten_data::mixup::MixupConfig,
    loss_kind: LossKind,
    /// Always `Some` between steps (the optimizer takes the model by value).
    model: Option<StattenModel>,
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
    /// Steps and epochs run by this process.
    steps_run: usize,
    epochs_run: usize,
    last_checkpoint_at: Instant,
    /// The steps since the last `steps.csv` row.
    log: LogWindow,
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

impl<'a> Trainer<'a> {
    /// Devices, loaders, the run directory, the model and optimizer (from the checkpoint when
    /// resuming).
    pub fn setup(cfg: &'a RunConfig, opts: &'a RunOptions) -> Result<Self> {
        // Data parallel: the batch is split over `train.devices` (the first is the main
        // device); without them, `train.device` alone.
        let names = if cfg.train.devices.is_empty() {
            std::slice::from_ref(&cfg.train.device)
        } else {
            &cfg.train.devices[..]
        };
        let replicas: Vec<Device> = names
            .iter()
            .map(|d| device_from_name(d).map(|d| d.autodiff()))
            .collect::<Result<_>>()?;
        for (n, d) in names.iter().zip(&replicas) {
            probe_device(n, d)?;
        }
        let (rank, ranks) = opts
            .world
            .as_ref()
            .map(|w| (w.rank(), w.size()))
            .unwrap_or((0, 1));
        if cfg.train.batch_size < names.len() * ranks {
            return Err(Error::Config(format!(
                "train.batch_size = {} is the global batch and is smaller than the {} ranks × {} \
                 devices: each device needs at least one sample",
                cfg.train.batch_size,
                ranks,
                names.len()
            )));
        }
        if let Some(w) = opts.world.as_ref().filter(|_| ranks > 1) {
            // Every rank must run the same resolved config (rank 0's is the run's).
            let mine = fingerprint(&cfg.to_toml());
            let mut theirs = [mine];
            w.broadcast_u64(&mut theirs);
            if theirs[0] != mine {
                return Err(Error::Distributed(format!(
                    "rank {rank}: the resolved config differs from rank 0's (another config \
                     file, --set or data folder); every rank must run the same config"
                )));
            }
        }
        let names = names.to_vec();
        let base = device_from_name(&names[0])?;
        let ad = replicas[0].clone();
        let (train_ds, test_ds) = datasets(cfg)?;
        let mixup = cfg.mixup();
        let train_loader = Loader::new(
            train_ds.clone(),
            LoaderConfig {
                batch_size: cfg.train.batch_size,
                shuffle: true,
                seed: cfg.train.seed,
                workers: workers(cfg),
                prefetch: 2,
                drop_last: mixup.active(),
                on_error: cfg.data.on_error,
            },
        );
        let eval_bs = cfg.train.eval_batch();
        let test_loader = Loader::new(
            test_ds,
            LoaderConfig {
                batch_size: eval_bs,
                shuffle: false,
                seed: cfg.train.seed,
                workers: workers(cfg),
                prefetch: 2,
                drop_last: false,
                on_error: cfg.data.on_error,
            },
        );
        if train_loader.num_batches() == 0 {
            return Err(Error::Data(format!(
                "the training set has {} samples, fewer than one batch of {}",
                train_ds.len(),
                cfg.train.batch_size
            )));
        }
        // Read the checkpoint before touching the run directory: a bad one changes nothing.
        let resume_meta = match &opts.resume {
            Some(ck) => Some(checkpoint::read_meta(ck)?),
            None => None,
        };
        if let (Some(meta), Some(ck)) = (&resume_meta, &opts.resume) {
            // Compared as configs, not text: a key added since (at its default) is no change.
            let differs = if meta.config == cfg.to_toml() || opts.allow_config_change {
                None
            } else {
                match RunConfig::parse(&meta.config, &[]) {
                    Ok(old) if old == *cfg => None,
                    Ok(old) => Some(
                        crate::config::config_differences(&old, cfg, ("in the checkpoint", "now"))
                            .join("; "),
                    ),
                    Err(e) => Some(format!("its config does not parse with this statten: {e}")),
                }
            };
            if let Some(what) = differs {
                return Err(Error::checkpoint(
                    ck.clone(),
                    format!(
                        "{} was written with another config ({what}); resume with the same \
                         config (the run's config.toml), or pass --allow-config-change to \
                         continue with this one",
                        ck.display()
                    ),
                ));
            }
        }
        let existing = if opts.resume.is_some() {
            Existing::Resume
        } else if opts.overwrite {
            Existing::Overwrite
        } else {
            Existing::Refuse
        };
        let dir = if rank == 0 {
            RunDir::prepare(&opts.output, existing)?
        } else {
            RunDir::at(&opts.output)
        };

        // Ranks in one process (tests) share Burn's generator: rank 0 draws its initial weights
        // first, and every rank takes rank 0's weights below, as DDP does at construction.
        let barrier = || {
            if let Some(w) = opts.world.as_ref().filter(|_| ranks > 1) {
                w.all_reduce_sum_f64(&mut [0.0]);
            }
        };
        if rank > 0 {
            barrier();
        }
        base.seed(cfg.train.seed);
        ad.seed(cfg.train.seed);
        // Burn initialises parameters lazily, on first use: draw them all now, in the module's
        // order, so that the initial weights depend on the seed alone (not on the order of a
        // first forward, nor on another rank drawing from the same generator).
        let model = cfg.model.init(&ad).map_err(Error::Model).inspect(|m| {
            struct Draw;
            impl burn::module::ModuleVisitor for Draw {
                fn visit_float<const D: usize>(&mut self, p: &burn::module::Param<Tensor<D>>) {
                    let _ = p.val();
                }
            }
            m.visit(&mut Draw);
        });
        if rank == 0 {
            barrier();
        }
        let mut model = model?;
        let mut opt = Optimizer::new(&cfg.optimizer);
        let mut history = Vec::new();
        let mut best = f64::NEG_INFINITY;
        let mut start = (0, 0);
        let mut partial = None;
        let mut skipped_steps = 0;
        if let Some(ck) = &opts.resume {
            let meta = checkpoint::load(ck, &mut model, Some(&mut opt), &ad)?;
            start = (meta.epochs_done, meta.batches_done);
            partial = meta.partial.filter(|_| meta.batches_done > 0);
            history = meta.history;
            best = meta.best_top1;
            skipped_steps = meta.skipped_steps;
            if rank == 0 {
                dir.rewrite_metrics(&history)?;
                dir.trim_steps(
                    (meta.epochs_done * nb_of(cfg, &train_loader) + meta.batches_done) as u64,
                )?;
            }
            if opts.verbose {
                if start.1 > 0 {
                    println!(
                        "resumed from {} at epoch {}, batch {}",
                        ck.display(),
                        start.0 + 1,
                        start.1
                    );
                } else {
                    println!("resumed from {} after epoch {}", ck.display(), start.0);
                }
            }
        }
        if rank == 0 {
            dir.write_config(&cfg.to_toml())?;
        }
        if let Some(w) = opts.world.as_ref().filter(|_| ranks > 1) {
            model = broadcast_floats(&**w, model);
        }
        let nb = nb_of(cfg, &train_loader);
        Ok(Self {
            cfg,
            opts,
            dir,
            replicas,
            names,
            world: opts.world.clone(),
            rank,
            ranks,
            stop_agreed: false,
            base,
            train_loader,
            test_loader,
            mixup,
            loss_kind: cfg.loss_kind(),
            model: Some(model),
            opt,
            history,
            best,
            start,
            partial,
            nb,
            energy: None,
            skipped_steps,
            steps_run: 0,
            epochs_run: 0,
            last_checkpoint_at: Instant::now(),
            log: LogWindow::default(),
        })
    }

    /// The run directory.
    pub fn dir(&self) -> &RunDir {
        &self.dir
    }

    fn model(&self) -> &StattenModel {
        self.model.as_ref().expect("model present between steps")
    }

    /// Run the remaining epochs.
    pub fn run(self) -> Result<RunSummary> {
        // Evaluation and the first device's steps run on this thread.
        statten_core::conv::with_algorithm(self.cfg.train.conv_algorithm, || self.run_epochs())
    }

    fn run_epochs(mut self) -> Result<RunSummary> {
        let total = self.cfg.total_epochs();
        let mut stopped = None;
        for epoch in self.start.0..total {
            if self.opts.stop_after > 0 && self.epochs_run >= self.opts.stop_after {
                break;
            }
            self.epochs_run += 1;
            let first = if epoch == self.start.0 {
                self.start.1
            } else {
                0
            };
            let resumed = if first > 0 { self.partial.take() } else { None };
            match self.train_epoch(epoch, first, resumed)? {
                EpochEnd::Done(stats) => self.end_epoch(epoch, stats)?,
                EpochEnd::Stopped(p) => {
                    stopped = Some(p);
                    break;
                }
            }
        }
        if self.opts.verbose && !self.opts.energy_table_each_eval && stopped.is_none() {
            if let Some(rep) = &self.energy {
                print!("firing rates of the last eval: {}", rep.table());
            }
        }
        Ok(RunSummary {
            history: self.history,
            best_top1: self.best,
            energy: self.energy,
            skipped: self.train_loader.skipped() + self.test_loader.skipped(),
            skipped_steps: self.skipped_steps,
            stopped,
        })
    }

    /// Train one epoch from batch `first` (with the statistics of the batches before it).
    fn train_epoch(
        &mut self,
        epoch: usize,
        first: usize,
        resumed: Option<PartialEpoch>,
    ) -> Result<EpochEnd> {
        let (cfg, nb, total) = (self.cfg, self.nb, self.cfg.total_epochs());
        let prior = resumed.unwrap_or_default();
        let t0 = Instant::now();
        let pb = progress_bar(
            self.opts.progress,
            nb,
            format!("epoch {}/{}", epoch + 1, total),
        );
        pb.set_position(first.min(nb) as u64);
        let mut loss = Mean::from_parts(prior.loss_sum, prior.loss_n);
        let (mut correct, mut seen) = (prior.correct, prior.seen);
        let stats = |loss: &Mean, correct, seen, t0: &Instant| {
            let (loss_sum, loss_n) = loss.parts();
            PartialEpoch {
                loss_sum,
                loss_n,
                correct,
                seen,
                seconds: prior.seconds + t0.elapsed().as_secs_f64(),
            }
        };
        if first >= nb {
            pb.finish_and_clear();
            return Ok(EpochEnd::Done(stats(&loss, correct, seen, &t0)));
        }
        let mut images = 0usize;
        for (j, b) in self.train_loader.epoch_from(epoch, first).enumerate() {
            let i = first + j;
            if i >= nb {
                break;
            }
            let mut b = b?;
            if self.mixup.active_at(epoch) && b.len() % 2 == 1 {
                // A sample skipped as undecodable (data.on_error = "skip") left an odd batch;
                // mixup pairs each sample with its mirror, so the last one sits this step out.
                let e = b.len() - 1;
                b = rows(&b, 0, e);
            }
            let n = b.len();
            if n > 0 {
                if let Some((lv, c)) = self.step(epoch, i, b)? {
                    loss.add(lv, n);
                    correct += c;
                    seen += n;
                    self.log.loss.add(lv, 1);
                }
                images += n;
                self.log.images += n;
            }
            self.steps_run += 1;
            self.log_step(epoch, i)?;
            let rate = images as f64 / t0.elapsed().as_secs_f64().max(1e-9);
            pb.set_message(format!(
                "loss {:.4} acc {:.2}% lr {:.2e} {:.1} img/s",
                loss.get(),
                100.0 * correct as f64 / seen.max(1) as f64,
                cfg.schedule.lr_for(cfg.optimizer.lr, epoch, i, nb),
                rate
            ));
            pb.inc(1);
            let done = i + 1;
            let stop = if self.ranks > 1 {
                self.stop_agreed
            } else {
                stop_requested(self.opts, self.steps_run)
            };
            if stop {
                pb.finish_and_clear();
                let s = stats(&loss, correct, seen, &t0);
                self.save_mid_epoch(epoch, done, s)?;
                return Ok(EpochEnd::Stopped(StopPoint {
                    epoch,
                    batches_done: done,
                    checkpoint: self.dir.last_checkpoint(),
                }));
            }
            if done < nb && self.mid_epoch_checkpoint_due(done) {
                self.save_mid_epoch(epoch, done, stats(&loss, correct, seen, &t0))?;
            }
        }
        pb.finish_and_clear();
        Ok(EpochEnd::Done(stats(&loss, correct, seen, &t0)))
    }

    /// Every `train.log_every` global steps: a `steps.csv` row (rank 0) with the window's mean
    /// loss and images/s, then a fresh window.
    fn log_step(&mut self, epoch: usize, i: usize) -> Result<()> {
        let every = self.cfg.train.log_every;
        let step = (epoch * self.nb + i + 1) as u64;
        if every == 0 || !step.is_multiple_of(every as u64) {
            return Ok(());
        }
        let w = std::mem::take(&mut self.log);
        if self.rank == 0 {
            let cfg = self.cfg;
            self.dir.append_steps(&[crate::rundir::StepRecord {
                step,
                epoch,
                batch: i + 1,
                loss: w.loss.get(),
                lr: cfg.schedule.lr_for(cfg.optimizer.lr, epoch, i, self.nb),
                images_per_s: w.images as f64 / w.since.elapsed().as_secs_f64().max(1e-9),
                time: crate::rundir::unix_now(),
            }])?;
        }
        Ok(())
    }

    fn mid_epoch_checkpoint_due(&self, done: usize) -> bool {
        let t = &self.cfg.train;
        (t.checkpoint_every_steps > 0 && done.is_multiple_of(t.checkpoint_every_steps))
            || (t.checkpoint_every_minutes > 0.0
                && self.last_checkpoint_at.elapsed().as_secs_f64()
                    >= t.checkpoint_every_minutes * 60.0)
    }

    /// One optimizer step on batch `i` of `epoch`; `None` when a non-finite loss was skipped.
    /// Returns the batch's loss and top-1 hits.
    fn step(&mut self, epoch: usize, i: usize, mut b: HostBatch) -> Result<Option<(f64, usize)>> {
        let (cfg, nb) = (self.cfg, self.nb);
        let k = cfg.model.num_classes;
        let lr = cfg.schedule.lr_for(cfg.optimizer.lr, epoch, i, nb);
        let labels = b.labels.clone();
        // Soft targets: mixed while mixup is on, else smoothed one-hot (soft-target loss after
        // mixup's off epoch, as timm's targets without mixing).
        let soft = if self.mixup.active_at(epoch) {
            let mut mrng = Rng::derive(&[cfg.train.seed, epoch as u64, i as u64, 0x4D49_5855]);
            Some(
                mix_batch(&mut b, k, &self.mixup, &mut mrng)
                    .map_err(Error::Data)?
                    .0,
            )
        } else if self.loss_kind == LossKind::SoftTarget {
            Some(statten_data::mixup::smooth_one_hot(
                &b.labels,
                k,
                cfg.loss.label_smoothing,
            ))
        } else {
            None
        };
        // A skipped step must leave the BatchNorm running statistics as they were.
        let buffers = cfg.train.skip_nonfinite.then(|| buffers_of(self.model()));
        let (lv, correct, grads) = parallel_grads(
            self.model(),
            &b,
            &labels,
            soft.as_deref(),
            cfg,
            self.loss_kind,
            &self.replicas,
            &self.names,
            (self.rank, self.ranks),
        )?;
        let (lv, correct, grads) = match &self.world {
            Some(w) if self.ranks > 1 => {
                let stop = stop_requested(self.opts, self.steps_run + 1);
                let (lv, correct, grads, stop) =
                    all_reduce_step(&**w, self.model(), lv, correct, grads, stop);
                self.stop_agreed = stop;
                (lv, correct, grads)
            }
            _ => (lv, correct, grads),
        };
        if !lv.is_finite() {
            if let Some(buffers) = buffers {
                let m = self.model.take().expect("model");
                self.model = Some(m.map(&mut RestoreBuffers(buffers)));
                self.skipped_steps += 1;
                if self.opts.verbose {
                    eprintln!(
                        "warning: epoch {}/{}, step {}/{nb}: loss is {lv}; step skipped \
                         (train.skip_nonfinite), {} so far",
                        epoch + 1,
                        cfg.total_epochs(),
                        i + 1,
                        self.skipped_steps
                    );
                }
                return Ok(None);
            }
            let last = self.dir.last_checkpoint();
            let kept = if last.exists() {
                format!(
                    "{} holds the run before this step's epoch or mid-epoch checkpoint",
                    last.display()
                )
            } else {
                "no checkpoint was written yet".into()
            };
            return Err(Error::Diverged {
                epoch,
                step: i,
                loss: lv,
                message: format!(
                    "epoch {}/{}, step {}/{nb}: the loss is {lv} (diverged); {kept}. Lower \
                     optimizer.lr, or set train.skip_nonfinite = true to skip such steps",
                    epoch + 1,
                    cfg.total_epochs(),
                    i + 1
                ),
            });
        }
        drop(buffers);
        let grads = if cfg.optimizer.clip_grad > 0.0 {
            clip_grad_norm(self.model(), grads, cfg.optimizer.clip_grad).0
        } else {
            grads
        };
        let m = self.model.take().expect("model");
        self.model = Some(self.opt.step(lr, m, grads));
        Ok(Some((lv, correct)))
    }

    /// Evaluate, record and log the epoch, then write its checkpoints.
    fn end_epoch(&mut self, epoch: usize, stats: PartialEpoch) -> Result<()> {
        let cfg = self.cfg;
        let total = cfg.total_epochs();
        let t_eval = Instant::now();
        let last = epoch + 1 == total
            || (self.opts.stop_after > 0 && self.epochs_run == self.opts.stop_after);
        let do_eval = cfg.train.eval_interval > 0
            && ((epoch + 1).is_multiple_of(cfg.train.eval_interval) || epoch + 1 == total)
            || last;
        let mut rec = EpochRecord {
            epoch,
            train_loss: Mean::from_parts(stats.loss_sum, stats.loss_n).get(),
            train_top1: 100.0 * stats.correct as f64 / stats.seen.max(1) as f64,
            eval_loss: f64::NAN,
            eval_top1: f64::NAN,
            eval_top5: f64::NAN,
            lr: cfg.schedule.lr_for(cfg.optimizer.lr, epoch, 0, self.nb),
            images_per_s: stats.seen as f64 / stats.seconds.max(1e-9),
            seconds: 0.0,
            finished_at: 0,
        };
        if do_eval {
            if let Some(w) = self.world.clone().filter(|_| self.ranks > 1) {
                // Rank 0's running statistics on every rank, as DDP's buffer broadcast.
                let m = self.model.take().expect("model");
                self.model = Some(broadcast_buffers(&*w, m));
            }
            let ev = evaluate_sharded(
                &self.model().valid(),
                &self.test_loader,
                cfg.model.time_steps,
                &self.base,
                cfg.train.max_batches,
                true,
                self.world.as_deref().filter(|_| self.ranks > 1),
                self.opts
                    .progress
                    .then(|| format!("eval {}/{total}", epoch + 1))
                    .as_deref(),
            )?;
            rec.eval_loss = ev.loss;
            rec.eval_top1 = ev.top1;
            rec.eval_top5 = ev.top5;
            let rep = ev.rates.report(&cfg.model, epoch);
            if self.rank == 0 {
                self.dir.write_energy(epoch, &rep)?;
            }
            if self.opts.energy_table_each_eval {
                print!("{}", rep.table());
            } else if self.opts.verbose {
                println!("{}", rep.summary_line());
            }
            self.energy = Some(rep);
        }
        rec.seconds = stats.seconds + t_eval.elapsed().as_secs_f64();
        rec.finished_at = crate::rundir::unix_now();
        if self.opts.verbose {
            let eval = if rec.eval_top1.is_finite() {
                format!(
                    "eval loss {:.4} top-1 {:.2}% top-5 {:.2}%",
                    rec.eval_loss, rec.eval_top1, rec.eval_top5
                )
            } else {
                "(no eval this epoch)".into()
            };
            println!(
                "epoch {:>3}/{total}  train loss {:.4} top-1 {:.2}%  {eval}  lr {:.3e}  {:.1} img/s  {:.1}s",
                epoch + 1, rec.train_loss, rec.train_top1, rec.lr, rec.images_per_s, rec.seconds
            );
        }
        self.history.push(rec.clone());
        if self.rank == 0 {
            self.dir.append_epoch(&rec)?;
            self.dir.write_summary(&self.history)?;
            if cfg.train.plot {
                let name = self
                    .dir
                    .root()
                    .file_name()
                    .map(|n| n.to_string_lossy().into_owned())
                    .unwrap_or_default();
                crate::plot::draw_curves(&self.history, total, &name, &self.dir.curves())?;
            }
        }
        let improved = rec.eval_top1.is_finite() && rec.eval_top1 > self.best;
        if improved {
            self.best = rec.eval_top1;
        }
        self.save_epoch_end(epoch + 1, improved)
    }

    fn meta(
        &self,
        epochs_done: usize,
        batches_done: usize,
        partial: Option<PartialEpoch>,
    ) -> CheckpointMeta {
        CheckpointMeta {
            version: 1,
            epochs_done,
            best_top1: self.best,
            history: self.history.clone(),
            optim_steps: Default::default(),
            config: self.cfg.to_toml(),
            batches_done,
            partial,
            skipped_steps: self.skipped_steps,
            optimizer: self.opt.kind_name().to_string(),
        }
    }

    /// `last` with the position inside the epoch.
    fn save_mid_epoch(&mut self, epoch: usize, done: usize, stats: PartialEpoch) -> Result<()> {
        if self.rank > 0 {
            return Ok(());
        }
        let meta = self.meta(epoch, done, Some(stats));
        checkpoint::save(&self.dir.last_checkpoint(), self.model(), &self.opt, &meta)?;
        self.last_checkpoint_at = Instant::now();
        Ok(())
    }

    /// `last`, and `best`, `best_weights` and `epoch_NNNN` when due.
    fn save_epoch_end(&mut self, epochs_done: usize, improved: bool) -> Result<()> {
        if self.rank > 0 {
            return Ok(());
        }
        let meta = self.meta(epochs_done, 0, None);
        let last = self.dir.last_checkpoint();
        checkpoint::save(&last, self.model(), &self.opt, &meta)?;
        self.last_checkpoint_at = Instant::now();
        if improved {
            checkpoint::copy(&last, &self.dir.best_checkpoint())?;
            statten_core::checkpoint::save_reference(self.model(), &self.dir.best_weights())?;
        }
        let every = self.cfg.train.checkpoint_every;
        if every > 0 && epochs_done.is_multiple_of(every) {
            checkpoint::copy(&last, &self.dir.epoch_checkpoint(epochs_done))?;
            self.dir
                .prune_epoch_checkpoints(self.cfg.train.keep_checkpoints)?;
        }
        Ok(())
    }
}

/// The module's buffers (BatchNorm running statistics: the float tensors that take no
/// gradient), by id.
fn buffers_of(model: &StattenModel) -> std::collections::HashMap<burn::module::ParamId, Tensor<1>> {
    struct Collect(std::collections::HashMap<burn::module::ParamId, Tensor<1>>);
    impl burn::module::ModuleVisitor for Collect {
        fn visit_float<const D: usize>(&mut self, p: &burn::module::Param<Tensor<D>>) {
            let t = p.val();
            if D == 1 && !t.is_require_grad() {
                let n = t.shape().num_elements();
                self.0.insert(p.id, t.reshape([n]));
            }
        }
    }
    let mut c = Collect(Default::default());
    model.visit(&mut c);
    c.0
}

/// Puts buffers saved by [`buffers_of`] back.
struct RestoreBuffers(std::collections::HashMap<burn::module::ParamId, Tensor<1>>);

impl burn::module::ModuleMapper for RestoreBuffers {
    fn map_float<const D: usize>(
        &mut self,
        p: burn::module::Param<Tensor<D>>,
    ) -> burn::module::Param<Tensor<D>> {
        match self.0.get(&p.id) {
            Some(saved) if D == 1 => {
                let (id, t, _) = p.consume();
                let dims = t.dims();
                burn::module::Param::initialized(id, saved.clone().reshape(dims))
            }
            _ => p,
        }
    }
}

/// Train as configured (see [`Trainer`]).
pub fn train(cfg: &RunConfig, opts: &RunOptions) -> Result<RunSummary> {
    Trainer::setup(cfg, opts)?.run()
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
    let base = device_from_name(&cfg.train.device)?;
    probe_device(&cfg.train.device, &base)?;
    let mut model = cfg.model.init(&base)?;
    if checkpoint::read_meta(ckpt).is_ok() {
        checkpoint::load(ckpt, &mut model, None, &base)?;
    } else {
        statten_core::checkpoint::load_reference(&mut model, ckpt)?;
    }
    let name = match split {
        Split::Train => "train",
        Split::Test => "test",
    };
    let ds = cfg.data.build_eval(split, cfg.model.time_steps)?;
    check_classes(&*ds, name, cfg)?;
    let bs = cfg.train.eval_batch();
    let loader = Loader::new(
        ds,
        LoaderConfig {
            batch_size: bs,
            shuffle: false,
            workers: workers(cfg),
            on_error: cfg.data.on_error,
            ..Default::default()
        },
    );
    let ev = statten_core::conv::with_algorithm(cfg.train.conv_algorithm, || {
        evaluate_sharded(
            &model,
            &loader,
            cfg.model.time_steps,
            &base,
            max_batches,
            true,
            None,
            progress.then(|| format!("eval {name}")).as_deref(),
        )
    })?;
    let rep = ev.rates.report(&cfg.model, 0);
    Ok((ev, rep))
}

/// Every float tensor of `model` (parameters and running statistics), in visit order.
fn flat_floats(model: &StattenModel, buffers_only: bool) -> Vec<f32> {
    struct Collect(Vec<f32>, bool);
    impl burn::module::ModuleVisitor for Collect {
        fn visit_float<const D: usize>(&mut self, p: &burn::module::Param<Tensor<D>>) {
            let t = p.val();
            if !self.1 || !t.is_require_grad() {
                self.0.extend(t.into_data().convert::<f32>().iter::<f32>());
            }
        }
    }
    let mut c = Collect(Vec::new(), buffers_only);
    model.visit(&mut c);
    c.0
}

/// Puts values from [`flat_floats`] back, keeping each tensor's device and gradient setting.
struct LoadFlat<'a>(&'a [f32], usize, bool);

impl burn::module::ModuleMapper for LoadFlat<'_> {
    fn map_float<const D: usize>(
        &mut self,
        p: burn::module::Param<Tensor<D>>,
    ) -> burn::module::Param<Tensor<D>> {
        let (flat, at, buffers_only) = (self.0, &mut self.1, self.2);
        p.map(|t| {
            if buffers_only && t.is_require_grad() {
                return t;
            }
            let dims = t.dims();
            let n: usize = dims.iter().product();
            let data = TensorData::new(flat[*at..*at + n].to_vec(), dims);
            *at += n;
            let fresh: Tensor<D> = Tensor::from_data(data, &t.device());
            if t.is_require_grad() {
                fresh.require_grad()
            } else {
                fresh
            }
        })
    }
}

/// Rank 0's parameters and running statistics on every rank.
fn broadcast_floats(w: &dyn Collective, model: StattenModel) -> StattenModel {
    let mut flat = flat_floats(&model, false);
    w.broadcast_f32(&mut flat);
    model.map(&mut LoadFlat(&flat, 0, false))
}

/// Rank 0's running statistics (the tensors without gradient) on every rank.
fn broadcast_buffers(w: &dyn Collective, model: StattenModel) -> StattenModel {
    let mut flat = flat_floats(&model, true);
    w.broadcast_f32(&mut flat);
    model.map(&mut LoadFlat(&flat, 0, true))
}

/// Sum a step over ranks: the gradients in one flat f32 buffer (zeros where a rank has none;
/// each share's loss was already weighted by its part of the global batch, so the sum is the
/// global mean's gradient), and in one f64 buffer the loss, the top-1 hits, the stop requests
/// and which parameters have a gradient on any rank. Returns the summed loss, hits, gradients
/// and whether any rank asked to stop.
fn all_reduce_step(
    w: &dyn Collective,
    model: &StattenModel,
    loss: f64,
    correct: usize,
    mut grads: GradientsParams,
    stop: bool,
) -> (f64, usize, GradientsParams, bool) {
    struct Params(Vec<(burn::module::ParamId, Vec<usize>, Device)>);
    impl burn::module::ModuleVisitor for Params {
        fn visit_float<const D: usize>(&mut self, p: &burn::module::Param<Tensor<D>>) {
            let t = p.val();
            if t.is_require_grad() {
                self.0.push((p.id, t.dims().to_vec(), t.device()));
            }
        }
    }
    let mut ps = Params(Vec::new());
    model.visit(&mut ps);
    let mut flat: Vec<f32> = Vec::new();
    let mut small = vec![loss, correct as f64, stop as u8 as f64];
    // The device the gradients live on (as `GradientsParams::from_grads` made them).
    let mut grad_device: Option<Device> = None;
    let mut take = |g: &mut GradientsParams, id, d: usize| -> Option<Vec<f32>> {
        fn rm<const D: usize>(
            g: &mut GradientsParams,
            id: burn::module::ParamId,
            dev: &mut Option<Device>,
        ) -> Option<Vec<f32>> {
            g.remove::<D>(id).map(|t| {
                dev.get_or_insert_with(|| t.device());
                t.into_data().convert::<f32>().iter::<f32>().collect()
            })
        }
        match d {
            1 => rm::<1>(g, id, &mut grad_device),
            2 => rm::<2>(g, id, &mut grad_device),
            3 => rm::<3>(g, id, &mut grad_device),
            4 => rm::<4>(g, id, &mut grad_device),
            5 => rm::<5>(g, id, &mut grad_device),
            _ => None,
        }
    };
    for (id, dims, _) in &ps.0 {
        let n: usize = dims.iter().product();
        let g = take(&mut grads, *id, dims.len());
        small.push(g.is_some() as u8 as f64);
        match g {
            Some(v) => flat.extend(v),
            None => flat.extend(std::iter::repeat_n(0.0, n)),
        }
    }
    w.all_reduce_sum_f32(&mut flat);
    w.all_reduce_sum_f64(&mut small);
    let mut out = GradientsParams::new();
    let fallback = ps.0.first().map(|p| p.2.clone().inner());
    let mut at = 0;
    for (k, (id, dims, _)) in ps.0.iter().enumerate() {
        let n: usize = dims.iter().product();
        if small[3 + k] > 0.0 {
            let data = TensorData::new(flat[at..at + n].to_vec(), dims.clone());
            let inner = grad_device
                .clone()
                .or_else(|| fallback.clone())
                .expect("a parameter");
            match dims.len() {
                1 => out.register::<1>(*id, Tensor::from_data(data, &inner)),
                2 => out.register::<2>(*id, Tensor::from_data(data, &inner)),
                3 => out.register::<3>(*id, Tensor::from_data(data, &inner)),
                4 => out.register::<4>(*id, Tensor::from_data(data, &inner)),
                5 => out.register::<5>(*id, Tensor::from_data(data, &inner)),
                _ => {}
            }
        }
        at += n;
    }
    (small[0], small[1] as usize, out, small[2] > 0.0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use statten_core::checkpoint::named_tensors;

    fn running_stats(m: &StattenModel) -> Vec<Vec<f32>> {
        named_tensors(m)
            .into_iter()
            .filter(|t| t.name.ends_with("running_mean"))
            .map(|t| t.values)
            .collect()
    }

    #[test]
    fn a_detached_replica_trains_without_touching_the_main_models_running_statistics() {
        let cfg = RunConfig::parse(
            "[model]\npreset = \"cifar10-2-256\"\ndepth = 1\nembed_dim = 16\nnum_heads = 2\n\
             time_steps = 1\nchunk_size = 1\nimg_size = 8\n[data]\ndataset = \"cifar10\"\n\
             [data.transform]\nsize = 8\n",
            &[],
        )
        .unwrap();
        let dev = Device::flex().autodiff();
        let model = cfg.model.init(&dev).unwrap();
        let before = running_stats(&model);
        assert!(!before.is_empty());
        let x: Tensor<4> = Tensor::random([2, 3, 8, 8], burn::tensor::Distribution::Default, &dev);
        // A plain clone shares the running-state cells: its forward moves the main model's.
        let replica = detached_replica(&model, &dev);
        let out =
            replica.forward_monitored(Input::Static(x.clone()).encode(1), &mut Monitor::disabled());
        assert!(out.clone().sum().into_scalar::<f32>().is_finite());
        assert_eq!(
            running_stats(&model),
            before,
            "the replica moved the main statistics"
        );
        assert_ne!(running_stats(&replica), before, "the replica did not train");
        // Its parameters take gradients under the main model's ids.
        let grads = GradientsParams::from_grads(out.sum().backward(), &replica);
        let mut n = 0;
        struct Count<'a>(&'a GradientsParams, &'a mut usize);
        impl burn::module::ModuleVisitor for Count<'_> {
            fn visit_float<const D: usize>(&mut self, p: &burn::module::Param<Tensor<D>>) {
                if self.0.get::<D>(p.id).is_some() {
                    *self.1 += 1;
                }
            }
        }
        model.visit(&mut Count(&grads, &mut n));
        assert!(n > 10, "only {n} parameters have gradients");
        let plain = model.clone();
        let _ = plain.forward_monitored(Input::Static(x).encode(1), &mut Monitor::disabled());
        assert_ne!(
            running_stats(&model),
            before,
            "a clone shares them (the reason for fork)"
        );
    }
}
