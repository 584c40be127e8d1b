//! The run configuration: one TOML file with `[model]`, `[data]`, `[optimizer]`, `[schedule]`,
//! `[loss]` and `[train]` tables.
//!
//! Every table starts from defaults (the model from its `preset`, the data from the dataset's
//! reference recipe) and the keys given override them. An unknown key is an error naming it and
//! the closest valid key. `--set a.b=value` overrides any key from the command line (the value is
//! read as TOML, or as a string when it is not valid TOML). The resolved configuration is written
//! into the run directory as `config.toml`.

use burn::prelude::Device;
use serde::{Deserialize, Serialize};
use statten_core::conv::ConvAlgorithm;
use statten_core::models::ModelConfig;
use statten_core::precision::Precision;
use statten_data::config::{closest, merge_checked, DataConfig};
use statten_data::mixup::MixupConfig;

use crate::energy::EnergyConfig;
use crate::error::Error;
use crate::optim::OptimizerConfig;
use crate::schedule::ScheduleConfig;

/// Which loss.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum LossKind {
    /// As the reference chooses: soft-target CE when mixup is on, TET when the model is TET,
    /// else label-smoothing CE.
    Auto,
    /// Cross-entropy with label smoothing.
    Ce,
    /// Soft-target cross-entropy (mixup targets).
    SoftTarget,
    /// TET: per-timestep CE plus λ·MSE to `means`.
    Tet,
}

/// The `[loss]` table.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LossConfig {
    /// auto, ce, soft-target or tet.
    pub kind: LossKind,
    /// Label smoothing ε.
    pub label_smoothing: f64,
    /// TET λ.
    pub tet_lambda: f64,
    /// TET MSE target.
    pub tet_means: f64,
}

impl Default for LossConfig {
    fn default() -> Self {
        Self {
            kind: LossKind::Auto,
            label_smoothing: 0.1,
            tet_lambda: 0.001,
            tet_means: 1.0,
        }
    }
}

