//! Backbones: the Spike-driven Transformer (SDT) and Spikformer, their serde configuration and
//! the named presets of the reference repositories.

mod ops;
mod presets;
mod sdt;
mod spikformer;

pub use ops::SynapticOp;
pub use presets::{Preset, PRESETS};
pub use sdt::{MsMlp, Sdt, SdtBlock, SdtSps};
pub use spikformer::{Spikformer, SpikformerBlock, SpikformerMlp, SpikformerSps};

use burn::module::Module;
use burn::prelude::*;
use serde::{Deserialize, Serialize};

use crate::attention::{check_chunking, AttentionKind};
use crate::error::{Error, Result};
use crate::monitor::Monitor;
use crate::neuron::{NeuronConfig, NeuronKind};

/// Which backbone.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Arch {
    /// Spike-driven Transformer (the STAtten repository's `sdt`).
    Sdt,
    /// Spikformer (CIFAR model).
    Spikformer,
}

/// Full model configuration. Every field has the reference's default; TOML tables deserialize
/// into it and unknown keys are rejected.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ModelConfig {
    /// Backbone.
    pub arch: Arch,
    /// Attention inside each block.
    pub attention: AttentionKind,
    /// Embedding dimension C.
    pub embed_dim: usize,
    /// Number of encoder blocks L.
    pub depth: usize,
    /// Attention heads.
    pub num_heads: usize,
    /// MLP hidden = `mlp_ratio · C`.
    pub mlp_ratio: usize,
    /// Time steps T.
    pub time_steps: usize,
    /// STAtten block size (timesteps per block); T must be divisible by it.
    pub chunk_size: usize,
    /// Input channels (3 for images, 2 for event frames).
    pub in_channels: usize,
    /// Input height = width.
    pub img_size: usize,
    /// Classes K.
    pub num_classes: usize,
    /// Four characters, `'1'` = max-pool after that stem stage (SDT: `0011` CIFAR/DVS, `1111`
    /// ImageNet).
    pub pooling_stat: String,
    /// DVS mode (event input `[B, T, 2, H, W]`, DVS scale, max filters and gating).
    pub dvs: bool,
    /// TET: the model returns per-timestep logits `[T, B, K]` for the TET loss.
    pub tet: bool,
    /// Threshold of the attention LIFs (0.5 in the reference).
    pub attn_v_threshold: f64,
    /// Override of the attention scale (None = reference rule: STAtten 1/H or 1/(H²·cs),
    /// Spikformer SSA 0.125).
    pub statten_scale: Option<f64>,
    /// DVS mode of the SDSA baseline: the STAtten repository max-filters the q spikes too;
    /// upstream SDT filters only k and v (then `k ⊙ v` and `q ⊙ kv`). `true` matches
    /// the STAtten repository (the default), `false` gives upstream SDT.
    pub sdsa_pool_q: bool,
    /// Neuron settings of every spiking layer (attention LIFs are always LIF).
    pub neuron: NeuronConfig,
}

impl Default for ModelConfig {
    fn default() -> Self {
        Self {
            arch: Arch::Sdt,
            attention: AttentionKind::Statten,
            embed_dim: 512,
            depth: 2,
            num_heads: 8,
            mlp_ratio: 4,
            time_steps: 4,
            chunk_size: 2,
            in_channels: 3,
            img_size: 32,
            num_classes: 10,
            pooling_stat: "0011".into(),
            dvs: false,
            tet: false,
            attn_v_threshold: 0.5,
            statten_scale: None,
            sdsa_pool_q: true,
            neuron: NeuronConfig::default(),
        }
    }
}

impl ModelConfig {
    /// A named preset (see [`PRESETS`]). `-sdsa` appended to an SDT preset gives its SDSA
    /// baseline; `-statten` appended to a Spikformer preset gives Spikformer + STAtten.
    pub fn preset(name: &str) -> Result<Self> {
        if let Some(base) = name.strip_suffix("-sdsa") {
            let mut c = Self::preset(base)?;
            if c.arch != Arch::Sdt {
                return Err(Error::config(
                    "model.preset",
                    format!("`{name}`: -sdsa applies to SDT presets"),
                ));
            }
            c.attention = AttentionKind::Sdsa;
            return Ok(c);
        }
        if let Some(base) = name.strip_suffix("-statten") {
            let mut c = Self::preset(base)?;
            c.attention = AttentionKind::Statten;
            return Ok(c);
        }
        presets::find(name).map(|p| p.config())
    }

