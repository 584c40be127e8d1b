//! Optimizers with timm's parameter groups: no weight decay on parameters with ndim ≤ 1 (biases,
//! BatchNorm γ/β), and parameters without a gradient are skipped entirely (no decay, unchanged),
//! as PyTorch does for parameters whose `.grad` is `None`.
//!
//! [`Optimizer`] wraps AdamW, Lamb and SGD behind one `[optimizer]` config, and exports and
//! imports its state **by parameter name**, so a checkpoint restores into a freshly built model
//! whose parameter ids differ.

mod adamw;
mod lamb;
mod sgd;

use std::collections::HashMap;

use burn::module::{Module, ParamId};
use burn::optim::GradientsParams;
use burn::prelude::*;
use serde::{Deserialize, Serialize};

pub use adamw::{AdamW, AdamWConfig};
pub use lamb::{Lamb, LambConfig};
pub use sgd::{Sgd, SgdConfig};

/// Per-parameter optimizer state: flat tensors (moments, momentum buffer) and a step count.
#[derive(Debug, Clone)]
pub struct ParamState {
    /// State tensors, flattened.
    pub tensors: Vec<Tensor<1>>,
    /// Steps taken for this parameter.
    pub step: u64,
}

pub(crate) fn restore_autodiff<const D: usize>(
    t: Tensor<D>,
    was_autodiff: bool,
    require_grad: bool,
) -> Tensor<D> {
    let mut out = t;
    if was_autodiff {
        out = out.autodiff();
        if require_grad {
            out = out.require_grad();
        }
    }
    out
}

/// Which optimizer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OptimizerKind {
    /// `torch.optim.AdamW`.
    Adamw,
    /// timm `Lamb`.
    Lamb,
    /// `torch.optim.SGD`.
    Sgd,
}

/// The `[optimizer]` table.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct OptimizerConfig {
    /// adamw, lamb or sgd.
    pub kind: OptimizerKind,
    /// Peak learning rate.
    pub lr: f64,
    /// Weight decay (not applied to parameters with ndim ≤ 1).
    pub weight_decay: f64,
    /// β₁, β₂ (adamw, lamb).
    pub betas: (f64, f64),
    /// ε; 0 selects the optimizer's default (adamw 1e-8, lamb 1e-6).
    pub eps: f64,
    /// SGD momentum.
    pub momentum: f64,
    /// Global gradient-norm clipping before the step (0 = off; the reference: off). Lamb
    /// always clips to 1.0 internally, as timm's.
    pub clip_grad: f64,
}

impl Default for OptimizerConfig {
    fn default() -> Self {
        Self {
            kind: OptimizerKind::Adamw,
            lr: 3e-4,
            weight_decay: 6e-2,
            betas: (0.9, 0.999),
            eps: 0.0,
            momentum: 0.9,
            clip_grad: 0.0,
        }
    }
}

/// One of the optimizers.
#[derive(Debug, Clone)]
pub enum Optimizer {
    /// AdamW.
    AdamW(AdamW),
    /// Lamb.
    Lamb(Lamb),
    /// SGD.
    Sgd(Sgd),
}

impl Optimizer {
    /// Build from the config.
    pub fn new(c: &OptimizerConfig) -> Self {
        match c.kind {
            OptimizerKind::Adamw => Optimizer::AdamW(AdamW::new(AdamWConfig {
                betas: c.betas,
                eps: if c.eps > 0.0 { c.eps } else { 1e-8 },
                weight_decay: c.weight_decay,
                no_decay_ndim_le_1: true,
            })),
            OptimizerKind::Lamb => Optimizer::Lamb(Lamb::new(LambConfig {
                betas: c.betas,
                eps: if c.eps > 0.0 { c.eps } else { 1e-6 },
                weight_decay: c.weight_decay,
                ..Default::default()
            })),
            OptimizerKind::Sgd => Optimizer::Sgd(Sgd::new(SgdConfig {
                momentum: c.momentum,
                weight_decay: c.weight_decay,
                ..Default::default()
            })),
        }
    }

