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

//!
//! # A dataset and a loader
//!
//! A [`config::DataConfig`] (the `[data]` table of a run config) names the dataset and its
//! folder, and builds either split with the reference's transforms; a [`Loader`] batches it on
//! worker threads. Here a two-image CIFAR-10 folder in the real binary layout:
//!
//! ```
//! use std::sync::Arc;
//! use statten_data::config::DataConfig;
//! use statten_data::{Loader, LoaderConfig, Split};
//!
//! // cifar-10-batches-bin/: records of <label byte><3072 pixel bytes>
//! let root = std::env::temp_dir().join(format!("statten-doc-cifar-{}", std::process::id()));
//! let dir = root.join("cifar-10-batches-bin");
//! std::fs::create_dir_all(&dir).unwrap();
//! let mut records = Vec::new();
//! for label in [3u8, 7] {
//!     records.push(label);
//!     records.extend(std::iter::repeat(128u8).take(3072));
//! }
//! for f in ["data_batch_1", "data_batch_2", "data_batch_3", "data_batch_4", "data_batch_5",
//!           "test_batch"] {
//!     std::fs::write(dir.join(format!("{f}.bin")), &records).unwrap();
//! }
//!
//! let table: toml::Table = toml::from_str(&format!(
//!     "dataset = \"cifar10\"\nroot = {:?}", root.display().to_string()
//! )).unwrap();
//! let cfg = DataConfig::from_table(&table).unwrap(); // the reference's CIFAR-10 recipe
//! let test = cfg.build(Split::Test, 4)?; // eval transforms: normalised [3, 32, 32]
//! assert_eq!(test.len(), 2);
//!
//! let loader = Loader::new(test, LoaderConfig { batch_size: 2, shuffle: false, workers: 1,
//!                                               ..Default::default() });
//! let batch = loader.epoch(0).next().unwrap()?;
//! assert_eq!((batch.shape.clone(), batch.labels.clone()), (vec![2, 3, 32, 32], vec![3, 7]));
//! # std::fs::remove_dir_all(root).unwrap();
//! # Ok::<(), statten_data::DataError>(())
//! ```

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