/// The `[train]` table.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TrainConfig {
    /// The run's length in epochs (0 = the schedule's `epochs + cooldown_epochs`). When set,
    /// the learning-rate schedule is fitted to it (`schedule.epochs = train.epochs −
    /// schedule.cooldown_epochs`; no cooldown where the run is not longer than it) unless
    /// `schedule.fit_to_run = false`.
    pub epochs: usize,
    /// The **global** batch: samples per optimizer step, whatever the hardware. With
    /// `devices` (and MPI ranks) each device takes a contiguous share of it (shares differ by
    /// at most one sample when it does not divide), each share's loss weighted by its size, so
    /// the gradient is the mean over the whole batch and a recipe means the same optimization
    /// on one device or several.
    pub batch_size: usize,
    /// Gradient accumulation: each device runs its share in pieces of at most this many
    /// samples (0 = the whole share at once), BatchNorm statistics per piece as under DDP.
    pub micro_batch: usize,
    /// Eval batch size (0 = batch_size).
    pub eval_batch_size: usize,
    /// Seed of initialisation, data order, augmentation and mixup.
    pub seed: u64,
    /// Evaluate every N epochs (and always after the last).
    pub eval_interval: usize,
    /// Keep a checkpoint every N epochs besides `last` and `best` (0 = none).
    pub checkpoint_every: usize,
    /// Keep only the newest K of those `epoch_NNNN` checkpoints (0 = all).
    pub keep_checkpoints: usize,
    /// Also write `last` every N steps inside an epoch, with the position in the epoch, so that
    /// `--resume` continues from that step (0 = only at epoch ends).
    pub checkpoint_every_steps: usize,
    /// Also write `last` inside an epoch when this many minutes have passed since the last
    /// checkpoint (0 = off).
    pub checkpoint_every_minutes: f64,
    /// Skip (and count) a step whose loss is NaN or infinite instead of stopping the run; the
    /// model, optimizer state and BatchNorm statistics stay as before that step.
    pub skip_nonfinite: bool,
    /// Device: cpu, flex, ndarray or wgpu.
    pub device: String,
    /// Data-parallel devices, e.g. `["wgpu:0", "wgpu:1"]` or `["cpu:0", "cpu:1"]`: each batch is
    /// split over them, the replicas run at once (a thread each) and the gradients are summed
    /// on the first (empty = just `device`). BatchNorm uses each replica's batch statistics;
    /// the running statistics are the first replica's, as DDP without SyncBN.
    pub devices: Vec<String>,
    /// Stop each epoch after this many batches (0 = all), for quick checks.
    pub max_batches: usize,
    /// Draw the learning-curve PNG each epoch.
    pub plot: bool,
    /// Append a row to `steps.csv` every this many optimizer steps (mean loss of those steps,
    /// learning rate, images/s); 0 = no per-step log.
    pub log_every: usize,
    /// The CPU convolutions' kernels: `exact` (the default: every output within rounding of the
    /// reference's sum, exact zeros kept), `winograd` (faster 3×3 gradients, **not
    /// reference-exact**) or `float64` (every sum in float64, for checks; slow). See
    /// `statten_core::conv::ConvAlgorithm`; other devices have one path whatever this says.
    pub conv_algorithm: ConvAlgorithm,
    /// The precision of the matrix products (`statten_core::precision`): `f32` (the default,
    /// reference-exact), `f16` (with dynamic loss scaling, as the reference's `--amp`), `bf16`,
    /// or `amp`: f16 on GPUs and f32 on CPUs (the recipes the reference trains with `--amp`).
    /// Half formats are **not reference-exact**; weights, optimizer state, LIF membranes and
    /// BatchNorm stay f32.
    pub precision: PrecisionSetting,
    /// Start from these weights (empty = from the seed): a statten checkpoint (its model
    /// weights) or reference weights (`.safetensors`, `.pth`, reference key names). Weights
    /// only: the optimizer, schedule and epoch count start afresh. Strict: missing or
    /// unexpected keys and shape mismatches are an error that lists them. Ignored by a resume,
    /// which continues from its checkpoint.
    pub init_from: String,
    /// Module prefixes of the model that `init_from` leaves at their initial values (drawn from
    /// the seed), e.g. `["head"]` to transfer a backbone to another class count (`--transfer`).
    pub init_exclude: Vec<String>,
    /// Keep an exponential moving average of the model (timm's `--model-ema`): its weights and
    /// BatchNorm statistics follow the model after every optimizer step, it is evaluated beside
    /// the model each epoch (`ema_eval_*` in `summary.csv`) and saved in checkpoints.
    pub model_ema: bool,
    /// The EMA's decay per step (timm's default 0.9998).
    pub model_ema_decay: f64,
    /// timm `ModelEmaV3`'s warm-up: the decay of step n is `min(decay, 1 − (1 + n)^(−2/3))`.
    pub model_ema_warmup: bool,
    /// The eval figure that picks `best` and `best_weights`: `top1` (the model's) or
    /// `ema_top1` (the EMA's, whose weights `best_weights` then holds; needs `model_ema`).
    pub best_metric: BestMetric,
    /// Write TensorBoard event files to `tb/` in the run directory (rank 0): the `steps.csv`
    /// rows' loss, learning rate and images/s, and each epoch's train and eval figures, EMA
    /// figures, energy and per-layer firing rates.
    pub tensorboard: bool,
}

/// `train.precision`: a precision, or `amp` (f16 on GPUs, f32 on CPUs).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PrecisionSetting {
    /// f32 everywhere.
    #[default]
    F32,
    /// f16 products with loss scaling, on any device.
    F16,
    /// bf16 products, on any device.
    Bf16,
    /// f16 on CubeCL (GPU) devices, f32 on CPUs.
    Amp,
}

impl PrecisionSetting {
    /// The names the config and the command line take.
    pub const NAMES: [&'static str; 4] = ["f32", "f16", "bf16", "amp"];

    /// The precision a run on `device` uses.
    pub fn resolve(self, device: &Device) -> Precision {
        match self {
            Self::F32 => Precision::F32,
            Self::F16 => Precision::F16,
            Self::Bf16 => Precision::Bf16,
            Self::Amp if statten_core::gpu::gpu_info(device).is_some() => Precision::F16,
            Self::Amp => Precision::F32,
        }
    }
}

impl std::fmt::Display for PrecisionSetting {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::F32 => "f32",
            Self::F16 => "f16",
            Self::Bf16 => "bf16",
            Self::Amp => "amp",
        })
    }
}

