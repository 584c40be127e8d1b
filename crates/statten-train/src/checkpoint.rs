//! Training checkpoints: one safetensors file holding the model (reference key names, prefixed
//! `model.`), the optimizer state (by parameter name, `optim.<name>.<i>`) and, in the metadata,
//! the epoch, best accuracy, per-epoch history, optimizer step counts and the resolved config.
//!
//! Files are written to a temporary name and renamed, so a kill at any moment leaves the previous
//! checkpoint intact and loadable. The data pipeline's randomness is a pure function of
//! `(seed, epoch, index)`, so seed and epoch are its whole RNG state.

use std::collections::HashMap;
use std::path::Path;

use burn::module::Module;
use burn::store::ModuleSnapshot;
use burn::tensor::Device;
use serde::{Deserialize, Serialize};
use statten_core::checkpoint::{
    load_reference_bytes, load_reference_bytes_except, load_reference_except, named_tensors,
    LoadReport,
};

use crate::error::Error;
use crate::optim::Optimizer;

/// One row of the per-epoch history (also a `summary.csv` row). Two records are equal when
/// every figure is, a missing one (NaN: not evaluated, no EMA) equal to a missing one.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct EpochRecord {
    /// Epoch (0-based).
    pub epoch: usize,
    /// Mean train loss.
    pub train_loss: f64,
    /// Train top-1 (%) against the unmixed labels.
    pub train_top1: f64,
    /// Eval loss (NaN when not evaluated).
    pub eval_loss: f64,
    /// Eval top-1 (%).
    pub eval_top1: f64,
    /// Eval top-5 (%).
    pub eval_top5: f64,
    /// Learning rate of the epoch (its first iteration).
    pub lr: f64,
    /// Training images per second.
    pub images_per_s: f64,
    /// Wall seconds of the epoch (train + eval).
    pub seconds: f64,
    /// When the epoch ended, in seconds since the Unix epoch (UTC); 0 in checkpoints written
    /// before this field existed.
    #[serde(default)]
    pub finished_at: u64,
    /// The EMA model's eval loss, top-1 and top-5 (`train.model_ema`; NaN without).
    #[serde(default = "nan", skip_serializing_if = "is_nan")]
    pub ema_eval_loss: f64,
    /// The EMA model's eval top-1 (%).
    #[serde(default = "nan", skip_serializing_if = "is_nan")]
    pub ema_eval_top1: f64,
    /// The EMA model's eval top-5 (%).
    #[serde(default = "nan", skip_serializing_if = "is_nan")]
    pub ema_eval_top5: f64,
}

fn nan() -> f64 {
    f64::NAN
}

fn is_nan(v: &f64) -> bool {
    v.is_nan()
}

impl PartialEq for EpochRecord {
    fn eq(&self, o: &Self) -> bool {
        let same = |a: f64, b: f64| a == b || (a.is_nan() && b.is_nan());
        self.epoch == o.epoch
            && self.finished_at == o.finished_at
            && [
                (self.train_loss, o.train_loss),
                (self.train_top1, o.train_top1),
                (self.eval_loss, o.eval_loss),
                (self.eval_top1, o.eval_top1),
                (self.eval_top5, o.eval_top5),
                (self.lr, o.lr),
                (self.images_per_s, o.images_per_s),
                (self.seconds, o.seconds),
                (self.ema_eval_loss, o.ema_eval_loss),
                (self.ema_eval_top1, o.ema_eval_top1),
                (self.ema_eval_top5, o.ema_eval_top5),
            ]
            .into_iter()
            .all(|(a, b)| same(a, b))
    }
}

impl EpochRecord {
    /// Whether the EMA model was evaluated this epoch.
    pub fn has_ema_eval(&self) -> bool {
        self.ema_eval_top1.is_finite()
    }
}

