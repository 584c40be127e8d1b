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
    ApplyResult, BurnToPyTorchAdapter, ChainAdapter, FloatCastAdapter, ModuleSnapshot,
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
}

fn is_ignorable(key: &str) -> bool {
    key.ends_with("num_batches_tracked")
}

fn check(path: &Path, result: ApplyResult) -> Result<LoadReport> {
    let p = path.display().to_string();
    if let Some(e) = result.errors.first() {
        return Err(Error::checkpoint(p, format!("{e}")));
    }
    if !result.missing.is_empty() {
        let keys: Vec<&str> = result.missing.iter().map(|(k, _)| k.as_str()).collect();
        return Err(Error::checkpoint(
            p,
            format!("missing key(s) the model needs: {}", keys.join(", ")),
        ));
    }
    let (ignored, unexpected): (Vec<String>, Vec<String>) =
        result.unused.into_iter().partition(|k| is_ignorable(k));
    if !unexpected.is_empty() {
        return Err(Error::checkpoint(
            p,
            format!(
                "unexpected key(s) the model does not have: {}",
                unexpected.join(", ")
            ),
        ));
    }
    if result.applied.is_empty() {
        return Err(Error::checkpoint(
            p,
            "no tensor of the file matches the model",
        ));
    }
    Ok(LoadReport {
        applied: result.applied.len(),
        ignored,
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
        let result = model
            .load_from(&mut store)
            .map_err(|e| Error::checkpoint(p.clone(), format!("{e}")))?;
        return check(path, result);
    }
    load_pth(model, path, p)
}

/// A PyTorch pickle, tried as a bare `state_dict` and nested under the usual keys.
#[cfg(feature = "pytorch")]
fn load_pth<M: Module + ModuleSnapshot>(
    model: &mut M,
    path: &Path,
    p: String,
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
                let report = check(path, r)?;
                // PyTorch stores fp16 checkpoints as HalfStorage: compute in f32.
                *model = candidate.map(&mut CastToF32);
                return Ok(report);
            }
            Ok(_) => {}
            Err(e) => last_err = Some(e),
        }
    }
    Err(last_err.unwrap_or_else(|| Error::checkpoint(p, "no tensor of the file matches the model")))
}

#[cfg(not(feature = "pytorch"))]
fn load_pth<M: Module + ModuleSnapshot>(_: &mut M, _: &Path, p: String) -> Result<LoadReport> {
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
    let mut store = SafetensorsStore::from_bytes(Some(bytes))
        .with_from_adapter(from_adapter())
        .allow_partial(true)
        .validate(false)
        .skip_enum_variants(true);
    let result = model
        .load_from(&mut store)
        .map_err(|e| Error::checkpoint(label.display().to_string(), format!("{e}")))?;
    check(label, result)
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
