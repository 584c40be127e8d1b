//! Data parallelism: several devices in one process ([`replicas`]) and several processes over
//! MPI ([`collective`], [`sync`]).
//!
//! A step over `R` ranks × `D` devices is the same optimization as one device: every rank
//! draws the same global batch, [`replicas::batch_plan`] gives each of the `R·D` devices a
//! contiguous share, each share's loss is weighted by its size, and the gradients are summed
//! (first over this process's devices in device order, then over ranks in one flat buffer)
//! before the optimizer step, which every rank then takes alike.

pub mod collective;
pub mod replicas;
pub mod sync;

pub use collective::{fingerprint, mpi_world, Collective, ThreadWorld};
pub use replicas::{batch_plan, Replicas};
