//! Spiking self-attention: STAtten (block-wise spatial-temporal attention over chunks of timesteps), the Spike-driven
//! Transformer's SDSA (§2.2) and Spikformer's SSA (§2.3).
//!
//! The `*_core` functions take binary `q, k, v` of shape `[T, B, heads, N, d]` and return the
//! attention output in the same layout, before the attention LIF. The modules wrap them with the
//! reference's Q/K/V front end and output projection.

mod sdt;
mod ssa;

pub use sdt::{MsAttention, MsAttentionConfig};
pub use ssa::{linear_bn_tokens, SsaAttention, SsaAttentionConfig};

use burn::prelude::*;
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::layers::max_filter_3x3;

/// Which attention a block uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AttentionKind {
    /// STAtten: block-wise spatial-temporal attention over `chunk_size` timesteps.
    Statten,
    /// The Spike-driven Transformer's SDSA (`attention_mode = "SDT"`).
    Sdsa,
    /// Spikformer's spiking self-attention (per-timestep `(q·kᵀ)·scale·v`).
    Ssa,
}

impl AttentionKind {
    /// Parse the names used by the reference and the fixtures (`statten`, `sdsa`/`sdt`, `ssa`).
    pub fn parse(s: &str) -> Option<Self> {
        match s.to_ascii_lowercase().as_str() {
            "statten" => Some(Self::Statten),
            "sdsa" | "sdt" => Some(Self::Sdsa),
            "ssa" => Some(Self::Ssa),
            _ => None,
        }
    }

    /// Canonical name.
    pub fn name(&self) -> &'static str {
        match self {
            Self::Statten => "statten",
            Self::Sdsa => "sdsa",
            Self::Ssa => "ssa",
        }
    }
}

/// Check that `time_steps` splits into blocks of `chunk_size` (the reference's `view` would fail).
pub fn check_chunking(time_steps: usize, chunk_size: usize) -> Result<()> {
    if chunk_size == 0 {
        return Err(Error::config("model.chunk_size", "must be at least 1"));
    }
    if !time_steps.is_multiple_of(chunk_size) {
        return Err(Error::config(
            "model.chunk_size",
            format!(
                "time_steps = {time_steps} is not divisible by chunk_size = {chunk_size}; \
                 STAtten splits T into T/chunk_size blocks of consecutive timesteps"
            ),
        ));
    }
    Ok(())
}

/// Check the head split (`dim` divisible by `num_heads`) and, for STAtten, the chunking.
pub fn check_attention(
    dim: usize,
    num_heads: usize,
    kind: AttentionKind,
    time_steps: usize,
    chunk_size: usize,
) -> Result<()> {
    if num_heads == 0 || !dim.is_multiple_of(num_heads) {
        return Err(Error::config(
            "model.num_heads",
            format!("embed_dim {dim} is not divisible by num_heads {num_heads}"),
        ));
    }
    if kind == AttentionKind::Statten {
        check_chunking(time_steps, chunk_size)?;
    }
    Ok(())
}

/// The checks of an attention block's `init`: [`check_attention`], then that the backbone
/// takes `kind` (`refused` is the kind it does not take, with the message saying why).
pub(crate) fn check_block(
    dim: usize,
    num_heads: usize,
    kind: AttentionKind,
    (time_steps, chunk_size): (usize, usize),
    refused: (AttentionKind, &str),
) -> Result<()> {
    check_attention(dim, num_heads, kind, time_steps, chunk_size)?;
    if kind == refused.0 {
        return Err(Error::config("model.attention", refused.1));
    }
    Ok(())
}

/// The STAtten scale: `1/H` for static inputs, `1/(H·H·chunk)` for DVS, where H is
/// the token-grid height and `chunk` the timesteps per block (the STAtten repository's rule).
pub fn statten_scale(grid_h: usize, chunk_size: usize, dvs: bool) -> f64 {
    if dvs {
        1.0 / (grid_h * grid_h * chunk_size) as f64
    } else {
        1.0 / grid_h as f64
    }
}

/// Per-block `(Kᵀ·V)·scale`, `[T/cs, B, h, d, d]`.
pub fn statten_kv(k: Tensor<5>, v: Tensor<5>, chunk_size: usize, scale: f64) -> Result<Tensor<5>> {
    let [t, b, h, _n, d] = k.dims();
    check_chunking(t, chunk_size)?;
    let nb = t / chunk_size;
    // KᵀV per timestep (exact integer counts for binary inputs), then summed per block.
    let kv_t = crate::precision::matmul(k.swap_dims(3, 4), v); // [T, B, h, d, d]
    let kv_blocks: Tensor<5> = kv_t
        .reshape([nb, chunk_size, b * h, d, d])
        .sum_dim(1)
        .reshape([nb, b, h, d, d]);
    Ok(kv_blocks.mul_scalar(scale))
}

/// STAtten block-wise attention: `out[t] = q[t] · ((Σ_{t'∈blk(t)} k[t']ᵀ v[t'])·scale)`.
///
/// `q, k, v`: `[T, B, h, N, d]`. Returns `[T, B, h, N, d]`. Every query attends to all
/// `chunk_size·N` keys of its block (not causal within a block).
pub fn statten_core(
    q: Tensor<5>,
    k: Tensor<5>,
    v: Tensor<5>,
    chunk_size: usize,
    scale: f64,
) -> Result<Tensor<5>> {
    let [t, b, h, _n, d] = q.dims();
    let kv = statten_kv(k, v, chunk_size, scale)?; // [nb, B, h, d, d]
    let nb = t / chunk_size;
    // Every timestep of a block uses the block's map: expand it over the block's timesteps.
    let kv_t: Tensor<5> = kv
        .reshape([nb, 1, b * h, d, d])
        .expand([nb, chunk_size, b * h, d, d])
        .reshape([t, b, h, d, d]);
    Ok(crate::precision::matmul(q, kv_t))
}

/// Spikformer SSA: per timestep `((q·kᵀ)·scale)·v`. `[T, B, h, N, d]` in and out.
pub fn ssa_core(q: Tensor<5>, k: Tensor<5>, v: Tensor<5>, scale: f64) -> Tensor<5> {
    use crate::precision::matmul;
    matmul(matmul(q, k.swap_dims(3, 4)).mul_scalar(scale), v)
}

/// The DVS 3×3 max filter over the last two axes of a `[T, B, C, H, W]` tensor.
pub fn max_filter_5d(x: Tensor<5>) -> Tensor<5> {
    let [t, b, c, h, w] = x.dims();
    max_filter_3x3(x.reshape([t * b, c, h, w])).reshape([t, b, c, h, w])
}
