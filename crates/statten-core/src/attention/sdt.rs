//! The Spike-driven Transformer's attention block (`MS_SSA_Conv`) with STAtten or SDSA inside.

use burn::module::{Module, Param};
use burn::nn::conv::Conv2d;
use burn::prelude::*;

use super::{check_block, max_filter_5d, statten_core, statten_scale, AttentionKind};
use crate::error::Result;
use crate::layers::{conv2d, merged, pointwise_conv, TorchBatchNorm, UnusedWeight};
use crate::monitor::Monitor;
use crate::neuron::{MultiStepNeuron, NeuronConfig};

/// Settings of one SDT attention block.
#[derive(Debug, Clone)]
pub struct MsAttentionConfig {
    /// Embedding dimension C.
    pub dim: usize,
    /// Number of heads h (C must be divisible by h).
    pub num_heads: usize,
    /// STAtten or SDSA.
    pub kind: AttentionKind,
    /// Timesteps per STAtten block.
    pub chunk_size: usize,
    /// Time steps T (checked against `chunk_size`).
    pub time_steps: usize,
    /// Token-grid height (for the STAtten scale).
    pub grid_h: usize,
    /// DVS mode: 3×3 max filters on the shortcut and q/k/v spikes, output gating, DVS scale.
    pub dvs: bool,
    /// Neuron settings (threshold 1 layers).
    pub neuron: NeuronConfig,
    /// Threshold of the attention LIF (`attn_lif` / `talking_heads_lif`), 0.5 in the reference.
    pub attn_v_threshold: f64,
    /// Override of the STAtten scale (None = the reference's rule).
    pub scale: Option<f64>,
    /// SDSA in DVS mode: max-filter the q spikes as the STAtten repository does (true) or not, as
    /// upstream SDT (false); `k`, `v`, `k ⊙ v` and `q ⊙ kv` are filtered either way.
    pub sdsa_pool_q: bool,
}

impl Default for MsAttentionConfig {
    /// STAtten of the CIFAR 2-256 model: C = 256, 8 heads, T = 4 in blocks of 2 over an 8×8
    /// token grid, static images, the reference's neuron and thresholds.
    fn default() -> Self {
        Self {
            dim: 256,
            num_heads: 8,
            kind: AttentionKind::Statten,
            chunk_size: 2,
            time_steps: 4,
            grid_h: 8,
            dvs: false,
            neuron: NeuronConfig::default(),
            attn_v_threshold: 0.5,
            scale: None,
            sdsa_pool_q: true,
        }
    }
}

impl MsAttentionConfig {
    /// Validate and build the block; `prefix` is its module path (e.g. `block.0.attn`).
    pub fn init(&self, prefix: &str, device: &Device) -> Result<MsAttention> {
        let c = self.dim;
        check_block(
            c,
            self.num_heads,
            self.kind,
            (self.time_steps, self.chunk_size),
            (
                AttentionKind::Ssa,
                "the Spike-driven Transformer takes `statten` or `sdsa`; `ssa` is Spikformer's",
            ),
        )?;
        let lif = |n: &str| self.neuron.init(format!("{prefix}.{n}"), device);
        let attn_neuron = self.neuron.with_threshold(self.attn_v_threshold);
        let h = self.num_heads;
        Ok(MsAttention {
            shortcut_lif: lif("shortcut_lif"),
            q_conv: conv2d(c, c, 1, false, device),
            q_bn: TorchBatchNorm::new(c, device),
            q_lif: lif("q_lif"),
            k_conv: conv2d(c, c, 1, false, device),
            k_bn: TorchBatchNorm::new(c, device),
            k_lif: lif("k_lif"),
            v_conv: conv2d(c, c, 1, false, device),
            v_bn: TorchBatchNorm::new(c, device),
            v_lif: lif("v_lif"),
            attn_lif: attn_neuron.init(format!("{prefix}.attn_lif"), device),
            talking_heads: UnusedWeight {
                // PyTorch default Conv1d init: U(±1/sqrt(fan_in)).
                weight: Param::from_tensor(Tensor::random(
                    [h, h, 1],
                    burn::tensor::Distribution::Uniform(
                        -1.0 / (h as f64).sqrt(),
                        1.0 / (h as f64).sqrt(),
                    ),
                    device,
                )),
            },
            talking_heads_lif: attn_neuron.init(format!("{prefix}.talking_heads_lif"), device),
            proj_conv: conv2d(c, c, 1, true, device),
            proj_bn: TorchBatchNorm::new(c, device),
            num_heads: h,
            kind: self.kind,
            chunk_size: self.chunk_size,
            dvs: self.dvs,
            sdsa_pool_q: self.sdsa_pool_q,
            scale: self
                .scale
                .unwrap_or_else(|| statten_scale(self.grid_h, self.chunk_size, self.dvs)),
        })
    }
}

