//! Parity in half precision (`statten parity --precision f16|bf16`): a fixture's eval forward
//! and train step run twice on one device, in f32 and with the matrix products in the half
//! format ([`statten_core::precision`]), and compared: spike agreement per layer (the share of
//! outputs equal, spike by spike), logits and loss, every gradient's rel-L2; each also against
//! the reference's f32 tensors, with the f32 path's own distance beside it.
//!
//! Spiking models amplify rounding: a membrane that lands on the other side of the threshold
//! flips a spike, and the layers after it see another input. So agreement falls with depth,
//! and the tolerances below bound what the half formats' rounding gives on the shipped fixtures
//! (measured; BENCHMARKS.md), not what f32 gives.

use std::fmt;
use std::path::Path;

use burn::module::Module;
use burn::optim::GradientsParams;
use burn::prelude::*;
use statten_core::checkpoint::{load_reference, named_tensors};
use statten_core::models::StattenModel;
use statten_core::monitor::Monitor;
use statten_core::precision::{with_precision, Precision};
use statten_train::objective::{Objective, Targets};

use super::compare::{grad_of, rel_l2, to_f64};
use super::{input_of, target_of};
use crate::fixture::Fixture;

/// The stated tolerances of a half format. The control (f32 products on the weights rounded to
/// the format) says how far this model moves under the format's rounding alone; the half path
/// may not move much further than it, and the first spiking layer (whose input has passed one
/// product only) must agree almost everywhere.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct HalfTolerance {
    /// Smallest spike agreement of the first spiking layer, in % (eval and train).
    pub first_layer_agreement: f64,
    /// How many percentage points below the control's agreement a layer may be.
    pub layer_gap_points: f64,
    /// Logits rel-L2 and the median gradient rel-L2 against f32 may be this many times the
    /// control's ...
    pub control_ratio: f64,
    /// ... plus this.
    pub slack: f64,
}

impl HalfTolerance {
    /// The tolerance of `precision` (f16 has a 10-bit mantissa, bf16 a 7-bit one). Measured on
    /// the four shipped fixtures on flex: first layers at ≥ 99.97 % (f16) and ≥ 99.85 % (bf16),
    /// layers at most 3.1 points below the control, ratios to the control at most 1.55.
    pub fn of(precision: Precision) -> Self {
        match precision {
            Precision::Bf16 => Self {
                first_layer_agreement: 99.5,
                layer_gap_points: 5.0,
                control_ratio: 2.0,
                slack: 0.02,
            },
            _ => Self {
                first_layer_agreement: 99.9,
                layer_gap_points: 5.0,
                control_ratio: 2.0,
                slack: 0.02,
            },
        }
    }

    /// The bound of a distance whose control is `control`.
    pub fn bound(&self, control: f64) -> f64 {
        self.control_ratio * control + self.slack
    }
}

/// One spiking layer's agreement with the f32 path, in %.
#[derive(Debug, Clone, PartialEq)]
pub struct LayerAgreement {
    /// The layer (reference name).
    pub name: String,
    /// Eval forward.
    pub eval: f64,
    /// Train forward.
    pub train: f64,
    /// The control's (f32 products on weights rounded to the half format), eval and train.
    pub control: (f64, f64),
}

/// A distance to the f32 path and, for context, both paths' distances to the reference.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Distance {
    /// Half against f32 (same device, same weights).
    pub vs_f32: f64,
    /// The control against f32: f32 products on the weights rounded to the half format.
    pub control_vs_f32: f64,
    /// Half against the reference's f32 tensors.
    pub vs_reference: f64,
    /// The f32 path against the reference's f32 tensors.
    pub f32_vs_reference: f64,
}

impl fmt::Display for Distance {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "vs f32 {:>9.3e}  control vs f32 {:>9.3e}  vs reference {:>9.3e}  (f32 vs reference {:>9.3e})",
            self.vs_f32, self.control_vs_f32, self.vs_reference, self.f32_vs_reference
        )
    }
}

/// The half-precision report of one fixture.
#[derive(Debug, Clone)]
pub struct HalfReport {
    /// Fixture name.
    pub fixture: String,
    /// The half format.
    pub precision: Precision,
    /// Per spiking layer, in execution order.
    pub layers: Vec<LayerAgreement>,
    /// Mean agreement over every layer's outputs (both forwards), in %.
    pub mean_agreement: f64,
    /// Logits of the eval forward, rel-L2.
    pub logits_eval: Distance,
    /// Logits of the train forward, rel-L2.
    pub logits_train: Distance,
    /// The loss, absolute difference.
    pub loss: Distance,
    /// Median over the parameters of each gradient's rel-L2.
    pub grads_median: Distance,
    /// Largest over the parameters.
    pub grads_max: Distance,
    /// Parameters compared.
    pub grads_compared: usize,
    /// The tolerances applied.
    pub tolerance: HalfTolerance,
}

