//! Parity checks of a model against a PyTorch reference fixture: eval and train logits, loss,
//! spike counts per layer, every parameter gradient, BatchNorm running statistics after the
//! train forward, and parameters after one AdamW step (also the optimizer alone).
//!
//! Tolerances are those recommended by the fixtures' README (§6).

use std::collections::HashMap;
use std::fmt;
use std::path::Path;

use burn::module::{Module, ParamId};
use burn::optim::GradientsParams;
use burn::prelude::*;
use burn::tensor::TensorData;
use statten_core::checkpoint::{load_reference, named_tensors, NamedTensor};
use statten_core::models::{Input, ModelConfig, StattenModel};
use statten_core::monitor::Monitor;
use statten_train::objective::{Objective, Targets};
use statten_train::optim::AdamW;

use crate::fixture::{FixTensor, Fixture};

/// Result of one group of checks.
#[derive(Debug, Clone)]
pub struct CheckGroup {
    /// Group name (e.g. `logits_eval`).
    pub name: String,
    /// Largest absolute error in the group.
    pub max_abs: f64,
    /// Largest relative error in the group (rel-L2 per tensor where that is the criterion).
    pub max_rel: f64,
    /// Number of tensors / layers compared.
    pub compared: usize,
    /// Whether every comparison met its tolerance.
    pub pass: bool,
    /// The criterion and, on failure, the worst offenders.
    pub detail: String,
}

impl fmt::Display for CheckGroup {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{:<22} {:>4} compared  max-abs {:>10.3e}  rel {:>10.3e}  {}  ({})",
            self.name,
            self.compared,
            self.max_abs,
            self.max_rel,
            if self.pass { "PASS" } else { "FAIL" },
            self.detail
        )
    }
}

/// All check groups of one fixture.
#[derive(Debug, Clone)]
pub struct ParityReport {
    /// Fixture name.
    pub fixture: String,
    /// Groups in order.
    pub groups: Vec<CheckGroup>,
}

impl ParityReport {
    /// Whether every group passed.
    pub fn pass(&self) -> bool {
        self.groups.iter().all(|g| g.pass)
    }

    /// A group by name.
    pub fn group(&self, name: &str) -> Option<&CheckGroup> {
        self.groups.iter().find(|g| g.name == name)
    }
}

/// Options of a parity run.
#[derive(Debug, Clone, Default)]
pub struct ParityOptions {
    /// Relax the gradient tolerance of the SDT SPS stage 1–3 tensors to 0.1 (for backends whose
    /// convolution is not position-independent, see the fixtures README §6).
    pub relax_sps_ties: bool,
}

/// Largest |a − b|; NaN when either side holds a NaN (a NaN must never look like agreement),
/// infinite when the lengths differ.
fn max_abs(a: &[f64], b: &[f64]) -> f64 {
    if a.len() != b.len() {
        return f64::INFINITY;
    }
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, |m, d| {
            if m.is_nan() || d.is_nan() {
                f64::NAN
            } else {
                m.max(d)
            }
        })
}

/// Why two tensors cannot be compared value by value: different lengths, or a NaN/Inf on
/// either side. `None` when both are finite and of one length.
fn unfit(ours: &[f64], reference: &[f64]) -> Option<String> {
    if ours.len() != reference.len() {
        return Some(format!(
            "{} values vs the reference's {}",
            ours.len(),
            reference.len()
        ));
    }
    for (side, v) in [("ours", ours), ("the reference's", reference)] {
        if let Some(i) = v.iter().position(|x| !x.is_finite()) {
            return Some(format!("{side} value {i} is {}", v[i]));
        }
    }
    None
}

/// `x <= tol`, false for NaN.
fn within(x: f64, tol: f64) -> bool {
    x <= tol
}

fn rel_l2(a: &[f64], reference: &[f64]) -> f64 {
    if a.len() != reference.len() {
        return f64::INFINITY;
    }
    let num: f64 = a
        .iter()
        .zip(reference)
        .map(|(x, y)| (x - y) * (x - y))
        .sum::<f64>()
        .sqrt();
    let den: f64 = reference.iter().map(|y| y * y).sum::<f64>().sqrt();
    if den == 0.0 {
        num
    } else {
        num / den
    }
}

fn to_f64<const D: usize>(t: Tensor<D>) -> Vec<f64> {
    t.into_data()
        .convert::<f32>()
        .try_to_vec::<f32>()
        .expect("f32 data")
        .into_iter()
        .map(|v| v as f64)
        .collect()
}

