//! Import and export of the PyTorch reference's checkpoints under its `state_dict` key names.
//!
//! Our module tree mirrors the reference's names (`patch_embed.proj_conv.weight`,
//! `block.0.attn.q_bn.running_var`, `head.weight`, …), so loading is a by-name copy; Linear
//! weights are transposed (PyTorch stores `[out, in]`), half-precision tensors are cast to f32.
//! Missing keys, unexpected keys and shape mismatches are errors that name the key.
//! `num_batches_tracked` entries are accepted and ignored on load, and written on export.
//!
//! ```
//! use statten_core::burn::tensor::Device;
//! use statten_core::checkpoint::{load_reference, save_reference};
//! use statten_core::ModelConfig;
//!
//! let device = Device::flex();
//! let mut cfg = ModelConfig::preset("cifar10-2-256")?;
//! (cfg.depth, cfg.embed_dim, cfg.num_heads) = (1, 32, 4);
//! let trained = cfg.init(&device)?;
//! // Reference weights: a `state_dict` as .safetensors (or a PyTorch .pth with the `pytorch`
//! // feature), here written by statten itself under the reference's key names.
//! let path = std::env::temp_dir().join(format!("statten-doc-{}.safetensors", std::process::id()));
//! save_reference(&trained, &path)?;
//! let mut model = cfg.init(&device)?;
//! let report = load_reference(&mut model, &path)?;
//! assert!(report.applied > 0); // every tensor of the file found its parameter or buffer
//! # std::fs::remove_file(&path).unwrap();
//! # Ok::<(), statten_core::Error>(())
//! ```

use std::path::Path;

use burn::module::Module;
#[cfg(feature = "pytorch")]
use burn::module::{ModuleMapper, Param};
#[cfg(feature = "pytorch")]
use burn::prelude::Tensor;
#[cfg(feature = "pytorch")]
use burn::store::PytorchStore;
use burn::store::{
    ApplyError, ApplyResult, BurnToPyTorchAdapter, ChainAdapter, FloatCastAdapter, ModuleSnapshot,
    PyTorchToBurnAdapter, SafetensorsStore,
};
use burn::tensor::DType;
#[cfg(feature = "pytorch")]
use burn::tensor::FloatDType;

use crate::error::{Error, Result};

/// What a load did.
#[derive(Debug, Clone, Default)]
pub struct LoadReport {
    /// Keys copied into the model.
    pub applied: usize,
    /// Keys of the file that were ignored (`num_batches_tracked`).
    pub ignored: Vec<String>,
    /// Keys of the model under the excluded prefixes ([`load_reference_except`]), which kept
    /// their values.
    pub excluded: Vec<String>,
}

fn is_ignorable(key: &str) -> bool {
    key.ends_with("num_batches_tracked")
}

/// Whether the module path `key` lies under one of the module prefixes of `exclude`
/// (`head` covers `head.weight` and `head.bias`, not `head_kd.weight`).
pub fn is_excluded(key: &str, exclude: &[String]) -> bool {
    exclude.iter().any(|p| {
        let p = p.trim_end_matches('.');
        key == p || (key.starts_with(p) && key[p.len()..].starts_with('.'))
    })
}

/// At most this many keys are listed per kind of problem.
const LISTED: usize = 12;

fn listed(keys: &[String]) -> String {
    let mut s = keys
        .iter()
        .take(LISTED)
        .cloned()
        .collect::<Vec<_>>()
        .join(", ");
    if keys.len() > LISTED {
        s.push_str(&format!(" and {} more", keys.len() - LISTED));
    }
    s
}

