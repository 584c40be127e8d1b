//! `statten data`: inspect a dataset folder, integrate an event recording into frames.

use std::path::PathBuf;

use clap::{Subcommand, ValueEnum};
use statten_data::config::DatasetName;
use statten_data::events::frames::SplitBy;
use statten_data::events::resize::Interp;
use statten_data::events::EventFormat;

use super::{listed, SplitArg};

/// Frame resize interpolation.
#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum InterpArg {
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

#[derive(Subcommand)]
pub enum DataCommand {
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

/// Runs a `statten data` command and prints its report.
pub fn run(command: DataCommand) -> Result<(), String> {
    let s = run_data(command)?;
    print!("{s}");
    if !s.ends_with('\n') {
        println!();
    }
    Ok(())
}
