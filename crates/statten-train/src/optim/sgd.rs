//! `torch.optim.SGD` with momentum (dampening 0, optional Nesterov) and coupled weight decay,
//! with timm's no-decay group.

use std::collections::HashMap;

use burn::module::{Module, ModuleMapper, Param, ParamId};
use burn::optim::GradientsParams;
use burn::prelude::*;
use serde::{Deserialize, Serialize};

use super::{restore_autodiff, ParamState};

/// SGD hyper-parameters.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SgdConfig {
    /// Momentum (0 = none).
    pub momentum: f64,
    /// Nesterov momentum.
    pub nesterov: bool,
    /// L2 weight decay added to the gradient.
    pub weight_decay: f64,
    /// timm `filter_bias_and_bn`.
    pub no_decay_ndim_le_1: bool,
}

impl Default for SgdConfig {
    fn default() -> Self {
        Self {
            momentum: 0.9,
            nesterov: false,
            weight_decay: 0.0,
            no_decay_ndim_le_1: true,
        }
    }
}

/// SGD state.
#[derive(Debug, Clone)]
pub struct Sgd {
    /// Hyper-parameters.
    pub config: SgdConfig,
    pub(crate) state: HashMap<ParamId, ParamState>,
}

impl Sgd {
    /// A fresh optimizer.
    pub fn new(config: SgdConfig) -> Self {
        Self {
            config,
            state: HashMap::new(),
        }
    }

    /// One step at learning rate `lr`.
    pub fn step<M: Module>(&mut self, lr: f64, module: M, mut grads: GradientsParams) -> M {
        module.map(&mut SgdMapper {
            opt: self,
            lr,
            grads: &mut grads,
        })
    }
}

struct SgdMapper<'a> {
    opt: &'a mut Sgd,
    lr: f64,
    grads: &'a mut GradientsParams,
}

impl ModuleMapper for SgdMapper<'_> {
    fn map_float<const D: usize>(&mut self, param: Param<Tensor<D>>) -> Param<Tensor<D>> {
        let (id, tensor, mapper) = param.consume();
        let Some(grad) = self.grads.remove::<D>(id) else {
            return Param::from_mapped_value(id, tensor, mapper);
        };
        let cfg = self.opt.config;
        let (was_ad, req) = (tensor.is_autodiff(), tensor.is_require_grad());
        let shape = tensor.dims();
        let p: Tensor<1> = tensor.inner().reshape([-1]);
        let mut g: Tensor<1> = grad.inner().reshape([-1]);
        let wd = if cfg.no_decay_ndim_le_1 && D <= 1 {
            0.0
        } else {
            cfg.weight_decay
        };
        if wd != 0.0 {
            g = g + p.clone().mul_scalar(wd);
        }
        let st = self.opt.state.remove(&id);
        let step = st.as_ref().map(|s| s.step).unwrap_or(0) + 1;
        let d = if cfg.momentum != 0.0 {
            let buf = match st {
                Some(s) => {
                    s.tensors
                        .into_iter()
                        .next()
                        .unwrap()
                        .mul_scalar(cfg.momentum)
                        + g.clone()
                }
                None => g.clone(),
            };
            self.opt.state.insert(
                id,
                ParamState {
                    tensors: vec![buf.clone()],
                    step,
                },
            );
            if cfg.nesterov {
                g + buf.mul_scalar(cfg.momentum)
            } else {
                buf
            }
        } else {
            g
        };
        let p = p - d.mul_scalar(self.lr);
        Param::from_mapped_value(id, restore_autodiff(p.reshape(shape), was_ad, req), mapper)
    }
}
