//! timm 0.6.12 `Lamb`, as the reference's ImageNet recipes use it: Adam moments with bias correction and grad averaging, global
//! gradient-norm clipping to `max_grad_norm` inside the step, decoupled weight decay added to the
//! update, and the trust ratio `‖w‖/‖update‖` applied only to parameters with weight decay.

use std::collections::HashMap;

use burn::module::{Module, ModuleMapper, ModuleVisitor, Param, ParamId};
use burn::optim::GradientsParams;
use burn::prelude::*;
use serde::{Deserialize, Serialize};

use super::{restore_autodiff, ParamState};

/// Lamb hyper-parameters (timm defaults).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LambConfig {
    /// β₁, β₂.
    pub betas: (f64, f64),
    /// ε (timm: 1e-6).
    pub eps: f64,
    /// Weight decay.
    pub weight_decay: f64,
    /// Global gradient-norm clip inside the step (timm: 1.0).
    pub max_grad_norm: f64,
    /// timm `filter_bias_and_bn`.
    pub no_decay_ndim_le_1: bool,
}

impl Default for LambConfig {
    fn default() -> Self {
        Self {
            betas: (0.9, 0.999),
            eps: 1e-6,
            weight_decay: 0.01,
            max_grad_norm: 1.0,
            no_decay_ndim_le_1: true,
        }
    }
}

/// Lamb state.
#[derive(Debug, Clone)]
pub struct Lamb {
    /// Hyper-parameters.
    pub config: LambConfig,
    pub(crate) state: HashMap<ParamId, ParamState>,
}

struct SquaredNorm<'a> {
    grads: &'a GradientsParams,
    acc: Option<Tensor<1>>,
}

impl ModuleVisitor for SquaredNorm<'_> {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
        if let Some(g) = self.grads.get::<D>(param.id) {
            let s = g.inner().powi_scalar(2).sum();
            self.acc = Some(match self.acc.take() {
                Some(a) => a + s,
                None => s,
            });
        }
    }
}

impl Lamb {
    /// A fresh optimizer.
    pub fn new(config: LambConfig) -> Self {
        Self {
            config,
            state: HashMap::new(),
        }
    }

    /// One step at learning rate `lr`.
    pub fn step<M: Module>(&mut self, lr: f64, module: M, mut grads: GradientsParams) -> M {
        let mut norm = SquaredNorm {
            grads: &grads,
            acc: None,
        };
        module.visit(&mut norm);
        let Some(sq) = norm.acc else { return module };
        let gnorm = sq.sqrt();
        let maxn = self.config.max_grad_norm;
        // clip = gnorm / max if gnorm > max else 1
        let clip = gnorm
            .clone()
            .div_scalar(maxn)
            .mask_fill(gnorm.lower_equal_elem(maxn), 1.0);
        let mut mapper = LambMapper {
            opt: self,
            lr,
            grads: &mut grads,
            clip,
        };
        module.map(&mut mapper)
    }
}

struct LambMapper<'a> {
    opt: &'a mut Lamb,
    lr: f64,
    grads: &'a mut GradientsParams,
    clip: Tensor<1>,
}

