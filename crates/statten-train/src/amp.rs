//! Dynamic loss scaling for f16 training, as PyTorch's `torch.amp.GradScaler` (the reference's
//! `--amp` recipes): the loss is multiplied by a scale before the backward so that small
//! gradients survive f16 (whose smallest normal number is 6.1e-5), the gradients are divided by
//! it before clipping and the optimizer, and a step whose gradients hold an inf or NaN is
//! skipped (the optimizer does not move, the scale is halved). After `growth_interval` steps in
//! a row without one, the scale doubles. Scales are powers of two, so scaling and unscaling are
//! exact wherever nothing overflows.
//!
//! bf16 has f32's range and needs none (as with torch, which scales only f16).

use burn::module::{Module, ModuleVisitor, Param};
use burn::optim::GradientsParams;
use burn::prelude::*;

/// torch's defaults: `init_scale = 2^16`.
pub const INIT_SCALE: f64 = 65536.0;
/// `growth_factor`.
pub const GROWTH_FACTOR: f64 = 2.0;
/// `backoff_factor`.
pub const BACKOFF_FACTOR: f64 = 0.5;
/// `growth_interval`.
pub const GROWTH_INTERVAL: u32 = 2000;

/// The scaler's state: what a checkpoint keeps (as torch's `scaler.state_dict()`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LossScale {
    /// The current scale.
    pub scale: f64,
    /// Steps in a row without an inf/NaN gradient since the scale last changed.
    pub growth_tracker: u32,
    /// Steps skipped for inf/NaN gradients over the whole run.
    pub skipped: usize,
}

impl Default for LossScale {
    fn default() -> Self {
        Self {
            scale: INIT_SCALE,
            growth_tracker: 0,
            skipped: 0,
        }
    }
}

impl LossScale {
    /// After a step: `found_inf` backs the scale off (and counts the skipped step), else the
    /// growth tracker advances and the scale grows every [`GROWTH_INTERVAL`] steps
    /// (torch's `_amp_update_scale_`).
    pub fn update(&mut self, found_inf: bool) {
        if found_inf {
            self.scale *= BACKOFF_FACTOR;
            self.growth_tracker = 0;
            self.skipped += 1;
        } else {
            self.growth_tracker += 1;
            if self.growth_tracker == GROWTH_INTERVAL {
                let grown = self.scale * GROWTH_FACTOR;
                // torch keeps the scale when growing it would overflow f32.
                if (grown as f32).is_finite() {
                    self.scale = grown;
                }
                self.growth_tracker = 0;
            }
        }
    }

    /// One step's gradients of `module`, multiplied by this scale in the backward: unscaled,
    /// checked, and the scale updated ([`Self::update`]). `None` when they hold an inf or NaN:
    /// the optimizer skips the step.
    pub fn unscale<M: Module>(
        &mut self,
        module: &M,
        grads: GradientsParams,
    ) -> Option<GradientsParams> {
        let (grads, found_inf) = unscale_and_check(module, grads, self.scale);
        self.update(found_inf);
        (!found_inf).then_some(grads)
    }

    /// The state as one text row, `scale,growth_tracker,skipped` (Rust's exact float format).
    pub fn to_row(&self) -> String {
        format!("{},{},{}", self.scale, self.growth_tracker, self.skipped)
    }

    /// The state from [`Self::to_row`]'s text.
    pub fn from_row(row: &str) -> Result<Self, String> {
        let bad = || format!("bad loss-scale row `{row}` (scale,growth_tracker,skipped)");
        let v: Vec<&str> = row.split(',').collect();
        if v.len() != 3 {
            return Err(bad());
        }
        let s = Self {
            scale: v[0].parse().map_err(|_| bad())?,
            growth_tracker: v[1].parse().map_err(|_| bad())?,
            skipped: v[2].parse().map_err(|_| bad())?,
        };
        if !(s.scale.is_finite() && s.scale > 0.0) {
            return Err(bad());
        }
        Ok(s)
    }
}

