//! Parity checks of a model against a PyTorch reference fixture: eval and train logits, loss,
//! spike counts per layer, every parameter gradient, BatchNorm running statistics after the
//! train forward, and parameters after one AdamW step (also the optimizer alone).
//!
//! Tolerances are those recommended by the fixtures' README (§6).

use std::fmt;
use std::path::Path;

use burn::module::Module;
use burn::optim::GradientsParams;
use burn::prelude::*;
use burn::tensor::TensorData;
use statten_core::checkpoint::{load_reference, named_tensors};
use statten_core::models::{Input, StattenModel};
use statten_core::monitor::Monitor;
use statten_train::objective::{Objective, Targets};
use statten_train::optim::AdamW;

use crate::fixture::Fixture;

mod compare;
mod groups;
pub mod half;

pub use half::{run_parity_half, HalfReport};

use compare::{tensor_from, to_f64};
use groups::{
    adamw_alone_group, after_step_group, bn_after_group, grads_group, spike_group, value_group,
};

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

impl CheckGroup {
    /// A group with nothing compared yet (passing until a comparison fails).
    fn empty(name: &str, detail: &str) -> Self {
        Self {
            name: name.into(),
            max_abs: 0.0,
            max_rel: 0.0,
            compared: 0,
            pass: true,
            detail: detail.into(),
        }
    }
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

/// The fixture's class indices on `device`.
fn target_of(fx: &Fixture, device: &Device) -> Result<Tensor<1, Int>, String> {
    let target = fx.tensor("target")?;
    Ok(Tensor::from_data(
        TensorData::new(
            target.values.iter().map(|&v| v as i64).collect::<Vec<_>>(),
            target.shape.clone(),
        ),
        device,
    ))
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
    let target = target_of(&fx, &ad)?;
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
