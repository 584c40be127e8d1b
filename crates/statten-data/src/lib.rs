//! # statten-data
//!
//! The paper's datasets from their real on-disk formats, decoded and augmented as the reference
//! does, batched on worker threads into Burn tensors.
//!
//! | dataset | module | on disk |
//! |---|---|---|
//! | CIFAR-10/100 | [`cifar`] | binary version (`*.bin`) |
//! | ImageNet | [`imagenet`] | `train/<wnid>/…`, `val/<wnid>/…` or flat val + labels file |
//! | CIFAR10-DVS | [`neuromorphic`], [`events::aedat`] | jAER AEDAT 2.0 |
//! | N-Caltech101 | [`neuromorphic`], [`events::atis`] | 40-bit ATIS `.bin` |
//! | Fashion-MNIST / MNIST | [`mnist`] | IDX (gzip or raw) |
//!
//! Every random decision comes from a [`Rng`] derived from `(seed, epoch, index)`, so a seed
//! reproduces the same batches whatever the number of worker threads.

#![warn(missing_docs)]

pub mod cifar;
pub mod config;
pub mod dataset;
pub mod error;
pub mod events;
pub mod image_ops;
pub mod imagenet;
pub mod loader;
pub mod mixup;
pub mod mnist;
pub mod neuromorphic;
pub mod rng;
pub mod transforms;

pub use cifar::Split;
pub use dataset::{class_counts, Dataset, Sample, Subset};
pub use error::{DataError, Result};
pub use loader::{HostBatch, Loader, LoaderConfig, OnError};
pub use rng::Rng;
