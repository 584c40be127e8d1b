//! # statten-train
//!
//! Training machinery with the reference's (timm 0.6.12) semantics. This first version holds the
//! optimizers; the training loop, schedules, losses, metrics and checkpoints build on it.

#![warn(missing_docs)]

pub mod loss;
pub mod optim;
