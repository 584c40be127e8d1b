//! [`Trainer::setup`]: the devices and ranks, the data, the run directory, the model and
//! optimizer (from the checkpoint when resuming).

use std::time::Instant;

use burn::prelude::*;
use statten_core::models::StattenModel;
use statten_data::loader::Loader;

use super::data::{datasets, nb_of, test_loader, train_loader};
use super::{LogWindow, RunOptions, Trainer};
use crate::checkpoint::{self, CheckpointMeta, EpochRecord, PartialEpoch};
use crate::config::RunConfig;
use crate::device::{device_from_name, probe_device};
use crate::error::{Error, Result};
use crate::objective::Objective;
use crate::optim::Optimizer;
use crate::parallel::sync::broadcast_floats;
use crate::parallel::{fingerprint, Collective, Replicas};
use crate::rundir::{Existing, RunDir};

/// Where a resumed run picks up: the checkpoint's history and position.
#[derive(Default)]
struct Resumed {
    history: Vec<EpochRecord>,
    best: f64,
    start: (usize, usize),
    partial: Option<PartialEpoch>,
    skipped_steps: usize,
    loss_scale: Option<crate::amp::LossScale>,
}

impl<'a> Trainer<'a> {
    /// Devices, loaders, the run directory, the model and optimizer (from the checkpoint when
    /// resuming).
    pub fn setup(cfg: &'a RunConfig, opts: &'a RunOptions) -> Result<Self> {
        let replicas = replicas(cfg, opts)?;
        let base = device_from_name(&replicas.names[0])?;
        let ad = replicas.devices[0].clone();
        let (train_loader, test_loader) = loaders(cfg)?;
        // Read the checkpoint before touching the run directory: a bad one changes nothing.
        if let Some(ck) = &opts.resume {
            check_resume_config(cfg, opts, &checkpoint::read_meta(ck)?, ck)?;
        }
        let existing = if opts.resume.is_some() {
            Existing::Resume
        } else if opts.overwrite {
            Existing::Overwrite
        } else {
            Existing::Refuse
        };
        let world = opts.world.as_deref().filter(|_| replicas.ranks > 1);
        let mut model = init_model(cfg, &base, &ad, world)?;
        // Rank 0 reads the weights (the others take them in the broadcast below), before the
        // run directory is touched: a bad file changes nothing.
        if opts.resume.is_none() && !cfg.train.init_from.is_empty() && replicas.rank == 0 {
            init_from(cfg, &mut model, opts.verbose)?;
        }
        let dir = if replicas.rank == 0 {
            RunDir::prepare(&opts.output, existing)?
        } else {
            RunDir::at(&opts.output)
        };
        let mut opt = Optimizer::new(&cfg.optimizer);
        let nb = nb_of(cfg, &train_loader);
        let resumed = match &opts.resume {
            Some(ck) => {
                let r = resume(ck, &mut model, &mut opt, &ad)?;
                if replicas.rank == 0 {
                    dir.rewrite_metrics(&r.history)?;
                    dir.trim_steps((r.start.0 * nb + r.start.1) as u64)?;
                }
                if opts.verbose {
                    r.announce(ck);
                }
                r
            }
            None => Resumed {
                best: f64::NEG_INFINITY,
                ..Default::default()
            },
        };
        if replicas.rank == 0 {
            dir.write_config(&cfg.to_toml())?;
        }
        let tb = if replicas.rank == 0 && cfg.train.tensorboard {
            let at = opts
                .resume
                .as_ref()
                .map(|_| (resumed.start.0 * nb + resumed.start.1) as u64);
            Some(crate::tensorboard::EventWriter::open(
                &dir.tensorboard(),
                at,
            )?)
        } else {
            None
        };
        if let Some(w) = world {
            model = broadcast_floats(w, model);
        }
        let ema = model_ema(cfg, &model, &base, opts.resume.as_deref())?;
        let replicas_precision = replicas.precision;
        Ok(Self {
            cfg,
            opts,
            dir,
            replicas,
            world: opts.world.clone(),
            stop_agreed: false,
            base,
            train_loader,
            test_loader,
            mixup: cfg.mixup(),
            objective: Objective::of_run(cfg),
            model: Some(model),
            ema,
            opt,
            history: resumed.history,
            best: resumed.best,
            start: resumed.start,
            partial: resumed.partial,
            nb,
            energy: None,
            skipped_steps: resumed.skipped_steps,
            loss_scale: (replicas_precision == statten_core::precision::Precision::F16)
                .then(|| resumed.loss_scale.unwrap_or_default()),
            steps_run: 0,
            epochs_run: 0,
            last_checkpoint_at: Instant::now(),
            log: LogWindow::default(),
            tb,
        })
    }
}

