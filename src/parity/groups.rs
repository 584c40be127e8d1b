//! The check groups of a parity run, one function each: spike counts, values (logits, loss),
//! gradients, BatchNorm statistics after the train forward, parameters after one AdamW step.

use std::collections::HashMap;

use burn::optim::GradientsParams;
use burn::prelude::*;
use statten_core::checkpoint::{load_reference, named_tensors, NamedTensor};
use statten_core::models::{ModelConfig, StattenModel};
use statten_train::optim::AdamW;

use super::compare::*;
use super::{CheckGroup, ParityOptions};
use crate::fixture::{FixTensor, Fixture};

pub(super) fn spike_group(
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

pub(super) fn value_group(name: &str, ours: &[f64], reference: &FixTensor, tol: f64) -> CheckGroup {
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
pub(super) fn grads_group(
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
    let mut g = CheckGroup::empty("grads", "");
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
        let relax = opts.relax_sps_ties
            && is_sps_stage_123(key)
            && fx.model_config()?.arch == statten_core::Arch::Sdt;
        relaxed += relax as usize;
        let tol = if relax { 0.1 } else { 1e-4 };
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
pub(super) fn bn_after_group(fx: &Fixture, after_fwd: &[NamedTensor]) -> CheckGroup {
    let mut g = CheckGroup::empty("bn_after", "max abs <= 1e-6");
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
    for k in orphans(fx, "bn_after/", after_fwd) {
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
pub(super) fn adamw_alone_group(
    fx: &Fixture,
    cfg: &ModelConfig,
    ad: &Device,
) -> Result<CheckGroup, String> {
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
        fx,
        &named_tensors(&stepped),
        &fresh_named,
        lr,
        false,
    )
}

pub(super) fn after_step_group(
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
