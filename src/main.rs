//! The `statten` command-line tool.

use std::rc::Rc;

use statten_train::dist::Collective;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::builder::{PossibleValuesParser, TypedValueParser};
use clap::{Parser, Subcommand, ValueEnum};
use statten::device::DeviceName;
use statten::parity::{run_parity, ParityOptions};
use statten::recipes::{self, ConfigSource};
use statten_core::conv::{with_algorithm, ConvAlgorithm};
use statten_core::models::{ModelConfig, PRESETS};
use statten_data::cifar::Split;
use statten_data::config::DatasetName;
use statten_data::events::frames::SplitBy;
use statten_data::events::resize::Interp;
use statten_data::events::EventFormat;
use statten_train::config::RunConfig;
use statten_train::rundir::RunDir;
use statten_train::trainer::{eval_checkpoint, train, RunOptions, DEVICE_FAILURE_CAUSE};

#[derive(Parser)]
#[command(
    name = "statten",
    version,
    about = "Spiking transformers with spatial-temporal attention (STAtten) on Burn",
    long_about = "statten trains and checks spiking transformers (Spike-driven Transformer and \
                  Spikformer with STAtten, SDSA or SSA attention) on CPU (flex, ndarray) or GPU \
                  (wgpu), computing exactly what the PyTorch reference computes."
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Check the model against a PyTorch reference fixture (logits, spikes, gradients, BN
    /// statistics, one AdamW step). Exits non-zero if any check fails.
    Parity {
        /// Fixture directory (config.json, weights.safetensors, tensors.safetensors). Repeat to
        /// check several.
        #[arg(long, required = true)]
        fixture: Vec<PathBuf>,
        /// Device: cpu, flex, ndarray or wgpu.
        #[arg(long, default_value = "cpu")]
        device: DeviceName,
        /// Relax the SDT stem stage 1-3 gradient tolerance to 0.1 (for convolutions that are not
        /// position-independent; see the fixtures README §6).
        #[arg(long)]
        relax_sps_ties: bool,
        /// The CPU convolutions' kernels: exact (default; reference-exact), winograd (faster 3x3
        /// gradients, not reference-exact) or float64 (every sum in float64).
        #[arg(long, value_parser = listed::<ConvAlgorithm>(&ConvAlgorithm::NAMES))]
        conv_algorithm: Option<ConvAlgorithm>,
    },
    /// Time the core workloads (fused and composite LIF, attention core, STAtten block, one
    /// CIFAR-10 2-512 training step), or with `--train PRESET` the training throughput of a
    /// preset (synthetic data, AdamW step included): images/s and peak memory. For careful CPU
    /// numbers use `cargo bench --bench core` (criterion).
    Bench {
        /// Devices, comma-separated (cpu, flex, ndarray, wgpu).
        #[arg(long, default_value = "cpu", value_delimiter = ',')]
        device: Vec<DeviceName>,
        /// Timed iterations per workload (the median is reported; `--train` also reports the fastest).
        #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u64).range(1..))]
        iters: u64,
        /// Untimed warm-up iterations (shader compilation, autotuning).
        #[arg(long, default_value_t = 1)]
        warmup: u64,
        /// Batch size of the training-step workloads.
        #[arg(long, default_value_t = 8, value_parser = clap::value_parser!(u64).range(1..))]
        batch: u64,
        /// Workloads to run, comma-separated.
        #[arg(
            long,
            value_enum,
            default_value = "lif,lif-composite,core,block,train",
            value_delimiter = ','
        )]
        only: Vec<Workload>,
        /// Training-throughput mode: one training step of this preset (see `statten model
        /// presets`) at --batch, repeated --iters times; prints images/s and peak memory.
        #[arg(long, value_name = "PRESET")]
        train: Option<String>,
        /// With --train: override a model key of the preset, e.g. `--set model.chunk_size=2`.
        #[arg(long = "set", value_name = "model.KEY=VALUE")]
        sets: Vec<String>,
        /// All-reduce mode (under `mpirun`, built with `--features mpi`): time the per-step
        /// gradient all-reduce of this preset's parameters (one flat f32 buffer, as `train`
        /// does) over the ranks; prints the bytes and the median time.
        #[arg(long, value_name = "PRESET", conflicts_with = "train")]
        allreduce: Option<String>,
        /// CPU threads (default: RAYON_NUM_THREADS, else all cores).
        #[arg(long)]
        threads: Option<usize>,
        /// The CPU convolutions' kernels: exact (default; reference-exact), winograd (faster 3x3
        /// gradients, not reference-exact) or float64 (every sum in float64; slow).
        #[arg(long, value_parser = listed::<ConvAlgorithm>(&ConvAlgorithm::NAMES))]
        conv_algorithm: Option<ConvAlgorithm>,
    },
    /// Train a model from a TOML run config (see `statten configs`), with progress bars,
    /// summary.csv, metrics.jsonl, curves.png, energy.json and resumable checkpoints in the run
    /// directory.
    Train {
        /// The run config: a TOML file, or the name of a shipped recipe (`statten configs`
        /// lists them; a file of that name wins).
        #[arg(long)]
        config: PathBuf,
        /// Override any config key, e.g. `--set train.epochs=10 --set optimizer.lr=1e-3`.
        #[arg(long = "set", value_name = "KEY=VALUE")]
        sets: Vec<String>,
        /// Device: cpu, flex, ndarray or wgpu, optionally with an index as in train.device
        /// (wgpu:1, wgpu:integrated:0, wgpu:cpu); overrides train.device.
        #[arg(long)]
        device: Option<DeviceName>,
        /// Data parallel over these device indices of --device's kind, e.g. `--devices 0,1`
        /// (overrides train.devices).
        #[arg(long, value_delimiter = ',')]
        devices: Vec<usize>,
        /// Dataset folder (overrides data.root).
        #[arg(long)]
        data_dir: Option<PathBuf>,
        /// Run directory (default runs/<config name>, or a fresh runs/<config name>-N when that
        /// one already holds a run).
        #[arg(long)]
        output: Option<PathBuf>,
        /// Continue a run: from CKPT, or without a path from <output>/checkpoints/last.safetensors
        /// (without --output: the newest run of this config under runs/). A mid-epoch checkpoint
        /// continues from its step.
        #[arg(long, num_args = 0..=1, default_missing_value = "", value_name = "CKPT")]
        resume: Option<String>,
        /// Resume the run in --output when it has a checkpoint, start it there otherwise (for
        /// job scripts that are resubmitted or requeued).
        #[arg(long, requires = "output", conflicts_with_all = ["resume", "overwrite"])]
        auto_resume: bool,
        /// Replace the run in --output (its config, metrics, plots and checkpoints) instead of
        /// refusing to write into it.
        #[arg(long, conflicts_with = "resume")]
        overwrite: bool,
        /// Resume with a config that differs from the one the checkpoint was written with.
        #[arg(long)]
        allow_config_change: bool,
        /// Print the resolved config, the model summary and the datasets it would read, then
        /// exit without training.
        #[arg(long)]
        dry_run: bool,
        /// No progress bars or per-epoch lines.
        #[arg(long, conflicts_with = "verbose")]
        quiet: bool,
        /// Also print the per-layer firing-rate table after every evaluation (by default it
        /// is printed once, at the end of the run).
        #[arg(long)]
        verbose: bool,
        /// CPU threads (default: RAYON_NUM_THREADS, else all cores).
        #[arg(long)]
        threads: Option<usize>,
    },
    /// Evaluate a checkpoint (a statten checkpoint or reference weights) on a split of its
    /// dataset (eval transforms): loss, top-1/top-5 and the energy report.
    Eval {
        /// Checkpoint (.safetensors from `statten train`, or reference weights .safetensors/.pth).
        #[arg(long)]
        checkpoint: PathBuf,
        /// Run config (a file or a recipe name); default: the config stored in a statten
        /// checkpoint.
        #[arg(long)]
        config: Option<PathBuf>,
        /// The split to evaluate.
        #[arg(long, value_enum, default_value = "test")]
        split: SplitArg,
        /// Print the result as one JSON object (loss, top-1, top-5, energy report) instead.
        #[arg(long)]
        json: bool,
        /// Override config keys.
        #[arg(long = "set", value_name = "KEY=VALUE")]
        sets: Vec<String>,
        /// Device.
        #[arg(long)]
        device: Option<DeviceName>,
        /// Dataset folder (overrides data.root).
        #[arg(long)]
        data_dir: Option<PathBuf>,
        /// Evaluate only the first N batches (default: the whole split).
        #[arg(long, default_value_t = 0, value_name = "N")]
        max_batches: usize,
        /// CPU threads (default: RAYON_NUM_THREADS, else all cores).
        #[arg(long)]
        threads: Option<usize>,
    },
    /// The shipped recipes (compiled in): one line each, or `configs show NAME` for one.
    Configs {
        #[command(subcommand)]
        command: Option<ConfigsCommand>,
        /// List the TOML files of this folder instead of the compiled-in recipes.
        #[arg(long)]
        dir: Option<PathBuf>,
    },
    /// Draw the learning curves of one or more runs into one PNG (loss, top-1/top-5, learning
    /// rate), e.g. to compare STAtten with SDSA.
    Plot {
        /// Run directories (each with a summary.csv).
        #[arg(required = true)]
        runs: Vec<PathBuf>,
        /// The PNG to write.
        #[arg(long, default_value = "curves.png")]
        out: PathBuf,
        /// The plot's title (default: the run names).
        #[arg(long)]
        title: Option<String>,
    },
    /// Dataset tools: inspect a dataset folder, turn an event recording into frames.
    Data {
        #[command(subcommand)]
        command: DataCommand,
    },
    /// Model tools.
    Model {
        #[command(subcommand)]
        command: ModelCommand,
    },
}

