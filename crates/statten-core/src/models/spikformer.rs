//! Spikformer (ZK-Zhou/spikformer, CIFAR model) with SSA or STAtten attention.

use burn::module::Module;
use burn::nn::conv::Conv2d;
use burn::nn::Linear;
use burn::prelude::*;

use super::ModelConfig;
use crate::attention::{linear_bn_tokens, SsaAttention, SsaAttentionConfig};
use crate::error::Result;
use crate::layers::{
    conv2d_torch_default, conv_forward, linear_trunc_normal, max_pool_3s2, merged, TorchBatchNorm,
    UnusedNorm,
};
use crate::monitor::Monitor;
use crate::neuron::MultiStepNeuron;

/// Spikformer SPS (`patch_embed`): four conv-BN-LIF stages with max pools on the spikes, and an
/// RPE conv-BN-LIF added to the stage-4 spikes.
#[derive(Module, Debug)]
pub struct SpikformerSps {
    /// Stage 1 conv.
    pub proj_conv: Conv2d,
    /// Stage 1 BN.
    pub proj_bn: TorchBatchNorm,
    /// Stage 1 LIF.
    pub proj_lif: MultiStepNeuron,
    /// Stage 2 conv.
    pub proj_conv1: Conv2d,
    /// Stage 2 BN.
    pub proj_bn1: TorchBatchNorm,
    /// Stage 2 LIF.
    pub proj_lif1: MultiStepNeuron,
    /// Stage 3 conv.
    pub proj_conv2: Conv2d,
    /// Stage 3 BN.
    pub proj_bn2: TorchBatchNorm,
    /// Stage 3 LIF.
    pub proj_lif2: MultiStepNeuron,
    /// Stage 4 conv.
    pub proj_conv3: Conv2d,
    /// Stage 4 BN.
    pub proj_bn3: TorchBatchNorm,
    /// Stage 4 LIF.
    pub proj_lif3: MultiStepNeuron,
    /// RPE conv.
    pub rpe_conv: Conv2d,
    /// RPE BN.
    pub rpe_bn: TorchBatchNorm,
    /// RPE LIF.
    pub rpe_lif: MultiStepNeuron,
    #[module(skip)]
    pooling: [bool; 4],
}

impl SpikformerSps {
    fn new(cfg: &ModelConfig, device: &Device) -> Self {
        let c = cfg.embed_dim;
        let lif = |n: &str| cfg.neuron.init(format!("patch_embed.{n}"), device);
        Self {
            proj_conv: conv2d_torch_default(cfg.in_channels, c / 8, 3, false, device),
            proj_bn: TorchBatchNorm::new(c / 8, device),
            proj_lif: lif("proj_lif"),
            proj_conv1: conv2d_torch_default(c / 8, c / 4, 3, false, device),
            proj_bn1: TorchBatchNorm::new(c / 4, device),
            proj_lif1: lif("proj_lif1"),
            proj_conv2: conv2d_torch_default(c / 4, c / 2, 3, false, device),
            proj_bn2: TorchBatchNorm::new(c / 2, device),
            proj_lif2: lif("proj_lif2"),
            proj_conv3: conv2d_torch_default(c / 2, c, 3, false, device),
            proj_bn3: TorchBatchNorm::new(c, device),
            proj_lif3: lif("proj_lif3"),
            rpe_conv: conv2d_torch_default(c, c, 3, false, device),
            rpe_bn: TorchBatchNorm::new(c, device),
            rpe_lif: lif("rpe_lif"),
            pooling: cfg.pooling(),
        }
    }

    /// `[T, B, C_in, H, W]` → tokens `[T, B, N, C]` with values in {0, 1, 2}.
    ///
    /// Records nothing: [`Self::forward_monitored`] also records the firing statistics.
    pub fn forward(&self, x: Tensor<5>) -> Tensor<4> {
        self.forward_monitored(x, &mut Monitor::disabled())
    }

    /// As [`Self::forward`], recording each spiking layer's firing statistics in the monitor.
    pub fn forward_monitored(&self, x: Tensor<5>, m: &mut Monitor) -> Tensor<4> {
        let stages = [
            (&self.proj_conv, &self.proj_bn, &self.proj_lif),
            (&self.proj_conv1, &self.proj_bn1, &self.proj_lif1),
            (&self.proj_conv2, &self.proj_bn2, &self.proj_lif2),
            (&self.proj_conv3, &self.proj_bn3, &self.proj_lif3),
        ];
        let mut x = x;
        for (i, (conv, bn, lif)) in stages.into_iter().enumerate() {
            x = merged(x, |z| bn.forward(conv_forward(conv, z)));
            x = lif.forward_monitored(x, m);
            if self.pooling[i] {
                x = merged(x, max_pool_3s2);
            }
        }
        let x_feat = x.clone();
        let r = merged(x, |z| self.rpe_bn.forward(conv_forward(&self.rpe_conv, z)));
        let r = self.rpe_lif.forward_monitored(r, m);
        let x = r + x_feat;
        let [t, b, c, h, w] = x.dims();
        x.reshape([t, b, c, h * w]).swap_dims(2, 3)
    }
}

/// Spikformer MLP (`block.{j}.mlp`): Linear-BN1d-LIF twice.
#[derive(Module, Debug)]
pub struct SpikformerMlp {
    /// C → hidden.
    pub fc1_linear: Linear,
    /// BN1d(hidden).
    pub fc1_bn: TorchBatchNorm,
    /// LIF.
    pub fc1_lif: MultiStepNeuron,
    /// hidden → C.
    pub fc2_linear: Linear,
    /// BN1d(C).
    pub fc2_bn: TorchBatchNorm,
    /// LIF.
    pub fc2_lif: MultiStepNeuron,
}