impl ModuleMapper for LambMapper<'_> {
    fn map_float<const D: usize>(&mut self, param: Param<Tensor<D>>) -> Param<Tensor<D>> {
        let (id, tensor, mapper) = param.consume();
        let Some(grad) = self.grads.remove::<D>(id) else {
            return Param::from_mapped_value(id, tensor, mapper);
        };
        let cfg = self.opt.config;
        let (was_ad, req) = (tensor.is_autodiff(), tensor.is_require_grad());
        let shape = tensor.dims();
        let p: Tensor<1> = tensor.inner().reshape([-1]);
        let g: Tensor<1> = grad.inner().reshape([-1]) / self.clip.clone();
        let (b1, b2) = cfg.betas;
        let st = self.opt.state.remove(&id).unwrap_or_else(|| ParamState {
            tensors: vec![g.zeros_like(), g.zeros_like()],
            step: 0,
        });
        let step = st.step + 1;
        let mut it = st.tensors.into_iter();
        let (m0, v0) = (it.next().unwrap(), it.next().unwrap());
        let m = m0.mul_scalar(b1) + g.clone().mul_scalar(1.0 - b1);
        let v = v0.mul_scalar(b2) + (g.clone() * g).mul_scalar(1.0 - b2);
        let bc1 = 1.0 - b1.powi(step as i32);
        let bc2 = 1.0 - b2.powi(step as i32);
        let denom = v.clone().sqrt().div_scalar(bc2.sqrt()).add_scalar(cfg.eps);
        let mut update = m.clone().div_scalar(bc1) / denom;
        let wd = if cfg.no_decay_ndim_le_1 && D <= 1 {
            0.0
        } else {
            cfg.weight_decay
        };
        if wd != 0.0 {
            update = update + p.clone().mul_scalar(wd);
            let w_norm = p.clone().powi_scalar(2).sum().sqrt();
            let u_norm = update.clone().powi_scalar(2).sum().sqrt();
            let ratio = w_norm.clone() / u_norm.clone();
            let bad = w_norm
                .lower_equal_elem(0.0)
                .bool_or(u_norm.lower_equal_elem(0.0));
            let trust = ratio.mask_fill(bad, 1.0);
            update = update * trust;
        }
        let p = p - update.mul_scalar(self.lr);
        self.opt.state.insert(
            id,
            ParamState {
                tensors: vec![m, v],
                step,
            },
        );
        Param::from_mapped_value(id, restore_autodiff(p.reshape(shape), was_ad, req), mapper)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::nn::{Linear, LinearConfig};

    /// Reference implementation of one timm Lamb step on host values (f64).
    fn lamb_ref(p: &[f64], g: &[f64], clip: f64, lr: f64, wd: f64) -> Vec<f64> {
        let (b1, b2, eps) = (0.9, 0.999, 1e-6);
        let upd: Vec<f64> = p
            .iter()
            .zip(g)
            .map(|(&w, &gr)| {
                let gr = gr / clip;
                let m = (1.0 - b1) * gr;
                let v = (1.0 - b2) * gr * gr;
                (m / (1.0 - b1)) / ((v.sqrt() / (1.0f64 - b2).sqrt()) + eps) + wd * w
            })
            .collect();
        let trust = if wd != 0.0 {
            let wn = p.iter().map(|v| v * v).sum::<f64>().sqrt();
            let un = upd.iter().map(|v| v * v).sum::<f64>().sqrt();
            if wn > 0.0 && un > 0.0 {
                wn / un
            } else {
                1.0
            }
        } else {
            1.0
        };
        p.iter()
            .zip(&upd)
            .map(|(w, u)| w - lr * trust * u)
            .collect()
    }

    #[test]
    fn first_step_matches_the_timm_formula_with_clipping_and_trust_ratio() {
        let dev = Device::flex().autodiff();
        let lin: Linear = LinearConfig::new(3, 2).init(&dev);
        let x: Tensor<2> = Tensor::from_floats([[1.0, -2.0, 3.0], [0.5, 4.0, -1.0]], &dev);
        let loss = lin.forward(x).powi_scalar(2).sum().mul_scalar(10.0);
        let grads = GradientsParams::from_grads(loss.backward(), &lin);
        let gw: Vec<f64> = grads
            .get::<2>(lin.weight.id)
            .unwrap()
            .into_data()
            .iter::<f64>()
            .collect();
        let gb: Vec<f64> = grads
            .get::<1>(lin.bias.as_ref().unwrap().id)
            .unwrap()
            .into_data()
            .iter::<f64>()
            .collect();
        let gnorm = gw.iter().chain(&gb).map(|v| v * v).sum::<f64>().sqrt();
        assert!(gnorm > 1.0, "the test needs clipping to be active");
        let w0: Vec<f64> = lin.weight.val().into_data().iter::<f64>().collect();
        let b0: Vec<f64> = lin
            .bias
            .as_ref()
            .unwrap()
            .val()
            .into_data()
            .iter::<f64>()
            .collect();
        let mut opt = Lamb::new(LambConfig {
            weight_decay: 0.05,
            ..Default::default()
        });
        let lin = opt.step(0.01, lin, grads);
        let w1: Vec<f64> = lin.weight.val().into_data().iter::<f64>().collect();
        let b1: Vec<f64> = lin
            .bias
            .as_ref()
            .unwrap()
            .val()
            .into_data()
            .iter::<f64>()
            .collect();
        let want_w = lamb_ref(&w0, &gw, gnorm, 0.01, 0.05);
        let want_b = lamb_ref(&b0, &gb, gnorm, 0.01, 0.0);
        for (a, b) in w1.iter().zip(&want_w).chain(b1.iter().zip(&want_b)) {
            assert!((a - b).abs() < 1e-6, "{a} vs {b}");
        }
    }
}