fn tensor_from<const D: usize>(t: &FixTensor, device: &Device) -> Tensor<D> {
    let v: Vec<f32> = t.values.iter().map(|&x| x as f32).collect();
    Tensor::from_data(TensorData::new(v, t.shape.clone()), device)
}

/// Transpose a 2-D `[a, b]` row-major buffer.
fn transpose2(v: &[f64], a: usize, b: usize) -> Vec<f64> {
    let mut out = vec![0.0; v.len()];
    for i in 0..a {
        for j in 0..b {
            out[j * a + i] = v[i * b + j];
        }
    }
    out
}

fn grad_of(grads: &GradientsParams, nt: &NamedTensor) -> Option<Vec<f64>> {
    let id = ParamId::from(nt.param_id?);
    let g = match nt.shape.len() {
        1 => grads.get::<1>(id).map(to_f64),
        2 => grads.get::<2>(id).map(to_f64),
        3 => grads.get::<3>(id).map(to_f64),
        4 => grads.get::<4>(id).map(to_f64),
        _ => None,
    }?;
    // Burn Linear weights are [in, out]; the reference's are [out, in] (as in `nt`).
    Some(if nt.shape.len() == 2 {
        transpose2(&g, nt.shape[1], nt.shape[0])
    } else {
        g
    })
}

fn register_grad(grads: &mut GradientsParams, nt: &NamedTensor, g: &FixTensor, device: &Device) {
    let id = ParamId::from(nt.param_id.expect("parameter"));
    match nt.shape.len() {
        1 => grads.register::<1>(id, tensor_from(g, device)),
        2 => {
            let t: Tensor<2> = tensor_from(g, device);
            grads.register::<2>(id, t.transpose())
        }
        3 => grads.register::<3>(id, tensor_from(g, device)),
        4 => grads.register::<4>(id, tensor_from(g, device)),
        _ => {}
    }
}

fn is_sps_stage_123(key: &str) -> bool {
    [
        "proj_conv.",
        "proj_conv1.",
        "proj_conv2.",
        "proj_bn.",
        "proj_bn1.",
        "proj_bn2.",
    ]
    .iter()
    .any(|p| key.starts_with(&format!("patch_embed.{p}")))
}

fn spike_group(
    name: &str,
    fx: &Fixture,
    prefix: &str,
    stats: &[statten_core::FiringStat],
) -> CheckGroup {
    let mut ours: HashMap<&str, f64> = HashMap::new();
    for s in stats {
        *ours.entry(s.name.as_str()).or_default() += s.spikes;
    }
    let mut worst = 0.0f64;
    let mut bad = Vec::new();
    let mut compared = 0;
    let mut keys: Vec<&String> = fx
        .tensors
        .keys()
        .filter(|k| k.starts_with(prefix))
        .collect();
    keys.sort();
    for k in &keys {
        let layer = &k[prefix.len()..];
        let Some(&want) = fx.tensors[*k].values.first() else {
            bad.push(format!("{layer}: empty reference count"));
            continue;
        };
        compared += 1;
        match ours.get(layer) {
            Some(&got) => {
                let d = (got - want).abs();
                worst = if d.is_nan() { f64::NAN } else { worst.max(d) };
                if !(d == 0.0) {
                    bad.push(format!("{layer}: {got} vs {want}"));
                }
            }
            None => bad.push(format!("{layer}: layer did not run")),
        }
    }
    let mut extra: Vec<&str> = ours
        .keys()
        .filter(|l| !keys.iter().any(|k| &k[prefix.len()..] == **l))
        .copied()
        .collect();
    extra.sort();
    for l in extra {
        bad.push(format!("{l}: ran in our model but has no reference count"));
    }
    CheckGroup {
        name: name.into(),
        max_abs: worst,
        max_rel: 0.0,
        compared,
        pass: bad.is_empty() && compared > 0,
        detail: if bad.is_empty() {
            "spike counts equal exactly, layer by layer".into()
        } else {
            format!("differ: {}", bad.join("; "))
        },
    }
}

fn value_group(name: &str, ours: &[f64], reference: &FixTensor, tol: f64) -> CheckGroup {
    let problem = unfit(ours, &reference.values);
    let ma = max_abs(ours, &reference.values);
    let rel = rel_l2(ours, &reference.values);
    CheckGroup {
        name: name.into(),
        max_abs: ma,
        max_rel: rel,
        compared: 1,
        pass: problem.is_none() && within(ma, tol),
        detail: match problem {
            Some(p) => format!("max abs <= {tol:e}; {p}"),
            None => format!("max abs <= {tol:e}"),
        },
    }
}