/// Every problem of a load at once, keys under `exclude` left out: shape (and type)
/// mismatches, keys the model needs that the file lacks, keys of the file the model does not
/// have.
fn check(path: &Path, result: ApplyResult, exclude: &[String]) -> Result<LoadReport> {
    let p = path.display().to_string();
    let mut problems = Vec::new();
    let error_key = |e: &ApplyError| match e {
        ApplyError::ShapeMismatch { path, .. }
        | ApplyError::DTypeMismatch { path, .. }
        | ApplyError::AdapterError { path, .. }
        | ApplyError::LoadError { path, .. } => path.clone(),
    };
    // The model's keys under `exclude`, wherever the load put them.
    let mut excluded: Vec<String> = result
        .applied
        .iter()
        .cloned()
        .chain(result.missing.iter().map(|(k, _)| k.clone()))
        .chain(result.errors.iter().map(error_key))
        .chain(result.skipped.iter().cloned())
        .filter(|k| is_excluded(k, exclude))
        .collect();
    excluded.sort();
    excluded.dedup();
    let errors: Vec<String> = result
        .errors
        .iter()
        .filter(|e| !is_excluded(&error_key(e), exclude))
        .map(|e| match e {
            ApplyError::ShapeMismatch {
                path,
                expected,
                found,
            } => format!(
                "{path} (model {:?}, file {:?})",
                expected.as_slice(),
                found.as_slice()
            ),
            other => other.to_string(),
        })
        .collect();
    if !errors.is_empty() {
        problems.push(format!(
            "{} tensor(s) do not fit the model: {}",
            errors.len(),
            listed(&errors)
        ));
    }
    let missing: Vec<String> = result
        .missing
        .iter()
        .map(|(k, _)| k.clone())
        .filter(|k| !is_excluded(k, exclude))
        .collect();
    if !missing.is_empty() {
        problems.push(format!(
            "missing key(s) the model needs: {}",
            listed(&missing)
        ));
    }
    let (ignored, unexpected): (Vec<String>, Vec<String>) = result
        .unused
        .into_iter()
        .filter(|k| !is_excluded(k, exclude))
        .partition(|k| is_ignorable(k));
    if !unexpected.is_empty() {
        problems.push(format!(
            "unexpected key(s) the model does not have: {}",
            listed(&unexpected)
        ));
    }
    if !problems.is_empty() {
        return Err(Error::checkpoint(p, problems.join("; ")));
    }
    let applied = result
        .applied
        .iter()
        .filter(|k| !is_excluded(k, exclude))
        .count();
    if applied == 0 {
        return Err(Error::checkpoint(
            p,
            "no tensor of the file matches the model",
        ));
    }
    Ok(LoadReport {
        applied,
        ignored,
        excluded,
    })
}

fn from_adapter() -> ChainAdapter {
    ChainAdapter::new(FloatCastAdapter::to(DType::F32), PyTorchToBurnAdapter)
}

/// Load a reference `state_dict` (`.safetensors`, or a PyTorch `.pth`/`.pt`/`.bin` pickle,
/// optionally nested under `state_dict` or `model`) into `model`.
pub fn load_reference<M: Module + ModuleSnapshot>(
    model: &mut M,
    path: &Path,
) -> Result<LoadReport> {
    load_reference_except(model, path, &[])
}

/// [`load_reference`], except the tensors under the module prefixes `exclude` (e.g. `head`,
/// for transfer to another class count): those keep the values `model` has, whatever the file
/// holds for them (another shape included), and are neither missing nor unexpected. Every
/// other key is strict.
pub fn load_reference_except<M: Module + ModuleSnapshot>(
    model: &mut M,
    path: &Path,
    exclude: &[String],
) -> Result<LoadReport> {
    let p = path.display().to_string();
    if !path.is_file() {
        return Err(Error::checkpoint(p, "file not found"));
    }
    let ext = path
        .extension()
        .and_then(|e| e.to_str())
        .unwrap_or("")
        .to_ascii_lowercase();
    if ext == "safetensors" {
        let mut store = SafetensorsStore::from_file(path)
            .with_from_adapter(from_adapter())
            .allow_partial(true)
            .validate(false)
            .skip_enum_variants(true);
        let fresh = model.clone();
        let result = model
            .load_from(&mut store)
            .map_err(|e| Error::checkpoint(p.clone(), format!("{e}")))?;
        let report = check(path, result, exclude)?;
        keep_excluded(model, &fresh, exclude);
        return Ok(report);
    }
    load_pth(model, path, p, exclude)
}

/// A PyTorch pickle, tried as a bare `state_dict` and nested under the usual keys.
#[cfg(feature = "pytorch")]
fn load_pth<M: Module + ModuleSnapshot>(
    model: &mut M,
    path: &Path,
    p: String,
    exclude: &[String],
) -> Result<LoadReport> {
    let mut last_err = None;
    for top in [
        None,
        Some("state_dict"),
        Some("model"),
        Some("state_dict_ema"),
    ] {
        let mut store = PytorchStore::from_file(path)
            .allow_partial(true)
            .validate(false)
            .skip_enum_variants(true);
        if let Some(k) = top {
            store = store.with_top_level_key(k);
        }
        let mut candidate = model.clone();
        let loaded = candidate
            .load_from(&mut store)
            .map_err(|e| Error::checkpoint(p.clone(), format!("{e}")));
        match loaded {
            Ok(r) if !r.applied.is_empty() => {
                let report = check(path, r, exclude)?;
                // PyTorch stores fp16 checkpoints as HalfStorage: compute in f32.
                let fresh = std::mem::replace(model, candidate.map(&mut CastToF32));
                keep_excluded(model, &fresh, exclude);
                return Ok(report);
            }
            Ok(_) => {}
            Err(e) => last_err = Some(e),
        }
    }
    Err(last_err.unwrap_or_else(|| Error::checkpoint(p, "no tensor of the file matches the model")))
}