/// The training and evaluation loaders of the config's datasets (at least one training batch).
fn loaders(cfg: &RunConfig) -> Result<(Loader, Loader)> {
    let (train_ds, test_ds) = datasets(cfg)?;
    let train = train_loader(cfg, train_ds.clone());
    if train.num_batches() == 0 {
        return Err(Error::Data(format!(
            "the training set has {} samples, fewer than one batch of {}",
            train_ds.len(),
            cfg.train.batch_size
        )));
    }
    Ok((train, test_loader(cfg, test_ds)))
}

/// This process's devices (probed) and rank. Data parallel: the batch is split over
/// `train.devices` (the first is the main device); without them, `train.device` alone. Every
/// rank must run the same resolved config.
fn replicas(cfg: &RunConfig, opts: &RunOptions) -> Result<Replicas> {
    let names = if cfg.train.devices.is_empty() {
        std::slice::from_ref(&cfg.train.device)
    } else {
        &cfg.train.devices[..]
    };
    let devices: Vec<Device> = names
        .iter()
        .map(|d| device_from_name(d).map(|d| d.autodiff()))
        .collect::<Result<_>>()?;
    for (n, d) in names.iter().zip(&devices) {
        probe_device(n, d)?;
    }
    let (rank, ranks) = opts
        .world
        .as_ref()
        .map(|w| (w.rank(), w.size()))
        .unwrap_or((0, 1));
    if rank == 0 {
        for (n, d) in names.iter().zip(&devices) {
            if let Some(info) = statten_core::gpu::gpu_info(d) {
                println!("device {n}: {info}");
            }
        }
    }
    let precision = cfg.train.precision.resolve(&devices[0]);
    for (n, d) in names.iter().zip(&devices) {
        statten_core::precision::check_support(precision, d).map_err(|why| {
            Error::Config(format!(
                "train.precision = \"{}\" ({precision}): device `{n}` cannot compute {precision} \
                 matrix products: {why}",
                cfg.train.precision
            ))
        })?;
    }
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
    Ok(Replicas {
        devices,
        names: names.to_vec(),
        rank,
        ranks,
        micro_batch: cfg.train.micro_batch,
        conv_algorithm: cfg.train.conv_algorithm,
        precision,
        loss_scale: 1.0,
    })
}

/// A checkpoint resumes only the config it was written with (compared as configs, not text:
/// a key added since, at its default, is no change), unless `--allow-config-change`.
fn check_resume_config(
    cfg: &RunConfig,
    opts: &RunOptions,
    meta: &CheckpointMeta,
    ck: &std::path::Path,
) -> Result<()> {
    if meta.config == cfg.to_toml() || opts.allow_config_change {
        return Ok(());
    }
    let what = match RunConfig::parse(&meta.config, &[]) {
        Ok(old) if old == *cfg => return Ok(()),
        Ok(old) => {
            crate::config::config_differences(&old, cfg, ("in the checkpoint", "now")).join("; ")
        }
        Err(e) => format!("its config does not parse with this statten: {e}"),
    };
    Err(Error::checkpoint(
        ck.to_path_buf(),
        format!(
            "{} was written with another config ({what}); resume with the same config (the \
             run's config.toml), or pass --allow-config-change to continue with this one",
            ck.display()
        ),
    ))
}