/// SDT attention block (`block.{j}.attn`): shortcut LIF, 1×1 conv + BN + LIF for q, k and v,
/// STAtten or SDSA, 1×1 conv + BN projection, plus the identity.
#[derive(Module, Debug)]
pub struct MsAttention {
    /// LIF on the residual stream.
    pub shortcut_lif: MultiStepNeuron,
    /// Query projection.
    pub q_conv: Conv2d,
    /// Query BatchNorm.
    pub q_bn: TorchBatchNorm,
    /// Query LIF.
    pub q_lif: MultiStepNeuron,
    /// Key projection.
    pub k_conv: Conv2d,
    /// Key BatchNorm.
    pub k_bn: TorchBatchNorm,
    /// Key LIF.
    pub k_lif: MultiStepNeuron,
    /// Value projection.
    pub v_conv: Conv2d,
    /// Value BatchNorm.
    pub v_bn: TorchBatchNorm,
    /// Value LIF.
    pub v_lif: MultiStepNeuron,
    /// STAtten output LIF (v_th 0.5).
    pub attn_lif: MultiStepNeuron,
    /// Created but never used by the reference (kept for checkpoint compatibility).
    pub talking_heads: UnusedWeight<3>,
    /// SDSA LIF on the token-summed K⊙V (v_th 0.5).
    pub talking_heads_lif: MultiStepNeuron,
    /// Output projection (with bias).
    pub proj_conv: Conv2d,
    /// Output BatchNorm.
    pub proj_bn: TorchBatchNorm,
    num_heads: usize,
    #[module(skip)]
    kind: AttentionKind,
    chunk_size: usize,
    dvs: bool,
    sdsa_pool_q: bool,
    scale: f64,
}

impl MsAttention {
    /// The scale applied to KᵀV (STAtten).
    pub fn scale(&self) -> f64 {
        self.scale
    }

    /// Attention kind.
    pub fn kind(&self) -> AttentionKind {
        self.kind
    }

    /// `x`: the residual stream `[T, B, C, H, W]`; returns `attn(x) + x`.
    ///
    /// Records nothing: [`Self::forward_monitored`] also records the firing statistics.
    pub fn forward(&self, x: Tensor<5>) -> Tensor<5> {
        self.forward_monitored(x, &mut Monitor::disabled())
    }

    /// As [`Self::forward`], recording each spiking layer's firing statistics in the monitor.
    pub fn forward_monitored(&self, x: Tensor<5>, monitor: &mut Monitor) -> Tensor<5> {
        let identity = x.clone();
        let [t, b, c, hh, ww] = x.dims();
        let heads = self.num_heads;
        let d = c / heads;
        let n = hh * ww;

        let s = self.shortcut_lif.forward_monitored(x, monitor);
        // DVS STAtten gates its output with the max-filtered shortcut spikes.
        let x_pool = if self.dvs && self.kind == AttentionKind::Statten {
            Some(max_filter_5d(s.clone()))
        } else {
            None
        };
        let branch = |conv: &Conv2d,
                      bn: &TorchBatchNorm,
                      lif: &MultiStepNeuron,
                      pool: bool,
                      m: &mut Monitor| {
            let y = merged(s.clone(), |z| bn.forward(pointwise_conv(conv, z)));
            let y = lif.forward_monitored(y, m);
            let y = if self.dvs && pool {
                max_filter_5d(y)
            } else {
                y
            };
            // [T,B,C,H,W] -> [T,B,C,N] -> [T,B,N,C] -> [T,B,N,h,d] -> [T,B,h,N,d]
            y.reshape([t, b, c, n])
                .swap_dims(2, 3)
                .reshape([t, b, n, heads, d])
                .swap_dims(2, 3)
        };
        // Upstream SDT does not max-filter q in DVS mode; the STAtten repository does (for
        // STAtten and for its SDSA baseline alike).
        let pool_q = self.kind == AttentionKind::Statten || self.sdsa_pool_q;
        let q = branch(&self.q_conv, &self.q_bn, &self.q_lif, pool_q, monitor);
        let k = branch(&self.k_conv, &self.k_bn, &self.k_lif, true, monitor);
        let v = branch(&self.v_conv, &self.v_bn, &self.v_lif, true, monitor);

        let out: Tensor<5> = match self.kind {
            AttentionKind::Statten => {
                let o = statten_core(q, k, v, self.chunk_size, self.scale)
                    .expect("chunking validated at construction");
                // [T,B,h,N,d] -> [T,B,h,d,N] -> [T,B,C,N]
                let o: Tensor<4> = o.swap_dims(3, 4).reshape([t, b, c, n]);
                let o = self.attn_lif.forward_monitored(o, monitor);
                let o = o.reshape([t, b, c, hh, ww]);
                match x_pool {
                    Some(p) => o * p.clone() + p,
                    None => o,
                }
            }
            AttentionKind::Sdsa | AttentionKind::Ssa => {
                let pool_nd = |z: Tensor<5>| {
                    // MaxPool3d((1,3,3)) on [T,B,h,N,d] pools over the (N, d) axes.
                    if self.dvs {
                        max_filter_5d(z)
                    } else {
                        z
                    }
                };
                let kv = pool_nd(k * v).sum_dim(3); // [T,B,h,1,d]
                let kv = self.talking_heads_lif.forward_monitored(kv, monitor);
                let o = pool_nd(q * kv);
                o.swap_dims(3, 4).reshape([t, b, c, hh, ww])
            }
        };
        let out = merged(out, |z| {
            self.proj_bn.forward(pointwise_conv(&self.proj_conv, z))
        });
        out + identity
    }
}
