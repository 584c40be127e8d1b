//! One step over several devices of this process: the batch plan (which device takes which
//! samples, in which micro-batches), a replica of the model per extra device, and the sum of
//! the gradients, in device order so that the result does not depend on thread timing.

use burn::optim::GradientsParams;
use burn::prelude::*;
use statten_core::conv::ConvAlgorithm;
use statten_core::models::StattenModel;
use statten_data::loader::HostBatch;

use crate::device::panic_message;
use crate::error::{Error, Result};
use crate::objective::{Batch, Objective, StepGrads};

/// Rows `[a, b)` of a batch.
pub(crate) fn rows(b: &HostBatch, a: usize, e: usize) -> HostBatch {
    let per = b.data.len() / b.len().max(1);
    let mut shape = b.shape.clone();
    shape[0] = e - a;
    HostBatch {
        data: b.data[a * per..e * per].to_vec(),
        shape,
        labels: b.labels[a..e].to_vec(),
        indices: b.indices[a..e].to_vec(),
    }
}

/// How a global batch of `n` samples is run: per device a contiguous share
/// (`i·n/d .. (i+1)·n/d`, so shares differ by at most one sample), each cut into micro-batches of
/// at most `micro` samples (0 = the whole share). With fewer samples than devices (a last,
/// short batch) the first `n` devices take one each.
pub fn batch_plan(n: usize, devices: usize, micro: usize) -> Vec<Vec<(usize, usize)>> {
    let d = devices.min(n).max(1);
    (0..d)
        .map(|i| {
            let (a, e) = (i * n / d, (i + 1) * n / d);
            let m = if micro == 0 { (e - a).max(1) } else { micro };
            (a..e).step_by(m).map(|s| (s, (s + m).min(e))).collect()
        })
        .collect()
}

/// A replica of `model` for another device: fresh autodiff leaves (`fork`) and running
/// statistics of its own. A plain clone shares its BatchNorm running-state cells with `model`,
/// and Burn averages the updates several threads make to one cell; DDP keeps the first
/// replica's statistics and drops the others'.
fn detached_replica(model: &StattenModel, device: &Device) -> StattenModel {
    model.valid().train().fork(device)
}

/// The devices of this process that share each step, and this process's place among the ranks.
#[derive(Debug, Clone)]
pub struct Replicas {
    /// Autodiff devices (the first is the main one: the model, the optimizer and the summed
    /// gradients live there).
    pub devices: Vec<Device>,
    /// Their names, for messages.
    pub names: Vec<String>,
    /// This process's rank and the number of ranks.
    pub rank: usize,
    /// Number of ranks (1 without MPI).
    pub ranks: usize,
    /// `train.micro_batch` (0 = each share in one piece).
    pub micro_batch: usize,
    /// The CPU convolutions' algorithm, set on every replica's thread.
    pub conv_algorithm: ConvAlgorithm,
    /// The matrix products' precision (`train.precision` resolved), set on every replica's
    /// thread.
    pub precision: statten_core::precision::Precision,
    /// The loss is multiplied by this before the backward (the f16 loss scale; 1 otherwise),
    /// so the gradients come back multiplied by it.
    pub loss_scale: f64,
}

impl Replicas {
    /// One step's gradients over the devices and micro-batches ([`batch_plan`]): the first
    /// device's share runs on this thread with the main model, every other device's at the
    /// same time on a thread of its own with a detached replica; the gradients are summed
    /// on the first device in device order (the result does not depend on which thread
    /// finishes first).
    pub fn grads(&self, model: &StattenModel, batch: &Batch, obj: &Objective) -> Result<StepGrads> {
        let n = batch.samples.len();
        // This rank's devices take parts rank·D .. (rank+1)·D of the global plan (none of a
        // batch shorter than the ranks × devices).
        let d = self.devices.len();
        let global = batch_plan(n, self.ranks * d, self.micro_batch);
        let plan: Vec<_> = global.into_iter().skip(self.rank * d).take(d).collect();
        if plan.is_empty() {
            return Ok(StepGrads {
                loss: 0.0,
                correct: 0,
                grads: GradientsParams::new(),
            });
        }
        let run = |replica: &StattenModel, i: usize| self.share(replica, &plan[i], batch, obj, i);
        if plan.len() == 1 {
            return run(model, 0);
        }
        let results = std::thread::scope(|s| {
            let others: Vec<_> = (1..plan.len())
                .map(|i| {
                    let replica = detached_replica(model, &self.devices[i]);
                    let run = &run;
                    s.spawn(move || run(&replica, i))
                })
                .collect();
            let mut out = vec![run(model, 0)];
            for (i, h) in others.into_iter().enumerate() {
                out.push(
                    h.join()
                        .map_err(|p| self.replica_failed(i + 1, &*p))
                        .and_then(|r| r),
                );
            }
            out
        });
        let mut total = StepGrads {
            loss: 0.0,
            correct: 0,
            grads: GradientsParams::new(),
        };
        for r in results {
            let r = r?;
            add_grads(model, &mut total.grads, r.grads);
            total.loss += r.loss;
            total.correct += r.correct;
        }
        Ok(total)
    }