fn input_of(fx: &Fixture, dvs: bool, device: &Device) -> Result<Input, String> {
    let x = fx.tensor("input")?;
    Ok(match (dvs, x.shape.len()) {
        (false, 4) => Input::Static(tensor_from(x, device)),
        (true, 5) => Input::Events(tensor_from(x, device)),
        _ => {
            return Err(format!(
                "input of shape {:?} does not fit dvs = {dvs}",
                x.shape
            ))
        }
    })
}

/// Run every check of `fixture_dir` on `device` (a plain device; autodiff is added for the
/// train forward).
pub fn run_parity(
    fixture_dir: &Path,
    device: &Device,
    opts: &ParityOptions,
) -> Result<ParityReport, String> {
    let fx = Fixture::load(fixture_dir)?;
    let cfg = fx.model_config()?;
    let t_steps = cfg.time_steps;
    let ad = device.clone().autodiff();
    let mut model: StattenModel = cfg.init(&ad).map_err(|e| e.to_string())?;
    load_reference(&mut model, &fx.weights_path()).map_err(|e| e.to_string())?;
    let weights_before = named_tensors(&model);
    let mut groups = Vec::new();

    // Eval forward (running statistics, no autodiff).
    let eval_model = model.valid();
    let mut mon = Monitor::enabled();
    let x = input_of(&fx, cfg.dvs, device)?.encode(t_steps);
    let logits_eval = eval_model.forward_monitored(x, &mut mon);
    groups.push(spike_group(
        "spikes_eval",
        &fx,
        "spike_count_eval/",
        &mon.stats(),
    ));
    groups.push(value_group(
        "logits_eval",
        &to_f64(logits_eval),
        fx.tensor("logits_eval")?,
        1e-5,
    ));

    // Train forward + backward.
    // The step `statten train` takes (forward over T, label-smoothed cross-entropy), on the
    // fixture's batch.
    let mut mon = Monitor::enabled();
    let target = fx.tensor("target")?;
    let target: Tensor<1, Int> = Tensor::from_data(
        TensorData::new(
            target.values.iter().map(|&v| v as i64).collect::<Vec<_>>(),
            target.shape.clone(),
        ),
        &ad,
    );
    let objective = Objective::cross_entropy(&cfg, fx.label_smoothing()?);
    let input = input_of(&fx, cfg.dvs, &ad)?;
    let (loss, logits) = objective.forward_loss(&model, input, Targets::Hard(target), &mut mon);
    groups.push(spike_group(
        "spikes_train",
        &fx,
        "spike_count/",
        &mon.stats(),
    ));
    groups.push(value_group(
        "logits_train",
        &to_f64(logits),
        fx.tensor("logits_train")?,
        1e-5,
    ));
    groups.push(value_group(
        "loss_train",
        &to_f64(loss.clone()),
        fx.tensor("loss_train")?,
        1e-5,
    ));
    let grads = GradientsParams::from_grads(loss.backward(), &model);

    groups.push(grads_group(&fx, &weights_before, &grads, opts)?);
    // BatchNorm running statistics after the train forward.
    groups.push(bn_after_group(&fx, &named_tensors(&model)));
    // One AdamW step with our gradients, and the optimizer alone on the reference gradients.
    let (lr, acfg) = fx.optimizer()?;
    let stepped = AdamW::new(acfg).step(lr, model, grads);
    groups.push(after_step_group(
        "after_step",
        &fx,
        &named_tensors(&stepped),
        &weights_before,
        lr,
        true,
    )?);

    groups.push(adamw_alone_group(&fx, &cfg, &ad)?);

    Ok(ParityReport {
        fixture: fx.name(),
        groups,
    })
}

/// The reference's tensors under `prefix` that name none of `ours` (sorted).
fn orphans<'a>(fx: &'a Fixture, prefix: &str, ours: &[NamedTensor]) -> Vec<&'a str> {
    let mut v: Vec<&str> = fx
        .tensors
        .keys()
        .filter_map(|k| k.strip_prefix(prefix))
        .filter(|k| !ours.iter().any(|t| t.name == *k))
        .collect();
    v.sort();
    v
}

