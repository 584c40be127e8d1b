//! # statten
//!
//! Spiking transformers with spatial-temporal attention (STAtten, CVPR 2025) in pure Rust on
//! Burn. This facade re-exports the workspace crates and holds what the CLI and the tests share:
//! device selection and the parity checks against the PyTorch reference's fixtures.

#![warn(missing_docs)]
#![deny(clippy::undocumented_unsafe_blocks)]

/// The README's Rust examples, compiled and run as doc tests so that they stay true.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
pub struct ReadmeDoctests;

pub mod bench;
pub mod data_cli;
pub mod device;
pub mod fixture;
pub mod parity;
pub mod profile;
pub mod recipes;
pub mod signals;
pub mod threads;

pub use statten_core as core;
pub use statten_data as data;
pub use statten_train as train;
