//! # statten-core
//!
//! Spiking transformers on [Burn](https://burn.dev): multi-step LIF neurons with surrogate
//! gradients, STAtten block-wise spatial-temporal attention and the spatial-only baselines (SDSA,
//! SSA), the Spike-driven Transformer and Spikformer backbones, and import/export of the PyTorch
//! reference's checkpoints under its key names. Every module is a plain Burn `Module` that runs on
//! any Burn device chosen at run time (`Device::flex()`, `Device::ndarray()`, `Device::wgpu(..)`,
//! `.autodiff()` for training).
//!
//! The semantics follow the reference exactly (see `shared/spec/statten_spec.md`), and are
//! checked against golden tensors produced by the PyTorch reference.

#![warn(missing_docs)]

pub mod attention;
pub mod checkpoint;
pub mod error;
pub mod layers;
pub mod models;
pub mod monitor;
pub mod neuron;

pub use burn;
pub use error::{Error, Result};
pub use models::{Arch, Input, ModelConfig, StattenModel, PRESETS};
pub use monitor::{FiringStat, Monitor};
pub use neuron::{MultiStepNeuron, NeuronConfig, NeuronKind, Reset, Surrogate};
