//! Model EMA, as timm's `ModelEmaV2` (`--model-ema`): a copy of the model whose every float
//! tensor — parameters and BatchNorm running statistics alike — follows the trained model as
//! `ema ← decay·ema + (1 − decay)·model` after each optimizer step, evaluated beside it and
//! saved in checkpoints.
//!
//! With `train.model_ema_warmup` the decay of update `n` (from 1) is timm `ModelEmaV3`'s
//! warm-up, `min(decay, 1 − (1 + n)^(−2/3))`, and the update is its `lerp`,
//! `ema + (1 − decay)·(model − ema)`, so that the first updates follow the model closely.

use burn::module::{Module, ModuleMapper, ModuleVisitor, Param};
use burn::prelude::*;
use statten_core::models::StattenModel;

/// timm's default decay (`--model-ema-decay 0.9998`).
pub const DEFAULT_DECAY: f64 = 0.9998;

/// The warm-up's power (timm `ModelEmaV3`'s `warmup_power`, with `warmup_gamma` 1).
const WARMUP_POWER: f64 = 2.0 / 3.0;

/// The averaged model and how many updates it has had.
#[derive(Clone)]
pub struct ModelEma {
    model: StattenModel,
    decay: f64,
    warmup: bool,
    updates: u64,
}

impl ModelEma {
    /// A copy of `model` (its values now; no gradient tracking) that has had `updates` updates.
    pub fn new(model: &StattenModel, decay: f64, warmup: bool, updates: u64) -> Self {
        Self {
            model: model.valid(),
            decay,
            warmup,
            updates,
        }
    }

    /// The averaged model.
    pub fn model(&self) -> &StattenModel {
        &self.model
    }

    /// Replace the averaged model (a checkpoint's, or rank 0's), keeping the count.
    pub fn set_model(&mut self, model: StattenModel) {
        self.model = model;
    }

    /// Updates so far.
    pub fn updates(&self) -> u64 {
        self.updates
    }

    /// The decay of update `n` (from 1).
    pub fn decay_at(&self, n: u64) -> f64 {
        if self.warmup {
            let warm = 1.0 - (1.0 + n as f64).powf(-WARMUP_POWER);
            self.decay.min(warm).max(0.0)
        } else {
            self.decay
        }
    }

    /// One update from `model` (after an optimizer step).
    pub fn update(&mut self, model: &StattenModel) {
        self.updates += 1;
        let decay = self.decay_at(self.updates);
        let mut current = Values(Vec::new());
        model.valid().visit(&mut current);
        let mut blend = Blend {
            values: current.0.into_iter(),
            decay,
            lerp: self.warmup,
        };
        let ema = std::mem::replace(&mut self.model, model.valid());
        self.model = ema.map(&mut blend);
    }
}

/// Every float tensor of a module, flattened, in visit order.
struct Values(Vec<Tensor<1>>);

impl ModuleVisitor for Values {
    fn visit_float<const D: usize>(&mut self, p: &Param<Tensor<D>>) {
        let t = p.val();
        let n = t.shape().num_elements();
        self.0.push(t.reshape([n]));
    }
}

/// Moves each tensor of the averaged model towards the trained model's (same visit order).
struct Blend {
    values: std::vec::IntoIter<Tensor<1>>,
    decay: f64,
    lerp: bool,
}

impl ModuleMapper for Blend {
    fn map_float<const D: usize>(&mut self, p: Param<Tensor<D>>) -> Param<Tensor<D>> {
        let m = self.values.next().expect("the same module structure");
        let (decay, lerp) = (self.decay, self.lerp);
        p.map(|e| {
            let m = m.reshape(e.dims());
            if lerp {
                // timm ModelEmaV3: ema.lerp_(model, 1 − decay).
                e.clone() + (m - e).mul_scalar(1.0 - decay)
            } else {
                // timm ModelEmaV2: decay·ema + (1 − decay)·model.
                e.mul_scalar(decay) + m.mul_scalar(1.0 - decay)
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use statten_core::checkpoint::named_tensors;

    fn tiny(device: &Device) -> StattenModel {
        let mut cfg = statten_core::ModelConfig::preset("cifar10-2-256").unwrap();
        (cfg.depth, cfg.embed_dim, cfg.num_heads, cfg.img_size) = (1, 16, 2, 16);
        cfg.init(device).unwrap()
    }

    fn values(m: &StattenModel) -> Vec<(String, Vec<f32>)> {
        named_tensors(m)
            .into_iter()
            .map(|t| (t.name, t.values))
            .collect()
    }

    #[test]
    fn every_tensor_moves_by_timms_formula() {
        let d = Device::flex();
        d.seed(1);
        let a = tiny(&d);
        let b = tiny(&d);
        let mut ema = ModelEma::new(&a, 0.9, false, 0);
        ema.update(&b);
        let (va, vb, ve) = (values(&a), values(&b), values(ema.model()));
        assert!(va.iter().any(|(n, _)| n.ends_with("running_var")));
        assert!(va.len() == vb.len() && va.len() == ve.len());
        for ((n, x), ((_, y), (_, e))) in va.iter().zip(vb.iter().zip(&ve)) {
            assert!(x.len() == y.len() && x.len() == e.len(), "{n}");
            for ((x, y), e) in x.iter().zip(y).zip(e) {
                let want = x * 0.9f32 + y * (1.0 - 0.9f64) as f32;
                assert_eq!(*e, want, "{n}");
            }
        }
        assert_eq!(ema.updates(), 1);
    }

    #[test]
    fn the_warm_up_follows_timm_v3() {
        let d = Device::flex();
        let ema = ModelEma::new(&tiny(&d), 0.9998, true, 0);
        assert!((ema.decay_at(1) - (1.0 - 2f64.powf(-2.0 / 3.0))).abs() < 1e-15);
        assert!(ema.decay_at(10) < ema.decay_at(100));
        assert_eq!(ema.decay_at(100_000_000), 0.9998);
        let plain = ModelEma::new(&tiny(&d), 0.9998, false, 0);
        assert_eq!(plain.decay_at(1), 0.9998);
    }
}
