//! # statten-data
//!
//! Dataset readers for statten (CIFAR-10/100, ImageNet, CIFAR10-DVS, N-Caltech101,
//! Fashion-MNIST). This crate is filled in by the data issue; it exists now so that the
//! workspace layout is in place.

#![warn(missing_docs)]