/// What the metadata holds.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CheckpointMeta {
    /// Format version.
    pub version: u32,
    /// Epochs completed.
    pub epochs_done: usize,
    /// Best eval top-1 so far (−∞ before the first evaluation). Stored as text, as JSON has no
    /// infinity.
    #[serde(with = "exact_f64")]
    pub best_top1: f64,
    /// Per-epoch history. Stored as text rows written with Rust's exact float formatting:
    /// serde_json's default float parser is not correctly rounded, and a resumed run must
    /// continue from the exact history.
    #[serde(with = "exact_history")]
    pub history: Vec<EpochRecord>,
    /// Optimizer step per parameter name.
    pub optim_steps: HashMap<String, u64>,
    /// The resolved config (TOML).
    pub config: String,
    /// Batches of epoch `epochs_done` (0-based) already trained: 0 at the end of an epoch, more
    /// in a mid-epoch checkpoint, which a resume continues from that batch.
    #[serde(default)]
    pub batches_done: usize,
    /// The running train statistics of that partial epoch (with `batches_done` > 0).
    #[serde(default, with = "exact_partial")]
    pub partial: Option<PartialEpoch>,
    /// Training steps skipped so far for a non-finite loss (`train.skip_nonfinite`).
    #[serde(default)]
    pub skipped_steps: usize,
    /// The optimizer whose state the file holds (`adamw`, `lamb`, `sgd`; empty in files
    /// written before it was recorded).
    #[serde(default)]
    pub optimizer: String,
    /// The EMA model's update count when the file holds its weights (`ema.` tensors).
    #[serde(default)]
    pub ema_updates: Option<u64>,
    /// The f16 loss scaler's state (`train.precision = "f16"`), as an exact text row
    /// (`crate::amp::LossScale::to_row`).
    #[serde(default)]
    pub loss_scale: Option<String>,
}

/// The running train statistics of an epoch in progress, kept exactly so that a run resumed
/// mid-epoch reports the same epoch means as one that was never stopped.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct PartialEpoch {
    /// Sum of per-sample train losses.
    pub loss_sum: f64,
    /// Samples in that sum.
    pub loss_n: f64,
    /// Top-1 hits against the unmixed labels.
    pub correct: usize,
    /// Samples trained on.
    pub seen: usize,
    /// Wall seconds spent on the epoch so far.
    pub seconds: f64,
}

