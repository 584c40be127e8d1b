//! `statten train`: the run's config from the recipe, `--set` and the flags, its directory
//! (fresh, given, or the newest run of the config when resuming), and the run itself.

use std::path::PathBuf;
use std::rc::Rc;

use statten::device::DeviceName;
use statten::recipes::{self, ConfigSource};
use statten_data::cifar::Split;
use statten_train::config::{PrecisionSetting, RunConfig};
use statten_train::parallel::sync::broadcast_string;
use statten_train::parallel::{mpi_world, Collective};
use statten_train::rundir::RunDir;
use statten_train::train::{batches_per_epoch, train, RunOptions};

use super::model::model_info;
use super::{apply_cli_overrides, listed};

// `statten train`'s arguments (its help text is the doc comment of `Command::Train`).
#[derive(clap::Args)]
pub struct TrainArgs {
    /// The run config: a TOML file, or the name of a shipped recipe (`statten configs`
    /// lists them; a file of that name wins).
    #[arg(long)]
    pub config: PathBuf,
    /// Override any config key, e.g. `--set train.epochs=10 --set optimizer.lr=1e-3`.
    #[arg(long = "set", value_name = "KEY=VALUE")]
    pub sets: Vec<String>,
    /// Device: cpu, flex, ndarray or wgpu, optionally with an index as in train.device
    /// (wgpu:1, wgpu:integrated:0, wgpu:cpu); overrides train.device.
    #[arg(long)]
    pub device: Option<DeviceName>,
    /// Data parallel over these device indices of --device's kind, e.g. `--devices 0,1`
    /// (overrides train.devices).
    #[arg(long, value_delimiter = ',')]
    pub devices: Vec<usize>,
    /// Dataset folder (overrides data.root).
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    /// Run directory (default runs/<config name>, or a fresh runs/<config name>-N when that
    /// one already holds a run).
    #[arg(long)]
    pub output: Option<PathBuf>,
    /// Continue a run: from CKPT, or without a path from <output>/checkpoints/last.safetensors
    /// (without --output: the newest run of this config under runs/). A mid-epoch checkpoint
    /// continues from its step.
    #[arg(long, num_args = 0..=1, default_missing_value = "", value_name = "CKPT")]
    pub resume: Option<String>,
    /// Resume the run in --output when it has a checkpoint, start it there otherwise (for
    /// job scripts that are resubmitted or requeued).
    #[arg(long, requires = "output", conflicts_with_all = ["resume", "overwrite"])]
    pub auto_resume: bool,
    /// Start from these weights (overrides train.init_from): a statten checkpoint or reference
    /// weights (.safetensors, .pth). Weights only: a new optimizer, schedule and epoch count.
    /// Missing or unexpected keys and shape mismatches are an error that lists them.
    #[arg(long, value_name = "PATH", conflicts_with_all = ["resume", "auto_resume"])]
    pub init_from: Option<PathBuf>,
    /// The matrix products' precision (overrides train.precision): f32 (reference-exact), f16
    /// (with dynamic loss scaling, as the reference's --amp), bf16, or amp (f16 on GPUs, f32 on
    /// CPUs). Half formats are not reference-exact.
    #[arg(long, value_parser = listed::<PrecisionSetting>(&PrecisionSetting::NAMES))]
    pub precision: Option<PrecisionSetting>,
    /// With --init-from: re-initialise the classifier head from the seed (to train on another
    /// class count), as the reference's transfer mode; adds "head" to train.init_exclude.
    #[arg(long)]
    pub transfer: bool,
    /// Replace the run in --output (its config, metrics, plots and checkpoints) instead of
    /// refusing to write into it.
    #[arg(long, conflicts_with = "resume")]
    pub overwrite: bool,
    /// Resume with a config that differs from the one the checkpoint was written with.
    #[arg(long)]
    pub allow_config_change: bool,
    /// Print the resolved config, the model summary and the datasets it would read, then
    /// exit without training.
    #[arg(long)]
    pub dry_run: bool,
    /// No progress bars or per-epoch lines.
    #[arg(long, conflicts_with = "verbose")]
    pub quiet: bool,
    /// Also print the per-layer firing-rate table after every evaluation (by default it
    /// is printed once, at the end of the run).
    #[arg(long)]
    pub verbose: bool,
    /// CPU threads (default: RAYON_NUM_THREADS, else all cores).
    #[arg(long)]
    pub threads: Option<usize>,
}

