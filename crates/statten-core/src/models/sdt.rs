//! Spike-driven Transformer as built by the STAtten repository (`model/spikeformer.py`,
//! `module/sps.py`, `module/ms_conv.py`), with STAtten or SDSA attention.

use burn::module::Module;
use burn::nn::conv::Conv2d;
use burn::nn::Linear;
use burn::prelude::*;

use super::ModelConfig;
use crate::attention::{MsAttention, MsAttentionConfig};
use crate::error::Result;
use crate::layers::{
    conv2d, conv_forward, linear_torch_default, max_pool_3s2, merged, pointwise_conv,
    TorchBatchNorm,
};
use crate::monitor::Monitor;
use crate::neuron::{MultiStepNeuron, NeuronConfig};

/// MS-SPS patch-splitting stem (`patch_embed`).
#[derive(Module, Debug)]
pub struct SdtSps {
    /// Stage 1 conv (in → C/8).
    pub proj_conv: Conv2d,
    /// Stage 1 BN.
    pub proj_bn: TorchBatchNorm,
    /// Stage 1 LIF.
    pub proj_lif: MultiStepNeuron,
    /// Stage 2 conv (C/8 → C/4).
    pub proj_conv1: Conv2d,
    /// Stage 2 BN.
    pub proj_bn1: TorchBatchNorm,
    /// Stage 2 LIF.
    pub proj_lif1: MultiStepNeuron,
    /// Stage 3 conv (C/4 → C/2).
    pub proj_conv2: Conv2d,
    /// Stage 3 BN.
    pub proj_bn2: TorchBatchNorm,
    /// Stage 3 LIF.
    pub proj_lif2: MultiStepNeuron,
    /// Stage 4 conv (C/2 → C).
    pub proj_conv3: Conv2d,
    /// Stage 4 BN.
    pub proj_bn3: TorchBatchNorm,
    /// Stage 4 LIF.
    pub proj_lif3: MultiStepNeuron,
    /// Relative-position conv (C → C).
    pub rpe_conv: Conv2d,
    /// Relative-position BN.
    pub rpe_bn: TorchBatchNorm,
    #[module(skip)]
    pooling: [bool; 4],
}

impl SdtSps {
    /// The stem of `cfg`'s model: `in_channels` → `embed_dim` in four 3×3 conv stages (C/8,
    /// C/4, C/2, C), max-pooled where `pooling_stat` says, and the relative-position conv.
    /// `cfg` is not validated here ([`ModelConfig::validate`] checks `embed_dim % 8`).
    pub fn new(cfg: &ModelConfig, device: &Device) -> Self {
        let c = cfg.embed_dim;
        let lif = |n: &str| cfg.neuron.init(format!("patch_embed.{n}"), device);
        Self {
            proj_conv: conv2d(cfg.in_channels, c / 8, 3, false, device),
            proj_bn: TorchBatchNorm::new(c / 8, device),
            proj_lif: lif("proj_lif"),
            proj_conv1: conv2d(c / 8, c / 4, 3, false, device),
            proj_bn1: TorchBatchNorm::new(c / 4, device),
            proj_lif1: lif("proj_lif1"),
            proj_conv2: conv2d(c / 4, c / 2, 3, false, device),
            proj_bn2: TorchBatchNorm::new(c / 2, device),
            proj_lif2: lif("proj_lif2"),
            proj_conv3: conv2d(c / 2, c, 3, false, device),
            proj_bn3: TorchBatchNorm::new(c, device),
            proj_lif3: lif("proj_lif3"),
            rpe_conv: conv2d(c, c, 3, false, device),
            rpe_bn: TorchBatchNorm::new(c, device),
            pooling: cfg.pooling(),
        }
    }

    /// `[T, B, C_in, H, W]` → real-valued tokens `[T, B, C, H', W']`.
    ///
    /// Records nothing: [`Self::forward_monitored`] also records the firing statistics.
    pub fn forward(&self, x: Tensor<5>) -> Tensor<5> {
        self.forward_monitored(x, &mut Monitor::disabled())
    }