impl SpikformerMlp {
    /// The MLP branch (no residual).
    ///
    /// Records nothing: [`Self::forward_monitored`] also records the firing statistics.
    pub fn forward(&self, x: Tensor<4>) -> Tensor<4> {
        self.forward_monitored(x, &mut Monitor::disabled())
    }

    /// As [`Self::forward`], recording each spiking layer's firing statistics in the monitor.
    pub fn forward_monitored(&self, x: Tensor<4>, m: &mut Monitor) -> Tensor<4> {
        let y = self
            .fc1_lif
            .forward_monitored(linear_bn_tokens(&self.fc1_linear, &self.fc1_bn, x), m);
        self.fc2_lif
            .forward_monitored(linear_bn_tokens(&self.fc2_linear, &self.fc2_bn, y), m)
    }
}

/// One Spikformer block (`block.{j}`); `norm1`/`norm2` exist in the reference but are unused.
#[derive(Module, Debug)]
pub struct SpikformerBlock {
    /// Unused LayerNorm.
    pub norm1: UnusedNorm,
    /// Attention.
    pub attn: SsaAttention,
    /// Unused LayerNorm.
    pub norm2: UnusedNorm,
    /// MLP.
    pub mlp: SpikformerMlp,
}

/// Spikformer.
#[derive(Module, Debug)]
pub struct Spikformer {
    /// Stem.
    pub patch_embed: SpikformerSps,
    /// Blocks.
    pub block: Vec<SpikformerBlock>,
    /// Classifier (on the mean over tokens and time; no head LIF).
    pub head: Linear,
}

impl Spikformer {
    /// Build from a validated config.
    pub fn new(cfg: &ModelConfig, device: &Device) -> Result<Self> {
        let c = cfg.embed_dim;
        let hidden = c * cfg.mlp_ratio;
        let mut block = Vec::with_capacity(cfg.depth);
        let (grid_h, _) = cfg.grid();
        for j in 0..cfg.depth {
            let p = format!("block.{j}");
            let scale = cfg.statten_scale.unwrap_or(match cfg.attention {
                crate::attention::AttentionKind::Statten => {
                    crate::attention::statten_scale(grid_h, cfg.chunk_size, cfg.dvs)
                }
                _ => 0.125,
            });
            let attn = SsaAttentionConfig {
                dim: c,
                num_heads: cfg.num_heads,
                kind: cfg.attention,
                chunk_size: cfg.chunk_size,
                time_steps: cfg.time_steps,
                scale,
                neuron: cfg.attention_neuron(),
                attn_v_threshold: cfg.attn_v_threshold,
            }
            .init(&format!("{p}.attn"), device)?;
            let lif = |n: &str| cfg.neuron.init(format!("{p}.mlp.{n}"), device);
            block.push(SpikformerBlock {
                norm1: UnusedNorm::new(c, device),
                attn,
                norm2: UnusedNorm::new(c, device),
                mlp: SpikformerMlp {
                    fc1_linear: linear_trunc_normal(c, hidden, device),
                    fc1_bn: TorchBatchNorm::new(hidden, device),
                    fc1_lif: lif("fc1_lif"),
                    fc2_linear: linear_trunc_normal(hidden, c, device),
                    fc2_bn: TorchBatchNorm::new(c, device),
                    fc2_lif: lif("fc2_lif"),
                },
            });
        }
        Ok(Self {
            patch_embed: SpikformerSps::new(cfg, device),
            block,
            head: linear_trunc_normal(c, cfg.num_classes, device),
        })
    }

    /// Features `[T, B, C]` (mean over tokens of the last block's output).
    pub fn features(&self, x: Tensor<5>, m: &mut Monitor) -> Tensor<3> {
        let mut x = self.patch_embed.forward_monitored(x, m);
        for blk in &self.block {
            x = x.clone() + blk.attn.forward_monitored(x, m);
            x = x.clone() + blk.mlp.forward_monitored(x, m);
        }
        let [t, b, _, c] = x.dims();
        x.mean_dim(2).reshape([t, b, c])
    }

    /// Logits `[B, K]`: head on the mean over T (the reference's order).
    ///
    /// Records nothing: [`Self::forward_mean_monitored`] also records the firing statistics.
    pub fn forward_mean(&self, x: Tensor<5>) -> Tensor<2> {
        self.forward_mean_monitored(x, &mut Monitor::disabled())
    }

    /// As [`Self::forward_mean`], recording each spiking layer's firing statistics in the monitor.
    pub fn forward_mean_monitored(&self, x: Tensor<5>, m: &mut Monitor) -> Tensor<2> {
        let f = self.features(x, m);
        let [_, b, c] = f.dims();
        crate::precision::linear(&self.head, f.mean_dim(0).reshape([b, c]))
    }

    /// Per-timestep logits `[T, B, K]` (for TET).
    ///
    /// Records nothing: [`Self::forward_time_monitored`] also records the firing statistics.
    pub fn forward_time(&self, x: Tensor<5>) -> Tensor<3> {
        self.forward_time_monitored(x, &mut Monitor::disabled())
    }

    /// As [`Self::forward_time`], recording each spiking layer's firing statistics in the monitor.
    pub fn forward_time_monitored(&self, x: Tensor<5>, m: &mut Monitor) -> Tensor<3> {
        crate::precision::linear(&self.head, self.features(x, m))
    }
}
