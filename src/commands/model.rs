//! `statten model`: the presets and a model's summary.

use std::path::PathBuf;

use clap::Subcommand;
use statten_core::models::{ModelConfig, PRESETS};

#[derive(Subcommand)]
pub enum ModelCommand {
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

pub fn model_info(cfg: &ModelConfig) -> Result<(), String> {
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

/// Runs a `statten model` command.
pub fn run(command: ModelCommand) -> Result<(), String> {
    match command {
        ModelCommand::Presets => {
            for p in PRESETS {
                println!("{:<28} {}", p.name, p.description);
            }
            Ok(())
        }
        ModelCommand::Info {
            preset,
            config,
            toml,
        } => {
            let cfg = match (preset, config) {
                (Some(p), _) => ModelConfig::preset(&p).map_err(|e| e.to_string())?,
                (None, Some(c)) => load_model_config(&c)?,
                (None, None) => return Err("give --preset or --config".into()),
            };
            if toml {
                print!("{}", cfg.to_toml());
                Ok(())
            } else {
                model_info(&cfg)
            }
        }
    }
}
