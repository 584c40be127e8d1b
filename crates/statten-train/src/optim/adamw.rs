//! PyTorch `torch.optim.AdamW` (decoupled weight decay) with timm's no-decay group.

use std::collections::HashMap;

use burn::module::{Module, ModuleMapper, Param, ParamId};
use burn::optim::GradientsParams;
use burn::prelude::*;
use serde::{Deserialize, Serialize};

use super::{restore_autodiff, ParamState};

/// AdamW hyper-parameters (PyTorch defaults except `weight_decay`).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AdamWConfig {
    /// β₁, β₂.
    pub betas: (f64, f64),
    /// ε added to `√v̂`.
    pub eps: f64,
    /// Decoupled weight decay (applied as `p ← p·(1 − lr·wd)`).
    pub weight_decay: f64,
    /// timm `filter_bias_and_bn`: no decay on parameters with ndim ≤ 1.
    pub no_decay_ndim_le_1: bool,
}

impl Default for AdamWConfig {
    fn default() -> Self {
        Self {
            betas: (0.9, 0.999),
            eps: 1e-8,
            weight_decay: 0.01,
            no_decay_ndim_le_1: true,
        }
    }
}

/// AdamW state: first and second moments per parameter, and its step count.
#[derive(Debug, Clone)]
pub struct AdamW {
    /// Hyper-parameters.
    pub config: AdamWConfig,
    pub(crate) state: HashMap<ParamId, ParamState>,
}

impl AdamW {
    /// A fresh optimizer.
    pub fn new(config: AdamWConfig) -> Self {
        Self {
            config,
            state: HashMap::new(),
        }
    }

    /// One step at learning rate `lr`: every parameter with a gradient in `grads` is updated.
    pub fn step<M: Module>(&mut self, lr: f64, module: M, mut grads: GradientsParams) -> M {
        let mut mapper = AdamWMapper {
            opt: self,
            lr,
            grads: &mut grads,
        };
        module.map(&mut mapper)
    }

    /// Number of parameters with optimizer state.
    pub fn num_tracked(&self) -> usize {
        self.state.len()
    }
}

struct AdamWMapper<'a> {
    opt: &'a mut AdamW,
    lr: f64,
    grads: &'a mut GradientsParams,
}