/// An `f64` as text with Rust's exact formatting (`-inf` and `NaN` included); numbers of older
/// files are read too, and `null` (which serde_json writes for a non-finite value) as −∞.
mod exact_f64 {
    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    pub fn serialize<S: Serializer>(v: &f64, s: S) -> Result<S::Ok, S::Error> {
        v.to_string().serialize(s)
    }

    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Repr {
        Text(String),
        Number(f64),
        Null(()),
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<f64, D::Error> {
        match Repr::deserialize(d)? {
            Repr::Text(t) => t
                .parse()
                .map_err(|_| serde::de::Error::custom(format!("`{t}` is not a number"))),
            Repr::Number(v) => Ok(v),
            Repr::Null(()) => Ok(f64::NEG_INFINITY),
        }
    }
}

/// `PartialEpoch` as one text row of exactly round-tripping numbers (see `exact_history`).
mod exact_partial {
    use super::PartialEpoch;
    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    pub fn serialize<S: Serializer>(p: &Option<PartialEpoch>, s: S) -> Result<S::Ok, S::Error> {
        p.map(|p| {
            format!(
                "{},{},{},{},{}",
                p.loss_sum, p.loss_n, p.correct, p.seen, p.seconds
            )
        })
        .serialize(s)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<PartialEpoch>, D::Error> {
        let Some(row) = Option::<String>::deserialize(d)? else {
            return Ok(None);
        };
        let bad = || serde::de::Error::custom(format!("bad partial-epoch row `{row}`"));
        let v: Vec<&str> = row.split(',').collect();
        if v.len() != 5 {
            return Err(bad());
        }
        Ok(Some(PartialEpoch {
            loss_sum: v[0].parse().map_err(|_| bad())?,
            loss_n: v[1].parse().map_err(|_| bad())?,
            correct: v[2].parse().map_err(|_| bad())?,
            seen: v[3].parse().map_err(|_| bad())?,
            seconds: v[4].parse().map_err(|_| bad())?,
        }))
    }
}

/// (De)serialises the history as `"epoch,train_loss,…,seconds"` rows; Rust's `f64` `Display`
/// and `parse` round-trip exactly (including NaN for epochs without eval).
mod exact_history {
    use super::EpochRecord;
    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    pub fn serialize<S: Serializer>(h: &[EpochRecord], s: S) -> Result<S::Ok, S::Error> {
        let rows: Vec<String> = h
            .iter()
            .map(|r| {
                format!(
                    "{},{},{},{},{},{},{},{},{},{},{},{},{}",
                    r.epoch,
                    r.train_loss,
                    r.train_top1,
                    r.eval_loss,
                    r.eval_top1,
                    r.eval_top5,
                    r.lr,
                    r.images_per_s,
                    r.seconds,
                    r.finished_at,
                    r.ema_eval_loss,
                    r.ema_eval_top1,
                    r.ema_eval_top5
                )
            })
            .collect();
        rows.serialize(s)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<EpochRecord>, D::Error> {
        let rows = Vec::<String>::deserialize(d)?;
        rows.iter()
            .map(|row| {
                let bad = || serde::de::Error::custom(format!("bad history row `{row}`"));
                let v: Vec<&str> = row.split(',').collect();
                // Thirteen fields; ten before the EMA's, nine before `finished_at`.
                if ![9, 10, 13].contains(&v.len()) {
                    return Err(bad());
                }
                let f = |i: usize| v[i].parse::<f64>().map_err(|_| bad());
                Ok(EpochRecord {
                    epoch: v[0].parse().map_err(|_| bad())?,
                    train_loss: f(1)?,
                    train_top1: f(2)?,
                    eval_loss: f(3)?,
                    eval_top1: f(4)?,
                    eval_top5: f(5)?,
                    lr: f(6)?,
                    images_per_s: f(7)?,
                    seconds: f(8)?,
                    finished_at: match v.get(9) {
                        Some(t) => t.parse().map_err(|_| bad())?,
                        None => 0,
                    },
                    ema_eval_loss: if v.len() > 10 { f(10)? } else { f64::NAN },
                    ema_eval_top1: if v.len() > 10 { f(11)? } else { f64::NAN },
                    ema_eval_top5: if v.len() > 10 { f(12)? } else { f64::NAN },
                })
            })
            .collect()
    }
}

fn f32_bytes(v: &[f32]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

/// Param id → reference name, and the reverse.
pub fn param_names<M: Module + ModuleSnapshot>(
    model: &M,
) -> (HashMap<u64, String>, HashMap<String, u64>) {
    let mut a = HashMap::new();
    let mut b = HashMap::new();
    for t in named_tensors(model) {
        if let Some(id) = t.param_id {
            a.insert(id, t.name.clone());
            b.insert(t.name, id);
        }
    }
    (a, b)
}

/// Write a checkpoint atomically.
pub fn save<M: Module + ModuleSnapshot>(
    path: &Path,
    model: &M,
    opt: &Optimizer,
    meta: &CheckpointMeta,
) -> crate::error::Result<()> {
    save_with_ema(path, model, None, opt, meta)
}

/// [`save`], with the EMA model's weights (`ema.` tensors) and update count when there is one.
pub fn save_with_ema<M: Module + ModuleSnapshot>(
    path: &Path,
    model: &M,
    ema: Option<(&M, u64)>,
    opt: &Optimizer,
    meta: &CheckpointMeta,
) -> crate::error::Result<()> {
    save_text(path, model, ema, opt, meta).map_err(|m| Error::checkpoint(path, m))
}

fn save_text<M: Module + ModuleSnapshot>(
    path: &Path,
    model: &M,
    ema: Option<(&M, u64)>,
    opt: &Optimizer,
    meta: &CheckpointMeta,
) -> Result<(), String> {
    let err = |e: String| format!("{}: cannot write checkpoint: {e}", path.display());
    let tensors = named_tensors(model);
    let names: HashMap<u64, String> = tensors
        .iter()
        .filter_map(|t| Some((t.param_id?, t.name.clone())))
        .collect();
    let optim = opt.export(&names);
    let mut owned: Vec<(String, Vec<usize>, Vec<u8>)> = Vec::new();
    for t in tensors {
        owned.push((format!("model.{}", t.name), t.shape, f32_bytes(&t.values)));
    }
    let mut meta = meta.clone();
    meta.ema_updates = ema.map(|(_, n)| n);
    if let Some((ema, _)) = ema {
        for t in named_tensors(ema) {
            owned.push((format!("ema.{}", t.name), t.shape, f32_bytes(&t.values)));
        }
    }
    meta.optimizer = opt.kind_name().to_string();
    meta.optim_steps.clear();
    for (name, step, ts) in optim {
        meta.optim_steps.insert(name.clone(), step);
        for (i, v) in ts.into_iter().enumerate() {
            owned.push((format!("optim.{name}.{i}"), vec![v.len()], f32_bytes(&v)));
        }
    }
    let views: Vec<(String, safetensors::tensor::TensorView<'_>)> = owned
        .iter()
        .map(|(n, s, b)| {
            (
                n.clone(),
                safetensors::tensor::TensorView::new(safetensors::Dtype::F32, s.clone(), b)
                    .expect("consistent sizes"),
            )
        })
        .collect();
    let mut md = HashMap::new();
    md.insert(
        "statten".to_string(),
        serde_json::to_string(&meta).map_err(|e| err(e.to_string()))?,
    );
    let bytes = safetensors::tensor::serialize(views, Some(md)).map_err(|e| err(e.to_string()))?;
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(|e| err(e.to_string()))?;
    }
    let tmp = path.with_extension(format!("tmp{}", std::process::id()));
    let r = std::fs::write(&tmp, bytes).and_then(|_| std::fs::rename(&tmp, path));
    if r.is_err() {
        // A full disk leaves the previous checkpoint as it was and no half-written file.
        let _ = std::fs::remove_file(&tmp);
    }
    r.map_err(|e| err(e.to_string()))
}

/// Copy a checkpoint written by [`save`] to another name, atomically (for `best` and
/// `epoch_NNNN`, which hold the same state as `last` when they are written).
pub fn copy(from: &Path, to: &Path) -> crate::error::Result<()> {
    let tmp = to.with_extension(format!("tmp{}", std::process::id()));
    let r = std::fs::copy(from, &tmp).and_then(|_| std::fs::rename(&tmp, to));
    if r.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    r.map_err(|e| {
        Error::checkpoint(
            to,
            format!("{}: cannot write checkpoint: {e}", to.display()),
        )
    })
}

/// Read only the metadata of a checkpoint.
/// Only the safetensors header (8-byte length + JSON) is read, not the tensors.
pub fn read_meta(path: &Path) -> crate::error::Result<CheckpointMeta> {
    read_meta_text(path).map_err(|m| Error::checkpoint(path, String::from(m)))
}

/// Why a file's statten metadata could not be read: it is another kind of file (reference
/// weights, say), or it is a statten checkpoint that cannot be read (missing, truncated,
/// corrupt).
enum MetaError {
    NotStatten(String),
    Unreadable(String),
}

impl From<String> for MetaError {
    fn from(m: String) -> Self {
        Self::Unreadable(m)
    }
}

impl From<MetaError> for String {
    fn from(e: MetaError) -> Self {
        match e {
            MetaError::NotStatten(m) | MetaError::Unreadable(m) => m,
        }
    }
}

fn read_meta_text(path: &Path) -> Result<CheckpointMeta, MetaError> {
    use std::io::Read;
    let shown = path.display();
    let err = |e: std::io::Error| match e.kind() {
        std::io::ErrorKind::NotFound => format!("{shown}: not found"),
        _ => format!("{shown}: cannot read checkpoint: {e}"),
    };
    let mut f = std::fs::File::open(path).map_err(err)?;
    let meta = f.metadata().map_err(err)?;
    if meta.is_dir() {
        return Err(format!("{shown}: a folder, not a checkpoint file").into());
    }
    let size = meta.len();
    let not = |why: String| {
        MetaError::NotStatten(format!(
            "{shown}: not a statten checkpoint ({why}; reference weights, .pth or .safetensors, \
             need --config)"
        ))
    };
    if size < 8 {
        return Err(not(format!(
            "{size} bytes, shorter than a safetensors header"
        )));
    }
    let mut len = [0u8; 8];
    f.read_exact(&mut len).map_err(err)?;
    let n = u64::from_le_bytes(len);
    if n == 0 || n > 100_000_000 {
        return Err(not("no safetensors header".into()));
    }
    if 8 + n > size {
        return Err(format!(
            "{shown}: truncated at byte {size} of at least {} (its header alone is {n} bytes)",
            8 + n
        )
        .into());
    }
    let mut head = len.to_vec();
    head.resize(8 + n as usize, 0);
    f.read_exact(&mut head[8..]).map_err(err)?;
    if head[8] != b'{' {
        return Err(not("no safetensors header".into()));
    }
    // The tensors end where the header's largest data offset says: a shorter file lost them.
    if let Ok(header) = serde_json::from_slice::<serde_json::Value>(&head[8..]) {
        let end = header
            .as_object()
            .into_iter()
            .flatten()
            .filter_map(|(_, v)| v["data_offsets"][1].as_u64())
            .max()
            .unwrap_or(0);
        let want = 8 + n + end;
        if size < want {
            return Err(format!("{shown}: truncated at byte {size} of {want}").into());
        }
    }
    meta_of(&head, path)
}

/// The `statten` metadata from the start of a safetensors file (the header suffices).
fn meta_of(bytes: &[u8], path: &Path) -> Result<CheckpointMeta, MetaError> {
    let not = |why: &str| {
        MetaError::NotStatten(format!(
            "{}: not a statten checkpoint ({why})",
            path.display()
        ))
    };
    let n = bytes
        .get(..8)
        .map(|b| u64::from_le_bytes(b.try_into().unwrap()) as usize)
        .ok_or_else(|| not("too short"))?;
    let header: serde_json::Value = bytes
        .get(8..8usize.saturating_add(n))
        .and_then(|h| serde_json::from_slice(h).ok())
        .ok_or_else(|| not("no safetensors header"))?;
    let json = header["__metadata__"]["statten"].as_str().ok_or_else(|| {
        not("no `statten` metadata; for reference weights give `statten eval` a --config")
    })?;
    serde_json::from_str(json).map_err(|e| {
        MetaError::Unreadable(format!(
            "{}: corrupt checkpoint metadata: {e}",
            path.display()
        ))
    })
}

/// Load a checkpoint into `model` and `opt`; returns its metadata.
pub fn load<M: Module + ModuleSnapshot>(
    path: &Path,
    model: &mut M,
    opt: Option<&mut Optimizer>,
    device: &Device,
) -> crate::error::Result<CheckpointMeta> {
    load_text(path, model, opt, device).map_err(|m| Error::checkpoint(path, m))
}

fn load_text<M: Module + ModuleSnapshot>(
    path: &Path,
    model: &mut M,
    opt: Option<&mut Optimizer>,
    device: &Device,
) -> Result<CheckpointMeta, String> {
    // Not found, truncated, or not a checkpoint: said from the header, before the whole file
    // is read.
    let meta = read_meta_text(path)?;
    let bytes = std::fs::read(path)
        .map_err(|e| format!("{}: cannot read checkpoint: {e}", path.display()))?;
    let st = safetensors::SafeTensors::deserialize(&bytes)
        .map_err(|e| format!("{}: {e}", path.display()))?;
    let mut model_views = Vec::new();
    let mut optim: HashMap<String, Vec<(usize, Vec<f32>)>> = HashMap::new();
    for (name, view) in st.tensors() {
        if let Some(k) = name.strip_prefix("model.") {
            model_views.push((k.to_string(), view));
        } else if let Some(rest) = name.strip_prefix("optim.") {
            let (pname, idx) = rest
                .rsplit_once('.')
                .ok_or_else(|| format!("{}: bad tensor name {name}", path.display()))?;
            let idx: usize = idx
                .parse()
                .map_err(|_| format!("{}: bad tensor name {name}", path.display()))?;
            let v = view
                .data()
                .chunks_exact(4)
                .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
                .collect();
            optim.entry(pname.to_string()).or_default().push((idx, v));
        }
    }
    let model_bytes = safetensors::tensor::serialize(model_views, None)
        .map_err(|e| format!("{}: {e}", path.display()))?;
    load_reference_bytes(model, model_bytes, path).map_err(|e| e.to_string())?;
    if let Some(opt) = opt {
        if !meta.optimizer.is_empty() && meta.optimizer != opt.kind_name() {
            return Err(format!(
                "{}: holds {} optimizer state; this run uses {} (set optimizer.kind = \"{}\" \
                 or start a new run)",
                path.display(),
                meta.optimizer,
                opt.kind_name(),
                meta.optimizer
            ));
        }
        let (_, ids) = param_names(&*model);
        let sizes: HashMap<String, usize> = named_tensors(&*model)
            .into_iter()
            .filter(|t| t.param_id.is_some())
            .map(|t| (t.name, t.shape.iter().product()))
            .collect();
        let entries = optim
            .into_iter()
            .map(|(name, mut ts)| {
                ts.sort_by_key(|t| t.0);
                let step = meta.optim_steps.get(&name).copied().unwrap_or(0);
                (name, step, ts.into_iter().map(|t| t.1).collect())
            })
            .collect();
        opt.import(entries, &ids, &sizes, device)
            .map_err(|e| format!("{}: {e}", path.display()))?;
    }
    Ok(meta)
}

/// Where [`load_weights`] took the weights from.
#[derive(Debug, Clone)]
pub struct WeightsLoaded {
    /// What the load did (keys applied, ignored, kept at their initial values).
    pub report: LoadReport,
    /// The metadata when the file is a statten checkpoint (`None`: reference weights).
    pub meta: Option<CheckpointMeta>,
}

/// Load only the model weights of `path` into `model` — a statten checkpoint (its `model.`
/// tensors) or reference weights (`.safetensors`, `.pth`, reference key names) — strictly:
/// missing or unexpected keys and shape mismatches are an error that lists them. Keys under the
/// module prefixes of `exclude` (e.g. `head`) keep `model`'s values. The optimizer state,
/// position and history of a checkpoint are not read (`train.init_from`).
pub fn load_weights<M: Module + ModuleSnapshot>(
    path: &Path,
    model: &mut M,
    exclude: &[String],
) -> crate::error::Result<WeightsLoaded> {
    let meta = match read_meta_text(path) {
        Ok(meta) => meta,
        // Reference weights: the core's loader reads them and names their problems.
        Err(MetaError::NotStatten(_)) => {
            let report = load_reference_except(model, path, exclude)?;
            return Ok(WeightsLoaded { report, meta: None });
        }
        Err(MetaError::Unreadable(e)) => return Err(Error::checkpoint(path, e)),
    };
    let bytes = std::fs::read(path).map_err(|e| {
        Error::checkpoint(
            path,
            format!("{}: cannot read checkpoint: {e}", path.display()),
        )
    })?;
    let model_bytes =
        prefixed_tensors(&bytes, "model.", path).map_err(|m| Error::checkpoint(path, m))?;
    let report = load_reference_bytes_except(model, model_bytes, path, exclude)?;
    Ok(WeightsLoaded {
        report,
        meta: Some(meta),
    })
}

/// The tensors of a checkpoint's bytes whose names start with `prefix`, without it, as the
/// bytes of a safetensors file of their own.
fn prefixed_tensors(bytes: &[u8], prefix: &str, path: &Path) -> Result<Vec<u8>, String> {
    let st = safetensors::SafeTensors::deserialize(bytes)
        .map_err(|e| format!("{}: {e}", path.display()))?;
    let views: Vec<(String, safetensors::tensor::TensorView<'_>)> = st
        .tensors()
        .into_iter()
        .filter_map(|(name, view)| Some((name.strip_prefix(prefix)?.to_string(), view)))
        .collect();
    safetensors::tensor::serialize(views, None).map_err(|e| format!("{}: {e}", path.display()))
}

/// Load the EMA model's weights of a statten checkpoint (`train.model_ema`) into `model`;
/// returns its update count. A file without them is an error that says so.
pub fn load_ema_weights<M: Module + ModuleSnapshot>(
    path: &Path,
    model: &mut M,
) -> crate::error::Result<u64> {
    let meta = read_meta(path)?;
    let Some(updates) = meta.ema_updates else {
        return Err(Error::checkpoint(
            path,
            format!(
                "{}: holds no EMA weights (its run had train.model_ema = false)",
                path.display()
            ),
        ));
    };
    let bytes = std::fs::read(path).map_err(|e| {
        Error::checkpoint(
            path,
            format!("{}: cannot read checkpoint: {e}", path.display()),
        )
    })?;
    let ema = prefixed_tensors(&bytes, "ema.", path).map_err(|m| Error::checkpoint(path, m))?;
    load_reference_bytes(model, ema, path)?;
    Ok(updates)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn history_rows_round_trip_exactly_and_missing_figures_compare_equal() {
        let rec = EpochRecord {
            epoch: 2,
            train_loss: 0.1 + 0.2,
            train_top1: 50.0,
            eval_loss: f64::NAN,
            eval_top1: f64::NAN,
            eval_top5: f64::NAN,
            lr: 1e-3 / 3.0,
            images_per_s: 12.5,
            seconds: 1.0,
            finished_at: 7,
            ema_eval_loss: 2.0 / 3.0,
            ema_eval_top1: 10.0,
            ema_eval_top5: 50.0,
        };
        let meta = CheckpointMeta {
            version: 1,
            epochs_done: 3,
            best_top1: f64::NEG_INFINITY,
            history: vec![rec.clone()],
            optim_steps: HashMap::new(),
            config: String::new(),
            batches_done: 0,
            partial: None,
            skipped_steps: 0,
            optimizer: String::new(),
            ema_updates: Some(5),
            loss_scale: Some("0.5,3,2".into()),
        };
        let back: CheckpointMeta =
            serde_json::from_str(&serde_json::to_string(&meta).unwrap()).unwrap();
        assert_eq!(back.history, vec![rec.clone()]);
        assert_eq!(
            back.history[0].ema_eval_loss.to_bits(),
            rec.ema_eval_loss.to_bits()
        );
        assert_eq!(back.ema_updates, Some(5));
        // A missing figure equals a missing one, not a number.
        let other = EpochRecord {
            eval_loss: 1.0,
            ..rec.clone()
        };
        assert_ne!(other, rec);
    }
}