impl std::str::FromStr for PrecisionSetting {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s {
            "f32" => Ok(Self::F32),
            "f16" => Ok(Self::F16),
            "bf16" => Ok(Self::Bf16),
            "amp" => Ok(Self::Amp),
            o => Err(format!(
                "unknown precision `{o}`; one of {}",
                Self::NAMES.join(", ")
            )),
        }
    }
}

/// Which evaluation picks the best checkpoint (`train.best_metric`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BestMetric {
    /// The trained model's eval top-1.
    #[default]
    Top1,
    /// The EMA model's eval top-1.
    EmaTop1,
}

impl TrainConfig {
    /// The evaluation batch: `eval_batch_size`, or `batch_size` when that is 0.
    pub fn eval_batch(&self) -> usize {
        match self.eval_batch_size {
            0 => self.batch_size,
            b => b,
        }
    }
}

impl Default for TrainConfig {
    fn default() -> Self {
        Self {
            epochs: 0,
            batch_size: 64,
            micro_batch: 0,
            eval_batch_size: 0,
            seed: 42,
            eval_interval: 1,
            checkpoint_every: 0,
            keep_checkpoints: 0,
            checkpoint_every_steps: 0,
            checkpoint_every_minutes: 0.0,
            skip_nonfinite: false,
            device: "cpu".into(),
            devices: Vec::new(),
            max_batches: 0,
            plot: true,
            log_every: 20,
            conv_algorithm: ConvAlgorithm::Exact,
            precision: PrecisionSetting::F32,
            init_from: String::new(),
            init_exclude: Vec::new(),
            model_ema: false,
            model_ema_decay: crate::ema::DEFAULT_DECAY,
            model_ema_warmup: false,
            best_metric: BestMetric::Top1,
            tensorboard: true,
        }
    }
}

/// A whole run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunConfig {
    /// The model.
    pub model: ModelConfig,
    /// The data.
    pub data: DataConfig,
    /// The optimizer.
    pub optimizer: OptimizerConfig,
    /// The learning-rate schedule.
    pub schedule: ScheduleConfig,
    /// The loss.
    pub loss: LossConfig,
    /// Loop settings.
    pub train: TrainConfig,
    /// The energy report.
    #[serde(default)]
    pub energy: EnergyConfig,
}

const TABLES: [&str; 7] = [
    "model",
    "data",
    "optimizer",
    "schedule",
    "loss",
    "train",
    "energy",
];

fn section<T: Serialize + for<'de> Deserialize<'de>>(
    default: T,
    raw: &toml::Table,
    name: &str,
) -> Result<T, String> {
    let over = match raw.get(name) {
        None => return Ok(default),
        Some(toml::Value::Table(t)) => t,
        Some(_) => return Err(format!("`{name}` must be a table ([{name}])")),
    };
    let base = toml::Table::try_from(&default).map_err(|e| e.to_string())?;
    let merged = merge_checked(base, over, name)?;
    toml::Value::Table(merged)
        .try_into()
        .map_err(|e: toml::de::Error| format!("{name}: {}", e.message().trim()))
}

/// Apply `a.b.c=value` to a raw table.
pub fn apply_set(raw: &mut toml::Table, assignment: &str) -> Result<(), String> {
    let (key, value) = assignment
        .split_once('=')
        .ok_or_else(|| format!("--set `{assignment}`: expected key=value"))?;
    let value: toml::Value = match toml::from_str::<toml::Table>(&format!("v = {value}")) {
        Ok(mut t) => t.remove("v").unwrap(),
        Err(_) => toml::Value::String(value.to_string()),
    };
    let parts: Vec<&str> = key.trim().split('.').collect();
    let mut cur = raw;
    for p in &parts[..parts.len() - 1] {
        let entry = cur
            .entry(p.to_string())
            .or_insert_with(|| toml::Value::Table(toml::Table::new()));
        cur = match entry {
            toml::Value::Table(t) => t,
            _ => return Err(format!("--set `{key}`: `{p}` is not a table")),
        };
    }
    cur.insert(parts[parts.len() - 1].to_string(), value);
    Ok(())
}