    /// As [`Self::forward`], recording each spiking layer's firing statistics in the monitor.
    pub fn forward_monitored(&self, x: Tensor<5>, m: &mut Monitor) -> Tensor<5> {
        let stages = [
            (&self.proj_conv, &self.proj_bn, &self.proj_lif),
            (&self.proj_conv1, &self.proj_bn1, &self.proj_lif1),
            (&self.proj_conv2, &self.proj_bn2, &self.proj_lif2),
        ];
        let mut x = x;
        for (i, (conv, bn, lif)) in stages.into_iter().enumerate() {
            x = merged(x, |z| bn.forward(conv_forward(conv, z)));
            x = lif.forward_monitored(x, m);
            if self.pooling[i] {
                x = merged(x, max_pool_3s2);
            }
        }
        // Stage 4: the pool acts on the real-valued BN output, before the LIF.
        let pool4 = self.pooling[3];
        let x_feat = merged(x, |z| {
            let y = self.proj_bn3.forward(conv_forward(&self.proj_conv3, z));
            if pool4 {
                max_pool_3s2(y)
            } else {
                y
            }
        });
        let s = self.proj_lif3.forward_monitored(x_feat.clone(), m);
        let rpe = merged(s, |z| self.rpe_bn.forward(conv_forward(&self.rpe_conv, z)));
        rpe + x_feat
    }
}

/// MS MLP (`block.{j}.mlp`): LIF → 1×1 conv → BN → LIF → 1×1 conv → BN, plus the identity.
#[derive(Module, Debug)]
pub struct MsMlp {
    /// LIF on the residual stream.
    pub fc1_lif: MultiStepNeuron,
    /// C → hidden.
    pub fc1_conv: Conv2d,
    /// BN(hidden).
    pub fc1_bn: TorchBatchNorm,
    /// LIF on the hidden layer.
    pub fc2_lif: MultiStepNeuron,
    /// hidden → C.
    pub fc2_conv: Conv2d,
    /// BN(C).
    pub fc2_bn: TorchBatchNorm,
}

impl MsMlp {
    /// An MLP `dim → hidden → dim` with `neuron` LIFs; `prefix` is its module path (e.g.
    /// `block.0.mlp`), used in firing-rate reports.
    pub fn new(
        dim: usize,
        hidden: usize,
        neuron: &NeuronConfig,
        prefix: &str,
        device: &Device,
    ) -> Self {
        let lif = |n: &str| neuron.init(format!("{prefix}.{n}"), device);
        Self {
            fc1_lif: lif("fc1_lif"),
            fc1_conv: conv2d(dim, hidden, 1, true, device),
            fc1_bn: TorchBatchNorm::new(hidden, device),
            fc2_lif: lif("fc2_lif"),
            fc2_conv: conv2d(hidden, dim, 1, true, device),
            fc2_bn: TorchBatchNorm::new(dim, device),
        }
    }

    /// `x + mlp(x)`.
    ///
    /// Records nothing: [`Self::forward_monitored`] also records the firing statistics.
    pub fn forward(&self, x: Tensor<5>) -> Tensor<5> {
        self.forward_monitored(x, &mut Monitor::disabled())
    }

    /// As [`Self::forward`], recording each spiking layer's firing statistics in the monitor.
    pub fn forward_monitored(&self, x: Tensor<5>, m: &mut Monitor) -> Tensor<5> {
        let identity = x.clone();
        let y = self.fc1_lif.forward_monitored(x, m);
        let y = merged(y, |z| {
            self.fc1_bn.forward(pointwise_conv(&self.fc1_conv, z))
        });
        let y = self.fc2_lif.forward_monitored(y, m);
        let y = merged(y, |z| {
            self.fc2_bn.forward(pointwise_conv(&self.fc2_conv, z))
        });
        y + identity
    }
}

/// One encoder block (`block.{j}`).
#[derive(Module, Debug)]
pub struct SdtBlock {
    /// Attention (includes its residual).
    pub attn: MsAttention,
    /// MLP (includes its residual).
    pub mlp: MsMlp,
}