/// Runs `statten train` (an MPI rank that fails ends every rank).
pub fn run(a: TrainArgs) -> std::process::ExitCode {
    use std::process::ExitCode;
    let world = match mpi_world() {
        Ok(w) => w,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(2);
        }
    };
    let abort_world = world.clone();
    let r = statten::threads::configure(a.threads).and_then(|_| run_train(a, world));
    match r {
        Ok(None) => ExitCode::SUCCESS,
        Ok(Some(status)) => ExitCode::from(status),
        Err(e) => match abort_world {
            // The other ranks may wait in a collective: end them all now.
            Some(w) => {
                eprintln!("error (rank {} of {}): {e}", w.rank(), w.size());
                w.abort(1)
            }
            None => {
                eprintln!("error: {e}");
                ExitCode::FAILURE
            }
        },
    }
}

fn fresh_output(config: &ConfigSource) -> PathBuf {
    let stem = config.stem();
    let base = PathBuf::from("runs").join(&stem);
    if !RunDir::holds_run(&base) {
        return base;
    }
    (2..)
        .map(|i| PathBuf::from("runs").join(format!("{stem}-{i}")))
        .find(|p| !RunDir::holds_run(p))
        .unwrap()
}

/// The newest run of `config` under runs/ (`runs/<stem>` or `runs/<stem>-N`) that has a last
/// checkpoint, by the checkpoint's modification time.
fn newest_run(config: &ConfigSource) -> Result<PathBuf, String> {
    let stem = config.stem();
    let runs = PathBuf::from("runs");
    let mut best: Option<(std::time::SystemTime, PathBuf)> = None;
    for e in std::fs::read_dir(&runs).into_iter().flatten().flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        let ours = name == stem
            || name
                .strip_prefix(&format!("{stem}-"))
                .is_some_and(|n| n.parse::<u64>().is_ok());
        let ck = RunDir::at(e.path()).last_checkpoint();
        if let (true, Ok(m)) = (ours, ck.metadata().and_then(|m| m.modified())) {
            if best.as_ref().is_none_or(|(t, _)| m > *t) {
                best = Some((m, e.path()));
            }
        }
    }
    best.map(|(_, p)| p).ok_or_else(|| {
        format!(
            "--resume: no run of {} with a checkpoint under {}/ (give --output RUN_DIR or a \
             checkpoint path)",
            config,
            runs.display()
        )
    })
}

type World = Option<Rc<dyn Collective>>;

/// The run's config: the recipe with `--set`, `--device`, `--data-dir` and `--devices`
/// (under MPI, `--device wgpu` without an index is the GPU of each rank's local rank).
fn resolve_config(a: &TrainArgs, world: &World) -> Result<(ConfigSource, RunConfig), String> {
    let source = recipes::resolve(&a.config).map_err(|e| format!("--config {e}"))?;
    let mut cfg = source.load(&a.sets)?;
    apply_cli_overrides(&mut cfg, a.device.clone(), a.data_dir.clone());
    if let Some(w) = world {
        // `--device wgpu` without an index: each rank takes the GPU of its local rank.
        if cfg.train.devices.is_empty() && matches!(cfg.train.device.as_str(), "wgpu" | "gpu") {
            cfg.train.device = format!("wgpu:{}", w.local_rank());
        }
    }
    if let Some(p) = &a.init_from {
        cfg.train.init_from = p.to_string_lossy().into_owned();
    }
    if let Some(p) = a.precision {
        cfg.train.precision = p;
    }
    if a.transfer {
        if cfg.train.init_from.is_empty() {
            return Err(
                "--transfer re-initialises the head of weights given by --init-from (or \
                 train.init_from): give them"
                    .into(),
            );
        }
        if !cfg.train.init_exclude.iter().any(|p| p == "head") {
            cfg.train.init_exclude.push("head".into());
        }
    }
    if !a.devices.is_empty() {
        if cfg.train.device.contains(':') {
            return Err(format!(
                "--devices takes indices of one device kind, but the device is `{}`: give \
                 --device without an index (e.g. --device wgpu --devices 0,1)",
                cfg.train.device
            ));
        }
        cfg.train.devices = a
            .devices
            .iter()
            .map(|i| format!("{}:{i}", cfg.train.device))
            .collect();
    }
    Ok((source, cfg))
}

