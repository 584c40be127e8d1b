//! # statten-train
//!
//! Training with the reference's (timm 0.6.12) semantics: AdamW / Lamb / SGD with timm's
//! parameter groups, the cosine schedule stepped per epoch, label-smoothing, soft-target and
//! TET losses, top-1/top-5, and the run configuration, training loop, checkpoints and energy
//! report behind `statten train`.

//!
//! # Train one epoch
//!
//! A run is a [`config::RunConfig`] (the TOML recipes of `statten train`, or built in code) and
//! [`train::RunOptions`] (the run directory, resume, progress); [`train::train`] runs it and
//! writes summary.csv, metrics.jsonl, steps.csv and checkpoints into the run directory.
//!
//! ```
//! use statten_train::config::RunConfig;
//! use statten_train::train::{train, RunOptions};
//!
//! // A tiny CIFAR-10 folder in the real binary layout: 8 images, 2 classes.
//! let tmp = std::env::temp_dir().join(format!("statten-doc-train-{}", std::process::id()));
//! let data = tmp.join("cifar-10-batches-bin");
//! std::fs::create_dir_all(&data).unwrap();
//! let mut records = Vec::new();
//! for i in 0..8u8 {
//!     records.push(i % 2);
//!     records.extend((0..3072).map(|p| (p as u8).wrapping_mul(i)));
//! }
//! for f in ["data_batch_1", "data_batch_2", "data_batch_3", "data_batch_4", "data_batch_5",
//!           "test_batch"] {
//!     std::fs::write(data.join(format!("{f}.bin")), &records).unwrap();
//! }
//!
//! let cfg = RunConfig::parse(&format!(r#"
//!     [model]
//!     preset = "cifar10-2-256"   # SDT + STAtten, made small:
//!     depth = 1
//!     embed_dim = 32
//!     num_heads = 4
//!     time_steps = 2
//!     [data]
//!     dataset = "cifar10"
//!     root = {root:?}
//!     workers = 1
//!     [train]
//!     epochs = 1
//!     batch_size = 4
//!     plot = false
//! "#, root = tmp.display().to_string()), &[])?;
//! let run = train(&cfg, &RunOptions { output: tmp.join("run"), ..Default::default() })?;
//! assert_eq!(run.history.len(), 1);
//! assert!(run.history[0].train_loss.is_finite());
//! assert!(tmp.join("run/checkpoints/last.safetensors").is_file());
//! # std::fs::remove_dir_all(tmp).unwrap();
//! # Ok::<(), statten_train::Error>(())
//! ```

#![warn(missing_docs)]

pub mod amp;
pub mod checkpoint;
pub mod config;
pub mod device;
pub mod ema;
pub mod energy;
pub mod error;
pub mod loss;
pub mod metrics;
pub mod objective;
pub mod optim;
pub mod parallel;
pub mod plot;
pub mod rundir;
pub mod schedule;
pub mod tensorboard;
pub mod train;

/// The collectives' old path (before the `parallel` folder): use [`parallel::collective`].
#[deprecated(since = "0.1.0", note = "moved to statten_train::parallel::collective")]
pub mod dist {
    pub use crate::parallel::collective::*;
}

/// The trainer's old path (before the `train` folder): use [`train`], [`device`] and
/// [`parallel`].
#[deprecated(
    since = "0.1.0",
    note = "moved to statten_train::train (the loop), ::device (device names) and ::parallel"
)]
pub mod trainer {
    pub use crate::device::{device_from_name, probe_device, DEVICE_FAILURE_CAUSE};
    pub use crate::parallel::batch_plan;
    pub use crate::train::*;
}

pub use error::{Error, Result};
