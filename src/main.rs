//! The `statten` command-line tool: the arguments (clap) and the dispatch to one file per
//! subcommand under `commands/`.

mod commands;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use commands::configs::ConfigsCommand;
use commands::data::DataCommand;
use commands::model::ModelCommand;
use commands::{bench, eval, exit, parity, plot, train};

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
    Parity(parity::ParityArgs),
    /// Time the core workloads (fused and composite LIF, attention core, STAtten block, one
    /// CIFAR-10 2-512 training step), or with `--train PRESET` the training throughput of a
    /// preset (synthetic data, AdamW step included): images/s and peak memory. For careful CPU
    /// numbers use `cargo bench --bench core` (criterion).
    Bench(bench::BenchArgs),
    /// Train a model from a TOML run config (see `statten configs`), from the seed or from
    /// weights (`--init-from`, `--transfer`), with progress bars, summary.csv, steps.csv,
    /// metrics.jsonl, curves.png, energy.json, TensorBoard files (tb/) and resumable checkpoints
    /// in the run directory; `--set train.model_ema=true` keeps and evaluates a model EMA.
    Train(train::TrainArgs),
    /// Evaluate a checkpoint (a statten checkpoint or reference weights; `--ema`: its EMA
    /// weights) on a split of its dataset (eval transforms): loss, top-1/top-5 and the energy
    /// report with the per-layer table.
    Eval(eval::EvalArgs),
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
    Plot(plot::PlotArgs),
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

fn main() -> ExitCode {
    statten::threads::tune_allocator();
    let cli = Cli::parse();
    if let Err(e) = statten_core::conv::algorithm::from_env() {
        eprintln!("error: {e}");
        return ExitCode::from(2);
    }
    match cli.command {
        Command::Parity(a) => parity::run(a),
        Command::Bench(a) => bench::run(a),
        Command::Train(a) => train::run(a),
        Command::Eval(a) => eval::run(a),
        Command::Configs { dir, command } => exit(commands::configs::run(dir, command)),
        Command::Plot(a) => exit(plot::run(a)),
        Command::Data { command } => exit(commands::data::run(command)),
        Command::Model { command } => exit(commands::model::run(command)),
    }
}