#[cfg(not(feature = "pytorch"))]
fn load_pth<M: Module + ModuleSnapshot>(
    _: &mut M,
    _: &Path,
    p: String,
    _: &[String],
) -> Result<LoadReport> {
    Err(Error::checkpoint(
        p,
        "reading PyTorch pickles needs statten-core's `pytorch` cargo feature (convert the file \
         to .safetensors, or enable the feature)",
    ))
}

/// Load a reference `state_dict` held in memory as safetensors bytes; `label` names it in errors.
pub fn load_reference_bytes<M: Module + ModuleSnapshot>(
    model: &mut M,
    bytes: Vec<u8>,
    label: &Path,
) -> Result<LoadReport> {
    load_reference_bytes_except(model, bytes, label, &[])
}

/// [`load_reference_bytes`] with [`load_reference_except`]'s exclusions.
pub fn load_reference_bytes_except<M: Module + ModuleSnapshot>(
    model: &mut M,
    bytes: Vec<u8>,
    label: &Path,
    exclude: &[String],
) -> Result<LoadReport> {
    let mut store = SafetensorsStore::from_bytes(Some(bytes))
        .with_from_adapter(from_adapter())
        .allow_partial(true)
        .validate(false)
        .skip_enum_variants(true);
    let fresh = model.clone();
    let result = model
        .load_from(&mut store)
        .map_err(|e| Error::checkpoint(label.display().to_string(), format!("{e}")))?;
    let report = check(label, result, exclude)?;
    keep_excluded(model, &fresh, exclude);
    Ok(report)
}

/// Puts `fresh`'s tensors back into `model` under the excluded module prefixes (a load may
/// have written the file's values there when their shapes fit).
fn keep_excluded<M: Module>(model: &mut M, fresh: &M, exclude: &[String]) {
    use std::collections::HashMap;
    if exclude.is_empty() {
        return;
    }
    /// The module path of the tensor being visited (enum variants left out, as the stores do).
    #[derive(Default)]
    struct ModPath(Vec<String>);
    impl ModPath {
        fn enter(&mut self, name: &str, container: &str) {
            if !container.starts_with("Enum:") {
                self.0.push(name.to_string());
            }
        }
        fn exit(&mut self, container: &str) {
            if !container.starts_with("Enum:") {
                self.0.pop();
            }
        }
    }
    struct Collect<'a>(
        ModPath,
        &'a [String],
        HashMap<String, burn::prelude::Tensor<1>>,
    );
    impl burn::module::ModuleVisitor for Collect<'_> {
        fn enter_module(&mut self, name: &str, container: &str) {
            self.0.enter(name, container);
        }
        fn exit_module(&mut self, _: &str, container: &str) {
            self.0.exit(container);
        }
        fn visit_float<const D: usize>(
            &mut self,
            p: &burn::module::Param<burn::prelude::Tensor<D>>,
        ) {
            let key = self.0 .0.join(".");
            if is_excluded(&key, self.1) {
                let t = p.val();
                let n = t.shape().num_elements();
                self.2.insert(key, t.reshape([n]));
            }
        }
    }
    struct Restore(ModPath, HashMap<String, burn::prelude::Tensor<1>>);
    impl burn::module::ModuleMapper for Restore {
        fn enter_module(&mut self, name: &str, container: &str) {
            self.0.enter(name, container);
        }
        fn exit_module(&mut self, _: &str, container: &str) {
            self.0.exit(container);
        }
        fn map_float<const D: usize>(
            &mut self,
            p: burn::module::Param<burn::prelude::Tensor<D>>,
        ) -> burn::module::Param<burn::prelude::Tensor<D>> {
            let Some(init) = self.1.remove(&self.0 .0.join(".")) else {
                return p;
            };
            p.map(|t| {
                let fresh = init.reshape(t.dims()).detach();
                if t.is_require_grad() {
                    fresh.require_grad()
                } else {
                    fresh
                }
            })
        }
    }
    let mut c = Collect(ModPath::default(), exclude, HashMap::new());
    fresh.visit(&mut c);
    let taken = std::mem::replace(model, fresh.clone());
    *model = taken.map(&mut Restore(ModPath::default(), c.2));
}