    /// The `[model]` table of this configuration as TOML (every key, as `statten model info
    /// --toml` prints it and `configs/models/*.toml` hold it).
    pub fn to_toml(&self) -> String {
        let mut t = toml::Table::new();
        let model = toml::Value::try_from(self).expect("a model config serializes");
        t.insert("model".into(), model);
        toml::to_string(&t).expect("a TOML table serializes")
    }

    /// Max-pool flags of the four stem stages.
    pub fn pooling(&self) -> [bool; 4] {
        let b = self.pooling_stat.as_bytes();
        [0, 1, 2, 3].map(|i| b.get(i) == Some(&b'1'))
    }

    /// Token grid `(H', W')` after the stem.
    pub fn grid(&self) -> (usize, usize) {
        let mut h = self.img_size;
        for p in self.pooling() {
            if p {
                h = (h - 1) / 2 + 1; // MaxPool2d(3, 2, 1), floor mode
            }
        }
        (h, h)
    }

    /// Neuron settings of the attention LIFs (always plain LIF, as in the reference).
    pub fn attention_neuron(&self) -> NeuronConfig {
        let mut n = self.neuron;
        if n.kind == NeuronKind::Plif {
            n.kind = NeuronKind::Lif;
        }
        n
    }

    /// Check every constraint; errors name the offending key.
    pub fn validate(&self) -> Result<()> {
        let nz = |v: usize, key: &str| {
            if v == 0 {
                Err(Error::config(format!("model.{key}"), "must be at least 1"))
            } else {
                Ok(())
            }
        };
        nz(self.embed_dim, "embed_dim")?;
        nz(self.depth, "depth")?;
        nz(self.num_heads, "num_heads")?;
        nz(self.mlp_ratio, "mlp_ratio")?;
        nz(self.time_steps, "time_steps")?;
        nz(self.in_channels, "in_channels")?;
        nz(self.img_size, "img_size")?;
        nz(self.num_classes, "num_classes")?;
        if !self.embed_dim.is_multiple_of(8) {
            return Err(Error::config(
                "model.embed_dim",
                format!(
                    "{} is not divisible by 8 (the stem uses C/8, C/4, C/2)",
                    self.embed_dim
                ),
            ));
        }
        if !self.embed_dim.is_multiple_of(self.num_heads) {
            return Err(Error::config(
                "model.num_heads",
                format!(
                    "embed_dim {} is not divisible by num_heads {}",
                    self.embed_dim, self.num_heads
                ),
            ));
        }
        if self.pooling_stat.len() != 4 || !self.pooling_stat.chars().all(|c| c == '0' || c == '1')
        {
            return Err(Error::config(
                "model.pooling_stat",
                format!(
                    "`{}` must be four characters of 0/1, e.g. \"0011\"",
                    self.pooling_stat
                ),
            ));
        }
        match (self.arch, self.attention) {
            (Arch::Sdt, AttentionKind::Ssa) => {
                return Err(Error::config(
                    "model.attention",
                    "the Spike-driven Transformer takes `statten` or `sdsa`",
                ))
            }
            (Arch::Spikformer, AttentionKind::Sdsa) => {
                return Err(Error::config(
                    "model.attention",
                    "Spikformer takes `ssa` or `statten`",
                ))
            }
            _ => {}
        }
        if self.attention == AttentionKind::Statten {
            check_chunking(self.time_steps, self.chunk_size)?;
        }
        if self.neuron.kind != NeuronKind::If
            && self.neuron.tau.partial_cmp(&1.0) != Some(std::cmp::Ordering::Greater)
        {
            return Err(Error::config("model.neuron.tau", "must be greater than 1"));
        }
        Ok(())
    }

    /// Build the model on `device` (validates first).
    pub fn init(&self, device: &Device) -> Result<StattenModel> {
        self.validate()?;
        Ok(match self.arch {
            Arch::Sdt => StattenModel::Sdt(Sdt::new(self, device)?),
            Arch::Spikformer => StattenModel::Spikformer(Spikformer::new(self, device)?),
        })
    }

