//! What one training step computes on one batch: forward over T, the configured loss, and the
//! backward. The trainer (on every device's share of a batch), `statten bench` and `statten
//! parity` all take their step from here, so the three measure and check the same arithmetic.
//!
//! The loss is resolved once from the run's `[loss]` table ([`Objective::of_run`]): TET on the
//! per-timestep logits for TET models, the soft-target cross-entropy where mixup (or the
//! `soft-target` kind) gives soft targets, the label-smoothed cross-entropy otherwise.

use burn::optim::GradientsParams;
use burn::prelude::*;
use statten_core::models::{Input, ModelConfig, StattenModel};
use statten_core::monitor::Monitor;
use statten_data::loader::HostBatch;

use crate::config::{LossConfig, LossKind, RunConfig};
use crate::device::device_failure;
use crate::error::{Error, Result};
use crate::loss::{cross_entropy, soft_target_cross_entropy, tet_loss};
use crate::metrics::topk_correct;

/// The targets of a batch, as its loss takes them.
#[derive(Debug, Clone)]
pub enum Targets {
    /// Class indices `[B]`.
    Hard(Tensor<1, Int>),
    /// Class distributions `[B, K]` (mixup, or smoothed one-hot for the soft-target loss).
    Soft(Tensor<2>),
}

/// One batch as a step takes it: the samples, their labels (for top-1), and the soft targets
/// (`[B·K]`, row-major) when mixup or the soft-target loss makes them.
#[derive(Debug, Clone, Copy)]
pub struct Batch<'a> {
    /// The samples (`[B, C, H, W]` images or `[B, T, C, H, W]` event frames).
    pub samples: &'a HostBatch,
    /// The true labels, `B` of them.
    pub labels: &'a [usize],
    /// Soft targets, `B·K` values.
    pub soft: Option<&'a [f32]>,
}

/// A step's results on one batch (or one share of it).
#[derive(Debug)]
pub struct StepGrads {
    /// The loss value (scaled as asked).
    pub loss: f64,
    /// Top-1 hits against the labels.
    pub correct: usize,
    /// The parameters' gradients.
    pub grads: GradientsParams,
}

/// The model's input for a host batch: event frames (5-d) or images (4-d).
pub fn input_of(b: &HostBatch, device: &Device) -> Input {
    if b.shape.len() == 5 {
        Input::Events(b.inputs::<5>(device))
    } else {
        Input::Static(b.inputs::<4>(device))
    }
}

/// The loss of a run, resolved: which loss and its constants, and the model's T and classes.
#[derive(Debug, Clone, PartialEq)]
pub struct Objective {
    /// `Ce`, `SoftTarget` or `Tet` (never `Auto`).
    pub kind: LossKind,
    /// Label smoothing ε (CE and TET).
    pub label_smoothing: f64,
    /// TET λ.
    pub tet_lambda: f64,
    /// TET MSE target.
    pub tet_means: f64,
    /// Time steps the input is encoded to.
    pub time_steps: usize,
    /// Classes (the width of soft targets).
    pub num_classes: usize,
}

impl Objective {
    /// The objective of a run (its `[loss]` table, `auto` resolved as [`RunConfig::loss_kind`]).
    pub fn of_run(cfg: &RunConfig) -> Self {
        Self::with_loss(&cfg.model, &cfg.loss, cfg.loss_kind())
    }

    /// The objective a recipe without mixup gives `model` by default: TET for TET models, the
    /// label-smoothed (ε = 0.1) cross-entropy otherwise ([`LossConfig::default`]).
    pub fn of_model(model: &ModelConfig) -> Self {
        let kind = if model.tet {
            LossKind::Tet
        } else {
            LossKind::Ce
        };
        Self::with_loss(model, &LossConfig::default(), kind)
    }

    /// The label-smoothed cross-entropy alone (no TET), as `statten parity` checks it.
    pub fn cross_entropy(model: &ModelConfig, label_smoothing: f64) -> Self {
        let loss = LossConfig {
            label_smoothing,
            ..LossConfig::default()
        };
        Self::with_loss(model, &loss, LossKind::Ce)
    }

    fn with_loss(model: &ModelConfig, loss: &LossConfig, kind: LossKind) -> Self {
        let kind = match kind {
            LossKind::Auto => LossKind::Ce,
            k => k,
        };
        Self {
            kind,
            label_smoothing: loss.label_smoothing,
            tet_lambda: loss.tet_lambda,
            tet_means: loss.tet_means,
            time_steps: model.time_steps,
            num_classes: model.num_classes,
        }
    }