/// A `[model]` table: its `preset` (default: the default model) with the table's other keys
/// merged over it, each checked against the model's fields.
pub fn model_from_table(t: &toml::Table) -> Result<ModelConfig, String> {
    let mut t = t.clone();
    let base = match t.remove("preset") {
        Some(toml::Value::String(p)) => ModelConfig::preset(&p).map_err(|e| e.to_string())?,
        Some(_) => return Err("model.preset: must be a string".into()),
        None => ModelConfig::default(),
    };
    let table = toml::Table::try_from(&base).map_err(|e| e.to_string())?;
    let merged = merge_checked(table, &t, "model")?;
    toml::Value::Table(merged)
        .try_into()
        .map_err(|e: toml::de::Error| format!("model: {}", e.message().trim()))
}

/// A preset with `model.KEY=VALUE` overrides (as `--set` gives them), validated.
pub fn model_with_sets(preset: &str, sets: &[String]) -> crate::error::Result<ModelConfig> {
    model_with_sets_text(preset, sets).map_err(Error::Config)
}

fn model_with_sets_text(preset: &str, sets: &[String]) -> Result<ModelConfig, String> {
    let mut raw = toml::Table::new();
    let mut model = toml::Table::new();
    model.insert("preset".into(), toml::Value::String(preset.into()));
    raw.insert("model".into(), toml::Value::Table(model));
    for s in sets {
        if !s.trim_start().starts_with("model.") {
            return Err(format!("--set `{s}`: only model.KEY=VALUE applies here"));
        }
        apply_set(&mut raw, s)?;
    }
    let Some(toml::Value::Table(t)) = raw.get("model") else {
        return Err("model: must be a table".into());
    };
    let cfg = model_from_table(t)?;
    cfg.validate().map_err(|e| e.to_string())?;
    Ok(cfg)
}

impl RunConfig {
    /// Parse TOML text with `--set` overrides applied first.
    pub fn parse(text: &str, sets: &[String]) -> crate::error::Result<Self> {
        Self::parse_text(text, sets).map_err(Error::Config)
    }

    fn parse_text(text: &str, sets: &[String]) -> Result<Self, String> {
        let mut raw: toml::Table =
            toml::from_str(text).map_err(|e| format!("invalid TOML: {e}"))?;
        for s in sets {
            apply_set(&mut raw, s)?;
        }
        Self::from_table_text(&raw)
    }

    /// Build from a parsed table.
    pub fn from_table(raw: &toml::Table) -> crate::error::Result<Self> {
        Self::from_table_text(raw).map_err(Error::Config)
    }

    fn from_table_text(raw: &toml::Table) -> Result<Self, String> {
        for k in raw.keys() {
            if !TABLES.contains(&k.as_str()) {
                let hint = closest(k, TABLES)
                    .map(|c| format!(" (did you mean `{c}`?)"))
                    .unwrap_or_default();
                return Err(format!(
                    "unknown key `{k}`{hint}; a run config has the tables {}",
                    TABLES.join(", ")
                ));
            }
        }
        let model = match raw.get("model") {
            Some(toml::Value::Table(t)) => model_from_table(t)?,
            Some(_) => return Err("`model` must be a table".into()),
            None => return Err("missing [model] table (e.g. preset = \"cifar10-2-512\")".into()),
        };
        let data = match raw.get("data") {
            Some(toml::Value::Table(t)) => DataConfig::from_table(t)?,
            Some(_) => return Err("`data` must be a table".into()),
            None => return Err("missing [data] table (e.g. dataset = \"cifar10\")".into()),
        };
        let mut cfg = RunConfig {
            model,
            data,
            optimizer: section(OptimizerConfig::default(), raw, "optimizer")?,
            schedule: section(ScheduleConfig::default(), raw, "schedule")?,
            loss: section(LossConfig::default(), raw, "loss")?,
            train: section(TrainConfig::default(), raw, "train")?,
            energy: section(EnergyConfig::default(), raw, "energy")?,
        };
        // One setting for the run's length: `train.epochs` (when set) fits the schedule, its
        // cooldown kept where the run is longer than the cooldown (else the cosine takes it all).
        let (epochs, cooldown) = (cfg.train.epochs, cfg.schedule.cooldown_epochs);
        if epochs > 0 && cfg.schedule.fit_to_run {
            if epochs <= cooldown {
                cfg.schedule.cooldown_epochs = 0;
            }
            cfg.schedule.epochs = epochs - cfg.schedule.cooldown_epochs;
        }
        cfg.validate_text()?;
        Ok(cfg)
    }

