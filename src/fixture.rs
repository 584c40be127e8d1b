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

    fn bad(&self, k: &str, what: &str) -> String {
        format!(
            "{}: key `{k}` {what}",
            self.dir.join("config.json").display()
        )
    }

    /// An optional number: absent → `None`, present but not a number → an error naming it.
    fn opt_f64_in(&self, obj: &Value, path: &str, k: &str) -> Result<Option<f64>, String> {
        match obj.get(k) {
            None => Ok(None),
            Some(v) => v
                .as_f64()
                .map(Some)
                .ok_or_else(|| self.bad(&format!("{path}{k}"), "is not a number")),
        }
    }

    fn opt_bool(&self, k: &str) -> Result<Option<bool>, String> {
        match self.config.get(k) {
            None => Ok(None),
            Some(v) => v
                .as_bool()
                .map(Some)
                .ok_or_else(|| self.bad(k, "is not true/false")),
        }
    }

    fn opt_str(&self, k: &str) -> Result<Option<&str>, String> {
        match self.config.get(k) {
            None | Some(Value::Null) => Ok(None),
            Some(v) => v
                .as_str()
                .map(Some)
                .ok_or_else(|| self.bad(k, "is not a string")),
        }
    }

    /// The label smoothing of the recorded loss (0 when the fixture does not say).
    pub fn label_smoothing(&self) -> Result<f64, String> {
        let ls = self
            .opt_f64_in(&self.config, "", "label_smoothing")?
            .unwrap_or(0.0);
        if !(0.0..1.0).contains(&ls) {
            return Err(self.bad("label_smoothing", &format!("= {ls} is not in [0, 1)")));
        }
        Ok(ls)
    }

    /// Learning rate and AdamW settings of the recorded step.
    pub fn optimizer(&self) -> Result<(f64, AdamWConfig), String> {
        let o = self.key("optimizer")?;
        let name = match o.get("name") {
            None => "adamw",
            Some(v) => v
                .as_str()
                .ok_or_else(|| self.bad("optimizer.name", "is not a string"))?,
        };
        if name != "adamw" {
            return Err(self.bad(
                "optimizer.name",
                &format!("= `{name}` is not supported (adamw only)"),
            ));
        }
        let f = |k: &str, d: f64| -> Result<f64, String> {
            Ok(self.opt_f64_in(o, "optimizer.", k)?.unwrap_or(d))
        };
        let betas = match o.get("betas") {
            None => (0.9, 0.999),
            Some(v) => match v
                .as_array()
                .map(|a| a.iter().map(|x| x.as_f64()).collect::<Vec<_>>())
            {
                Some(b) if b.len() == 2 && b.iter().all(|x| x.is_some()) => {
                    (b[0].unwrap(), b[1].unwrap())
                }
                _ => return Err(self.bad("optimizer.betas", "is not a list of two numbers")),
            },
        };
        let no_decay = match o.get("no_decay_for_ndim_le_1") {
            None => true,
            Some(v) => v
                .as_bool()
                .ok_or_else(|| self.bad("optimizer.no_decay_for_ndim_le_1", "is not true/false"))?,
        };
        Ok((
            f("lr", 1e-3)?,
            AdamWConfig {
                betas,
                eps: f("eps", 1e-8)?,
                weight_decay: f("weight_decay", 0.0)?,
                no_decay_ndim_le_1: no_decay,
            },
        ))
    }

    /// Settings the model cannot take from the fixture: refused when they differ from what the
    /// model computes (PyTorch's BatchNorm defaults, float32, heads of `embed_dim / num_heads`).
    fn check_fixed_settings(&self, embed_dim: usize, num_heads: usize) -> Result<(), String> {
        if let Some(bn) = self.config.get("batchnorm") {
            for (k, want) in [("eps", 1e-5), ("momentum", 0.1)] {
                if let Some(v) = self.opt_f64_in(bn, "batchnorm.", k)? {
                    if v != want {
                        return Err(self.bad(
                            &format!("batchnorm.{k}"),
                            &format!(
                                "= {v}: the models' BatchNorm uses {want} (PyTorch's default)"
                            ),
                        ));
                    }
                }
            }
        }
        if let Some(d) = self.opt_str("dtype")? {
            if d != "float32" {
                return Err(self.bad("dtype", &format!("= `{d}`: only float32 is checked")));
            }
        }
        if let Some(v) = self.config.get("head_dim") {
            let hd = v
                .as_u64()
                .ok_or_else(|| self.bad("head_dim", "is not an integer"))?
                as usize;
            if num_heads == 0 || hd * num_heads != embed_dim {
                return Err(self.bad(
                    "head_dim",
                    &format!("= {hd} but embed_dim / num_heads = {embed_dim} / {num_heads}"),
                ));
            }
        }
        Ok(())
    }

    /// The model configuration the fixture was made with.
    pub fn model_config(&self) -> Result<ModelConfig, String> {
        let arch = match self.key("arch")?.as_str() {
            Some("sdt") => Arch::Sdt,
            Some("spikformer") => Arch::Spikformer,
            other => return Err(self.bad("arch", &format!("= {other:?} is not sdt or spikformer"))),
        };
        let att = self.key("attention")?.as_str().unwrap_or("");
        let attention = AttentionKind::parse(att)
            .ok_or_else(|| self.bad("attention", &format!("= `{att}` is unknown")))?;
        let time_steps = self.usize_key("time_steps")?;
        let chunk_size = match self.config.get("chunk_size") {
            None | Some(Value::Null) => time_steps,
            Some(v) => v
                .as_u64()
                .ok_or_else(|| self.bad("chunk_size", "is not an integer"))?
                as usize,
        };
        let (neuron, attn_vth) = self.neuron_config()?;
        let pooling_stat = self.opt_str("pooling_stat")?.unwrap_or("0011").to_string();
        let embed_dim = self.usize_key("embed_dim")?;
        let num_heads = self.usize_key("num_heads")?;
        self.check_fixed_settings(embed_dim, num_heads)?;
        Ok(ModelConfig {
            arch,
            attention,
            embed_dim,
            depth: self.usize_key("depth")?,
            num_heads,
            mlp_ratio: self.usize_key("mlp_ratio")?,
            time_steps,
            chunk_size,
            in_channels: self.usize_key("in_channels")?,
            img_size: self.usize_key("img_size")?,
            num_classes: self.usize_key("num_classes")?,
            pooling_stat,
            dvs: self.opt_bool("dvs")?.unwrap_or(false),
            tet: false,
            attn_v_threshold: attn_vth,
            statten_scale: None,
            sdsa_pool_q: true,
            neuron,
        })
    }

    /// The neurons' settings (surrogate, thresholds, reset, decay) and the attention LIF's
    /// threshold.
    fn neuron_config(&self) -> Result<(NeuronConfig, f64), String> {
        let alpha = self.opt_f64_in(&self.config, "", "alpha")?;
        let surrogate = match self.opt_str("surrogate")?.unwrap_or("sigmoid") {
            "sigmoid" => Surrogate::Sigmoid {
                alpha: alpha.unwrap_or(4.0),
            },
            "atan" => Surrogate::Atan {
                alpha: alpha.unwrap_or(2.0),
            },
            s => return Err(self.bad("surrogate", &format!("= `{s}` is not supported"))),
        };
        let vth = self.key("v_threshold")?;
        let default_vth = self
            .opt_f64_in(vth, "v_threshold.", "default")?
            .unwrap_or(1.0);
        let attn_vth = match self.opt_f64_in(vth, "v_threshold.", "attn_lif")? {
            Some(v) => v,
            None => self
                .opt_f64_in(vth, "v_threshold.", "talking_heads_lif")?
                .unwrap_or(0.5),
        };
        // SpikingJelly: v_reset = 0 is the hard reset to 0, null the soft reset.
        let reset = match self.config.get("v_reset") {
            None => statten_core::neuron::Reset::Hard,
            Some(Value::Null) => statten_core::neuron::Reset::Soft,
            Some(v) if v.as_f64() == Some(0.0) => statten_core::neuron::Reset::Hard,
            Some(v) => {
                return Err(self.bad(
                    "v_reset",
                    &format!("= {v}: only 0 (hard reset) and null (soft reset) are supported"),
                ))
            }
        };
        let neuron = NeuronConfig {
            tau: self.opt_f64_in(&self.config, "", "tau")?.unwrap_or(2.0),
            v_threshold: default_vth,
            reset,
            detach_reset: self.opt_bool("detach_reset")?.unwrap_or(true),
            decay_input: self.opt_bool("decay_input")?.unwrap_or(true),
            surrogate,
            ..NeuronConfig::default()
        };
        Ok((neuron, attn_vth))
    }
}