/// The run directory and the checkpoint to resume from: `--output`, else (resuming) the
/// checkpoint's run or the newest run of the config, else a fresh `runs/<name>[-N]`; every
/// rank takes rank 0's choice.
fn output_and_resume(
    a: &TrainArgs,
    source: &ConfigSource,
    world: &World,
) -> Result<(PathBuf, Option<PathBuf>), String> {
    // --auto-resume: continue the run in --output when it has a checkpoint.
    let resume = match (a.auto_resume, &a.output) {
        (true, Some(o)) if RunDir::at(o).last_checkpoint().is_file() => Some(PathBuf::new()),
        _ => a.resume.as_ref().map(PathBuf::from),
    };
    let bare_resume = resume.as_ref().is_some_and(|r| r.as_os_str().is_empty());
    let output = match (&a.output, &resume) {
        (Some(o), _) => o.clone(),
        (None, Some(_)) if bare_resume => newest_run(source)?,
        (None, Some(r)) => r
            .parent()
            .and_then(|p| p.parent())
            .map(|p| p.to_path_buf())
            .filter(|p| RunDir::at(p).last_checkpoint().exists())
            .unwrap_or_else(|| PathBuf::from("runs").join(source.stem())),
        (None, None) => fresh_output(source),
    };
    if a.allow_config_change && resume.is_none() {
        return Err("--allow-config-change applies to a resumed run: give --resume".into());
    }
    // Every rank writes to (and resumes from) rank 0's choice.
    let output = match world {
        Some(w) => PathBuf::from(broadcast_string(&**w, &output.to_string_lossy())),
        None => output,
    };
    let resume = resume.map(|r| {
        if r.as_os_str().is_empty() {
            RunDir::at(&output).last_checkpoint()
        } else {
            r
        }
    });
    if let Some(r) = &resume {
        if !r.is_file() {
            return Err(format!("--resume: {} not found", r.display()));
        }
    }
    Ok((output, resume))
}

/// Train; `Ok(Some(status))` when a signal stopped the run (checkpoint written).
fn run_train(a: TrainArgs, world: World) -> Result<Option<u8>, String> {
    let rank = world.as_ref().map_or(0, |w| w.rank());
    // Rank 0 alone prints; the others train quietly.
    let quiet = a.quiet || rank > 0;
    let (source, cfg) = resolve_config(&a, &world)?;
    if a.dry_run {
        return dry_run_report(&source, &cfg).map(|_| None);
    }
    let (output, resume) = output_and_resume(&a, &source, &world)?;
    if !quiet {
        print_header(&cfg, &output);
    }
    let opts = RunOptions {
        output: output.clone(),
        resume,
        progress: !quiet,
        verbose: !quiet,
        energy_table_each_eval: a.verbose && !quiet,
        overwrite: a.overwrite,
        allow_config_change: a.allow_config_change,
        stop: Some(statten::signals::install()),
        world,
        ..Default::default()
    };
    let start = std::time::Instant::now();
    let s = train(&cfg, &opts)?;
    if let Some(p) = &s.stopped {
        let sig = statten::signals::received();
        // The run's own resolved config (every --set, --device and --data-dir in it), so that
        // the command resumes whatever the run was started with.
        let run_config = RunDir::at(&output).config();
        eprintln!(
            "stopped at epoch {}, batch {}: the run is saved in {}; continue it with\n  \
             statten train --config {} --output {} --resume",
            p.epoch + 1,
            p.batches_done,
            p.checkpoint.display(),
            shell_word(&run_config.to_string_lossy()),
            shell_word(&output.to_string_lossy()),
        );
        return Ok(Some(statten::signals::exit_status(if sig > 0 {
            sig
        } else {
            15
        })));
    }
    if !quiet {
        print_footer(&s, start.elapsed().as_secs_f64(), &output);
    }
    Ok(None)
}

