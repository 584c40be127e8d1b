//! # statten-train
//!
//! Training with the reference's (timm 0.6.12) semantics: AdamW / Lamb / SGD with timm's
//! parameter groups, the cosine schedule stepped per epoch, label-smoothing, soft-target and
//! TET losses, top-1/top-5, and the run configuration, training loop, checkpoints and energy
//! report behind `statten train`.

#![warn(missing_docs)]

pub mod checkpoint;
pub mod config;
pub mod dist;
pub mod energy;
pub mod loss;
pub mod metrics;
pub mod optim;
pub mod plot;
pub mod rundir;
pub mod schedule;
pub mod trainer;
