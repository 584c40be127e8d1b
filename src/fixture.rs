//! Reader for parity fixtures produced by the PyTorch reference (format
//! `statten-parity-fixture/1`: `config.json`, `weights.safetensors`, `tensors.safetensors`).

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use serde_json::Value;
use statten_core::attention::AttentionKind;
use statten_core::models::{Arch, ModelConfig};
use statten_core::neuron::{NeuronConfig, Surrogate};
use statten_train::optim::AdamWConfig;

/// A tensor read from a fixture file.
#[derive(Debug, Clone)]
pub struct FixTensor {
    /// Shape (empty for scalars).
    pub shape: Vec<usize>,
    /// Values as f64 (F32 and I64 entries alike).
    pub values: Vec<f64>,
}

/// A fixture directory, loaded.
#[derive(Debug)]
pub struct Fixture {
    /// The directory.
    pub dir: PathBuf,
    /// `config.json`.
    pub config: Value,
    /// `tensors.safetensors`.
    pub tensors: HashMap<String, FixTensor>,
}

/// Read every F32/I64 tensor of a safetensors file.
pub fn read_safetensors(path: &Path) -> Result<HashMap<String, FixTensor>, String> {
    let bytes = std::fs::read(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let st = safetensors::SafeTensors::deserialize(&bytes)
        .map_err(|e| format!("{}: not a valid safetensors file: {e}", path.display()))?;
    let mut out = HashMap::new();
    for (name, view) in st.tensors() {
        let data = view.data();
        let values: Vec<f64> = match view.dtype() {
            safetensors::Dtype::F32 => data
                .chunks_exact(4)
                .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]) as f64)
                .collect(),
            safetensors::Dtype::F64 => data
                .chunks_exact(8)
                .map(|c| f64::from_le_bytes(c.try_into().unwrap()))
                .collect(),
            safetensors::Dtype::I64 => data
                .chunks_exact(8)
                .map(|c| i64::from_le_bytes(c.try_into().unwrap()) as f64)
                .collect(),
            other => {
                return Err(format!(
                    "{}: tensor `{name}` has unsupported dtype {other:?}",
                    path.display()
                ))
            }
        };
        out.insert(
            name.to_string(),
            FixTensor {
                shape: view.shape().to_vec(),
                values,
            },
        );
    }
    Ok(out)
}

impl Fixture {
    /// Load a fixture directory; errors name the missing or broken file.
    pub fn load(dir: &Path) -> Result<Self, String> {
        if !dir.is_dir() {
            return Err(format!(
                "fixture directory {} does not exist",
                dir.display()
            ));
        }
        let cfg_path = dir.join("config.json");
        let text = std::fs::read_to_string(&cfg_path)
            .map_err(|e| format!("{}: {e}", cfg_path.display()))?;
        let config: Value =
            serde_json::from_str(&text).map_err(|e| format!("{}: {e}", cfg_path.display()))?;
        for f in ["weights.safetensors", "tensors.safetensors"] {
            if !dir.join(f).is_file() {
                return Err(format!("{}: file missing", dir.join(f).display()));
            }
        }
        let tensors = read_safetensors(&dir.join("tensors.safetensors"))?;
        Ok(Self {
            dir: dir.to_path_buf(),
            config,
            tensors,
        })
    }

    /// Fixture name (directory name).
    pub fn name(&self) -> String {
        self.dir
            .file_name()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_default()
    }

    /// Path of the reference weights.
    pub fn weights_path(&self) -> PathBuf {
        self.dir.join("weights.safetensors")
    }

    /// A tensor of `tensors.safetensors`.
    pub fn tensor(&self, name: &str) -> Result<&FixTensor, String> {
        self.tensors.get(name).ok_or_else(|| {
            format!(
                "{}: tensor `{name}` missing",
                self.dir.join("tensors.safetensors").display()
            )
        })
    }

    fn key(&self, k: &str) -> Result<&Value, String> {
        self.config.get(k).ok_or_else(|| {
            format!(
                "{}: key `{k}` missing",
                self.dir.join("config.json").display()
            )
        })
    }

    fn usize_key(&self, k: &str) -> Result<usize, String> {
        self.key(k)?.as_u64().map(|v| v as usize).ok_or_else(|| {
            format!(
                "{}: key `{k}` is not an integer",
                self.dir.join("config.json").display()
            )
        })
    }

    fn f64_key(&self, k: &str) -> Result<f64, String> {
        self.key(k)?.as_f64().ok_or_else(|| {
            format!(
                "{}: key `{k}` is not a number",
                self.dir.join("config.json").display()
            )
        })
    }