    /// The forward over T and the loss: `(loss [1], logits [B, K])`, the logits being the
    /// mean over T (what top-1 is taken on). Soft targets take the soft-target cross-entropy
    /// whatever the kind (TET is defined on class indices; [`Self::targets`] gives those to a
    /// TET objective), class indices the kind's loss.
    pub fn forward_loss(
        &self,
        model: &StattenModel,
        input: Input,
        targets: Targets,
        monitor: &mut Monitor,
    ) -> (Tensor<1>, Tensor<2>) {
        let x = input.encode(self.time_steps);
        match (self.kind, targets) {
            (LossKind::Tet, Targets::Hard(y)) => {
                let out = model.forward_time_monitored(x, monitor);
                let [_, b, k] = out.dims();
                let logits = out.clone().mean_dim(0).reshape([b, k]);
                let l = tet_loss(
                    out,
                    y,
                    self.label_smoothing,
                    self.tet_lambda,
                    self.tet_means,
                );
                (l, logits)
            }
            (_, Targets::Soft(st)) => {
                let logits = model.forward_monitored(x, monitor);
                (soft_target_cross_entropy(logits.clone(), st), logits)
            }
            (_, Targets::Hard(y)) => {
                let logits = model.forward_monitored(x, monitor);
                let l = cross_entropy(logits.clone(), y, self.label_smoothing);
                (l, logits)
            }
        }
    }

    /// The targets the loss takes for `batch`: soft ones for the soft-target loss (the batch's
    /// soft targets must be there), class indices otherwise.
    pub fn targets(&self, batch: &Batch, device: &Device) -> Targets {
        match self.kind {
            LossKind::SoftTarget => {
                let s = batch.soft.expect("soft targets").to_vec();
                let shape = [batch.samples.len(), self.num_classes];
                Targets::Soft(Tensor::from_data(TensorData::new(s, shape), device))
            }
            _ => Targets::Hard(batch.samples.targets(device)),
        }
    }

    /// The loss of `model` on `batch` scaled by `scale` (a share's part of the global batch),
    /// its gradients and the top-1 hits. The first read of the step is here: a failure of its
    /// forward (or of the previous step's backward and update, which run lazily on a GPU)
    /// surfaces as an error naming the device, not a panic.
    pub fn grads(
        &self,
        model: &StattenModel,
        batch: &Batch,
        device: &Device,
        scale: f64,
    ) -> Result<StepGrads> {
        self.grads_scaled(model, batch, device, scale, 1.0)
    }

    /// [`Self::grads`] with the backward taken on the loss times `loss_scale` (f16's loss
    /// scaling, [`crate::amp`]): the gradients come back multiplied by it, the loss value not.
    pub fn grads_scaled(
        &self,
        model: &StattenModel,
        batch: &Batch,
        device: &Device,
        scale: f64,
        loss_scale: f64,
    ) -> Result<StepGrads> {
        let input = input_of(batch.samples, device);
        let targets = self.targets(batch, device);
        let (loss, logits) = self.forward_loss(model, input, targets, &mut Monitor::disabled());
        let loss = if scale != 1.0 {
            loss.mul_scalar(scale)
        } else {
            loss
        };
        let scaled = if loss_scale != 1.0 {
            loss.clone().mul_scalar(loss_scale)
        } else {
            loss.clone()
        };
        let grads = GradientsParams::from_grads(scaled.backward(), model);
        // One read for the loss and the logits, after the backward is queued: on a GPU the host
        // queues the backward while the forward runs, and waits once per step, not twice.
        let [b, k] = logits.dims();
        let both: Tensor<1> = Tensor::cat(
            vec![loss.inner().reshape([1]), logits.inner().reshape([b * k])],
            0,
        );
        let values = both
            .try_into_data()
            .map_err(|e| Error::Device(device_failure(device, &e.to_string())))?
            .try_into_vec::<f32>()
            .map_err(|e| Error::Device(device_failure(device, &format!("{e:?}"))))?;
        let value = values[0] as f64;
        let correct = topk_correct(&values[1..], k, batch.labels, 1);
        Ok(StepGrads {
            loss: value,
            correct,
            grads,
        })
    }
}