/// Casts every floating-point tensor of a module to f32, keeping ids and gradient settings.
#[cfg(feature = "pytorch")]
struct CastToF32;

#[cfg(feature = "pytorch")]
impl ModuleMapper for CastToF32 {
    fn map_float<const D: usize>(&mut self, param: Param<Tensor<D>>) -> Param<Tensor<D>> {
        let (id, tensor, mapper) = param.consume();
        if tensor.dtype() == DType::F32 {
            return Param::from_mapped_value(id, tensor, mapper);
        }
        let require_grad = tensor.is_require_grad();
        let mut t = tensor.detach().cast(FloatDType::F32);
        if require_grad {
            t = t.require_grad();
        }
        Param::from_mapped_value(id, t, mapper)
    }
}

/// Save `model`'s parameters and running statistics as safetensors under the reference's key
/// names (Linear weights transposed back to `[out, in]`), plus a `num_batches_tracked` (I64
/// scalar, 0: statten does not count batches; PyTorch reads it only when BN momentum is None) for
/// every BatchNorm, so that PyTorch's strict `load_state_dict` accepts the file.
pub fn save_reference<M: Module + ModuleSnapshot>(model: &M, path: &Path) -> Result<()> {
    let p = path.display().to_string();
    let err = |m: String| Error::checkpoint(p.clone(), m);
    let mut store = SafetensorsStore::from_bytes(None)
        .with_to_adapter(BurnToPyTorchAdapter)
        .skip_enum_variants(true);
    model
        .save_into(&mut store)
        .map_err(|e| err(format!("{e}")))?;
    let bytes = store.get_bytes().map_err(|e| err(format!("{e}")))?;
    let st = safetensors::SafeTensors::deserialize(&bytes).map_err(|e| err(format!("{e}")))?;
    let (_, header) =
        safetensors::SafeTensors::read_metadata(&bytes).map_err(|e| err(format!("{e}")))?;
    let zero = 0i64.to_le_bytes();
    let mut views: Vec<(String, safetensors::tensor::TensorView<'_>)> = Vec::new();
    for (name, view) in st.tensors() {
        if let Some(prefix) = name.strip_suffix(".running_mean") {
            let t = safetensors::tensor::TensorView::new(safetensors::Dtype::I64, vec![], &zero)
                .map_err(|e| err(format!("{e}")))?;
            views.push((format!("{prefix}.num_batches_tracked"), t));
        }
        views.push((name.to_string(), view));
    }
    // Serialised in memory and written with the process's usual file mode (the safetensors
    // crate's own file writer creates files readable by their owner alone).
    let bytes = safetensors::tensor::serialize(views, header.metadata().clone())
        .map_err(|e| err(format!("{e}")))?;
    let tmp = path.with_extension("safetensors.tmp");
    let r = std::fs::write(&tmp, bytes).and_then(|_| std::fs::rename(&tmp, path));
    if r.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    r.map_err(|e| err(format!("cannot write: {e}")))
}

/// A named host-side tensor in PyTorch layout.
#[derive(Debug, Clone, PartialEq)]
pub struct NamedTensor {
    /// `state_dict` key.
    pub name: String,
    /// Shape.
    pub shape: Vec<usize>,
    /// Values (f32, row-major).
    pub values: Vec<f32>,
    /// Parameter id in the Burn module (None for running statistics).
    pub param_id: Option<u64>,
}

/// Every tensor of `model` (parameters and running statistics) under its reference key, in
/// PyTorch layout, read back to the host.
pub fn named_tensors<M: Module + ModuleSnapshot>(model: &M) -> Vec<NamedTensor> {
    model
        .collect(None, Some(Box::new(BurnToPyTorchAdapter)), true)
        .into_iter()
        .filter_map(|t| {
            let (name, dtype, shape, id, bytes) = t.into_parts().ok()?;
            if dtype != DType::F32 {
                return None;
            }
            let values = bytes
                .chunks_exact(4)
                .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                .collect();
            // Burn gives running statistics ids too; they are buffers, not parameters.
            let buffer = crate::layers::BATCHNORM_BUFFERS
                .iter()
                .any(|b| name.rsplit('.').next() == Some(*b));
            Some(NamedTensor {
                name,
                shape: shape.to_vec(),
                values,
                param_id: if buffer { None } else { id },
            })
        })
        .collect()
}