    /// Number of parameters the reference's `state_dict` holds (floating-point, running stats
    /// excluded), including the unused `talking_heads` / `norm1` / `norm2` weights.
    pub fn reference_param_count(&self) -> usize {
        let c = self.embed_dim;
        let hid = c * self.mlp_ratio;
        let k = self.num_classes;
        let bn = |ch: usize| 2 * ch;
        let stem_convs =
            9 * (self.in_channels * c / 8 + c / 8 * c / 4 + c / 4 * c / 2 + c / 2 * c + c * c);
        let stem_bn = bn(c / 8) + bn(c / 4) + bn(c / 2) + bn(c) + bn(c);
        let head = c * k + k;
        let per_block = match self.arch {
            Arch::Sdt => {
                3 * (c * c + bn(c))
                    + self.num_heads * self.num_heads
                    + (c * c + c + bn(c))
                    + (c * hid + hid + bn(hid))
                    + (hid * c + c + bn(c))
            }
            Arch::Spikformer => {
                4 * (c * c + c + bn(c))
                    + (c * hid + hid + bn(hid))
                    + (hid * c + c + bn(c))
                    + 2 * bn(c)
            }
        };
        stem_convs + stem_bn + head + self.depth * per_block
    }

    /// Multiply-accumulates of one forward pass per image, `(dense MACs of the first, real-input
    /// convolution summed over T, MACs of every other synaptic layer summed over T)`. With firing
    /// rates the second term becomes synaptic operations (SOPs = firing rate × MACs), as in the
    /// paper's energy estimate.
    pub fn macs(&self) -> MacCount {
        let t = self.time_steps as u64;
        let c = self.embed_dim as u64;
        let hid = c * self.mlp_ratio as u64;
        let pools = self.pooling();
        let mut h = self.img_size as u64;
        let mut convs = Vec::new();
        let chans = [
            (self.in_channels as u64, c / 8),
            (c / 8, c / 4),
            (c / 4, c / 2),
            (c / 2, c),
        ];
        for (i, (ci, co)) in chans.iter().enumerate() {
            let pool_before_next = pools[i];
            convs.push(9 * ci * co * h * h);
            if pool_before_next {
                h = (h - 1) / 2 + 1;
            }
        }
        let n = h * h;
        convs.push(9 * c * c * n); // RPE
        let first = convs[0] * t;
        let stem_rest: u64 = convs[1..].iter().sum::<u64>() * t;
        let d = c / self.num_heads as u64;
        let attn_core = match self.attention {
            AttentionKind::Statten => 2 * n * d * c, // KᵀV and Q·(KᵀV) per head: 2·N·d² · h
            AttentionKind::Sdsa => 2 * n * c,
            AttentionKind::Ssa => 2 * n * n * c,
        };
        let per_block = 4 * c * c * n + 2 * c * hid * n + attn_core;
        let k = self.num_classes as u64;
        let head = c * k;
        MacCount {
            first_conv: first,
            other: stem_rest + self.depth as u64 * per_block * t + head * t,
        }
    }
}

/// Forward MACs per image.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MacCount {
    /// Dense MACs of the first convolution (real-valued input), summed over T.
    pub first_conv: u64,
    /// MACs of all other layers summed over T (spike-driven: become accumulates × firing rate).
    pub other: u64,
}

impl MacCount {
    /// Total MACs.
    pub fn total(&self) -> u64 {
        self.first_conv + self.other
    }
}

/// A model input: static images (repeated over T) or event frames.
#[derive(Debug, Clone)]
pub enum Input {
    /// Normalised images `[B, C, H, W]`.
    Static(Tensor<4>),
    /// Event-count frames `[B, T, 2, H, W]`.
    Events(Tensor<5>),
}

impl Input {
    /// `[T, B, C, H, W]`: direct encoding for static images, transposition for events.
    pub fn encode(self, time_steps: usize) -> Tensor<5> {
        match self {
            Input::Static(x) => {
                let [b, c, h, w] = x.dims();
                x.unsqueeze::<5>().expand([time_steps, b, c, h, w])
            }
            Input::Events(x) => x.swap_dims(0, 1),
        }
    }

