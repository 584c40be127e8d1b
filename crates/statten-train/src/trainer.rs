//! The training loop behind `statten train` and `statten eval`.
//!
//! Per epoch: batches from the threaded loader (order and augmentation from `(seed, epoch)`),
//! batch-level mixup while it is on, forward over T, the configured loss, backward, optional
//! gradient clipping, the optimizer step at the schedule's learning rate; then eval (top-1/5,
//! plain CE on the mean-over-T logits, firing rates for the energy report), `summary.csv`,
//! `metrics.jsonl`, `energy.json`, `curves.png`, and checkpoints `last`, `best` and every N.

use std::io::Write;
use std::path::{Path, PathBuf};
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

use crate::checkpoint::{self, CheckpointMeta, EpochRecord};
use crate::config::{LossKind, RunConfig};
use crate::energy::{EnergyReport, RateAccumulator};
use crate::loss::{cross_entropy, soft_target_cross_entropy, tet_loss};
use crate::metrics::{top1_top5, Mean};
use crate::optim::{clip_grad_norm, Optimizer};

/// The Burn device for a name (`cpu` = flex). `wgpu:N` selects the N-th discrete GPU; `cpu:N`
/// is the CPU again (data-parallel tests on one machine).
pub fn device_from_name(name: &str) -> Result<Device, String> {
    let lower = name.to_ascii_lowercase();
    if let Some((kind, idx)) = lower.split_once(':') {
        let i: usize = idx
            .parse()
            .map_err(|_| format!("device `{name}`: `{idx}` is not an index"))?;
        return match kind {
            "cpu" | "flex" => Ok(Device::flex()),
            #[allow(deprecated)]
            "ndarray" => Ok(Device::ndarray()),
            "wgpu" | "gpu" => Ok(Device::wgpu(burn::tensor::DeviceKind::DiscreteGpu(i))),
            o => Err(format!("unknown device `{o}` (cpu, flex, ndarray, wgpu)")),
        };
    }
    match lower.as_str() {
        "cpu" | "flex" => Ok(Device::flex()),
        #[allow(deprecated)]
        "ndarray" => Ok(Device::ndarray()),
        "wgpu" | "gpu" => Ok(Device::wgpu(Default::default())),
        o => Err(format!(
            "train.device: unknown device `{o}` (cpu, flex, ndarray, wgpu)"
        )),
    }
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
    /// Print per-epoch lines.
    pub verbose: bool,
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
) -> Result<EvalResult, String> {
    let (mut loss, mut n, mut c1, mut c5) = (Mean::default(), 0usize, 0usize, 0usize);
    let mut rates = RateAccumulator::default();
    for (i, b) in loader.epoch(0).enumerate() {
        if max_batches > 0 && i >= max_batches {
            break;
        }
        let b = b.map_err(|e| e.to_string())?;
        if b.is_empty() {
            continue;
        }
        let mut mon = if monitor {
            Monitor::enabled()
        } else {
            Monitor::disabled()
        };
        let x = to_input(&b, device).encode(t);
        let logits = model.forward(x, &mut mon);
        let l = cross_entropy(logits.clone(), b.targets(device), 0.0).into_scalar::<f64>();
        loss.add(l, b.len());
        let (a, b5) = top1_top5(logits, &b.labels);
        c1 += a;
        c5 += b5;
        n += b.len();
        if monitor {
            rates.add(&mon.stats(), b.len());
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
        rates,
    })
}

fn write_summary(dir: &Path, history: &[EpochRecord]) -> Result<(), String> {
    let mut s = String::from(
        "epoch,train_loss,train_top1,eval_loss,eval_top1,eval_top5,lr,images_per_s,seconds\n",
    );
    for r in history {
        s += &format!(
            "{},{:.6},{:.4},{:.6},{:.4},{:.4},{:.8e},{:.2},{:.2}\n",
            r.epoch,
            r.train_loss,
            r.train_top1,
            r.eval_loss,
            r.eval_top1,
            r.eval_top5,
            r.lr,
            r.images_per_s,
            r.seconds
        );
    }
    atomic_write(&dir.join("summary.csv"), s.as_bytes())
}

fn atomic_write(path: &Path, bytes: &[u8]) -> Result<(), String> {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, bytes)
        .and_then(|_| std::fs::rename(&tmp, path))
        .map_err(|e| format!("{}: {e}", path.display()))
}

fn append_jsonl(path: &Path, v: &serde_json::Value) -> Result<(), String> {
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .map_err(|e| format!("{}: {e}", path.display()))?;
    writeln!(f, "{v}").map_err(|e| format!("{}: {e}", path.display()))
}