    /// A string list of the config (`params_without_grad`, `zero_grad_by_construction`).
    pub fn string_list(&self, k: &str) -> Vec<String> {
        self.config
            .get(k)
            .and_then(|v| v.as_array())
            .map(|a| {
                a.iter()
                    .filter_map(|s| s.as_str().map(String::from))
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Learning rate and AdamW settings of the recorded step.
    pub fn optimizer(&self) -> Result<(f64, AdamWConfig), String> {
        let o = self.key("optimizer")?;
        let name = o.get("name").and_then(|v| v.as_str()).unwrap_or("adamw");
        if name != "adamw" {
            return Err(format!(
                "optimizer `{name}` in fixture config is not supported (adamw only)"
            ));
        }
        let f = |k: &str, d: f64| o.get(k).and_then(|v| v.as_f64()).unwrap_or(d);
        let betas = o
            .get("betas")
            .and_then(|v| v.as_array())
            .map(|a| (a[0].as_f64().unwrap_or(0.9), a[1].as_f64().unwrap_or(0.999)))
            .unwrap_or((0.9, 0.999));
        Ok((
            f("lr", 1e-3),
            AdamWConfig {
                betas,
                eps: f("eps", 1e-8),
                weight_decay: f("weight_decay", 0.0),
                no_decay_ndim_le_1: o
                    .get("no_decay_for_ndim_le_1")
                    .and_then(|v| v.as_bool())
                    .unwrap_or(true),
            },
        ))
    }

    /// The model configuration the fixture was made with.
    pub fn model_config(&self) -> Result<ModelConfig, String> {
        let arch = match self.key("arch")?.as_str() {
            Some("sdt") => Arch::Sdt,
            Some("spikformer") => Arch::Spikformer,
            other => return Err(format!("unknown arch {other:?} in fixture config")),
        };
        let att = self.key("attention")?.as_str().unwrap_or("");
        let attention =
            AttentionKind::parse(att).ok_or_else(|| format!("unknown attention `{att}`"))?;
        let time_steps = self.usize_key("time_steps")?;
        let chunk_size = self
            .config
            .get("chunk_size")
            .and_then(|v| v.as_u64())
            .map(|v| v as usize)
            .unwrap_or(time_steps);
        let surrogate = match self
            .config
            .get("surrogate")
            .and_then(|v| v.as_str())
            .unwrap_or("sigmoid")
        {
            "sigmoid" => Surrogate::Sigmoid {
                alpha: self.f64_key("alpha").unwrap_or(4.0),
            },
            "atan" => Surrogate::Atan {
                alpha: self.f64_key("alpha").unwrap_or(2.0),
            },
            s => return Err(format!("unsupported surrogate `{s}`")),
        };
        let vth = self.key("v_threshold")?;
        let default_vth = vth.get("default").and_then(|v| v.as_f64()).unwrap_or(1.0);
        let attn_vth = vth
            .get("attn_lif")
            .or_else(|| vth.get("talking_heads_lif"))
            .and_then(|v| v.as_f64())
            .unwrap_or(0.5);
        let neuron = NeuronConfig {
            tau: self.f64_key("tau").unwrap_or(2.0),
            v_threshold: default_vth,
            detach_reset: self
                .config
                .get("detach_reset")
                .and_then(|v| v.as_bool())
                .unwrap_or(true),
            decay_input: self
                .config
                .get("decay_input")
                .and_then(|v| v.as_bool())
                .unwrap_or(true),
            surrogate,
            ..NeuronConfig::default()
        };
        let pooling_stat = self
            .config
            .get("pooling_stat")
            .and_then(|v| v.as_str())
            .unwrap_or("0011")
            .to_string();
        Ok(ModelConfig {
            arch,
            attention,
            embed_dim: self.usize_key("embed_dim")?,
            depth: self.usize_key("depth")?,
            num_heads: self.usize_key("num_heads")?,
            mlp_ratio: self.usize_key("mlp_ratio")?,
            time_steps,
            chunk_size,
            in_channels: self.usize_key("in_channels")?,
            img_size: self.usize_key("img_size")?,
            num_classes: self.usize_key("num_classes")?,
            pooling_stat,
            dvs: self
                .config
                .get("dvs")
                .and_then(|v| v.as_bool())
                .unwrap_or(false),
            tet: false,
            attn_v_threshold: attn_vth,
            statten_scale: None,
            sdsa_pool_q: true,
            neuron,
        })
    }
}
