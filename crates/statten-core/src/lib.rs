//! # statten-core
//!
//! Spiking transformers on [Burn](https://burn.dev): multi-step LIF neurons with surrogate
//! gradients, STAtten block-wise spatial-temporal attention and the spatial-only baselines (SDSA,
//! SSA), the Spike-driven Transformer and Spikformer backbones, and import/export of the PyTorch
//! reference's checkpoints under its key names. Every module is a plain Burn `Module` that runs on
//! any Burn device chosen at run time (`Device::flex()`, `Device::ndarray()`, `Device::wgpu(..)`,
//! `.autodiff()` for training).
//!
//! The semantics follow the PyTorch reference (the STAtten repository with spikingjelly
//! 0.0.0.0.12 neurons) exactly, including its known quirks, each of which has an option for the
//! fixed behaviour; they are checked against golden tensors produced by the reference.

//!
//! # Build a model and run it
//!
//! A preset names a configuration of the paper (`PRESETS` lists them); its fields can be
//! overridden before `init`. Plain `forward` records nothing; `forward_monitored` also counts
//! the spikes of every layer (firing rates, energy).
//!
//! ```
//! use statten_core::burn::tensor::{Device, Distribution, Tensor};
//! use statten_core::{Input, ModelConfig, Monitor};
//!
//! let device = Device::flex(); // the CPU; `.autodiff()` for training, `Device::wgpu(..)` for GPUs
//! let mut cfg = ModelConfig::preset("cifar10-2-256")?; // SDT + STAtten, T = 4, chunk 2
//! cfg.depth = 1; // a small variant, for the example
//! cfg.embed_dim = 32;
//! cfg.num_heads = 4;
//! cfg.img_size = 16;
//! cfg.validate()?;
//! let model = cfg.init(&device)?;
//!
//! let images = Tensor::<4>::random([2, 3, 16, 16], Distribution::Default, &device);
//! let x = Input::Static(images).encode(cfg.time_steps); // [T, B, C, H, W]
//! let logits = model.forward(x.clone());
//! assert_eq!(logits.dims(), [2, 10]);
//!
//! let mut monitor = Monitor::enabled();
//! let again = model.forward_monitored(x, &mut monitor);
//! assert_eq!(again.into_data(), logits.into_data());
//! assert!(!monitor.stats().is_empty()); // one record per spiking layer
//! # Ok::<(), statten_core::Error>(())
//! ```
//!
//! The blocks can be used on their own, e.g. one Spike-driven Transformer encoder block:
//!
//! ```
//! use statten_core::attention::MsAttentionConfig;
//! use statten_core::burn::tensor::{Device, Tensor};
//! use statten_core::models::SdtBlock;
//!
//! let device = Device::flex();
//! let attn = MsAttentionConfig { dim: 32, num_heads: 4, grid_h: 4, ..Default::default() };
//! let block = SdtBlock::new(&attn, 4, "block.0", &device)?;
//! let tokens = Tensor::<5>::ones([attn.time_steps, 1, 32, 4, 4], &device); // [T, B, C, H, W]
//! assert_eq!(block.forward(tokens).dims(), [4, 1, 32, 4, 4]);
//! # Ok::<(), statten_core::Error>(())
//! ```

#![warn(missing_docs)]
#![deny(clippy::undocumented_unsafe_blocks)]

/// The example of the crate's README, compiled and run as a doc test.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
pub struct ReadmeDoctests;

pub mod attention;
pub mod checkpoint;
pub mod conv;
pub mod error;
pub mod gpu;
mod kernels;
pub mod layers;
pub mod models;
pub mod monitor;
pub mod neuron;
pub mod norm;
pub mod pool;
pub mod precision;

pub use burn;
pub use error::{Error, Result};
pub use models::{Arch, Input, ModelConfig, StattenModel, PRESETS};
pub use monitor::{FiringStat, Monitor};
pub use neuron::{MultiStepNeuron, NeuronConfig, NeuronKind, Reset, Surrogate};