impl ModuleMapper for AdamWMapper<'_> {
    fn map_float<const D: usize>(&mut self, param: Param<Tensor<D>>) -> Param<Tensor<D>> {
        let (id, tensor, mapper) = param.consume();
        let Some(grad) = self.grads.remove::<D>(id) else {
            return Param::from_mapped_value(id, tensor, mapper);
        };
        let cfg = self.opt.config;
        let lr = self.lr;
        let was_autodiff = tensor.is_autodiff();
        let require_grad = tensor.is_require_grad();
        let shape = tensor.dims();
        let p: Tensor<1> = tensor.inner().reshape([-1]);
        let g: Tensor<1> = grad.inner().reshape([-1]);
        let (b1, b2) = cfg.betas;
        let st = self.opt.state.remove(&id).unwrap_or_else(|| ParamState {
            tensors: vec![g.zeros_like(), g.zeros_like()],
            step: 0,
        });
        let step = st.step + 1;
        let mut it = st.tensors.into_iter();
        let (m0, v0) = (it.next().unwrap(), it.next().unwrap());
        let wd = if cfg.no_decay_ndim_le_1 && D <= 1 {
            0.0
        } else {
            cfg.weight_decay
        };
        let p = if wd != 0.0 {
            p.mul_scalar(1.0 - lr * wd)
        } else {
            p
        };
        let m = m0.mul_scalar(b1) + g.clone().mul_scalar(1.0 - b1);
        let v = v0.mul_scalar(b2) + (g.clone() * g).mul_scalar(1.0 - b2);
        let bc1 = 1.0 - b1.powi(step as i32);
        let bc2 = 1.0 - b2.powi(step as i32);
        let denom = v.clone().sqrt().div_scalar(bc2.sqrt()).add_scalar(cfg.eps);
        let p = p - (m.clone() / denom).mul_scalar(lr / bc1);
        self.opt.state.insert(
            id,
            ParamState {
                tensors: vec![m, v],
                step,
            },
        );
        Param::from_mapped_value(
            id,
            restore_autodiff(p.reshape(shape), was_autodiff, require_grad),
            mapper,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::nn::{Linear, LinearConfig};

    #[test]
    fn first_step_is_sign_step_with_decay_only_on_matrices() {
        // Step 1: p ← p·(1 − lr·wd) − lr·g/(|g| + eps) for matrices, no decay for biases.
        let dev = Device::flex().autodiff();
        let lin: Linear = LinearConfig::new(2, 2).init(&dev);
        let w0 = lin.weight.val().into_data().try_to_vec::<f32>().unwrap();
        let b0 = lin
            .bias
            .as_ref()
            .unwrap()
            .val()
            .into_data()
            .try_to_vec::<f32>()
            .unwrap();
        let x: Tensor<2> = Tensor::from_floats([[1.0, -2.0]], &dev);
        let loss = lin.forward(x).sum();
        let grads = GradientsParams::from_grads(loss.backward(), &lin);
        let (lr, wd) = (0.1, 0.5);
        let mut opt = AdamW::new(AdamWConfig {
            weight_decay: wd,
            ..AdamWConfig::default()
        });
        let lin = opt.step(lr, lin, grads);
        let w1 = lin.weight.val().into_data().try_to_vec::<f32>().unwrap();
        let b1 = lin
            .bias
            .as_ref()
            .unwrap()
            .val()
            .into_data()
            .try_to_vec::<f32>()
            .unwrap();
        // d(sum)/dW[i][j] = x[i] (Burn stores [in, out]); d/db = 1.
        let gw = [1.0f64, 1.0, -2.0, -2.0];
        for i in 0..4 {
            let want = w0[i] as f64 * (1.0 - lr * wd) - lr * gw[i] / (gw[i].abs() + 1e-8);
            assert!(
                (w1[i] as f64 - want).abs() < 1e-6,
                "w[{i}] {} vs {want}",
                w1[i]
            );
        }
        for i in 0..2 {
            let want = b0[i] as f64 - lr;
            assert!(
                (b1[i] as f64 - want).abs() < 1e-6,
                "b[{i}] {} vs {want}",
                b1[i]
            );
        }
        assert_eq!(opt.num_tracked(), 2);
    }

    /// A gradient element that is exactly zero moves its weight by the weight decay alone, to
    /// the bit, on the first step and the next (as PyTorch's AdamW: `m = v = 0` there), while
    /// a rounding residue of 1e-9 in its place moves it by about a tenth of the learning rate —
    /// why the convolution kernels must keep exact zeros (`statten_core::conv::algorithm`).
    #[test]
    fn an_exactly_zero_gradient_moves_the_weight_by_decay_only() {
        let dev = Device::flex().autodiff();
        let lin: Linear = LinearConfig::new(2, 3).init(&dev);
        let w0 = lin.weight.val().into_data().try_to_vec::<f32>().unwrap();
        let (lr, wd) = (1e-3, 0.06);
        let mut opt = AdamW::new(AdamWConfig {
            weight_decay: wd,
            ..AdamWConfig::default()
        });
        // Row 1 of W [in, out] gets zeros, except its last element a residue of 1e-9.
        let grads_of = |lin: &Linear| {
            let mut g = GradientsParams::new();
            let t: Tensor<2> = Tensor::from_floats([[0.5, -0.25, 1.0], [0.0, 0.0, 1e-9]], &dev);
            g.register::<2>(lin.weight.id, t);
            g
        };
        let values = |lin: &Linear| lin.weight.val().into_data().try_to_vec::<f32>().unwrap();
        let decay = (1.0 - lr * wd) as f32;
        let grads = grads_of(&lin);
        let lin = opt.step(lr, lin, grads);
        let w1 = values(&lin);
        for j in 0..2 {
            assert_eq!(
                w1[3 + j],
                w0[3 + j] * decay,
                "step 1, zero-gradient weight {j}"
            );
        }
        let moved = (w1[5] as f64 - (w0[5] * decay) as f64).abs();
        assert!(
            moved > 0.09 * lr && moved < 0.11 * lr,
            "a residue of 1e-9 moved its weight by {moved:e}, lr {lr:e}"
        );
        for j in 0..3 {
            assert!(
                (w1[j] - w0[j] * decay).abs() > 0.9 * lr as f32,
                "weight {j} has a gradient"
            );
        }
        let grads = grads_of(&lin);
        let lin = opt.step(lr, lin, grads);
        let w2 = values(&lin);
        for j in 0..2 {
            assert_eq!(
                w2[3 + j],
                w1[3 + j] * decay,
                "step 2, zero-gradient weight {j}"
            );
        }
    }
}