/// Divides every gradient of `module` by `scale` (unless it is 1) and says whether any
/// element of any of them is inf or NaN — with one read from the device for all of them: each
/// gradient's `Σ 0·g` is 0 when it is finite and NaN otherwise (torch's
/// `_amp_foreach_non_finite_check_and_unscale_`).
pub fn unscale_and_check<M: Module>(
    module: &M,
    grads: GradientsParams,
    scale: f64,
) -> (GradientsParams, bool) {
    struct Visit {
        grads: GradientsParams,
        inv: f64,
        checks: Vec<Tensor<1>>,
    }
    impl ModuleVisitor for Visit {
        fn visit_float<const D: usize>(&mut self, p: &Param<Tensor<D>>) {
            if let Some(g) = self.grads.remove::<D>(p.id) {
                let g = if self.inv != 1.0 {
                    g.mul_scalar(self.inv)
                } else {
                    g
                };
                self.checks.push(g.clone().mul_scalar(0.0).sum());
                self.grads.register::<D>(p.id, g);
            }
        }
    }
    let mut v = Visit {
        grads,
        inv: 1.0 / scale,
        checks: Vec::new(),
    };
    module.visit(&mut v);
    let found_inf = if v.checks.is_empty() {
        false
    } else {
        let sum = Tensor::cat(v.checks, 0).sum().into_scalar::<f64>();
        !sum.is_finite() || sum != 0.0
    };
    (v.grads, found_inf)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scale_backs_off_on_inf_and_grows_after_the_interval() {
        let mut s = LossScale::default();
        s.update(true);
        assert_eq!((s.scale, s.growth_tracker, s.skipped), (32768.0, 0, 1));
        for i in 1..GROWTH_INTERVAL {
            s.update(false);
            assert_eq!((s.scale, s.growth_tracker), (32768.0, i));
        }
        s.update(false);
        assert_eq!((s.scale, s.growth_tracker, s.skipped), (65536.0, 0, 1));
        // An inf in the middle of an interval restarts it.
        for _ in 0..10 {
            s.update(false);
        }
        s.update(true);
        assert_eq!((s.scale, s.growth_tracker, s.skipped), (32768.0, 0, 2));
        // Growth stops short of f32's overflow.
        let mut big = LossScale {
            scale: 2f64.powi(127),
            growth_tracker: GROWTH_INTERVAL - 1,
            skipped: 0,
        };
        big.update(false);
        assert_eq!((big.scale, big.growth_tracker), (2f64.powi(127), 0));
    }

    #[test]
    fn unscaling_divides_every_gradient_and_finds_any_inf_or_nan() {
        let device = Device::flex();
        let lin = burn::nn::LinearConfig::new(3, 2).init(&device);
        let grads_with = |w: Vec<f32>| {
            let mut g = GradientsParams::new();
            g.register::<2>(
                lin.weight.id,
                Tensor::from_data(TensorData::new(w, [3, 2]), &device),
            );
            let b = lin.bias.as_ref().unwrap();
            g.register::<1>(
                b.id,
                Tensor::from_data(TensorData::new(vec![8.0f32, -4.0], [2]), &device),
            );
            g
        };
        let finite = vec![2.0f32, -6.0, 0.0, 1.0, 0.5, 65504.0];
        let (g, found) = unscale_and_check(&lin, grads_with(finite.clone()), 4.0);
        assert!(!found);
        let w = g
            .get::<2>(lin.weight.id)
            .unwrap()
            .into_data()
            .try_to_vec::<f32>()
            .unwrap();
        assert_eq!(w, finite.iter().map(|v| v / 4.0).collect::<Vec<_>>());
        let b = g.get::<1>(lin.bias.as_ref().unwrap().id).unwrap();
        assert_eq!(b.into_data().try_to_vec::<f32>().unwrap(), vec![2.0, -1.0]);
        for bad in [f32::INFINITY, f32::NEG_INFINITY, f32::NAN] {
            let mut w = finite.clone();
            w[4] = bad;
            let (_, found) = unscale_and_check(&lin, grads_with(w), 4.0);
            assert!(found, "{bad} found");
        }
    }

    #[test]
    fn state_round_trips_as_text_and_bad_rows_are_refused() {
        let s = LossScale {
            scale: 0.125,
            growth_tracker: 1999,
            skipped: 7,
        };
        assert_eq!(LossScale::from_row(&s.to_row()).unwrap(), s);
        for bad in [
            "", "1,2", "x,1,2", "1,2,3,4", "0,1,1", "inf,0,0", "-2,0,0", "1,-1,0",
        ] {
            let e = LossScale::from_row(bad).unwrap_err();
            assert!(e.contains(bad), "{e}");
        }
    }
}
