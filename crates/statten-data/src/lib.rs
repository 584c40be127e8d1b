//! # statten-data
//!
//! Dataset readers for statten, from the datasets' real on-disk formats. So far: CIFAR-10/100
//! (binary version). ImageNet, CIFAR10-DVS, N-Caltech101 and Fashion-MNIST follow in the data
//! issue.

#![warn(missing_docs)]

pub mod cifar;
pub mod error;

pub use error::{DataError, Result};
