//! Optimizers with timm's parameter groups: no weight decay on parameters with ndim ≤ 1 (biases,
//! BatchNorm γ/β), and parameters without a gradient are skipped entirely (no decay, unchanged),
//! as PyTorch does for parameters whose `.grad` is `None`.

mod adamw;

pub use adamw::{AdamW, AdamWConfig};