/// The model with its initial weights, drawn from the seed alone.
///
/// Ranks in one process (tests) share Burn's generator: rank 0 draws its initial weights
/// first, and every rank takes rank 0's weights afterwards, as DDP does at construction.
fn init_model(
    cfg: &RunConfig,
    base: &Device,
    ad: &Device,
    world: Option<&dyn Collective>,
) -> Result<StattenModel> {
    let rank = world.map_or(0, |w| w.rank());
    let barrier = || {
        if let Some(w) = world {
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
    let model = cfg.model.init(ad).map_err(Error::Model).inspect(|m| {
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
    model
}

/// The EMA model (`train.model_ema`): a copy of the model, or a resumed checkpoint's EMA
/// weights and update count (a checkpoint written without EMA starts it from its model, as
/// timm does).
fn model_ema(
    cfg: &RunConfig,
    model: &StattenModel,
    base: &Device,
    resume: Option<&std::path::Path>,
) -> Result<Option<crate::ema::ModelEma>> {
    let t = &cfg.train;
    if !t.model_ema {
        return Ok(None);
    }
    let mut ema = crate::ema::ModelEma::new(model, t.model_ema_decay, t.model_ema_warmup, 0);
    if let Some(ck) = resume {
        if checkpoint::read_meta(ck)?.ema_updates.is_some() {
            let mut m = cfg.model.init(base)?;
            let n = checkpoint::load_ema_weights(ck, &mut m)?;
            ema = crate::ema::ModelEma::new(&m, t.model_ema_decay, t.model_ema_warmup, n);
        }
    }
    Ok(Some(ema))
}

/// `train.init_from`'s weights into `model`, but for the `train.init_exclude` prefixes.
fn init_from(cfg: &RunConfig, model: &mut StattenModel, verbose: bool) -> Result<()> {
    let t = &cfg.train;
    let path = std::path::Path::new(&t.init_from);
    let loaded = checkpoint::load_weights(path, model, &t.init_exclude).map_err(|e| {
        let mut m = format!("train.init_from: {e}");
        if t.init_exclude.is_empty() && m.contains("head.") {
            m.push_str(
                " (for another class count, re-initialise the classifier with --transfer or \
                 train.init_exclude = [\"head\"])",
            );
        }
        Error::Config(m)
    })?;
    if verbose {
        let what = if loaded.meta.is_some() {
            "a statten checkpoint"
        } else {
            "reference weights"
        };
        let kept = if loaded.report.excluded.is_empty() {
            String::new()
        } else {
            format!(
                "; kept at their initial values: {}",
                loaded.report.excluded.join(", ")
            )
        };
        println!(
            "initialised from {} ({what}, {} tensors){kept}",
            path.display(),
            loaded.report.applied
        );
    }
    Ok(())
}

/// Loads the checkpoint `ck` into `model` and `opt`.
fn resume(
    ck: &std::path::Path,
    model: &mut StattenModel,
    opt: &mut Optimizer,
    ad: &Device,
) -> Result<Resumed> {
    let meta = checkpoint::load(ck, model, Some(opt), ad)?;
    Ok(Resumed {
        start: (meta.epochs_done, meta.batches_done),
        partial: meta.partial.filter(|_| meta.batches_done > 0),
        history: meta.history,
        best: meta.best_top1,
        skipped_steps: meta.skipped_steps,
        loss_scale: meta
            .loss_scale
            .as_deref()
            .map(crate::amp::LossScale::from_row)
            .transpose()
            .map_err(|e| Error::Checkpoint {
                path: ck.to_path_buf(),
                message: format!("{}: {e}", ck.display()),
            })?,
    })
}

impl Resumed {
    /// Where the run goes on, on stdout (`--verbose`).
    fn announce(&self, ck: &std::path::Path) {
        let (epoch, batch) = self.start;
        if batch > 0 {
            println!(
                "resumed from {} at epoch {}, batch {batch}",
                ck.display(),
                epoch + 1
            );
        } else {
            println!("resumed from {} after epoch {epoch}", ck.display());
        }
    }
}