    fn replica_failed(&self, i: usize, payload: &(dyn std::any::Any + Send)) -> Error {
        let why = panic_message(payload);
        let name = self.names.get(i).map(String::as_str).unwrap_or("?");
        Error::Device(format!("the replica on device `{name}` failed: {why}"))
    }

    /// The loss, top-1 hits and gradients of device `i`'s share (its micro-batches in turn),
    /// each piece's loss weighted by its part of the global batch, gradients moved to the main
    /// device.
    fn share(
        &self,
        replica: &StattenModel,
        share: &[(usize, usize)],
        batch: &Batch,
        obj: &Objective,
        i: usize,
    ) -> Result<StepGrads> {
        let (n, k) = (batch.samples.len(), obj.num_classes);
        let mut total = GradientsParams::new();
        let (mut loss, mut correct) = (0.0, 0);
        for &(a, e) in share {
            // The whole batch in one piece is used as it is (weight 1: the plain step).
            let owned;
            let samples = if (a, e) == (0, n) {
                batch.samples
            } else {
                owned = rows(batch.samples, a, e);
                &owned
            };
            let part = Batch {
                samples,
                labels: &batch.labels[a..e],
                soft: batch.soft.map(|s| &s[a * k..e * k]),
            };
            // On this thread (a device's replica runs on its own): the forward and the backward.
            let scale = (e - a) as f64 / n as f64;
            let g = statten_core::conv::with_algorithm(self.conv_algorithm, || {
                statten_core::precision::with_precision(self.precision, || {
                    obj.grads_scaled(replica, &part, &self.devices[i], scale, self.loss_scale)
                })
            })?;
            add_grads(replica, &mut total, g.grads);
            loss += g.loss;
            correct += g.correct;
        }
        Ok(StepGrads {
            loss,
            correct,
            grads: total.to_device(&self.devices[0], replica),
        })
    }
}

/// `into += from`, parameter by parameter.
fn add_grads<M: burn::module::Module>(
    module: &M,
    into: &mut GradientsParams,
    from: GradientsParams,
) {
    struct Add<'a> {
        into: &'a mut GradientsParams,
        from: GradientsParams,
    }
    impl burn::module::ModuleVisitor for Add<'_> {
        fn visit_float<const D: usize>(&mut self, p: &burn::module::Param<Tensor<D>>) {
            if let Some(g) = self.from.remove::<D>(p.id) {
                let sum = match self.into.remove::<D>(p.id) {
                    Some(acc) => acc + g,
                    None => g,
                };
                self.into.register::<D>(p.id, sum);
            }
        }
    }
    module.visit(&mut Add { into, from });
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::RunConfig;
    use statten_core::checkpoint::named_tensors;
    use statten_core::models::Input;
    use statten_core::monitor::Monitor;

    fn running_stats(m: &StattenModel) -> Vec<Vec<f32>> {
        named_tensors(m)
            .into_iter()
            .filter(|t| t.name.ends_with("running_mean"))
            .map(|t| t.values)
            .collect()
    }

    #[test]
    fn a_detached_replica_trains_without_touching_the_main_models_running_statistics() {
        let cfg = RunConfig::parse(
            "[model]\npreset = \"cifar10-2-256\"\ndepth = 1\nembed_dim = 16\nnum_heads = 2\n\
             time_steps = 1\nchunk_size = 1\nimg_size = 8\n[data]\ndataset = \"cifar10\"\n\
             [data.transform]\nsize = 8\n",
            &[],
        )
        .unwrap();
        let dev = Device::flex().autodiff();
        let model = cfg.model.init(&dev).unwrap();
        let before = running_stats(&model);
        assert!(!before.is_empty());
        let x: Tensor<4> = Tensor::random([2, 3, 8, 8], burn::tensor::Distribution::Default, &dev);
        // A plain clone shares the running-state cells: its forward moves the main model's.
        let replica = detached_replica(&model, &dev);
        let out =
            replica.forward_monitored(Input::Static(x.clone()).encode(1), &mut Monitor::disabled());
        assert!(out.clone().sum().into_scalar::<f32>().is_finite());
        assert_eq!(
            running_stats(&model),
            before,
            "the replica moved the main statistics"
        );
        assert_ne!(running_stats(&replica), before, "the replica did not train");
        // Its parameters take gradients under the main model's ids.
        let grads = GradientsParams::from_grads(out.sum().backward(), &replica);
        let mut n = 0;
        struct Count<'a>(&'a GradientsParams, &'a mut usize);
        impl burn::module::ModuleVisitor for Count<'_> {
            fn visit_float<const D: usize>(&mut self, p: &burn::module::Param<Tensor<D>>) {
                if self.0.get::<D>(p.id).is_some() {
                    *self.1 += 1;
                }
            }
        }
        model.visit(&mut Count(&grads, &mut n));
        assert!(n > 10, "only {n} parameters have gradients");
        let plain = model.clone();
        let _ = plain.forward_monitored(Input::Static(x).encode(1), &mut Monitor::disabled());
        assert_ne!(
            running_stats(&model),
            before,
            "a clone shares them (the reason for fork)"
        );
    }
}
