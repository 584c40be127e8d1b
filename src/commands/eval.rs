//! `statten eval`: a checkpoint on a split of its dataset.

use std::path::PathBuf;

use clap::ValueEnum;
use statten::device::DeviceName;
use statten::recipes;
use statten_train::config::RunConfig;
use statten_train::train::eval_checkpoint_weights;

use statten_train::energy::EnergyPrecision;

use super::{apply_cli_overrides, listed, SplitArg};

// `statten eval`'s arguments (its help text is the doc comment of `Command::Eval`).
#[derive(clap::Args)]
pub struct EvalArgs {
    /// Checkpoint (.safetensors from `statten train`, or reference weights .safetensors/.pth).
    #[arg(long)]
    pub checkpoint: PathBuf,
    /// Run config (a file or a recipe name); default: the config stored in a statten
    /// checkpoint.
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// The split to evaluate.
    #[arg(long, value_enum, default_value = "test")]
    pub split: SplitArg,
    /// Print the result as one JSON object (loss, top-1, top-5, energy report) instead.
    #[arg(long)]
    pub json: bool,
    /// Override config keys.
    #[arg(long = "set", value_name = "KEY=VALUE")]
    pub sets: Vec<String>,
    /// Device.
    #[arg(long)]
    pub device: Option<DeviceName>,
    /// Dataset folder (overrides data.root).
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    /// The precision of the energy figure: fp32 (the paper's), fp16 or int8 (overrides
    /// energy.precision; the JSON lists all three).
    #[arg(long, value_parser = listed::<EnergyPrecision>(&EnergyPrecision::NAMES))]
    pub energy_precision: Option<EnergyPrecision>,
    /// Evaluate the checkpoint's EMA weights (a run with train.model_ema) instead of its model.
    #[arg(long)]
    pub ema: bool,
    /// Evaluate only the first N batches (default: the whole split).
    #[arg(long, default_value_t = 0, value_name = "N")]
    pub max_batches: usize,
    /// CPU threads (default: RAYON_NUM_THREADS, else all cores).
    #[arg(long)]
    pub threads: Option<usize>,
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
    if let Some(p) = a.energy_precision {
        cfg.energy.precision = p;
    }
    let (ev, rep) = eval_checkpoint_weights(
        &cfg,
        &a.checkpoint,
        a.split.into(),
        a.max_batches,
        !a.json,
        a.ema,
    )?;
    let split = a
        .split
        .to_possible_value()
        .map(|v| v.get_name().to_string());
    if a.json {
        let v = serde_json::json!({
            "checkpoint": a.checkpoint.display().to_string(),
            "split": split,
            "weights": if a.ema { "ema" } else { "model" },
            "images": ev.images,
            "loss": ev.loss,
            "top1": ev.top1,
            "top5": ev.top5,
            "energy": rep,
        });
        println!("{v}");
    } else {
        println!(
            "{}{} split, {} images: eval loss {:.4}  top-1 {:.2} %  top-5 {:.2} %",
            if a.ema { "EMA weights, " } else { "" },
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

/// Evaluates the checkpoint with `--threads` CPU threads.
pub fn run(a: EvalArgs) -> std::process::ExitCode {
    super::exit(statten::threads::configure(a.threads).and_then(|_| run_eval(a)))
}