    /// Batch size.
    pub fn batch(&self) -> usize {
        match self {
            Input::Static(x) => x.dims()[0],
            Input::Events(x) => x.dims()[0],
        }
    }
}

/// Either backbone, chosen at run time from a [`ModelConfig`].
#[derive(Module, Debug)]
pub enum StattenModel {
    /// Spike-driven Transformer.
    Sdt(Sdt),
    /// Spikformer.
    Spikformer(Spikformer),
}

impl StattenModel {
    /// Logits `[B, K]`: the mean over T of the per-timestep logits (SDT) or the head on the
    /// time-averaged features (Spikformer).
    ///
    /// Records nothing: [`Self::forward_monitored`] also records the firing statistics.
    pub fn forward(&self, x: Tensor<5>) -> Tensor<2> {
        self.forward_monitored(x, &mut Monitor::disabled())
    }

    /// As [`Self::forward`], recording each spiking layer's firing statistics in the monitor.
    pub fn forward_monitored(&self, x: Tensor<5>, m: &mut Monitor) -> Tensor<2> {
        match self {
            StattenModel::Sdt(s) => {
                let out = s.forward_time_monitored(x, m);
                let [_, b, k] = out.dims();
                out.mean_dim(0).reshape([b, k])
            }
            StattenModel::Spikformer(s) => s.forward_mean_monitored(x, m),
        }
    }

    /// Per-timestep logits `[T, B, K]` (TET training).
    ///
    /// Records nothing: [`Self::forward_time_monitored`] also records the firing statistics.
    pub fn forward_time(&self, x: Tensor<5>) -> Tensor<3> {
        self.forward_time_monitored(x, &mut Monitor::disabled())
    }

    /// As [`Self::forward_time`], recording each spiking layer's firing statistics in the monitor.
    pub fn forward_time_monitored(&self, x: Tensor<5>, m: &mut Monitor) -> Tensor<3> {
        match self {
            StattenModel::Sdt(s) => s.forward_time_monitored(x, m),
            StattenModel::Spikformer(s) => s.forward_time_monitored(x, m),
        }
    }
}

/// Parse a model configuration from TOML: either a `[model]` table or the model keys at top
/// level. A `preset = "…"` key starts from that preset; the other keys override it. Unknown keys
/// are errors naming the key.
pub fn parse_model_toml(text: &str) -> Result<ModelConfig> {
    let value: toml::Table =
        toml::from_str(text).map_err(|e| Error::config("model", format!("invalid TOML: {e}")))?;
    let table = match value.get("model") {
        Some(toml::Value::Table(t)) => t.clone(),
        Some(_) => return Err(Error::config("model", "must be a table")),
        None => value,
    };
    model_from_table(table)
}

/// Build a [`ModelConfig`] from a TOML table (see [`parse_model_toml`]).
pub fn model_from_table(mut table: toml::Table) -> Result<ModelConfig> {
    let base = match table.remove("preset") {
        Some(toml::Value::String(p)) => ModelConfig::preset(&p)?,
        Some(_) => return Err(Error::config("model.preset", "must be a string")),
        None => ModelConfig::default(),
    };
    let mut merged = toml::Table::try_from(&base)
        .map_err(|e| Error::config("model", format!("internal: {e}")))?;
    for (k, v) in table {
        match (merged.get_mut(&k), v) {
            (Some(toml::Value::Table(dst)), toml::Value::Table(src)) => {
                for (k2, v2) in src {
                    dst.insert(k2, v2);
                }
            }
            (_, v) => {
                merged.insert(k, v);
            }
        }
    }
    let cfg: ModelConfig = toml::Value::Table(merged)
        .try_into()
        .map_err(|e: toml::de::Error| Error::config("model", e.message().to_string()))?;
    cfg.validate()?;
    Ok(cfg)
}

/// Number of floating-point parameters of a module, BatchNorm running statistics excluded (the
/// reference's `num_parameters` convention; Burn's `num_params` counts running statistics too).
pub fn parameter_count<M: Module + burn::store::ModuleSnapshot>(model: &M) -> usize {
    model
        .collect(None, None, true)
        .iter()
        .filter(|t| !(t.name.ends_with("running_mean") || t.name.ends_with("running_var")))
        .map(|t| t.shape.num_elements())
        .sum()
}