/// Our gradients against the reference's: per-tensor rel-L2, exact zeros where the reference
/// has zero by construction, none where it has none.
fn grads_group(
    fx: &Fixture,
    weights_before: &[NamedTensor],
    grads: &GradientsParams,
    opts: &ParityOptions,
) -> Result<CheckGroup, String> {
    let no_grad = fx.string_list("params_without_grad");
    let zero_grad = fx.string_list("zero_grad_by_construction");
    let params: Vec<NamedTensor> = weights_before
        .iter()
        .filter(|t| t.param_id.is_some())
        .cloned()
        .collect();
    let mut g = CheckGroup {
        name: "grads".into(),
        max_abs: 0.0,
        max_rel: 0.0,
        compared: 0,
        pass: true,
        detail: String::new(),
    };
    let mut bad = Vec::new();
    let mut relaxed = 0;
    for nt in &params {
        let key = &nt.name;
        let ours = grad_of(grads, nt);
        if no_grad.contains(key) {
            g.compared += 1;
            if ours.is_some() {
                bad.push(format!("{key}: has a gradient, reference has none"));
            }
            continue;
        }
        let Some(reference) = fx.tensors.get(&format!("grad/{key}")) else {
            if ours.is_some() {
                bad.push(format!("{key}: gradient not in fixture"));
            }
            continue;
        };
        g.compared += 1;
        let Some(ours) = ours else {
            bad.push(format!("{key}: no gradient"));
            continue;
        };
        if let Some(p) = unfit(&ours, &reference.values) {
            bad.push(format!("{key}: {p}"));
            g.max_abs = f64::NAN;
            continue;
        }
        let ma = max_abs(&ours, &reference.values);
        g.max_abs = g.max_abs.max(ma);
        if zero_grad.contains(key) {
            if !within(ma, 1e-5) {
                bad.push(format!(
                    "{key}: zero-by-construction grad max abs {ma:.3e} > 1e-5"
                ));
            }
            continue;
        }
        let rel = rel_l2(&ours, &reference.values);
        g.max_rel = g.max_rel.max(rel);
        let tol = if opts.relax_sps_ties
            && is_sps_stage_123(key)
            && fx.model_config()?.arch == statten_core::Arch::Sdt
        {
            relaxed += 1;
            0.1
        } else {
            1e-4
        };
        if !within(rel, tol) {
            bad.push(format!("{key}: rel-L2 {rel:.3e} > {tol:e}"));
        }
    }
    for k in orphans(fx, "grad/", &params) {
        bad.push(format!(
            "{k}: reference gradient for a parameter the model lacks"
        ));
    }
    g.pass = bad.is_empty() && g.compared > 0;
    let relaxed = match relaxed {
        0 => String::new(),
        n => format!(" ({n} SPS stage 1-3 tensors relaxed to 0.1)"),
    };
    g.detail = if bad.is_empty() {
        format!("per-tensor rel-L2 <= 1e-4{relaxed}; zero-by-construction max abs <= 1e-5")
    } else {
        bad.join("; ")
    };
    Ok(g)
}

/// The BatchNorm running statistics after the train forward against the reference's.
fn bn_after_group(fx: &Fixture, after_fwd: &[NamedTensor]) -> CheckGroup {
    let mut g = CheckGroup {
        name: "bn_after".into(),
        max_abs: 0.0,
        max_rel: 0.0,
        compared: 0,
        pass: true,
        detail: "max abs <= 1e-6".into(),
    };
    let mut bad = Vec::new();
    for nt in after_fwd
        .iter()
        .filter(|t| t.name.ends_with("running_mean") || t.name.ends_with("running_var"))
    {
        let Some(r) = fx.tensors.get(&format!("bn_after/{}", nt.name)) else {
            bad.push(format!("{}: not in the reference's bn_after", nt.name));
            continue;
        };
        g.compared += 1;
        let v: Vec<f64> = nt.values.iter().map(|&x| x as f64).collect();
        if let Some(p) = unfit(&v, &r.values) {
            bad.push(format!("{}: {p}", nt.name));
            g.max_abs = f64::NAN;
            continue;
        }
        let ma = max_abs(&v, &r.values);
        g.max_abs = g.max_abs.max(ma);
        g.max_rel = g.max_rel.max(rel_l2(&v, &r.values));
        if !within(ma, 1e-6) {
            bad.push(format!("{}: {ma:.3e}", nt.name));
        }
    }
    for k in orphans(fx, "bn_after/", &after_fwd) {
        bad.push(format!(
            "{k}: reference BatchNorm statistic the model lacks"
        ));
    }
    g.pass = bad.is_empty() && g.compared > 0;
    if !bad.is_empty() {
        g.detail = bad.join("; ");
    }
    g
}