impl HalfReport {
    /// The layers further below the control's agreement than the tolerance allows (eval or
    /// train), and the first layer when it agrees less than it must.
    pub fn failing_layers(&self) -> Vec<String> {
        let t = &self.tolerance;
        let mut out = Vec::new();
        for (i, l) in self.layers.iter().enumerate() {
            let first = i == 0
                && !(l.eval >= t.first_layer_agreement && l.train >= t.first_layer_agreement);
            let gap = !(l.eval >= l.control.0 - t.layer_gap_points
                && l.train >= l.control.1 - t.layer_gap_points);
            if first || gap {
                out.push(l.name.clone());
            }
        }
        out
    }

    /// Whether every figure is within its tolerance (false on NaN or an empty comparison).
    pub fn pass(&self) -> bool {
        let t = &self.tolerance;
        let within = |d: &Distance| d.vs_f32 <= t.bound(d.control_vs_f32);
        !self.layers.is_empty()
            && self.grads_compared > 0
            && self.failing_layers().is_empty()
            && within(&self.logits_eval)
            && within(&self.logits_train)
            && within(&self.grads_median)
    }
}

impl fmt::Display for HalfReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let t = &self.tolerance;
        writeln!(f, "  spike agreement with f32, % (eval, train):")?;
        for l in &self.layers {
            writeln!(
                f,
                "    {:<36} {:>8.3} {:>8.3}   control {:>8.3} {:>8.3}",
                l.name, l.eval, l.train, l.control.0, l.control.1
            )?;
        }
        let failing = self.failing_layers();
        writeln!(
            f,
            "  agreement: first layer >= {} %, every layer >= the control's - {} points, mean \
             {:.3} %{}",
            t.first_layer_agreement,
            t.layer_gap_points,
            self.mean_agreement,
            if failing.is_empty() {
                String::new()
            } else {
                format!("; outside: {}", failing.join(", "))
            }
        )?;
        writeln!(
            f,
            "  logits_eval  rel-L2 {} (vs f32 <= {:.3e})",
            self.logits_eval,
            t.bound(self.logits_eval.control_vs_f32)
        )?;
        writeln!(
            f,
            "  logits_train rel-L2 {} (vs f32 <= {:.3e})",
            self.logits_train,
            t.bound(self.logits_train.control_vs_f32)
        )?;
        writeln!(f, "  loss         abs    {}", self.loss)?;
        writeln!(
            f,
            "  grads median rel-L2 {} (vs f32 <= {:.3e}; {} parameters)",
            self.grads_median,
            t.bound(self.grads_median.control_vs_f32),
            self.grads_compared
        )?;
        write!(f, "  grads max    rel-L2 {}", self.grads_max)
    }
}

/// What one pass (f32 or half) computes on a fixture.
struct Pass {
    spikes_eval: Vec<(String, Vec<f32>)>,
    spikes_train: Vec<(String, Vec<f32>)>,
    logits_eval: Vec<f64>,
    logits_train: Vec<f64>,
    loss: f64,
    /// Gradients by reference name (in the reference's layout).
    grads: Vec<(String, Vec<f64>)>,
}

fn kept(m: &Monitor) -> Vec<(String, Vec<f32>)> {
    m.records()
        .iter()
        .map(|r| {
            let v = r
                .spikes
                .clone()
                .map(|t| {
                    t.into_data()
                        .convert::<f32>()
                        .try_to_vec::<f32>()
                        .unwrap_or_default()
                })
                .unwrap_or_default();
            (r.name.clone(), v)
        })
        .collect()
}

/// Rounds every float parameter to `dtype` and back to f32.
struct RoundWeights(burn::tensor::DType);

impl burn::module::ModuleMapper for RoundWeights {
    fn map_float<const D: usize>(
        &mut self,
        param: burn::module::Param<Tensor<D>>,
    ) -> burn::module::Param<Tensor<D>> {
        let dtype = self.0;
        param.map(|t| {
            let rg = t.is_require_grad();
            let device = t.device();
            let data = t
                .detach()
                .cast(dtype)
                .cast(burn::tensor::DType::F32)
                .into_data();
            let r = Tensor::<D>::from_data(data, &device);
            if rg {
                r.require_grad()
            } else {
                r
            }
        })
    }
}