    /// Read a config file.
    pub fn load(path: &std::path::Path, sets: &[String]) -> crate::error::Result<Self> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| Error::Config(format!("{}: {e}", path.display())))?;
        Self::parse_text(&text, sets).map_err(|e| Error::Config(format!("{}: {e}", path.display())))
    }

    /// The resolved config as TOML.
    pub fn to_toml(&self) -> String {
        toml::to_string(self).unwrap_or_else(|e| format!("# cannot serialise: {e}\n"))
    }

    /// Epochs the run lasts.
    pub fn total_epochs(&self) -> usize {
        if self.train.epochs > 0 {
            self.train.epochs
        } else {
            self.schedule.total_epochs()
        }
    }

    /// The mixup settings in effect (with the loss's label smoothing).
    pub fn mixup(&self) -> MixupConfig {
        MixupConfig {
            label_smoothing: self.loss.label_smoothing,
            ..self.data.mixup.clone()
        }
    }

    /// The loss that will be used.
    pub fn loss_kind(&self) -> LossKind {
        match self.loss.kind {
            LossKind::Auto if self.model.tet => LossKind::Tet,
            LossKind::Auto if self.data.mixup.active() => LossKind::SoftTarget,
            LossKind::Auto => LossKind::Ce,
            k => k,
        }
    }

    /// Cross-section checks: the model must fit the data.
    pub fn validate(&self) -> crate::error::Result<()> {
        self.validate_text().map_err(Error::Config)
    }

    fn validate_text(&self) -> Result<(), String> {
        self.model.validate().map_err(|e| e.to_string())?;
        let m = &self.model;
        let d = &self.data;
        let (channels, size) = if d.dataset.is_events() {
            if d.frame_size.0 != d.frame_size.1 {
                return Err(format!(
                    "data.frame_size {:?}: the models take square inputs",
                    d.frame_size
                ));
            }
            (2, d.frame_size.0)
        } else if matches!(
            d.dataset,
            statten_data::config::DatasetName::FashionMnist
                | statten_data::config::DatasetName::Mnist
        ) {
            (1, 28)
        } else {
            (3, d.transform.size)
        };
        if m.in_channels != channels {
            return Err(format!(
                "model.in_channels = {} but {:?} has {channels} channels",
                m.in_channels, d.dataset
            ));
        }
        if m.img_size != size {
            return Err(format!(
                "model.img_size = {} but the {:?} samples are {size}×{size}",
                m.img_size, d.dataset
            ));
        }
        if m.num_classes != d.dataset.num_classes() {
            return Err(format!(
                "model.num_classes = {} but {:?} has {} classes",
                m.num_classes,
                d.dataset,
                d.dataset.num_classes()
            ));
        }
        if m.dvs != d.dataset.is_events() {
            return Err(format!(
                "model.dvs = {} does not match {:?}",
                m.dvs, d.dataset
            ));
        }
        if self.train.batch_size == 0 {
            return Err("train.batch_size must be positive".into());
        }
        if self.train.best_metric == BestMetric::EmaTop1 && !self.train.model_ema {
            return Err("train.best_metric = \"ema_top1\" needs train.model_ema = true".into());
        }
        if d.mixup.active() && !self.train.batch_size.is_multiple_of(2) {
            return Err(format!("train.batch_size = {} must be even with mixup (timm mixes each batch with its mirror)", self.train.batch_size));
        }
        if self.loss_kind() == LossKind::Tet && !m.tet {
            return Err("loss.kind = \"tet\" needs model.tet = true (per-timestep logits)".into());
        }
        // Every number in the config is finite (TOML has `nan` and `inf`).
        if let Ok(table) = toml::Value::try_from(self) {
            non_finite("", &table)?;
        }
        // Ranges, where a setting has one (each also finite, above).
        let (o, sc) = (&self.optimizer, &self.schedule);
        let positive: (fn(f64) -> bool, &str) = (|v| v > 0.0, "positive");
        let non_negative: (fn(f64) -> bool, &str) = (|v| v >= 0.0, "≥ 0");
        let unit: (fn(f64) -> bool, &str) = (|v| (0.0..1.0).contains(&v), "in [0, 1)");
        for (key, v, (ok, want)) in [
            ("optimizer.lr", o.lr, positive),
            ("optimizer.weight_decay", o.weight_decay, non_negative),
            ("optimizer.betas[0]", o.betas.0, unit),
            ("optimizer.betas[1]", o.betas.1, unit),
            ("optimizer.eps", o.eps, non_negative),
            ("optimizer.momentum", o.momentum, non_negative),
            ("optimizer.clip_grad", o.clip_grad, non_negative),
            ("schedule.min_lr", sc.min_lr, non_negative),
            ("schedule.warmup_lr", sc.warmup_lr, non_negative),
            ("loss.label_smoothing", self.loss.label_smoothing, unit),
            ("train.model_ema_decay", self.train.model_ema_decay, unit),
            (
                "train.checkpoint_every_minutes",
                self.train.checkpoint_every_minutes,
                non_negative,
            ),
        ] {
            if !ok(v) {
                return Err(format!("{key} = {v}: must be {want}"));
            }
        }
        Ok(())
    }
}