/// The run's directory and one line of what it trains.
fn print_header(cfg: &RunConfig, output: &std::path::Path) {
    println!("run directory   {}", output.display());
    println!(
        "model           {:?} + {} {}-{}, T={}, {} classes; data {:?}; {} epochs, batch {}, {:?} lr {:e} on {}",
        cfg.model.arch,
        cfg.model.attention.name(),
        cfg.model.depth,
        cfg.model.embed_dim,
        cfg.model.time_steps,
        cfg.model.num_classes,
        cfg.data.dataset,
        cfg.total_epochs(),
        cfg.train.batch_size,
        cfg.optimizer.kind,
        cfg.optimizer.lr,
        cfg.train.device
    );
}

/// The run's outcome: time, best top-1, where the files are, what was skipped.
fn print_footer(s: &statten_train::train::RunSummary, seconds: f64, output: &std::path::Path) {
    println!(
        "done in {seconds:.1} s: best eval top-1 {:.2} %; summary.csv, metrics.jsonl, curves.png, energy.json and checkpoints/ in {}",
        s.best_top1,
        output.display()
    );
    if s.skipped > 0 {
        println!("{} undecodable samples were skipped", s.skipped);
    }
    if s.skipped_steps > 0 {
        println!(
            "{} steps with a non-finite loss were skipped (train.skip_nonfinite)",
            s.skipped_steps
        );
    }
}

/// `w` as one word for a POSIX shell: as it is when it holds only safe characters, else in
/// single quotes.
fn shell_word(w: &str) -> String {
    let safe = |c: char| c.is_ascii_alphanumeric() || "/._-+:,=@%".contains(c);
    if !w.is_empty() && w.chars().all(safe) {
        w.to_string()
    } else {
        format!("'{}'", w.replace('\'', "'\\''"))
    }
}

/// `train --dry-run`: the resolved config, the model and the datasets a run would use.
fn dry_run_report(source: &ConfigSource, cfg: &RunConfig) -> Result<(), String> {
    println!("# {source}, resolved");
    print!("{}", cfg.to_toml());
    println!();
    model_info(&cfg.model)?;
    let root = cfg
        .data
        .resolved_root()
        .map(|r| r.display().to_string())
        .map_err(|e| e.to_string())?;
    println!("dataset           {:?} from {root}", cfg.data.dataset);
    for split in [Split::Train, Split::Test] {
        let ds = cfg
            .data
            .build(split, cfg.model.time_steps)
            .map_err(|e| format!("dry run: {e}"))?;
        let samples = ds.len();
        println!(
            "{:<17} {samples} samples, {} batches",
            format!("{split:?} split"),
            batches_per_epoch(cfg, split, ds)
        );
    }
    println!(
        "run               {} epochs, global batch {}{}, {:?} lr {:e}, device {}",
        cfg.total_epochs(),
        cfg.train.batch_size,
        if cfg.train.micro_batch > 0 {
            format!(" in micro-batches of {}", cfg.train.micro_batch)
        } else {
            String::new()
        },
        cfg.optimizer.kind,
        cfg.optimizer.lr,
        if cfg.train.devices.is_empty() {
            cfg.train.device.clone()
        } else {
            cfg.train.devices.join(",")
        }
    );
    println!("schedule          {}", schedule_line(cfg));
    println!("dry run: nothing was trained or written");
    Ok(())
}

/// The learning-rate schedule against the run's length, in words.
fn schedule_line(cfg: &RunConfig) -> String {
    let sc = &cfg.schedule;
    let mut line = format!(
        "cosine over {} epochs from lr {:e} to {:e}{}{}{}",
        sc.epochs,
        cfg.optimizer.lr,
        sc.min_lr,
        if sc.warmup_epochs > 0 {
            format!(
                ", the first {} a linear warm-up from {:e}",
                sc.warmup_epochs, sc.warmup_lr
            )
        } else {
            String::new()
        },
        if sc.cooldown_epochs > 0 {
            format!(
                ", then {} cooldown epochs at {:e}",
                sc.cooldown_epochs, sc.min_lr
            )
        } else {
            String::new()
        },
        if sc.per_iteration {
            ", updated every step"
        } else {
            ", updated every epoch"
        }
    );
    let (run, planned) = (cfg.total_epochs(), sc.total_epochs());
    if run != planned {
        line += &format!(
            "; the run lasts {run} epochs, {} the schedule's {planned} (schedule.fit_to_run = \
             false)",
            if run < planned {
                "fewer than"
            } else {
                "more than"
            }
        );
    } else {
        line += &format!("; the run lasts {run} epochs");
    }
    line
}