/// The optimizer alone: the reference's gradients into our AdamW from the reference weights.
fn adamw_alone_group(fx: &Fixture, cfg: &ModelConfig, ad: &Device) -> Result<CheckGroup, String> {
    let (lr, acfg) = fx.optimizer()?;
    let mut fresh: StattenModel = cfg.init(ad).map_err(|e| e.to_string())?;
    load_reference(&mut fresh, &fx.weights_path()).map_err(|e| e.to_string())?;
    let fresh_named = named_tensors(&fresh);
    let mut ref_grads = GradientsParams::new();
    for nt in fresh_named.iter().filter(|t| t.param_id.is_some()) {
        // A reference gradient of another shape (a damaged fixture) is not applied: the grads
        // group reports it, and this parameter's step then differs from the reference's.
        if let Some(gr) = fx.tensors.get(&format!("grad/{}", nt.name)) {
            if gr.shape == nt.shape && gr.values.len() == nt.values.len() {
                register_grad(&mut ref_grads, nt, gr, ad);
            }
        }
    }
    let stepped = AdamW::new(acfg).step(lr, fresh, ref_grads);
    after_step_group(
        "adamw_alone",
        &fx,
        &named_tensors(&stepped),
        &fresh_named,
        lr,
        false,
    )
}

fn after_step_group(
    name: &str,
    fx: &Fixture,
    after: &[NamedTensor],
    before: &[NamedTensor],
    lr: f64,
    model_grads: bool,
) -> Result<CheckGroup, String> {
    let no_grad = fx.string_list("params_without_grad");
    let zero_grad = fx.string_list("zero_grad_by_construction");
    let before: HashMap<&str, &NamedTensor> = before.iter().map(|t| (t.name.as_str(), t)).collect();
    let tol = if model_grads { 1e-6 + 0.1 * lr } else { 1e-6 };
    let mut g = CheckGroup {
        name: name.into(),
        max_abs: 0.0,
        max_rel: 0.0,
        compared: 0,
        pass: true,
        detail: if model_grads {
            format!("max abs <= 1e-6 + 0.1*lr = {tol:.2e}; zero-by-construction <= 2*lr; no-grad params unchanged")
        } else {
            "reference grads into our AdamW: max abs <= 1e-6".into()
        },
    };
    let mut bad = Vec::new();
    for nt in after.iter().filter(|t| t.param_id.is_some()) {
        let v: Vec<f64> = nt.values.iter().map(|&x| x as f64).collect();
        if no_grad.contains(&nt.name) {
            g.compared += 1;
            let b: Vec<f64> = before[nt.name.as_str()]
                .values
                .iter()
                .map(|&x| x as f64)
                .collect();
            if !(max_abs(&v, &b) == 0.0) {
                bad.push(format!("{}: changed although it has no gradient", nt.name));
            }
            continue;
        }
        let Some(r) = fx.tensors.get(&format!("after_step/{}", nt.name)) else {
            bad.push(format!("{}: not in the reference's after_step", nt.name));
            continue;
        };
        g.compared += 1;
        if let Some(p) = unfit(&v, &r.values) {
            bad.push(format!("{}: {p}", nt.name));
            g.max_abs = f64::NAN;
            continue;
        }
        let ma = max_abs(&v, &r.values);
        let t = if zero_grad.contains(&nt.name) && model_grads {
            2.0 * lr
        } else {
            tol
        };
        if !zero_grad.contains(&nt.name) {
            g.max_abs = g.max_abs.max(ma);
            g.max_rel = g.max_rel.max(ma / lr);
        }
        if !within(ma, t) {
            bad.push(format!("{}: {ma:.3e} > {t:.2e}", nt.name));
        }
    }
    let mut orphans: Vec<&str> = fx
        .tensors
        .keys()
        .filter_map(|k| k.strip_prefix("after_step/"))
        .filter(|k| !after.iter().any(|t| t.name == *k))
        .collect();
    orphans.sort();
    for k in orphans {
        bad.push(format!("{k}: reference parameter the model lacks"));
    }
    g.pass = bad.is_empty() && g.compared > 0;
    if !bad.is_empty() {
        g.detail = bad.join("; ");
    }
    Ok(g)
}