/// The first float under `v` (a table of the config; `key` its path) that is NaN or infinite,
/// as an error naming its key.
fn non_finite(key: &str, v: &toml::Value) -> Result<(), String> {
    match v {
        toml::Value::Float(f) if !f.is_finite() => {
            Err(format!("{key} = {f}: must be a finite number"))
        }
        toml::Value::Table(t) => t.iter().try_for_each(|(k, v)| {
            let sub = if key.is_empty() {
                k.clone()
            } else {
                format!("{key}.{k}")
            };
            non_finite(&sub, v)
        }),
        toml::Value::Array(a) => a
            .iter()
            .enumerate()
            .try_for_each(|(i, v)| non_finite(&format!("{key}[{i}]"), v)),
        _ => Ok(()),
    }
}

/// Every key whose value differs between `before` and `after`, as `key: A before, B after`
/// with `names = ("before", "after")` (e.g. `train.epochs: 1 in the checkpoint, 2 now`),
/// sorted by key.
pub fn config_differences(
    before: &RunConfig,
    after: &RunConfig,
    names: (&str, &str),
) -> Vec<String> {
    fn flatten(
        prefix: &str,
        v: &toml::Value,
        out: &mut std::collections::BTreeMap<String, String>,
    ) {
        match v {
            toml::Value::Table(t) => {
                for (k, v) in t {
                    let key = if prefix.is_empty() {
                        k.clone()
                    } else {
                        format!("{prefix}.{k}")
                    };
                    flatten(&key, v, out);
                }
            }
            other => {
                out.insert(prefix.to_string(), other.to_string());
            }
        }
    }
    let table = |c: &RunConfig| {
        let mut out = std::collections::BTreeMap::new();
        if let Ok(t) = toml::Value::try_from(c) {
            flatten("", &t, &mut out);
        }
        out
    };
    let (a, b) = (table(before), table(after));
    let absent = "(absent)".to_string();
    let mut keys: Vec<&String> = a.keys().chain(b.keys()).collect();
    keys.sort();
    keys.dedup();
    keys.into_iter()
        .filter_map(|k| {
            let (x, y) = (a.get(k).unwrap_or(&absent), b.get(k).unwrap_or(&absent));
            (x != y).then(|| format!("{k}: {x} {}, {y} {}", names.0, names.1))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const CIFAR: &str = "[model]\npreset = \"cifar10-2-512\"\n[data]\ndataset = \"cifar10\"\n";

    #[test]
    fn defaults_follow_the_recipe_and_sets_override() {
        let c = RunConfig::parse(
            CIFAR,
            &["train.batch_size=32".into(), "optimizer.lr=1e-3".into()],
        )
        .unwrap();
        assert_eq!(c.train.batch_size, 32);
        assert_eq!(c.optimizer.lr, 1e-3);
        assert_eq!(c.total_epochs(), 210);
        assert_eq!(c.loss_kind(), LossKind::SoftTarget);
        // The resolved config parses back to itself.
        assert_eq!(RunConfig::parse(&c.to_toml(), &[]).unwrap(), c);
    }

    /// `train.epochs` is the run's length and the schedule's, unless `schedule.fit_to_run` is
    /// off; the fit survives a round trip through the written config.
    #[test]
    fn train_epochs_fit_the_schedule() {
        let c = RunConfig::parse(CIFAR, &["train.epochs=30".into()]).unwrap();
        assert_eq!(
            (c.total_epochs(), c.schedule.epochs),
            (30, 20),
            "cooldown 10"
        );
        assert_eq!(RunConfig::parse(&c.to_toml(), &[]).unwrap(), c);
        let c = RunConfig::parse(
            CIFAR,
            &["train.epochs=30".into(), "schedule.fit_to_run=false".into()],
        )
        .unwrap();
        assert_eq!((c.total_epochs(), c.schedule.epochs), (30, 200));
        // A run no longer than the cooldown: the cosine takes the whole run.
        let c = RunConfig::parse(CIFAR, &["train.epochs=1".into()]).unwrap();
        let s = c.schedule;
        assert_eq!((c.total_epochs(), s.epochs, s.cooldown_epochs), (1, 1, 0));
        // Left at 0, the recipe's schedule sets the length.
        assert_eq!(RunConfig::parse(CIFAR, &[]).unwrap().total_epochs(), 210);
    }

    #[test]
    fn differences_name_keys_and_both_values() {
        let a = RunConfig::parse(CIFAR, &[]).unwrap();
        let b = RunConfig::parse(
            CIFAR,
            &["optimizer.lr=1e-3".into(), "train.batch_size=32".into()],
        )
        .unwrap();
        assert_eq!(
            config_differences(&a, &b, ("before", "after")),
            [
                "optimizer.lr: 0.0003 before, 0.001 after",
                "train.batch_size: 64 before, 32 after"
            ]
        );
        assert!(config_differences(&a, &a, ("x", "y")).is_empty());
    }

    #[test]
    fn bad_keys_and_shapes_are_named() {
        let e = RunConfig::parse(&format!("{CIFAR}[optimizer]\nweight_decai = 0.1\n"), &[])
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("optimizer.weight_decai") && e.contains("optimizer.weight_decay"),
            "{e}"
        );
        let e = RunConfig::parse(&format!("{CIFAR}[trian]\nepochs = 1\n"), &[])
            .unwrap_err()
            .to_string();
        assert!(e.contains("trian") && e.contains("train"), "{e}");
        let e = RunConfig::parse(
            "[model]\npreset = \"cifar10-2-512\"\nchunk_size = 3\n[data]\ndataset = \"cifar10\"\n",
            &[],
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("chunk_size"), "{e}");
        let e = RunConfig::parse(
            "[model]\npreset = \"cifar10-2-512\"\n[data]\ndataset = \"cifar100\"\n",
            &[],
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("num_classes"), "{e}");
        let e = RunConfig::parse(CIFAR, &["train.batch_size=33".into()])
            .unwrap_err()
            .to_string();
        assert!(e.contains("even"), "{e}");
    }
}