/// One pass of the fixture with the products in `precision`; with `round_weights`, in f32 on
/// the weights rounded to that format (the control: the same model up to the format's
/// rounding, computed in f32).
fn run_pass(
    fx: &Fixture,
    device: &Device,
    precision: Precision,
    round_weights: Option<Precision>,
) -> Result<Pass, String> {
    let cfg = fx.model_config()?;
    let ad = device.clone().autodiff();
    let mut model: StattenModel = cfg.init(&ad).map_err(|e| e.to_string())?;
    load_reference(&mut model, &fx.weights_path()).map_err(|e| e.to_string())?;
    if let Some(p) = round_weights {
        model = model.map(&mut RoundWeights(p.dtype()));
    }
    let before = named_tensors(&model);
    with_precision(precision, || {
        let mut mon = Monitor::keeping_spikes();
        let x = input_of(fx, cfg.dvs, device)?.encode(cfg.time_steps);
        let logits_eval = to_f64(model.valid().forward_monitored(x, &mut mon));
        let spikes_eval = kept(&mon);
        let target = target_of(fx, &ad)?;
        let objective = Objective::cross_entropy(&cfg, fx.label_smoothing()?);
        let mut mon = Monitor::keeping_spikes();
        let input = input_of(fx, cfg.dvs, &ad)?;
        let (loss, logits) = objective.forward_loss(&model, input, Targets::Hard(target), &mut mon);
        let spikes_train = kept(&mon);
        let loss_value = to_f64(loss.clone())[0];
        let grads = GradientsParams::from_grads(loss.backward(), &model);
        let grads = before
            .iter()
            .filter_map(|nt| grad_of(&grads, nt).map(|g| (nt.name.clone(), g)))
            .collect();
        Ok(Pass {
            spikes_eval,
            spikes_train,
            logits_eval,
            logits_train: to_f64(logits),
            loss: loss_value,
            grads,
        })
    })
}

/// Share of equal elements, in %; 0 when the lengths differ (or nothing is compared).
fn agreement(a: &[f32], b: &[f32]) -> f64 {
    if a.len() != b.len() || a.is_empty() {
        return 0.0;
    }
    let same = a.iter().zip(b).filter(|(x, y)| x == y).count();
    100.0 * same as f64 / a.len() as f64
}