/// A train and a test dataset.
pub type TrainTest = (Arc<dyn Dataset>, Arc<dyn Dataset>);

/// Build the train and test datasets of a config.
pub fn datasets(cfg: &RunConfig) -> Result<TrainTest, String> {
    let t = cfg.model.time_steps;
    let train = cfg.data.build(Split::Train, t).map_err(|e| e.to_string())?;
    let test = cfg.data.build(Split::Test, t).map_err(|e| e.to_string())?;
    Ok((train, test))
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
) -> (f64, usize, GradientsParams) {
    let t = cfg.model.time_steps;
    let k = cfg.model.num_classes;
    let x = to_input(b, device).encode(t);
    let mut mon = Monitor::disabled();
    let targets = b.targets(device);
    let (loss, logits) = match loss_kind {
        LossKind::Tet => {
            let out = model.forward_time(x, &mut mon);
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
            let logits = model.forward(x, &mut mon);
            let s = soft.expect("soft targets").to_vec();
            let st: Tensor<2> = Tensor::from_data(TensorData::new(s, [b.len(), k]), device);
            (soft_target_cross_entropy(logits.clone(), st), logits)
        }
        LossKind::Ce | LossKind::Auto => {
            let logits = model.forward(x, &mut mon);
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
    let grads = GradientsParams::from_grads(loss.backward(), model);
    let correct = top1_top5(logits.inner(), labels).0;
    (loss.into_scalar::<f64>(), correct, grads)
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

/// Data parallel step: the batch is split into contiguous parts, one per device; each part's
/// loss is scaled by its share of the batch, so the summed gradients equal the whole batch's
/// mean-loss gradients. Replica 0 shares the main model's BatchNorm running statistics, the
/// others use batch statistics of their own part and are re-created from the main model every
/// step — PyTorch DDP without SyncBN (buffers broadcast from rank 0).
#[allow(clippy::too_many_arguments)]
fn data_parallel_grads(
    model: &StattenModel,
    b: &HostBatch,
    labels: &[usize],
    soft: Option<&[f32]>,
    cfg: &RunConfig,
    loss_kind: LossKind,
    devices: &[Device],
    main: &Device,
) -> (f64, usize, GradientsParams) {
    let n = b.len();
    let k = cfg.model.num_classes;
    let parts = devices.len().min(n).max(1);
    let mut total = GradientsParams::new();
    let (mut loss, mut correct) = (0.0, 0);
    for (i, dev) in devices.iter().take(parts).enumerate() {
        let (a, e) = (i * n / parts, (i + 1) * n / parts);
        if a == e {
            continue;
        }
        let part = rows(b, a, e);
        let sp = soft.map(|s| &s[a * k..e * k]);
        let replica = if i == 0 {
            model.clone()
        } else {
            model.clone().fork(dev)
        };
        let (l, c, g) = step_grads(
            &replica,
            &part,
            &labels[a..e],
            sp,
            cfg,
            loss_kind,
            dev,
            (e - a) as f64 / n as f64,
        );
        let g = g.to_device(main, &replica);
        add_grads(model, &mut total, g);
        loss += l;
        correct += c;
    }
    (loss, correct, total)
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

/// Train as configured.
pub fn train(cfg: &RunConfig, opts: &RunOptions) -> Result<RunSummary, String> {
    // Data parallel: the batch is split over `train.devices` (the first is the main device);
    // without them, `train.device` alone.
    let names = if cfg.train.devices.is_empty() {
        std::slice::from_ref(&cfg.train.device)
    } else {
        &cfg.train.devices[..]
    };
    let replicas: Vec<Device> = names
        .iter()
        .map(|d| device_from_name(d).map(|d| d.autodiff()))
        .collect::<Result<_, _>>()?;
    let base = device_from_name(&names[0])?;
    let ad = replicas[0].clone();
    let (train_ds, test_ds) = datasets(cfg)?;
    let mixup = cfg.mixup();
    let loss_kind = cfg.loss_kind();
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
    let eval_bs = if cfg.train.eval_batch_size > 0 {
        cfg.train.eval_batch_size
    } else {
        cfg.train.batch_size
    };
    let test_loader = Loader::new(
        test_ds.clone(),
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
        return Err(format!(
            "the training set has {} samples, fewer than one batch of {}",
            train_ds.len(),
            cfg.train.batch_size
        ));
    }
    std::fs::create_dir_all(opts.output.join("checkpoints"))
        .map_err(|e| format!("{}: {e}", opts.output.display()))?;
    atomic_write(&opts.output.join("config.toml"), cfg.to_toml().as_bytes())?;

    base.seed(cfg.train.seed);
    ad.seed(cfg.train.seed);
    let mut model = cfg.model.init(&ad).map_err(|e| e.to_string())?;
    let mut opt = Optimizer::new(&cfg.optimizer);
    let mut history: Vec<EpochRecord> = Vec::new();
    let mut best = f64::NEG_INFINITY;
    let mut start = 0;
    if let Some(ck) = &opts.resume {
        let meta = checkpoint::load(ck, &mut model, Some(&mut opt), &ad)?;
        if meta.config != cfg.to_toml() && opts.verbose {
            eprintln!(
                "warning: {} was written with a different config; continuing with the given one",
                ck.display()
            );
        }
        start = meta.epochs_done;
        history = meta.history;
        best = meta.best_top1;
        if opts.verbose {
            println!("resumed from {} after epoch {}", ck.display(), start);
        }
    }
    let total = cfg.total_epochs();
    let t = cfg.model.time_steps;
    let k = cfg.model.num_classes;
    let nb = match cfg.train.max_batches {
        0 => train_loader.num_batches(),
        m => m.min(train_loader.num_batches()),
    };
    let mut energy = None;
    let mut ran = 0;
    for epoch in start..total {
        if opts.stop_after > 0 && ran >= opts.stop_after {
            break;
        }
        ran += 1;
        let t0 = Instant::now();
        let pb = if opts.progress {
            ProgressBar::with_draw_target(Some(nb as u64), ProgressDrawTarget::stderr())
        } else {
            ProgressBar::hidden()
        };
        pb.set_style(
            ProgressStyle::with_template("{prefix} [{bar:28}] {pos}/{len} {msg} eta {eta}")
                .unwrap()
                .progress_chars("=> "),
        );
        pb.set_prefix(format!("epoch {}/{}", epoch + 1, total));
        let (mut tl, mut tc, mut tn) = (Mean::default(), 0usize, 0usize);
        let lr0 = cfg.schedule.lr_for(cfg.optimizer.lr, epoch, 0, nb);
        let mix_on = mixup.active_at(epoch);
        let mut images = 0usize;
        for (i, b) in train_loader.epoch(epoch).enumerate() {
            if i >= nb {
                break;
            }
            let mut b = b.map_err(|e| e.to_string())?;
            if b.is_empty() {
                continue;
            }
            let lr = cfg.schedule.lr_for(cfg.optimizer.lr, epoch, i, nb);
            let labels = b.labels.clone();
            // Soft targets: mixed while mixup is on, else smoothed one-hot (soft-target loss
            // after mixup's off epoch, as timm's targets without mixing).
            let soft = if mix_on {
                let mut mrng = Rng::derive(&[cfg.train.seed, epoch as u64, i as u64, 0x4D49_5855]);
                Some(mix_batch(&mut b, k, &mixup, &mut mrng)?.0)
            } else if loss_kind == LossKind::SoftTarget {
                Some(statten_data::mixup::smooth_one_hot(
                    &b.labels,
                    k,
                    cfg.loss.label_smoothing,
                ))
            } else {
                None
            };
            let (lv, correct, grads) = if replicas.len() <= 1 {
                step_grads(
                    &model,
                    &b,
                    &labels,
                    soft.as_deref(),
                    cfg,
                    loss_kind,
                    &ad,
                    1.0,
                )
            } else {
                data_parallel_grads(
                    &model,
                    &b,
                    &labels,
                    soft.as_deref(),
                    cfg,
                    loss_kind,
                    &replicas,
                    &ad,
                )
            };
            let grads = if cfg.optimizer.clip_grad > 0.0 {
                clip_grad_norm(&model, grads, cfg.optimizer.clip_grad).0
            } else {
                grads
            };
            model = opt.step(lr, model, grads);
            if !lv.is_finite() {
                return Err(format!(
                    "epoch {epoch} batch {i}: loss is {lv} (diverged); lower optimizer.lr"
                ));
            }
            tl.add(lv, b.len());
            tc += correct;
            tn += b.len();
            images += b.len();
            let rate = images as f64 / t0.elapsed().as_secs_f64().max(1e-9);
            pb.set_message(format!(
                "loss {:.4} acc {:.2}% lr {:.2e} {:.1} img/s",
                tl.get(),
                100.0 * tc as f64 / tn.max(1) as f64,
                lr,
                rate
            ));
            pb.inc(1);
        }
        pb.finish_and_clear();
        let train_time = t0.elapsed().as_secs_f64();
        let last = epoch + 1 == total || (opts.stop_after > 0 && ran == opts.stop_after);
        let do_eval = cfg.train.eval_interval > 0
            && ((epoch + 1) % cfg.train.eval_interval == 0 || epoch + 1 == total)
            || last;
        let mut rec = EpochRecord {
            epoch,
            train_loss: tl.get(),
            train_top1: 100.0 * tc as f64 / tn.max(1) as f64,
            eval_loss: f64::NAN,
            eval_top1: f64::NAN,
            eval_top5: f64::NAN,
            lr: lr0,
            images_per_s: images as f64 / train_time.max(1e-9),
            seconds: 0.0,
        };
        if do_eval {
            let ev = evaluate(
                &model.valid(),
                &test_loader,
                t,
                &base,
                cfg.train.max_batches,
                true,
            )?;
            rec.eval_loss = ev.loss;
            rec.eval_top1 = ev.top1;
            rec.eval_top5 = ev.top5;
            let rep = ev.rates.report(&cfg.model, epoch);
            atomic_write(
                &opts.output.join("energy.json"),
                serde_json::to_string_pretty(&rep).unwrap().as_bytes(),
            )?;
            append_jsonl(
                &opts.output.join("metrics.jsonl"),
                &serde_json::json!({"event": "energy", "epoch": epoch, "energy_mj": rep.energy_mj, "mean_firing_rate": rep.mean_rate, "sops": rep.sops}),
            )?;
            if opts.verbose {
                print!("{}", rep.table());
            }
            energy = Some(rep);
        }
        rec.seconds = t0.elapsed().as_secs_f64();
        if opts.verbose {
            println!(
                "epoch {:>3}/{total}  train loss {:.4} top-1 {:.2}%  eval loss {:.4} top-1 {:.2}% top-5 {:.2}%  lr {:.3e}  {:.1} img/s  {:.1}s",
                epoch + 1, rec.train_loss, rec.train_top1, rec.eval_loss, rec.eval_top1, rec.eval_top5, rec.lr, rec.images_per_s, rec.seconds
            );
        }
        append_jsonl(
            &opts.output.join("metrics.jsonl"),
            &serde_json::to_value(&rec).unwrap(),
        )?;
        history.push(rec.clone());
        write_summary(&opts.output, &history)?;
        if cfg.train.plot {
            crate::plot::draw_curves(&history, total, &opts.output.join("curves.png"))?;
        }
        let improved = rec.eval_top1.is_finite() && rec.eval_top1 > best;
        if improved {
            best = rec.eval_top1;
        }
        let meta = CheckpointMeta {
            version: 1,
            epochs_done: epoch + 1,
            best_top1: best,
            history: history.clone(),
            optim_steps: Default::default(),
            config: cfg.to_toml(),
        };
        let ck = opts.output.join("checkpoints");
        let last_ck = ck.join("last.safetensors");
        checkpoint::save(&last_ck, &model, &opt, &meta)?;
        if improved {
            checkpoint::copy(&last_ck, &ck.join("best.safetensors"))?;
            statten_core::checkpoint::save_reference(
                &model,
                &opts.output.join("best_weights.safetensors"),
            )
            .map_err(|e| e.to_string())?;
        }
        if cfg.train.checkpoint_every > 0 && (epoch + 1) % cfg.train.checkpoint_every == 0 {
            checkpoint::copy(
                &last_ck,
                &ck.join(format!("epoch_{:04}.safetensors", epoch + 1)),
            )?;
        }
    }
    Ok(RunSummary {
        history,
        best_top1: best,
        energy,
        skipped: train_loader.skipped() + test_loader.skipped(),
    })
}

/// Evaluate a checkpoint (statten or reference weights) on the config's test split.
pub fn eval_checkpoint(cfg: &RunConfig, ckpt: &Path) -> Result<(EvalResult, EnergyReport), String> {
    let base = device_from_name(&cfg.train.device)?;
    let mut model = cfg.model.init(&base).map_err(|e| e.to_string())?;
    if checkpoint::read_meta(ckpt).is_ok() {
        checkpoint::load(ckpt, &mut model, None, &base)?;
    } else {
        statten_core::checkpoint::load_reference(&mut model, ckpt).map_err(|e| e.to_string())?;
    }
    let test = cfg
        .data
        .build(Split::Test, cfg.model.time_steps)
        .map_err(|e| e.to_string())?;
    let bs = if cfg.train.eval_batch_size > 0 {
        cfg.train.eval_batch_size
    } else {
        cfg.train.batch_size
    };
    let loader = Loader::new(
        test,
        LoaderConfig {
            batch_size: bs,
            shuffle: false,
            workers: workers(cfg),
            on_error: cfg.data.on_error,
            ..Default::default()
        },
    );
    let ev = evaluate(
        &model,
        &loader,
        cfg.model.time_steps,
        &base,
        cfg.train.max_batches,
        true,
    )?;
    let rep = ev.rates.report(&cfg.model, 0);
    Ok((ev, rep))
}