    /// `adamw`, `lamb` or `sgd`.
    pub fn kind_name(&self) -> &'static str {
        match self {
            Optimizer::AdamW(_) => "adamw",
            Optimizer::Lamb(_) => "lamb",
            Optimizer::Sgd(_) => "sgd",
        }
    }

    /// State tensors kept per parameter (moments, or the momentum buffer).
    fn tensors_per_param(&self) -> usize {
        match self {
            Optimizer::AdamW(_) | Optimizer::Lamb(_) => 2,
            Optimizer::Sgd(_) => 1,
        }
    }

    /// One step.
    pub fn step<M: Module>(&mut self, lr: f64, module: M, grads: GradientsParams) -> M {
        match self {
            Optimizer::AdamW(o) => o.step(lr, module, grads),
            Optimizer::Lamb(o) => o.step(lr, module, grads),
            Optimizer::Sgd(o) => o.step(lr, module, grads),
        }
    }

    fn state(&self) -> &HashMap<ParamId, ParamState> {
        match self {
            Optimizer::AdamW(o) => &o.state,
            Optimizer::Lamb(o) => &o.state,
            Optimizer::Sgd(o) => &o.state,
        }
    }

    fn state_mut(&mut self) -> &mut HashMap<ParamId, ParamState> {
        match self {
            Optimizer::AdamW(o) => &mut o.state,
            Optimizer::Lamb(o) => &mut o.state,
            Optimizer::Sgd(o) => &mut o.state,
        }
    }

    /// The state as `(name, step, tensors as host vectors)`, names from `names` (param id →
    /// name). Parameters without state are absent.
    pub fn export(&self, names: &HashMap<u64, String>) -> Vec<(String, u64, Vec<Vec<f32>>)> {
        let mut v: Vec<_> = self
            .state()
            .iter()
            .filter_map(|(id, st)| {
                let name = names.get(&id.val())?.clone();
                let ts = st
                    .tensors
                    .iter()
                    .map(|t| t.to_data().iter::<f32>().collect())
                    .collect();
                Some((name, st.step, ts))
            })
            .collect();
        v.sort_by(|a, b| a.0.cmp(&b.0));
        v
    }

    /// Restore state exported by [`Optimizer::export`]; `ids` maps names to the new model's
    /// parameter ids. Unknown names are an error naming them.
    ///
    /// `sizes` holds each parameter's number of values: state of another optimizer (another
    /// number of tensors per parameter) or of other shapes is an error naming the parameter.
    pub fn import(
        &mut self,
        entries: Vec<(String, u64, Vec<Vec<f32>>)>,
        ids: &HashMap<String, u64>,
        sizes: &HashMap<String, usize>,
        device: &Device,
    ) -> Result<(), String> {
        let kind = self.kind_name();
        let per_param = self.tensors_per_param();
        for (name, _, ts) in &entries {
            if ts.len() != per_param {
                return Err(format!(
                    "optimizer state of `{name}` has {} tensors; {kind} keeps {per_param} \
                     (the checkpoint was written by another optimizer)",
                    ts.len()
                ));
            }
            if let Some(&n) = sizes.get(name) {
                if let Some(t) = ts.iter().find(|t| t.len() != n) {
                    return Err(format!(
                        "optimizer state of `{name}` has {} values; the parameter has {n}",
                        t.len()
                    ));
                }
            }
        }
        let st = self.state_mut();
        st.clear();
        for (name, step, ts) in entries {
            let id = ids
                .get(&name)
                .ok_or_else(|| format!("optimizer state for unknown parameter `{name}`"))?;
            let tensors = ts
                .into_iter()
                .map(|v| {
                    let n = v.len();
                    Tensor::<1>::from_data(TensorData::new(v, [n]), device)
                })
                .collect();
            st.insert(ParamId::from(*id), ParamState { tensors, step });
        }
        Ok(())
    }
}

/// Scale all gradients so that their global L2 norm is at most `max_norm`
/// (`torch.nn.utils.clip_grad_norm_`). Returns the norm before clipping.
pub fn clip_grad_norm<M: Module>(
    module: &M,
    grads: GradientsParams,
    max_norm: f64,
) -> (GradientsParams, f64) {
    // Each gradient's sum of squares in f32 on its device, read in one transfer (one wait for
    // the device, not one per tensor), then added in f64 in the module's order.
    struct Collect<'a> {
        grads: &'a GradientsParams,
        sums: Vec<Tensor<1>>,
    }
    impl burn::module::ModuleVisitor for Collect<'_> {
        fn visit_float<const D: usize>(&mut self, p: &burn::module::Param<Tensor<D>>) {
            if let Some(g) = self.grads.get::<D>(p.id) {
                self.sums.push(g.inner().powi_scalar(2).sum());
            }
        }
    }
    let mut c = Collect {
        grads: &grads,
        sums: Vec::new(),
    };
    module.visit(&mut c);
    let sq: f64 = if c.sums.is_empty() {
        0.0
    } else {
        Tensor::cat(c.sums, 0)
            .into_data()
            .iter::<f32>()
            .map(f64::from)
            .sum()
    };
    let norm = sq.sqrt();
    if norm <= max_norm || norm == 0.0 {
        return (grads, norm);
    }
    let scale = max_norm / (norm + 1e-6);
    struct Scale<'a> {
        grads: &'a mut GradientsParams,
        scale: f64,
    }
    impl burn::module::ModuleVisitor for Scale<'_> {
        fn visit_float<const D: usize>(&mut self, p: &burn::module::Param<Tensor<D>>) {
            if let Some(g) = self.grads.remove::<D>(p.id) {
                self.grads.register::<D>(p.id, g.mul_scalar(self.scale));
            }
        }
    }
    let mut grads = grads;
    module.visit(&mut Scale {
        grads: &mut grads,
        scale,
    });
    (grads, norm)
}
