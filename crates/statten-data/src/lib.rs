//! # statten-data
//!
//! Dataset readers for statten, from the datasets' real on-disk formats. So far: CIFAR-10/100
//! (binary version) and MNIST/Fashion-MNIST (IDX, gzip or raw). ImageNet, CIFAR10-DVS and
//! N-Caltech101 follow in the data issue.

#![warn(missing_docs)]

pub mod cifar;
pub mod error;
pub mod mnist;

pub use error::{DataError, Result};
