//! Spikformer's spiking self-attention (`SSA`, CIFAR variant) with SSA or STAtten inside.

use burn::module::Module;
use burn::nn::Linear;
use burn::prelude::*;

use super::{check_block, ssa_core, statten_core, AttentionKind};
use crate::error::Result;
use crate::layers::{linear_trunc_normal, TorchBatchNorm};
use crate::monitor::Monitor;
use crate::neuron::{MultiStepNeuron, NeuronConfig};

/// Settings of one Spikformer attention block.
#[derive(Debug, Clone)]
pub struct SsaAttentionConfig {
    /// Embedding dimension C.
    pub dim: usize,
    /// Number of heads.
    pub num_heads: usize,
    /// `ssa` (per-timestep) or `statten` (block-wise over `chunk_size` steps).
    pub kind: AttentionKind,
    /// Timesteps per STAtten block.
    pub chunk_size: usize,
    /// Time steps T.
    pub time_steps: usize,
    /// Attention scale (Spikformer CIFAR: 0.125).
    pub scale: f64,
    /// Neuron settings.
    pub neuron: NeuronConfig,
    /// Threshold of `attn_lif` (0.5).
    pub attn_v_threshold: f64,
}

impl Default for SsaAttentionConfig {
    /// Spikformer's SSA of the CIFAR 4-384 model: C = 384, 12 heads, T = 4, scale 0.125.
    fn default() -> Self {
        Self {
            dim: 384,
            num_heads: 12,
            kind: AttentionKind::Ssa,
            chunk_size: 2,
            time_steps: 4,
            scale: 0.125,
            neuron: NeuronConfig::default(),
            attn_v_threshold: 0.5,
        }
    }
}

impl SsaAttentionConfig {
    /// Validate and build; `prefix` is the module path (e.g. `block.0.attn`).
    pub fn init(&self, prefix: &str, device: &Device) -> Result<SsaAttention> {
        let c = self.dim;
        check_block(
            c,
            self.num_heads,
            self.kind,
            (self.time_steps, self.chunk_size),
            (
                AttentionKind::Sdsa,
                "Spikformer takes `ssa` or `statten`; `sdsa` is the Spike-driven Transformer's",
            ),
        )?;
        let lif = |n: &str| self.neuron.init(format!("{prefix}.{n}"), device);
        Ok(SsaAttention {
            q_linear: linear_trunc_normal(c, c, device),
            q_bn: TorchBatchNorm::new(c, device),
            q_lif: lif("q_lif"),
            k_linear: linear_trunc_normal(c, c, device),
            k_bn: TorchBatchNorm::new(c, device),
            k_lif: lif("k_lif"),
            v_linear: linear_trunc_normal(c, c, device),
            v_bn: TorchBatchNorm::new(c, device),
            v_lif: lif("v_lif"),
            attn_lif: self
                .neuron
                .with_threshold(self.attn_v_threshold)
                .init(format!("{prefix}.attn_lif"), device),
            proj_linear: linear_trunc_normal(c, c, device),
            proj_bn: TorchBatchNorm::new(c, device),
            proj_lif: lif("proj_lif"),
            num_heads: self.num_heads,
            kind: self.kind,
            chunk_size: self.chunk_size,
            scale: self.scale,
        })
    }
}

/// Linear + BatchNorm1d over `[T·B, C, N]` on a `[T, B, N, C]` token tensor.
pub fn linear_bn_tokens(lin: &Linear, bn: &TorchBatchNorm, x: Tensor<4>) -> Tensor<4> {
    let [t, b, n, c] = x.dims();
    let y = crate::precision::linear(lin, x.reshape([t * b, n, c])); // [TB, N, C']
    let y = bn.forward(y.swap_dims(1, 2)).swap_dims(1, 2);
    let c2 = y.dims()[2];
    y.reshape([t, b, n, c2])
}

/// Spikformer attention (`block.{j}.attn`): returns `SSA(x)` (the caller adds the residual).
#[derive(Module, Debug)]
pub struct SsaAttention {
    /// Query Linear (with bias).
    pub q_linear: Linear,
    /// Query BatchNorm1d.
    pub q_bn: TorchBatchNorm,
    /// Query LIF.
    pub q_lif: MultiStepNeuron,
    /// Key Linear.
    pub k_linear: Linear,
    /// Key BatchNorm1d.
    pub k_bn: TorchBatchNorm,
    /// Key LIF.
    pub k_lif: MultiStepNeuron,
    /// Value Linear.
    pub v_linear: Linear,
    /// Value BatchNorm1d.
    pub v_bn: TorchBatchNorm,
    /// Value LIF.
    pub v_lif: MultiStepNeuron,
    /// Attention LIF (v_th 0.5).
    pub attn_lif: MultiStepNeuron,
    /// Output Linear.
    pub proj_linear: Linear,
    /// Output BatchNorm1d.
    pub proj_bn: TorchBatchNorm,
    /// Output LIF.
    pub proj_lif: MultiStepNeuron,
    num_heads: usize,
    #[module(skip)]
    kind: AttentionKind,
    chunk_size: usize,
    scale: f64,
}

impl SsaAttention {
    /// `x`: tokens `[T, B, N, C]`; returns the attention branch (spikes), same shape.
    ///
    /// Records nothing: [`Self::forward_monitored`] also records the firing statistics.
    pub fn forward(&self, x: Tensor<4>) -> Tensor<4> {
        self.forward_monitored(x, &mut Monitor::disabled())
    }

    /// As [`Self::forward`], recording each spiking layer's firing statistics in the monitor.
    pub fn forward_monitored(&self, x: Tensor<4>, monitor: &mut Monitor) -> Tensor<4> {
        let [t, b, n, c] = x.dims();
        let h = self.num_heads;
        let d = c / h;
        let heads = |y: Tensor<4>| y.reshape([t, b, n, h, d]).swap_dims(2, 3); // [T,B,h,N,d]
        let q = heads(self.q_lif.forward_monitored(
            linear_bn_tokens(&self.q_linear, &self.q_bn, x.clone()),
            monitor,
        ));
        let k = heads(self.k_lif.forward_monitored(
            linear_bn_tokens(&self.k_linear, &self.k_bn, x.clone()),
            monitor,
        ));
        let v = heads(
            self.v_lif
                .forward_monitored(linear_bn_tokens(&self.v_linear, &self.v_bn, x), monitor),
        );
        let o = match self.kind {
            AttentionKind::Statten => statten_core(q, k, v, self.chunk_size, self.scale)
                .expect("chunking validated at construction"),
            _ => ssa_core(q, k, v, self.scale),
        };
        let o: Tensor<4> = o.swap_dims(2, 3).reshape([t, b, n, c]);
        let o = self.attn_lif.forward_monitored(o, monitor);
        let o = linear_bn_tokens(&self.proj_linear, &self.proj_bn, o);
        self.proj_lif.forward_monitored(o, monitor)
    }
}
