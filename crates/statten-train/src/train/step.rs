//! One optimizer step: the batch's soft targets (mixup), the gradients over this process's
//! devices and the ranks, the non-finite-loss policy, clipping and the optimizer's update.

use std::collections::HashMap;

use burn::module::{Module, ModuleMapper, ModuleVisitor, Param, ParamId};
use burn::prelude::*;
use statten_core::models::StattenModel;
use statten_data::loader::HostBatch;
use statten_data::mixup::mix_batch;
use statten_data::Rng;

use super::{stop_requested, Trainer};
use crate::config::LossKind;
use crate::error::{Error, Result};
use crate::objective::{Batch, StepGrads};
use crate::optim::clip_grad_norm;
use crate::parallel::sync::all_reduce_step;

impl Trainer<'_> {
    /// One optimizer step on batch `i` of `epoch`; `None` when a non-finite loss was skipped.
    /// Returns the batch's loss and top-1 hits.
    pub(super) fn step(
        &mut self,
        epoch: usize,
        i: usize,
        mut b: HostBatch,
    ) -> Result<Option<(f64, usize)>> {
        let cfg = self.cfg;
        let lr = cfg.schedule.lr_for(cfg.optimizer.lr, epoch, i, self.nb);
        let labels = b.labels.clone();
        let soft = self.soft_targets(epoch, i, &mut b)?;
        // A skipped step must leave the BatchNorm running statistics as they were.
        let buffers = cfg.train.skip_nonfinite.then(|| buffers_of(self.model()));
        let batch = Batch {
            samples: &b,
            labels: &labels,
            soft: soft.as_deref(),
        };
        self.replicas.loss_scale = self.loss_scale.map_or(1.0, |s| s.scale);
        let mut g = self.replicas.grads(self.model(), &batch, &self.objective)?;
        if let Some(w) = self.world.clone().filter(|_| self.replicas.ranks > 1) {
            let stop = stop_requested(self.opts, self.steps_run + 1);
            let (summed, stop) = all_reduce_step(&*w, self.model(), g, stop);
            self.stop_agreed = stop;
            g = summed;
        }
        if !g.loss.is_finite() {
            return match buffers {
                Some(buffers) => {
                    self.skip_step(epoch, i, g.loss, buffers);
                    Ok(None)
                }
                None => Err(self.diverged(epoch, i, g.loss)),
            };
        }
        drop(buffers);
        let StepGrads {
            loss,
            correct,
            grads,
        } = g;
        // f16: the gradients back to their scale; one with an inf or NaN skips the optimizer
        // (torch's GradScaler: the scale backs off; the EMA still updates, as timm's loop does).
        let grads = match &mut self.loss_scale {
            Some(scaler) => {
                let model = self.model.as_ref().expect("model present between steps");
                let kept = scaler.unscale(model, grads);
                if kept.is_none() && self.opts.verbose {
                    println!(
                        "epoch {} step {}: inf/NaN gradients in f16, optimizer step skipped; \
                         loss scale now {}",
                        epoch + 1,
                        i + 1,
                        scaler.scale
                    );
                }
                kept
            }
            None => Some(grads),
        };
        if let Some(grads) = grads {
            let grads = if cfg.optimizer.clip_grad > 0.0 {
                clip_grad_norm(self.model(), grads, cfg.optimizer.clip_grad).0
            } else {
                grads
            };
            let m = self.model.take().expect("model");
            self.model = Some(self.opt.step(lr, m, grads));
        }
        if let (Some(ema), Some(m)) = (&mut self.ema, &self.model) {
            ema.update(m);
        }
        Ok(Some((loss, correct)))
    }

    /// Soft targets: mixed while mixup is on (the batch mixed in place), else smoothed one-hot
    /// for the soft-target loss (after mixup's off epoch, as timm's targets without mixing).
    fn soft_targets(&self, epoch: usize, i: usize, b: &mut HostBatch) -> Result<Option<Vec<f32>>> {
        let cfg = self.cfg;
        let k = cfg.model.num_classes;
        Ok(if self.mixup.active_at(epoch) {
            let mut mrng = Rng::derive(&[cfg.train.seed, epoch as u64, i as u64, 0x4D49_5855]);
            Some(
                mix_batch(b, k, &self.mixup, &mut mrng)
                    .map_err(Error::Data)?
                    .0,
            )
        } else if self.objective.kind == LossKind::SoftTarget {
            Some(statten_data::mixup::smooth_one_hot(
                &b.labels,
                k,
                cfg.loss.label_smoothing,
            ))
        } else {
            None
        })
    }

    /// `train.skip_nonfinite`: the running statistics put back, the step counted and (verbose)
    /// reported.
    fn skip_step(&mut self, epoch: usize, i: usize, loss: f64, buffers: Buffers) {
        let m = self.model.take().expect("model");
        self.model = Some(m.map(&mut RestoreBuffers(buffers)));
        self.skipped_steps += 1;
        if self.opts.verbose {
            eprintln!(
                "warning: epoch {}/{}, step {}/{}: loss is {loss}; step skipped \
                 (train.skip_nonfinite), {} so far",
                epoch + 1,
                self.cfg.total_epochs(),
                i + 1,
                self.nb,
                self.skipped_steps
            );
        }
    }

    /// The error of a diverged step, saying what the last checkpoint holds.
    fn diverged(&self, epoch: usize, i: usize, loss: f64) -> Error {
        let last = self.dir.last_checkpoint();
        let kept = if last.exists() {
            format!(
                "{} holds the run before this step's epoch or mid-epoch checkpoint",
                last.display()
            )
        } else {
            "no checkpoint was written yet".into()
        };
        Error::Diverged {
            epoch,
            step: i,
            loss,
            message: format!(
                "epoch {}/{}, step {}/{}: the loss is {loss} (diverged); {kept}. Lower \
                 optimizer.lr, or set train.skip_nonfinite = true to skip such steps",
                epoch + 1,
                self.cfg.total_epochs(),
                i + 1,
                self.nb
            ),
        }
    }
}

/// The running statistics of a model, by parameter id.
type Buffers = HashMap<ParamId, Tensor<1>>;

/// The module's buffers (BatchNorm running statistics: the float tensors that take no
/// gradient), by id.
fn buffers_of(model: &StattenModel) -> Buffers {
    struct Collect(Buffers);
    impl ModuleVisitor for Collect {
        fn visit_float<const D: usize>(&mut self, p: &Param<Tensor<D>>) {
            let t = p.val();
            if D == 1 && !t.is_require_grad() {
                let n = t.shape().num_elements();
                self.0.insert(p.id, t.reshape([n]));
            }
        }
    }
    let mut c = Collect(Default::default());
    model.visit(&mut c);
    c.0
}

/// Puts buffers saved by [`buffers_of`] back.
struct RestoreBuffers(Buffers);

impl ModuleMapper for RestoreBuffers {
    fn map_float<const D: usize>(&mut self, p: Param<Tensor<D>>) -> Param<Tensor<D>> {
        match self.0.get(&p.id) {
            Some(saved) if D == 1 => {
                let (id, t, _) = p.consume();
                let dims = t.dims();
                Param::initialized(id, saved.clone().reshape(dims))
            }
            _ => p,
        }
    }
}
