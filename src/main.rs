//! The `statten` command-line tool.

use std::rc::Rc;

use statten_train::dist::Collective;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use statten::device::DeviceName;
use statten::parity::{run_parity, ParityOptions};
use statten_core::models::{ModelConfig, PRESETS};
use statten_data::cifar::Split;
use statten_data::config::DatasetName;
use statten_data::events::frames::SplitBy;
use statten_data::events::resize::Interp;
use statten_data::events::EventFormat;
use statten_train::config::RunConfig;
use statten_train::rundir::RunDir;
use statten_train::trainer::{eval_checkpoint, train, RunOptions};

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
    },
    /// Time the core workloads (fused and composite LIF, attention core, STAtten block, one
    /// CIFAR-10 2-512 training step), or with `--train PRESET` the training throughput of a
    /// preset (synthetic data, AdamW step included): images/s and peak memory. For careful CPU
    /// numbers use `cargo bench --bench core` (criterion).
    Bench {
        /// Devices, comma-separated (cpu, flex, ndarray, wgpu).
        #[arg(long, default_value = "cpu", value_delimiter = ',')]
        device: Vec<DeviceName>,
        /// Timed iterations per workload (the median is reported).
        #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u64).range(1..))]
        iters: u64,
        /// Untimed warm-up iterations (shader compilation, autotuning).
        #[arg(long, default_value_t = 1)]
        warmup: u64,
        /// Batch size of the training-step workloads.
        #[arg(long, default_value_t = 8, value_parser = clap::value_parser!(u64).range(1..))]
        batch: u64,
        /// Workloads to run, comma-separated: lif (fused), lif-composite, core, block, train.
        #[arg(long, default_value = "lif,lif-composite,core,block,train", value_delimiter = ',',
              value_parser = ["lif", "lif-composite", "lif-batched", "core", "block", "train"])]
        only: Vec<String>,
        /// Training-throughput mode: one training step of this preset (see `statten model
        /// presets`) at --batch, repeated --iters times; prints images/s and peak memory.
        #[arg(long, value_name = "PRESET")]
        train: Option<String>,
        /// With --train: override a model key of the preset, e.g. `--set model.chunk_size=2`.
        #[arg(long = "set", value_name = "model.KEY=VALUE", requires = "train")]
        sets: Vec<String>,
        /// CPU threads (default: RAYON_NUM_THREADS, else all cores).
        #[arg(long)]
        threads: Option<usize>,
    },
    /// Train a model from a TOML run config (see `statten configs`), with progress bars,
    /// summary.csv, metrics.jsonl, curves.png, energy.json and resumable checkpoints in the run
    /// directory.
    Train {
        /// The run config (e.g. configs/quickstart.toml).
        #[arg(long)]
        config: PathBuf,
        /// Override any config key, e.g. `--set train.epochs=10 --set optimizer.lr=1e-3`.
        #[arg(long = "set", value_name = "KEY=VALUE")]
        sets: Vec<String>,
        /// Device: cpu, flex, ndarray or wgpu (overrides train.device).
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
        /// Replace the run in --output (its config, metrics, plots and checkpoints) instead of
        /// refusing to write into it.
        #[arg(long, conflicts_with = "resume")]
        overwrite: bool,
        /// Resume with a config that differs from the one the checkpoint was written with.
        #[arg(long, requires = "resume")]
        allow_config_change: bool,
        /// No progress bars or per-epoch lines.
        #[arg(long)]
        quiet: bool,
        /// CPU threads (default: RAYON_NUM_THREADS, else all cores).
        #[arg(long)]
        threads: Option<usize>,
    },
    /// Evaluate a checkpoint (a statten checkpoint or reference weights) on the test split:
    /// loss, top-1/top-5 and the energy report.
    Eval {
        /// Checkpoint (.safetensors from `statten train`, or reference weights .safetensors/.pth).
        #[arg(long)]
        checkpoint: PathBuf,
        /// Run config; default: the config stored in a statten checkpoint.
        #[arg(long)]
        config: Option<PathBuf>,
        /// Override config keys.
        #[arg(long = "set", value_name = "KEY=VALUE")]
        sets: Vec<String>,
        /// Device.
        #[arg(long)]
        device: Option<DeviceName>,
        /// Dataset folder (overrides data.root).
        #[arg(long)]
        data_dir: Option<PathBuf>,
        /// CPU threads (default: RAYON_NUM_THREADS, else all cores).
        #[arg(long)]
        threads: Option<usize>,
    },
    /// List the shipped run configs with one line each.
    Configs {
        /// Folder of configs.
        #[arg(long, default_value = "configs")]
        dir: PathBuf,
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
enum DataCommand {
    /// Counts per split and class, sample shape, and value statistics of a few samples (eval
    /// pipeline).
    Inspect {
        /// cifar10, cifar100, imagenet, cifar10-dvs, ncaltech101, fashion-mnist or mnist.
        #[arg(long)]
        dataset: DatasetName,
        /// The dataset folder (Fashion-MNIST: default /usr/share/datasets/fashion-mnist).
        #[arg(long)]
        root: Option<PathBuf>,
        /// train or test.
        #[arg(long, default_value = "train", value_parser = parse_split)]
        split: Split,
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
        #[arg(long)]
        format: EventFormat,
        /// The recording.
        #[arg(long)]
        input: PathBuf,
        /// Number of frames T.
        #[arg(long)]
        time_steps: usize,
        /// number or time.
        #[arg(long, default_value = "number")]
        split_by: SplitBy,
        /// Resize every frame to H W.
        #[arg(long, num_args = 2, value_names = ["H", "W"])]
        resize: Option<Vec<usize>>,
        /// Resize interpolation: bilinear (CIFAR10-DVS reference) or nearest (N-Caltech101).
        #[arg(long, default_value = "bilinear", value_parser = parse_interp)]
        interp: Interp,
        /// Give empty frames for empty split_by=time windows instead of failing as SpikingJelly.
        #[arg(long)]
        allow_empty_windows: bool,
        /// Output .safetensors file.
        #[arg(long)]
        out: PathBuf,
    },
}

fn parse_split(s: &str) -> Result<Split, String> {
    match s {
        "train" => Ok(Split::Train),
        "test" | "val" => Ok(Split::Test),
        o => Err(format!("unknown split `{o}` (train or test)")),
    }
}

fn parse_interp(s: &str) -> Result<Interp, String> {
    match s {
        "bilinear" => Ok(Interp::Bilinear),
        "nearest" => Ok(Interp::Nearest),
        o => Err(format!("unknown interpolation `{o}` (bilinear or nearest)")),
    }
}

fn apply_cli_overrides(cfg: &mut RunConfig, device: Option<DeviceName>, data_dir: Option<PathBuf>) {
    if let Some(d) = device {
        cfg.train.device = d.to_string();
    }
    if let Some(r) = data_dir {
        cfg.data.root = Some(r);
    }
}

fn fresh_output(config: &std::path::Path) -> PathBuf {
    let stem = config
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_else(|| "run".into());
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
fn newest_run(config: &std::path::Path) -> Result<PathBuf, String> {
    let stem = config
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_else(|| "run".into());
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
            config.display(),
            runs.display()
        )
    })
}