fn median(mut v: Vec<f64>) -> f64 {
    if v.is_empty() || v.iter().any(|x| x.is_nan()) {
        return f64::NAN;
    }
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// Runs `fixture_dir` in f32 and in `precision` on `device` and compares them (see the module).
pub fn run_parity_half(
    fixture_dir: &Path,
    device: &Device,
    precision: Precision,
) -> Result<HalfReport, String> {
    if !precision.is_half() {
        return Err("run_parity_half compares a half format with f32: give f16 or bf16".into());
    }
    statten_core::precision::check_support(precision, device)
        .map_err(|why| format!("--precision {precision}: {why}"))?;
    let fx = Fixture::load(fixture_dir)?;
    let full = run_pass(&fx, device, Precision::F32, None)?;
    let half = run_pass(&fx, device, precision, None)?;
    let control = run_pass(&fx, device, Precision::F32, Some(precision))?;
    for p in [&half, &control] {
        if full.spikes_eval.len() != p.spikes_eval.len()
            || full.spikes_train.len() != p.spikes_train.len()
            || full.grads.len() != p.grads.len()
        {
            return Err("the passes recorded different spiking layers or gradients".into());
        }
    }
    let mut layers = Vec::new();
    let (mut same, mut total) = (0f64, 0f64);
    for i in 0..full.spikes_eval.len() {
        let (e32, t32) = (&full.spikes_eval[i].1, &full.spikes_train[i].1);
        let (eval, train) = (
            agreement(&half.spikes_eval[i].1, e32),
            agreement(&half.spikes_train[i].1, t32),
        );
        same += eval / 100.0 * e32.len() as f64 + train / 100.0 * t32.len() as f64;
        total += (e32.len() + t32.len()) as f64;
        layers.push(LayerAgreement {
            name: full.spikes_eval[i].0.clone(),
            eval,
            train,
            control: (
                agreement(&control.spikes_eval[i].1, e32),
                agreement(&control.spikes_train[i].1, t32),
            ),
        });
    }
    let reference = |key: &str| fx.tensor(key).map(|t| t.values.clone());
    let dist = |h: &[f64], c: &[f64], f: &[f64], r: &[f64]| Distance {
        vs_f32: rel_l2(h, f),
        control_vs_f32: rel_l2(c, f),
        vs_reference: rel_l2(h, r),
        f32_vs_reference: rel_l2(f, r),
    };
    let le = reference("logits_eval")?;
    let lt = reference("logits_train")?;
    let lr = reference("loss_train")?;
    let ref_loss = lr.first().copied().unwrap_or(f64::NAN);
    // Gradients that are zero by construction (a convolution's bias before BatchNorm) are
    // rounding residue on every side, so no rel-L2 of theirs means anything.
    let zero = fx.string_list("zero_grad_by_construction");
    let mut rel: [Vec<f64>; 4] = Default::default();
    for (i, (name, g32)) in full.grads.iter().enumerate() {
        if half.grads[i].0 != *name || control.grads[i].0 != *name {
            return Err(format!("gradients out of order at {name}"));
        }
        if zero.contains(name) {
            continue;
        }
        let (gh, gc) = (&half.grads[i].1, &control.grads[i].1);
        rel[0].push(rel_l2(gh, g32));
        rel[1].push(rel_l2(gc, g32));
        if let Some(r) = fx.tensors.get(&format!("grad/{name}")) {
            rel[2].push(rel_l2(gh, &r.values));
            rel[3].push(rel_l2(g32, &r.values));
        }
    }
    let max = |v: &[f64]| {
        v.iter().fold(0f64, |m, x| {
            if x.is_nan() || m.is_nan() {
                f64::NAN
            } else {
                m.max(*x)
            }
        })
    };
    Ok(HalfReport {
        fixture: fx.name(),
        precision,
        mean_agreement: if total > 0.0 {
            100.0 * same / total
        } else {
            0.0
        },
        layers,
        logits_eval: dist(
            &half.logits_eval,
            &control.logits_eval,
            &full.logits_eval,
            &le,
        ),
        logits_train: dist(
            &half.logits_train,
            &control.logits_train,
            &full.logits_train,
            &lt,
        ),
        loss: Distance {
            vs_f32: (half.loss - full.loss).abs(),
            control_vs_f32: (control.loss - full.loss).abs(),
            vs_reference: (half.loss - ref_loss).abs(),
            f32_vs_reference: (full.loss - ref_loss).abs(),
        },
        grads_median: Distance {
            vs_f32: median(rel[0].clone()),
            control_vs_f32: median(rel[1].clone()),
            vs_reference: median(rel[2].clone()),
            f32_vs_reference: median(rel[3].clone()),
        },
        grads_max: Distance {
            vs_f32: max(&rel[0]),
            control_vs_f32: max(&rel[1]),
            vs_reference: max(&rel[2]),
            f32_vs_reference: max(&rel[3]),
        },
        grads_compared: rel[0].len(),
        tolerance: HalfTolerance::of(precision),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report() -> HalfReport {
        let d = |h: f64, c: f64| Distance {
            vs_f32: h,
            control_vs_f32: c,
            vs_reference: h,
            f32_vs_reference: 0.0,
        };
        let layer = |name: &str, a: f64, c: f64| LayerAgreement {
            name: name.into(),
            eval: a,
            train: a,
            control: (c, c),
        };
        HalfReport {
            fixture: "x".into(),
            precision: Precision::F16,
            layers: vec![layer("first", 99.95, 99.99), layer("deep", 90.0, 93.0)],
            mean_agreement: 98.0,
            logits_eval: d(0.2, 0.15),
            logits_train: d(0.2, 0.15),
            loss: d(0.01, 0.01),
            grads_median: d(0.4, 0.3),
            grads_max: d(0.9, 0.8),
            grads_compared: 30,
            tolerance: HalfTolerance::of(Precision::F16),
        }
    }

    #[test]
    fn the_criteria_hold_and_fail_where_they_should() {
        assert!(report().pass(), "{}", report());
        let mut r = report();
        r.layers[0].train = 99.8; // the first layer below 99.9 %
        assert_eq!(r.failing_layers(), ["first"]);
        assert!(!r.pass());
        let mut r = report();
        r.layers[1].eval = 87.9; // more than 5 points below the control's 93
        assert_eq!(r.failing_layers(), ["deep"]);
        let mut r = report();
        r.logits_train.vs_f32 = 0.33; // over 2 × 0.15 + 0.02
        assert!(!r.pass());
        let mut r = report();
        r.grads_median.vs_f32 = f64::NAN;
        assert!(!r.pass(), "NaN never passes");
        let mut r = report();
        r.layers[1].train = f64::NAN;
        assert!(!r.pass(), "NaN never passes");
        let mut r = report();
        r.grads_compared = 0;
        assert!(!r.pass(), "nothing compared");
    }

    #[test]
    fn agreement_counts_equal_outputs_and_refuses_length_mismatches() {
        assert_eq!(
            agreement(&[0.0, 1.0, 1.0, 0.0], &[0.0, 1.0, 0.0, 0.0]),
            75.0
        );
        assert_eq!(agreement(&[0.0, 1.0], &[0.0]), 0.0);
        assert_eq!(agreement(&[], &[]), 0.0);
        assert!(median(vec![3.0, 1.0, 2.0]) == 2.0 && median(vec![1.0, f64::NAN]).is_nan());
    }
}