#[derive(Subcommand)]
enum ConfigsCommand {
    /// Print a recipe's TOML.
    Show {
        /// The recipe's name (e.g. cifar10-2-512).
        name: String,
    },
}

/// `bench --only` workloads.
#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Workload {
    /// Fused LIF forward + backward.
    Lif,
    /// The composite (per-step autodiff) LIF.
    LifComposite,
    /// The LIF over all steps at once.
    LifBatched,
    /// The attention core.
    Core,
    /// One STAtten block.
    Block,
    /// One CIFAR-10 2-512 training step.
    Train,
}

/// A dataset split.
#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
enum SplitArg {
    /// The training split.
    Train,
    /// The test (validation) split.
    #[value(alias = "val")]
    Test,
}

impl From<SplitArg> for Split {
    fn from(s: SplitArg) -> Self {
        match s {
            SplitArg::Train => Split::Train,
            SplitArg::Test => Split::Test,
        }
    }
}

/// Frame resize interpolation.
#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
enum InterpArg {
    /// Bilinear (the CIFAR10-DVS reference).
    Bilinear,
    /// Nearest (the N-Caltech101 reference).
    Nearest,
}

impl From<InterpArg> for Interp {
    fn from(s: InterpArg) -> Self {
        match s {
            InterpArg::Bilinear => Interp::Bilinear,
            InterpArg::Nearest => Interp::Nearest,
        }
    }
}