impl SdtBlock {
    /// A block of `attn`'s attention and an MLP of `attn.dim · mlp_ratio` hidden channels with
    /// `attn.neuron` LIFs; `prefix` is its module path (e.g. `block.0`).
    pub fn new(
        attn: &MsAttentionConfig,
        mlp_ratio: usize,
        prefix: &str,
        device: &Device,
    ) -> Result<Self> {
        Ok(Self {
            attn: attn.init(&format!("{prefix}.attn"), device)?,
            mlp: MsMlp::new(
                attn.dim,
                attn.dim * mlp_ratio,
                &attn.neuron,
                &format!("{prefix}.mlp"),
                device,
            ),
        })
    }

    /// Attention then MLP, each with its residual: `[T, B, C, H, W]` → the same shape.
    pub fn forward(&self, x: Tensor<5>) -> Tensor<5> {
        self.forward_monitored(x, &mut Monitor::disabled())
    }

    /// As [`Self::forward`], recording each spiking layer's firing statistics in the monitor.
    pub fn forward_monitored(&self, x: Tensor<5>, m: &mut Monitor) -> Tensor<5> {
        let x = self.attn.forward_monitored(x, m);
        self.mlp.forward_monitored(x, m)
    }
}

/// The Spike-driven Transformer.
#[derive(Module, Debug)]
pub struct Sdt {
    /// Stem.
    pub patch_embed: SdtSps,
    /// Encoder blocks.
    pub block: Vec<SdtBlock>,
    /// LIF on the pooled features.
    pub head_lif: MultiStepNeuron,
    /// Classifier.
    pub head: Linear,
}

impl Sdt {
    /// Build from a validated config.
    pub fn new(cfg: &ModelConfig, device: &Device) -> Result<Self> {
        let c = cfg.embed_dim;
        let hidden = c * cfg.mlp_ratio;
        let (grid_h, _) = cfg.grid();
        let mut block = Vec::with_capacity(cfg.depth);
        for j in 0..cfg.depth {
            let p = format!("block.{j}");
            let attn = MsAttentionConfig {
                dim: c,
                num_heads: cfg.num_heads,
                kind: cfg.attention,
                chunk_size: cfg.chunk_size,
                time_steps: cfg.time_steps,
                grid_h,
                dvs: cfg.dvs,
                neuron: cfg.attention_neuron(),
                attn_v_threshold: cfg.attn_v_threshold,
                scale: cfg.statten_scale,
                sdsa_pool_q: cfg.sdsa_pool_q,
            }
            .init(&format!("{p}.attn"), device)?;
            let mlp = MsMlp::new(c, hidden, &cfg.neuron, &format!("{p}.mlp"), device);
            block.push(SdtBlock { attn, mlp });
        }
        Ok(Self {
            patch_embed: SdtSps::new(cfg, device),
            block,
            head_lif: cfg.neuron.init("head_lif", device),
            head: linear_torch_default(c, cfg.num_classes, device),
        })
    }

    /// `[T, B, C_in, H, W]` → per-timestep logits `[T, B, K]`.
    ///
    /// Records nothing: [`Self::forward_time_monitored`] also records the firing statistics.
    pub fn forward_time(&self, x: Tensor<5>) -> Tensor<3> {
        self.forward_time_monitored(x, &mut Monitor::disabled())
    }

    /// As [`Self::forward_time`], recording each spiking layer's firing statistics in the monitor.
    pub fn forward_time_monitored(&self, x: Tensor<5>, m: &mut Monitor) -> Tensor<3> {
        let mut x = self.patch_embed.forward_monitored(x, m);
        for blk in &self.block {
            x = blk.forward_monitored(x, m);
        }
        let [t, b, c, h, w] = x.dims();
        let feat: Tensor<3> = x.reshape([t, b, c, h * w]).mean_dim(3).reshape([t, b, c]);
        let s = self.head_lif.forward_monitored(feat, m);
        crate::precision::linear(&self.head, s)
    }
}