/// The `train` command's arguments.
struct TrainArgs {
    config: PathBuf,
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
    let mut cfg = RunConfig::load(&config, &sets)?;
    apply_cli_overrides(&mut cfg, device, data_dir);
    if let Some(w) = &world {
        // `--device wgpu` without an index: each rank takes the GPU of its local rank.
        if cfg.train.devices.is_empty() && matches!(cfg.train.device.as_str(), "wgpu" | "gpu") {
            cfg.train.device = format!("wgpu:{}", w.local_rank());
        }
    }
    if !devices.is_empty() {
        cfg.train.devices = devices
            .iter()
            .map(|i| format!("{}:{i}", cfg.train.device))
            .collect();
    }
    let bare_resume = resume.as_ref().is_some_and(|r| r.as_os_str().is_empty());
    let output = match (&output, &resume) {
        (Some(o), _) => o.clone(),
        (None, Some(_)) if bare_resume => newest_run(&config)?,
        (None, Some(r)) => r
            .parent()
            .and_then(|p| p.parent())
            .map(|p| p.to_path_buf())
            .filter(|p| RunDir::at(p).last_checkpoint().exists())
            .unwrap_or_else(|| PathBuf::from("runs").join(config.file_stem().unwrap_or_default())),
        (None, None) => fresh_output(&config),
    };
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
        eprintln!(
            "stopped at epoch {}, batch {}: the run is saved in {}; continue it with\n  \
             statten train --config {} --output {} --resume",
            p.epoch + 1,
            p.batches_done,
            p.checkpoint.display(),
            config.display(),
            output.display()
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

fn run_eval(
    checkpoint: PathBuf,
    config: Option<PathBuf>,
    sets: Vec<String>,
    device: Option<DeviceName>,
    data_dir: Option<PathBuf>,
) -> Result<(), String> {
    let mut cfg = match config {
        Some(c) => RunConfig::load(&c, &sets)?,
        None => {
            let meta = statten_train::checkpoint::read_meta(&checkpoint)
                .map_err(|e| format!("{e} (give --config for reference weights)"))?;
            RunConfig::parse(&meta.config, &sets)?
        }
    };
    apply_cli_overrides(&mut cfg, device, data_dir);
    let (ev, rep) = eval_checkpoint(&cfg, &checkpoint)?;
    println!(
        "eval loss {:.4}  top-1 {:.2} %  top-5 {:.2} %",
        ev.loss, ev.top1, ev.top5
    );
    print!("{}", rep.table());
    Ok(())
}

fn run_configs(dir: PathBuf) -> Result<(), String> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .map_err(|e| format!("{}: {e}", dir.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e == "toml"))
        .collect();
    files.sort();
    for f in files {
        let text = std::fs::read_to_string(&f).map_err(|e| format!("{}: {e}", f.display()))?;
        let desc = text
            .lines()
            .next()
            .unwrap_or("")
            .trim_start_matches('#')
            .trim();
        // A closed pipe (`statten configs | head`) ends the listing quietly.
        let line = format!("{:<44} {desc}\n", f.display());
        if std::io::Write::write_all(&mut std::io::stdout(), line.as_bytes()).is_err() {
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
            statten::data_cli::inspect(dataset, &root, split, samples, time_steps)
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
                interp,
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

fn median_ms(it: &mut statten::bench::Iteration, warmup: u64, iters: u64) -> f64 {
    for _ in 0..warmup {
        it();
    }
    let mut times: Vec<f64> = (0..iters)
        .map(|_| {
            let t0 = std::time::Instant::now();
            std::hint::black_box(it());
            t0.elapsed().as_secs_f64() * 1e3
        })
        .collect();
    times.sort_by(|a, b| a.total_cmp(b));
    times[times.len() / 2]
}

fn run_bench(devices: &[DeviceName], iters: u64, warmup: u64, batch: usize, only: &[String]) {
    use statten::bench::{self, LifForm};
    println!(
        "threads {} (CPU backends)\n{:<28} {:<8} {:>12} {:>12}",
        rayon::current_num_threads(),
        "workload",
        "device",
        "median ms",
        "images/s"
    );
    for dev_name in devices {
        let dev = dev_name.device();
        let mut workloads: Vec<(String, Option<usize>, bench::Iteration)> = Vec::new();
        let want = |k: &str| only.iter().any(|o| o == k);
        if want("lif") {
            let form = if dev_name.has_fused_lif() {
                LifForm::Fused
            } else {
                LifForm::PerStep
            };
            workloads.push(("lif_fwd_bwd".into(), None, bench::lif(&dev, form)));
        }
        if want("lif-composite") {
            workloads.push((
                "lif_fwd_bwd_composite".into(),
                None,
                bench::lif(&dev, LifForm::PerStep),
            ));
        }
        if want("lif-batched") {
            workloads.push((
                "lif_fwd_bwd_batched".into(),
                None,
                bench::lif(&dev, LifForm::Batched),
            ));
        }
        if want("core") {
            workloads.push((
                "attention_core_fwd_bwd".into(),
                None,
                bench::attention_core(&dev),
            ));
        }
        if want("block") {
            workloads.push((
                "statten_block_fwd_bwd".into(),
                None,
                bench::statten_block(&dev),
            ));
        }
        if want("train") {
            workloads.push((
                format!("train_step_2_512_b{batch}"),
                Some(batch),
                bench::train_step(&dev, batch),
            ));
        }
        for (name, images, mut it) in workloads {
            let med = median_ms(&mut it, warmup, iters);
            let ips = images.map_or("-".into(), |b| format!("{:.1}", b as f64 / med * 1e3));
            println!("{name:<28} {dev_name:<8} {med:>12.1} {ips:>12}");
        }
    }
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
        let mut it = statten::bench::train_step_for(&dev, &cfg, batch);
        let med = median_ms(&mut it, warmup, iters);
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
            "train {preset}{overrides} T={} batch {batch} on {dev_name} ({} CPU threads): \
             {med:.1} ms/step, {:.1} images/s, {memory}",
            cfg.time_steps,
            rayon::current_num_threads(),
            batch as f64 / med * 1e3,
        );
    }
    Ok(())
}

fn main() -> ExitCode {
    statten::threads::tune_allocator();
    let cli = Cli::parse();
    match cli.command {
        Command::Parity {
            fixture,
            device,
            relax_sps_ties,
        } => {
            let dev = device.device();
            let opts = ParityOptions { relax_sps_ties };
            let mut ok = true;
            for dir in fixture {
                match run_parity(&dir, &dev, &opts) {
                    Ok(report) => {
                        println!("fixture {} on {device}", report.fixture);
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
            threads,
        } => {
            if let Err(e) = statten::threads::configure(threads) {
                eprintln!("error: {e}");
                return ExitCode::FAILURE;
            }
            let batch = batch as usize;
            match train {
                Some(preset) => {
                    match run_bench_train(&device, &preset, &sets, iters, warmup, batch) {
                        Ok(()) => ExitCode::SUCCESS,
                        Err(e) => {
                            eprintln!("error: {e}");
                            ExitCode::FAILURE
                        }
                    }
                }
                None => {
                    run_bench(&device, iters, warmup, batch, &only);
                    ExitCode::SUCCESS
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
            overwrite,
            allow_config_change,
            quiet,
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
            sets,
            device,
            data_dir,
            threads,
        } => match statten::threads::configure(threads)
            .and_then(|_| run_eval(checkpoint, config, sets, device, data_dir))
        {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("error: {e}");
                ExitCode::FAILURE
            }
        },
        Command::Configs { dir } => match run_configs(dir) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("error: {e}");
                ExitCode::FAILURE
            }
        },
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