/// A value parser that lists `values` in `--help` and parses the chosen one with `FromStr`.
fn listed<T>(values: &'static [&'static str]) -> impl TypedValueParser<Value = T>
where
    T: std::str::FromStr + Clone + Send + Sync + 'static,
    T::Err: std::fmt::Debug,
{
    PossibleValuesParser::new(values).map(|s| s.parse::<T>().expect("a listed value parses"))
}

#[derive(Subcommand)]
enum DataCommand {
    /// Counts per split and class, sample shape, and value statistics of a few samples (eval
    /// pipeline).
    Inspect {
        /// The dataset.
        #[arg(long, value_parser = listed::<DatasetName>(&["cifar10", "cifar100", "imagenet",
              "cifar10-dvs", "ncaltech101", "fashion-mnist", "mnist"]))]
        dataset: DatasetName,
        /// The dataset folder (Fashion-MNIST: default /usr/share/datasets/fashion-mnist).
        #[arg(long)]
        root: Option<PathBuf>,
        /// The split.
        #[arg(long, value_enum, default_value = "train")]
        split: SplitArg,
        /// Samples whose statistics are printed.
        #[arg(long, default_value_t = 3)]
        samples: usize,
        /// Frames per sample for event datasets.
        #[arg(long, default_value_t = 10)]
        time_steps: usize,
    },
    /// Integrate one event recording into [T, 2, H, W] f32 frames exactly as SpikingJelly and
    /// write them as tensor `frames` of a safetensors file. No resize unless asked (128×128 for
    /// AEDAT 2.0, 180×240 for N-Caltech101).
    Frames {
        /// aedat2 (CIFAR10-DVS) or ncaltech (N-Caltech101, N-MNIST).
        #[arg(long, value_parser = listed::<EventFormat>(&["aedat2", "ncaltech"]))]
        format: EventFormat,
        /// The recording.
        #[arg(long)]
        input: PathBuf,
        /// Number of frames T.
        #[arg(long)]
        time_steps: usize,
        /// Split the events into T frames by event count or by time.
        #[arg(long, default_value = "number", value_parser = listed::<SplitBy>(&["number", "time"]))]
        split_by: SplitBy,
        /// Resize every frame to H W.
        #[arg(long, num_args = 2, value_names = ["H", "W"])]
        resize: Option<Vec<usize>>,
        /// Resize interpolation.
        #[arg(long, value_enum, default_value = "bilinear")]
        interp: InterpArg,
        /// Give empty frames for empty split_by=time windows instead of failing as SpikingJelly.
        #[arg(long)]
        allow_empty_windows: bool,
        /// Output .safetensors file.
        #[arg(long)]
        out: PathBuf,
    },
}

fn apply_cli_overrides(cfg: &mut RunConfig, device: Option<DeviceName>, data_dir: Option<PathBuf>) {
    if let Some(d) = device {
        cfg.train.device = d.to_string();
    }
    if let Some(r) = data_dir {
        cfg.data.root = Some(r);
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

/// The `train` command's arguments.
struct TrainArgs {
    config: PathBuf,
    auto_resume: bool,
    dry_run: bool,
    verbose: bool,
    sets: Vec<String>,
    device: Option<DeviceName>,
    devices: Vec<usize>,
    data_dir: Option<PathBuf>,
    output: Option<PathBuf>,
    resume: Option<PathBuf>,
    overwrite: bool,
    allow_config_change: bool,
    quiet: bool,
    /// The MPI ranks, when started as one of several.
    world: Option<Rc<dyn Collective>>,
}

/// Rank 0's `text` on every rank.
fn broadcast_string(w: &dyn Collective, text: &str) -> String {
    let mut len = [text.len() as u64];
    w.broadcast_u64(&mut len);
    let mut words: Vec<u64> = text
        .as_bytes()
        .chunks(8)
        .map(|c| {
            let mut b = [0u8; 8];
            b[..c.len()].copy_from_slice(c);
            u64::from_le_bytes(b)
        })
        .collect();
    words.resize((len[0] as usize).div_ceil(8), 0);
    w.broadcast_u64(&mut words);
    let bytes: Vec<u8> = words
        .iter()
        .flat_map(|v| v.to_le_bytes())
        .take(len[0] as usize)
        .collect();
    String::from_utf8_lossy(&bytes).into_owned()
}

/// The MPI world when this process is one of several ranks (built with the `mpi` feature);
/// without the feature, being started by an MPI launcher as one of several ranks is an error.
fn mpi_world() -> Result<Option<Rc<dyn Collective>>, String> {
    #[cfg(feature = "mpi")]
    {
        let w = statten_train::dist::MpiWorld::init()?;
        if w.size() > 1 {
            return Ok(Some(Rc::new(w)));
        }
        Ok(None)
    }
    #[cfg(not(feature = "mpi"))]
    {
        if let Some(n) = statten_train::dist::launcher_world_size() {
            return Err(format!(
                "started as one of {n} MPI ranks, but this statten was built without the `mpi` \
                 cargo feature, so every rank would train alone: build it with `cargo build \
                 --release --features mpi` (needs an MPI installation, e.g. Debian's \
                 libopenmpi-dev and libclang-dev)"
            ));
        }
        Ok(None)
    }
}

/// Train; `Ok(Some(status))` when a signal stopped the run (checkpoint written).
fn run_train(a: TrainArgs) -> Result<Option<u8>, String> {
    let TrainArgs {
        config,
        auto_resume,
        dry_run,
        verbose,
        sets,
        device,
        devices,
        data_dir,
        output,
        resume,
        overwrite,
        allow_config_change,
        quiet,
        world,
    } = a;
    let rank = world.as_ref().map_or(0, |w| w.rank());
    // Rank 0 alone prints; the others train quietly.
    let quiet = quiet || rank > 0;
    let source = recipes::resolve(&config).map_err(|e| format!("--config {e}"))?;
    let mut cfg = source.load(&sets)?;
    apply_cli_overrides(&mut cfg, device, data_dir);
    if let Some(w) = &world {
        // `--device wgpu` without an index: each rank takes the GPU of its local rank.
        if cfg.train.devices.is_empty() && matches!(cfg.train.device.as_str(), "wgpu" | "gpu") {
            cfg.train.device = format!("wgpu:{}", w.local_rank());
        }
    }
    if !devices.is_empty() {
        if cfg.train.device.contains(':') {
            return Err(format!(
                "--devices takes indices of one device kind, but the device is `{}`: give \
                 --device without an index (e.g. --device wgpu --devices 0,1)",
                cfg.train.device
            ));
        }
        cfg.train.devices = devices
            .iter()
            .map(|i| format!("{}:{i}", cfg.train.device))
            .collect();
    }
    if dry_run {
        return dry_run_report(&source, &cfg).map(|_| None);
    }
    // --auto-resume: continue the run in --output when it has a checkpoint.
    let resume = match (auto_resume, &output) {
        (true, Some(o)) if RunDir::at(o).last_checkpoint().is_file() => Some(PathBuf::new()),
        _ => resume,
    };
    let bare_resume = resume.as_ref().is_some_and(|r| r.as_os_str().is_empty());
    let output = match (&output, &resume) {
        (Some(o), _) => o.clone(),
        (None, Some(_)) if bare_resume => newest_run(&source)?,
        (None, Some(r)) => r
            .parent()
            .and_then(|p| p.parent())
            .map(|p| p.to_path_buf())
            .filter(|p| RunDir::at(p).last_checkpoint().exists())
            .unwrap_or_else(|| PathBuf::from("runs").join(source.stem())),
        (None, None) => fresh_output(&source),
    };
    if allow_config_change && resume.is_none() {
        return Err("--allow-config-change applies to a resumed run: give --resume".into());
    }
    // Every rank writes to (and resumes from) rank 0's choice.
    let output = match &world {
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
    if !quiet {
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
    let opts = RunOptions {
        output: output.clone(),
        resume,
        progress: !quiet,
        verbose: !quiet,
        energy_table_each_eval: verbose && !quiet,
        overwrite,
        allow_config_change,
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
        println!(
            "done in {:.1} s: best eval top-1 {:.2} %; summary.csv, metrics.jsonl, curves.png, energy.json and checkpoints/ in {}",
            start.elapsed().as_secs_f64(),
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
    Ok(None)
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

/// `statten eval`'s arguments.
struct EvalArgs {
    checkpoint: PathBuf,
    config: Option<PathBuf>,
    split: SplitArg,
    json: bool,
    sets: Vec<String>,
    device: Option<DeviceName>,
    data_dir: Option<PathBuf>,
    max_batches: usize,
}

fn run_eval(a: EvalArgs) -> Result<(), String> {
    let mut cfg = match &a.config {
        Some(c) => recipes::resolve(c)
            .map_err(|e| format!("--config {e}"))?
            .load(&a.sets)?,
        None => {
            let meta =
                statten_train::checkpoint::read_meta(&a.checkpoint).map_err(|e| e.to_string())?;
            RunConfig::parse(&meta.config, &a.sets)?
        }
    };
    apply_cli_overrides(&mut cfg, a.device, a.data_dir);
    let (ev, rep) = eval_checkpoint(&cfg, &a.checkpoint, a.split.into(), a.max_batches, !a.json)?;
    let split = a
        .split
        .to_possible_value()
        .map(|v| v.get_name().to_string());
    if a.json {
        let v = serde_json::json!({
            "checkpoint": a.checkpoint.display().to_string(),
            "split": split,
            "images": ev.images,
            "loss": ev.loss,
            "top1": ev.top1,
            "top5": ev.top5,
            "energy": rep,
        });
        println!("{v}");
    } else {
        println!(
            "{} split, {} images: eval loss {:.4}  top-1 {:.2} %  top-5 {:.2} %",
            split.unwrap_or_default(),
            ev.images,
            ev.loss,
            ev.top1,
            ev.top5
        );
        print!("{}", rep.table());
    }
    Ok(())
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
        let batches = match split {
            // Under mixup the last incomplete batch is dropped (mixup pairs samples).
            Split::Train if cfg.mixup().active() => ds.len() / cfg.train.batch_size.max(1),
            Split::Train => ds.len().div_ceil(cfg.train.batch_size.max(1)),
            Split::Test => ds.len().div_ceil(cfg.train.eval_batch().max(1)),
        };
        println!(
            "{:<17} {} samples, {} batches",
            format!("{split:?} split"),
            ds.len(),
            batches
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

/// Write `line` to stdout; false when the pipe is closed (`statten configs | head`).
fn out_line(line: &str) -> bool {
    use std::io::Write;
    let mut o = std::io::stdout();
    o.write_all(line.as_bytes()).is_ok() && o.write_all(b"\n").is_ok()
}

fn run_configs(dir: Option<PathBuf>, command: Option<ConfigsCommand>) -> Result<(), String> {
    if let Some(ConfigsCommand::Show { name }) = command {
        let src = recipes::resolve(std::path::Path::new(&name))
            .map_err(|e| format!("configs show {e}"))?;
        print!("{}", src.text()?);
        return Ok(());
    }
    let Some(dir) = dir else {
        for (name, text) in recipes::RECIPES {
            if !out_line(&format!("{name:<36} {}", recipes::describe(text))) {
                break;
            }
        }
        return Ok(());
    };
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .map_err(|e| format!("{}: {e}", dir.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e == "toml"))
        .collect();
    files.sort();
    for f in files {
        let text = std::fs::read_to_string(&f).map_err(|e| format!("{}: {e}", f.display()))?;
        if !out_line(&format!("{:<44} {}", f.display(), recipes::describe(&text))) {
            break;
        }
    }
    Ok(())
}

fn run_data(command: DataCommand) -> Result<String, String> {
    match command {
        DataCommand::Inspect {
            dataset,
            root,
            split,
            samples,
            time_steps,
        } => {
            let root = match root {
                Some(r) => r,
                None if dataset == DatasetName::FashionMnist => {
                    PathBuf::from(statten_data::mnist::FASHION_MNIST_SYSTEM_DIR)
                }
                None => {
                    return Err(format!(
                        "--root is required for {dataset:?}: {}",
                        dataset.download_hint()
                    ))
                }
            };
            statten::data_cli::inspect(dataset, &root, split.into(), samples, time_steps)
        }
        DataCommand::Frames {
            format,
            input,
            time_steps,
            split_by,
            resize,
            interp,
            allow_empty_windows,
            out,
        } => {
            let o = statten::data_cli::FramesOptions {
                format,
                time_steps,
                split_by,
                resize: resize.map(|v| (v[0], v[1])),
                interp: interp.into(),
                allow_empty_windows,
            };
            statten::data_cli::frames(&input, &out, &o)
        }
    }
}

#[derive(Subcommand)]
enum ModelCommand {
    /// Architecture summary, parameter count, token grid and forward MACs per image.
    Info {
        /// A named preset (see `statten model presets`).
        #[arg(long, conflicts_with = "config", required_unless_present = "config")]
        preset: Option<String>,
        /// A TOML file with a `[model]` table (or the model keys at top level).
        #[arg(long)]
        config: Option<PathBuf>,
        /// Print the fully resolved configuration as a TOML `[model]` table instead.
        #[arg(long)]
        toml: bool,
    },
    /// List the named presets.
    Presets,
}

fn load_model_config(path: &PathBuf) -> Result<ModelConfig, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
    statten_core::models::parse_model_toml(&text).map_err(|e| format!("{}: {e}", path.display()))
}

fn human(n: u64) -> String {
    if n >= 1_000_000_000 {
        format!("{:.2} G", n as f64 / 1e9)
    } else if n >= 1_000_000 {
        format!("{:.2} M", n as f64 / 1e6)
    } else {
        format!("{n}")
    }
}

fn model_info(cfg: &ModelConfig) -> Result<(), String> {
    cfg.validate().map_err(|e| e.to_string())?;
    let device = burn::tensor::Device::flex();
    let model = cfg.init(&device).map_err(|e| e.to_string())?;
    let params = statten_core::models::parameter_count(&model);
    let (gh, gw) = cfg.grid();
    let macs = cfg.macs();
    println!(
        "architecture      {:?} with {} attention",
        cfg.arch,
        cfg.attention.name()
    );
    println!(
        "size              {}-{} (depth-dim), {} heads of dim {}, MLP ratio {}",
        cfg.depth,
        cfg.embed_dim,
        cfg.num_heads,
        cfg.embed_dim / cfg.num_heads,
        cfg.mlp_ratio
    );
    println!(
        "input             {}x{}x{}{}, T = {}{}",
        cfg.in_channels,
        cfg.img_size,
        cfg.img_size,
        if cfg.dvs {
            " event frames"
        } else {
            " images (repeated over T)"
        },
        cfg.time_steps,
        if cfg.attention == statten_core::attention::AttentionKind::Statten {
            format!(
                ", chunk size {} ({} blocks)",
                cfg.chunk_size,
                cfg.time_steps / cfg.chunk_size
            )
        } else {
            String::new()
        }
    );
    println!("stem pooling      {}", cfg.pooling_stat);
    println!("token grid        {gh}x{gw} (N = {})", gh * gw);
    println!("classes           {}", cfg.num_classes);
    println!("parameters        {params} ({:.2} M)", params as f64 / 1e6);
    println!(
        "reference count   {} (includes the never-used talking_heads / norm weights, as the reference does)",
        cfg.reference_param_count()
    );
    println!(
        "forward MACs      {} per image (first conv {}, spike-driven layers {})",
        human(macs.total()),
        human(macs.first_conv),
        human(macs.other)
    );
    Ok(())
}

/// `, conv ALGORITHM` on flex, where the CPU convolution kernels run (the algorithm this
/// thread's convolutions use); nothing on other devices, whose convolutions have one path.
fn conv_note(device: &DeviceName) -> String {
    if device.is_flex() {
        format!(", conv {}", statten_core::conv::algorithm::current())
    } else {
        String::new()
    }
}

/// Median wall time of `iters` runs of `it` after `warmup` untimed ones; the first error the
/// device reports ends the measurement.
fn median_ms(it: &mut statten::bench::Iteration, warmup: u64, iters: u64) -> Result<f64, String> {
    step_times_ms(it, warmup, iters).map(|(median, _)| median)
}

/// `(median, fastest)` of `iters` timed runs after `warmup` untimed ones, in ms.
fn step_times_ms(
    it: &mut statten::bench::Iteration,
    warmup: u64,
    iters: u64,
) -> Result<(f64, f64), String> {
    for _ in 0..warmup {
        it()?;
    }
    let mut times = Vec::with_capacity(iters as usize);
    for _ in 0..iters.max(1) {
        let t0 = std::time::Instant::now();
        std::hint::black_box(it()?);
        times.push(t0.elapsed().as_secs_f64() * 1e3);
    }
    times.sort_by(|a, b| a.total_cmp(b));
    Ok((times[times.len() / 2], times[0]))
}

fn run_bench(
    devices: &[DeviceName],
    iters: u64,
    warmup: u64,
    batch: usize,
    only: &[Workload],
) -> Result<(), String> {
    use statten::bench::{self, LifForm};
    println!(
        "threads {} (CPU backends), conv {} (flex)\n{:<28} {:<8} {:>12} {:>12}",
        rayon::current_num_threads(),
        statten_core::conv::algorithm::current(),
        "workload",
        "device",
        "median ms",
        "images/s"
    );
    for dev_name in devices {
        let dev = dev_name.device();
        let mut workloads: Vec<(String, Option<usize>, bench::Iteration)> = Vec::new();
        let want = |k: Workload| only.contains(&k);
        if want(Workload::Lif) {
            let form = if dev_name.has_fused_lif() {
                LifForm::Fused
            } else {
                LifForm::PerStep
            };
            workloads.push(("lif_fwd_bwd".into(), None, bench::lif(&dev, form)));
        }
        if want(Workload::LifComposite) {
            workloads.push((
                "lif_fwd_bwd_composite".into(),
                None,
                bench::lif(&dev, LifForm::PerStep),
            ));
        }
        if want(Workload::LifBatched) {
            workloads.push((
                "lif_fwd_bwd_batched".into(),
                None,
                bench::lif(&dev, LifForm::Batched),
            ));
        }
        if want(Workload::Core) {
            workloads.push((
                "attention_core_fwd_bwd".into(),
                None,
                bench::attention_core(&dev),
            ));
        }
        if want(Workload::Block) {
            workloads.push((
                "statten_block_fwd_bwd".into(),
                None,
                bench::statten_block(&dev),
            ));
        }
        if want(Workload::Train) {
            workloads.push((
                format!("train_step_2_512_b{batch}"),
                Some(batch),
                bench::train_step(&dev, batch),
            ));
        }
        for (name, images, mut it) in workloads {
            let med = median_ms(&mut it, warmup, iters).map_err(|e| {
                format!("{name} on {dev_name} failed on the device: {e}\n{DEVICE_FAILURE_CAUSE}: try a smaller --batch")
            })?;
            let ips = images.map_or("-".into(), |b| format!("{:.1}", b as f64 / med * 1e3));
            println!("{name:<28} {dev_name:<8} {med:>12.1} {ips:>12}");
        }
    }
    Ok(())
}

fn run_bench_train(
    devices: &[DeviceName],
    preset: &str,
    sets: &[String],
    iters: u64,
    warmup: u64,
    batch: usize,
) -> Result<(), String> {
    let cfg = statten_train::config::model_with_sets(preset, sets)
        .map_err(|e| format!("--train: {e}"))?;
    for dev_name in devices {
        let dev = dev_name.device();
        let (mut it, rate) = statten::bench::train_step_with_rate(&dev, &cfg, batch);
        let (med, min) = step_times_ms(&mut it, warmup, iters).map_err(|e| {
            format!(
                "train {preset} batch {batch} on {dev_name}: the step failed on the device: \
                 {e}\n{DEVICE_FAILURE_CAUSE}: try a smaller --batch"
            )
        })?;
        let memory = match statten::bench::device_reserved_bytes(&dev) {
            Some(b) => format!("device pool {:.2} GiB", b as f64 / (1u64 << 30) as f64),
            None => match statten::bench::peak_rss_bytes() {
                Some(b) => format!("peak RSS {:.2} GiB", b as f64 / (1u64 << 30) as f64),
                None => "memory unknown".into(),
            },
        };
        let overrides = if sets.is_empty() {
            String::new()
        } else {
            format!(" [{}]", sets.join(", "))
        };
        println!(
            "train {preset}{overrides} T={} batch {batch} on {dev_name} ({} CPU threads{}): \
             {med:.1} ms/step (min {min:.1}), {:.1} images/s, {memory}, mean firing rate {:.3}",
            cfg.time_steps,
            rayon::current_num_threads(),
            conv_note(dev_name),
            batch as f64 / med * 1e3,
            rate.get(),
        );
    }
    Ok(())
}

/// `bench --allreduce`: the gradient all-reduce of `preset` over the MPI ranks.
fn run_bench_allreduce(
    preset: &str,
    sets: &[String],
    iters: u64,
    warmup: u64,
) -> Result<(), String> {
    let cfg = statten_train::config::model_with_sets(preset, sets)
        .map_err(|e| format!("--allreduce: {e}"))?;
    let model = cfg
        .init(&burn::tensor::Device::flex())
        .map_err(|e| e.to_string())?;
    let params = statten_core::models::parameter_count(&model);
    let Some(world) = mpi_world()? else {
        return Err(
            "--allreduce needs several MPI ranks: run it under `mpirun -np N` (a \
                    statten built with --features mpi)"
                .into(),
        );
    };
    let mut buf = vec![1e-3f32; params];
    let w = world.clone();
    let mut once: statten::bench::Iteration = Box::new(move || {
        w.all_reduce_sum_f32(&mut buf);
        // Keep the values bounded (the sums grow by a factor of the ranks each call).
        let r = w.size() as f32;
        buf.iter_mut().for_each(|v| *v /= r);
        Ok(buf[0])
    });
    let med = median_ms(&mut once, warmup, iters)?;
    if world.rank() == 0 {
        println!(
            "all-reduce {preset}: {params} parameters = {:.1} MB f32 over {} ranks: {med:.2} ms \
             median of {iters} ({:.2} GB/s algorithmic)",
            params as f64 * 4.0 / 1e6,
            world.size(),
            params as f64 * 4.0 / (med * 1e-3) / 1e9
        );
    }
    Ok(())
}

fn main() -> ExitCode {
    statten::threads::tune_allocator();
    let cli = Cli::parse();
    if let Err(e) = statten_core::conv::algorithm::from_env() {
        eprintln!("error: {e}");
        return ExitCode::from(2);
    }
    match cli.command {
        Command::Parity {
            fixture,
            device,
            relax_sps_ties,
            conv_algorithm,
        } => {
            let dev = device.device();
            let opts = ParityOptions { relax_sps_ties };
            let alg = conv_algorithm.unwrap_or_else(statten_core::conv::algorithm::current);
            let ok = with_algorithm(alg, || {
                let mut ok = true;
                for dir in fixture {
                    match run_parity(&dir, &dev, &opts) {
                        Ok(report) => {
                            let note = conv_note(&device);
                            println!("fixture {} on {device}{note}", report.fixture);
                            for g in &report.groups {
                                println!("  {g}");
                            }
                            println!("  => {}", if report.pass() { "PASS" } else { "FAIL" });
                            ok &= report.pass();
                        }
                        Err(e) => {
                            eprintln!("error: {e}");
                            ok = false;
                        }
                    }
                }
                ok
            });
            if ok {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            }
        }
        Command::Bench {
            device,
            iters,
            warmup,
            batch,
            only,
            train,
            sets,
            allreduce,
            threads,
            conv_algorithm,
        } => {
            let alg = conv_algorithm.unwrap_or_else(statten_core::conv::algorithm::current);
            if let Err(e) = statten::threads::configure(threads) {
                eprintln!("error: {e}");
                return ExitCode::FAILURE;
            }
            if !sets.is_empty() && train.is_none() && allreduce.is_none() {
                eprintln!("error: --set applies to --train or --allreduce");
                return ExitCode::FAILURE;
            }
            if let Some(preset) = allreduce {
                return match run_bench_allreduce(&preset, &sets, iters, warmup) {
                    Ok(()) => ExitCode::SUCCESS,
                    Err(e) => {
                        eprintln!("error: {e}");
                        ExitCode::FAILURE
                    }
                };
            }
            let batch = batch as usize;
            match train {
                Some(preset) => {
                    match with_algorithm(alg, || {
                        run_bench_train(&device, &preset, &sets, iters, warmup, batch)
                    }) {
                        Ok(()) => ExitCode::SUCCESS,
                        Err(e) => {
                            eprintln!("error: {e}");
                            ExitCode::FAILURE
                        }
                    }
                }
                None => {
                    match with_algorithm(alg, || run_bench(&device, iters, warmup, batch, &only)) {
                        Ok(()) => ExitCode::SUCCESS,
                        Err(e) => {
                            eprintln!("error: {e}");
                            ExitCode::FAILURE
                        }
                    }
                }
            }
        }
        Command::Train {
            config,
            sets,
            device,
            devices,
            data_dir,
            output,
            resume,
            auto_resume,
            overwrite,
            allow_config_change,
            dry_run,
            quiet,
            verbose,
            threads,
        } => {
            let world = match mpi_world() {
                Ok(w) => w,
                Err(e) => {
                    eprintln!("error: {e}");
                    return ExitCode::from(2);
                }
            };
            let abort_world = world.clone();
            let r = statten::threads::configure(threads).and_then(|_| {
                run_train(TrainArgs {
                    config,
                    auto_resume,
                    dry_run,
                    verbose,
                    sets,
                    device,
                    devices,
                    data_dir,
                    output,
                    resume: resume.map(PathBuf::from),
                    overwrite,
                    allow_config_change,
                    quiet,
                    world,
                })
            });
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
        Command::Eval {
            checkpoint,
            config,
            split,
            json,
            sets,
            device,
            data_dir,
            max_batches,
            threads,
        } => match statten::threads::configure(threads).and_then(|_| {
            run_eval(EvalArgs {
                checkpoint,
                config,
                split,
                json,
                sets,
                device,
                data_dir,
                max_batches,
            })
        }) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("error: {e}");
                ExitCode::FAILURE
            }
        },
        Command::Configs { dir, command } => match run_configs(dir, command) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("error: {e}");
                ExitCode::FAILURE
            }
        },
        Command::Plot { runs, out, title } => {
            match statten_train::plot::plot_runs(&runs, &out, title.as_deref()) {
                Ok(()) => {
                    println!("wrote {}", out.display());
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("error: {e}");
                    ExitCode::FAILURE
                }
            }
        }
        Command::Data { command } => match run_data(command) {
            Ok(s) => {
                print!("{s}");
                if !s.ends_with('\n') {
                    println!();
                }
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("error: {e}");
                ExitCode::FAILURE
            }
        },
        Command::Model { command } => {
            let res = match command {
                ModelCommand::Presets => {
                    for (name, desc) in PRESETS {
                        println!("{name:<28} {desc}");
                    }
                    Ok(())
                }
                ModelCommand::Info {
                    preset,
                    config,
                    toml,
                } => {
                    let cfg = match (preset, config) {
                        (Some(p), _) => ModelConfig::preset(&p).map_err(|e| e.to_string()),
                        (None, Some(c)) => load_model_config(&c),
                        (None, None) => Err("give --preset or --config".into()),
                    };
                    cfg.and_then(|c| {
                        if toml {
                            let mut t = toml::Table::new();
                            t.insert(
                                "model".into(),
                                toml::Value::try_from(&c).map_err(|e| e.to_string())?,
                            );
                            print!("{}", toml::to_string(&t).map_err(|e| e.to_string())?);
                            Ok(())
                        } else {
                            model_info(&c)
                        }
                    })
                }
            };
            match res {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("error: {e}");
                    ExitCode::FAILURE
                }
            }
        }
    }
}
