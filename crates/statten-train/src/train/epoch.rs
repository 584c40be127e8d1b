//! The epoch loop: the epochs left to run, one epoch's steps (with mid-epoch checkpoints and
//! stop requests), the `steps.csv` rows, and the end of an epoch (eval, records, plots,
//! checkpoints).

use std::time::Instant;

use burn::module::Module;
use statten_data::mixup::MixupConfig;

use super::eval::{evaluate_sharded, EvalSpec};
use super::{progress_bar, stop_requested, EpochEnd, RunSummary, StopPoint, Trainer};
use crate::checkpoint::{EpochRecord, PartialEpoch};
use crate::error::Result;
use crate::metrics::Mean;
use crate::parallel::replicas::rows;
use crate::parallel::sync::broadcast_buffers;

impl Trainer<'_> {
    pub(super) fn run_epochs(mut self) -> Result<RunSummary> {
        let total = self.cfg.total_epochs();
        let mut stopped = None;
        for epoch in self.start.0..total {
            if self.opts.stop_after > 0 && self.epochs_run >= self.opts.stop_after {
                break;
            }
            self.epochs_run += 1;
            let first = if epoch == self.start.0 {
                self.start.1
            } else {
                0
            };
            let resumed = if first > 0 { self.partial.take() } else { None };
            match self.train_epoch(epoch, first, resumed)? {
                EpochEnd::Done(stats) => self.end_epoch(epoch, stats)?,
                EpochEnd::Stopped(p) => {
                    stopped = Some(p);
                    break;
                }
            }
        }
        if self.opts.verbose && !self.opts.energy_table_each_eval && stopped.is_none() {
            if let Some(rep) = &self.energy {
                print!("firing rates of the last eval: {}", rep.table());
            }
        }
        Ok(RunSummary {
            history: self.history,
            best_top1: self.best,
            energy: self.energy,
            skipped: self.train_loader.skipped() + self.test_loader.skipped(),
            skipped_steps: self.skipped_steps,
            stopped,
        })
    }

    /// Train one epoch from batch `first` (with the statistics of the batches before it).
    fn train_epoch(
        &mut self,
        epoch: usize,
        first: usize,
        resumed: Option<PartialEpoch>,
    ) -> Result<EpochEnd> {
        let (cfg, nb, total) = (self.cfg, self.nb, self.cfg.total_epochs());
        let prior = resumed.unwrap_or_default();
        let t0 = Instant::now();
        let pb = progress_bar(
            self.opts.progress,
            nb,
            format!("epoch {}/{}", epoch + 1, total),
        );
        pb.set_position(first.min(nb) as u64);
        let mut loss = Mean::from_parts(prior.loss_sum, prior.loss_n);
        let (mut correct, mut seen) = (prior.correct, prior.seen);
        let stats = |loss: &Mean, correct, seen, t0: &Instant| {
            let (loss_sum, loss_n) = loss.parts();
            PartialEpoch {
                loss_sum,
                loss_n,
                correct,
                seen,
                seconds: prior.seconds + t0.elapsed().as_secs_f64(),
            }
        };
        if first >= nb {
            pb.finish_and_clear();
            return Ok(EpochEnd::Done(stats(&loss, correct, seen, &t0)));
        }
        let mut images = 0usize;
        for (j, b) in self.train_loader.epoch_from(epoch, first).enumerate() {
            let i = first + j;
            if i >= nb {
                break;
            }
            let b = even_for_mixup(&self.mixup, epoch, b?);
            let n = b.len();
            if n > 0 {
                if let Some((lv, c)) = self.step(epoch, i, b)? {
                    loss.add(lv, n);
                    correct += c;
                    seen += n;
                    self.log.loss.add(lv, 1);
                }
                images += n;
                self.log.images += n;
            }
            self.steps_run += 1;
            self.log_step(epoch, i)?;
            pb.set_message(format!(
                "loss {:.4} acc {:.2}% lr {:.2e} {:.1} img/s",
                loss.get(),
                100.0 * correct as f64 / seen.max(1) as f64,
                cfg.schedule.lr_for(cfg.optimizer.lr, epoch, i, nb),
                images as f64 / t0.elapsed().as_secs_f64().max(1e-9)
            ));
            pb.inc(1);
            let done = i + 1;
            if self.stop_now() {
                pb.finish_and_clear();
                let s = stats(&loss, correct, seen, &t0);
                self.save_mid_epoch(epoch, done, s)?;
                return Ok(EpochEnd::Stopped(StopPoint {
                    epoch,
                    batches_done: done,
                    checkpoint: self.dir.last_checkpoint(),
                }));
            }
            if done < nb && self.mid_epoch_checkpoint_due(done) {
                self.save_mid_epoch(epoch, done, stats(&loss, correct, seen, &t0))?;
            }
        }
        pb.finish_and_clear();
        Ok(EpochEnd::Done(stats(&loss, correct, seen, &t0)))
    }

    /// Whether to stop after the step just run: a stop all ranks agreed on in its reduction,
    /// or (one process) a stop request.
    fn stop_now(&self) -> bool {
        if self.replicas.ranks > 1 {
            self.stop_agreed
        } else {
            stop_requested(self.opts, self.steps_run)
        }
    }

    /// Every `train.log_every` global steps: a `steps.csv` row (rank 0) with the window's mean
    /// loss and images/s, then a fresh window.
    fn log_step(&mut self, epoch: usize, i: usize) -> Result<()> {
        let every = self.cfg.train.log_every;
        let step = (epoch * self.nb + i + 1) as u64;
        if every == 0 || !step.is_multiple_of(every as u64) {
            return Ok(());
        }
        let w = std::mem::take(&mut self.log);
        if self.replicas.rank == 0 {
            let cfg = self.cfg;
            let row = crate::rundir::StepRecord {
                step,
                epoch,
                batch: i + 1,
                loss: w.loss.get(),
                lr: cfg.schedule.lr_for(cfg.optimizer.lr, epoch, i, self.nb),
                images_per_s: w.images as f64 / w.since.elapsed().as_secs_f64().max(1e-9),
                time: crate::rundir::unix_now(),
            };
            self.dir.append_steps(std::slice::from_ref(&row))?;
            if let Some(tb) = &mut self.tb {
                tb.scalars(
                    step,
                    &[
                        ("train/loss", row.loss),
                        ("train/lr", row.lr),
                        ("train/images_per_s", row.images_per_s),
                    ],
                )?;
            }
        }
        Ok(())
    }

    fn mid_epoch_checkpoint_due(&self, done: usize) -> bool {
        let t = &self.cfg.train;
        (t.checkpoint_every_steps > 0 && done.is_multiple_of(t.checkpoint_every_steps))
            || (t.checkpoint_every_minutes > 0.0
                && self.last_checkpoint_at.elapsed().as_secs_f64()
                    >= t.checkpoint_every_minutes * 60.0)
    }

    /// Evaluate, record and log the epoch, then write its checkpoints.
    fn end_epoch(&mut self, epoch: usize, stats: PartialEpoch) -> Result<()> {
        let cfg = self.cfg;
        let total = cfg.total_epochs();
        let t_eval = Instant::now();
        let last = epoch + 1 == total
            || (self.opts.stop_after > 0 && self.epochs_run == self.opts.stop_after);
        let do_eval = cfg.train.eval_interval > 0
            && ((epoch + 1).is_multiple_of(cfg.train.eval_interval) || epoch + 1 == total)
            || last;
        let mut rec = EpochRecord {
            epoch,
            train_loss: Mean::from_parts(stats.loss_sum, stats.loss_n).get(),
            train_top1: 100.0 * stats.correct as f64 / stats.seen.max(1) as f64,
            eval_loss: f64::NAN,
            eval_top1: f64::NAN,
            eval_top5: f64::NAN,
            lr: cfg.schedule.lr_for(cfg.optimizer.lr, epoch, 0, self.nb),
            images_per_s: stats.seen as f64 / stats.seconds.max(1e-9),
            seconds: 0.0,
            finished_at: 0,
            ema_eval_loss: f64::NAN,
            ema_eval_top1: f64::NAN,
            ema_eval_top5: f64::NAN,
        };
        if do_eval {
            self.evaluate_epoch(epoch, &mut rec)?;
        }
        rec.seconds = stats.seconds + t_eval.elapsed().as_secs_f64();
        rec.finished_at = crate::rundir::unix_now();
        if self.opts.verbose {
            print_epoch_line(&rec, total);
        }
        self.history.push(rec.clone());
        if self.replicas.rank == 0 {
            self.tensorboard_epoch(&rec, do_eval)?;
            self.dir.append_epoch(&rec)?;
            self.dir.write_summary(&self.history)?;
            if cfg.train.plot {
                let name = self
                    .dir
                    .root()
                    .file_name()
                    .map(|n| n.to_string_lossy().into_owned())
                    .unwrap_or_default();
                crate::plot::draw_curves_with_steps(
                    &self.history,
                    &self.dir.steps(),
                    self.nb,
                    total,
                    &name,
                    &self.dir.curves(),
                )?;
            }
        }
        let figure = match cfg.train.best_metric {
            crate::config::BestMetric::Top1 => rec.eval_top1,
            crate::config::BestMetric::EmaTop1 => rec.ema_eval_top1,
        };
        let improved = figure.is_finite() && figure > self.best;
        if improved {
            self.best = rec.eval_top1;
        }
        self.save_epoch_end(epoch + 1, improved)
    }

    /// The epoch's evaluation into `rec`, its energy report written and printed as asked.
    fn evaluate_epoch(&mut self, epoch: usize, rec: &mut EpochRecord) -> Result<()> {
        let cfg = self.cfg;
        let total = cfg.total_epochs();
        if let Some(w) = self.world.clone().filter(|_| self.replicas.ranks > 1) {
            // Rank 0's running statistics on every rank, as DDP's buffer broadcast.
            let m = self.model.take().expect("model");
            self.model = Some(broadcast_buffers(&*w, m));
        }
        let prefix = self
            .opts
            .progress
            .then(|| format!("eval {}/{total}", epoch + 1));
        let spec = EvalSpec {
            time_steps: cfg.model.time_steps,
            max_batches: cfg.train.max_batches,
            monitor: true,
            world: self.world(),
            progress: prefix.as_deref(),
        };
        let ev = evaluate_sharded(&self.model().valid(), &self.test_loader, &self.base, &spec)?;
        rec.eval_loss = ev.loss;
        rec.eval_top1 = ev.top1;
        rec.eval_top5 = ev.top5;
        let rep = ev.rates.report_at(&cfg.model, epoch, cfg.energy.precision);
        if self.replicas.rank == 0 {
            self.dir.write_energy(epoch, &rep)?;
        }
        self.evaluate_ema(epoch, rec)?;
        if self.opts.energy_table_each_eval {
            print!("{}", rep.table());
        } else if self.opts.verbose {
            println!("{}", rep.summary_line());
        }
        self.energy = Some(rep);
        Ok(())
    }
}

impl Trainer<'_> {
    /// The epoch's figures in the TensorBoard file, at the global step of its end: the train
    /// and eval figures, the EMA's, and when it was evaluated the energy and per-layer firing
    /// rates.
    fn tensorboard_epoch(&mut self, rec: &EpochRecord, evaluated: bool) -> Result<()> {
        let Some(tb) = &mut self.tb else {
            return Ok(());
        };
        let step = ((rec.epoch + 1) * self.nb) as u64;
        let mut s: Vec<(String, f64)> = [
            ("train/epoch", (rec.epoch + 1) as f64),
            ("train/epoch_loss", rec.train_loss),
            ("train/top1", rec.train_top1),
            ("train/epoch_images_per_s", rec.images_per_s),
            ("eval/loss", rec.eval_loss),
            ("eval/top1", rec.eval_top1),
            ("eval/top5", rec.eval_top5),
            ("eval_ema/loss", rec.ema_eval_loss),
            ("eval_ema/top1", rec.ema_eval_top1),
            ("eval_ema/top5", rec.ema_eval_top5),
        ]
        .into_iter()
        .map(|(t, v)| (t.to_string(), v))
        .collect();
        if let Some(rep) = self.energy.as_ref().filter(|_| evaluated) {
            s.push(("energy/mj_per_image".into(), rep.energy_mj));
            s.push(("energy/mean_firing_rate".into(), rep.mean_rate));
            s.push(("energy/sops_per_image".into(), rep.sops));
            for l in &rep.layers {
                s.push((format!("firing_rate/{}", l.name), l.rate));
            }
        }
        tb.scalars(step, &s)
    }

    /// The EMA model's evaluation into `rec` (`train.model_ema`), on rank 0's EMA weights.
    fn evaluate_ema(&mut self, epoch: usize, rec: &mut EpochRecord) -> Result<()> {
        let Some(mut ema) = self.ema.take() else {
            return Ok(());
        };
        if let Some(w) = self.world.clone().filter(|_| self.replicas.ranks > 1) {
            let m = crate::parallel::sync::broadcast_floats(&*w, ema.model().clone());
            ema.set_model(m);
        }
        let prefix = self
            .opts
            .progress
            .then(|| format!("eval ema {}/{}", epoch + 1, self.cfg.total_epochs()));
        let spec = EvalSpec {
            time_steps: self.cfg.model.time_steps,
            max_batches: self.cfg.train.max_batches,
            monitor: false,
            world: self.world(),
            progress: prefix.as_deref(),
        };
        let ev = evaluate_sharded(ema.model(), &self.test_loader, &self.base, &spec);
        self.ema = Some(ema);
        let ev = ev?;
        rec.ema_eval_loss = ev.loss;
        rec.ema_eval_top1 = ev.top1;
        rec.ema_eval_top5 = ev.top5;
        Ok(())
    }
}

/// `b` with its last sample left out when mixup is on and the batch is odd: a sample skipped as
/// undecodable (`data.on_error = "skip"`) left it so, and mixup pairs each sample with its
/// mirror.
fn even_for_mixup(
    mixup: &MixupConfig,
    epoch: usize,
    b: statten_data::loader::HostBatch,
) -> statten_data::loader::HostBatch {
    if mixup.active_at(epoch) && b.len() % 2 == 1 {
        rows(&b, 0, b.len() - 1)
    } else {
        b
    }
}

/// The epoch's line on stdout (`--verbose`).
fn print_epoch_line(rec: &EpochRecord, total: usize) {
    let eval = if rec.eval_top1.is_finite() {
        format!(
            "eval loss {:.4} top-1 {:.2}% top-5 {:.2}%",
            rec.eval_loss, rec.eval_top1, rec.eval_top5
        )
    } else {
        "(no eval this epoch)".into()
    };
    let eval = if rec.has_ema_eval() {
        format!("{eval}  ema top-1 {:.2}%", rec.ema_eval_top1)
    } else {
        eval
    };
    println!(
        "epoch {:>3}/{total}  train loss {:.4} top-1 {:.2}%  {eval}  lr {:.3e}  {:.1} img/s  {:.1}s",
        rec.epoch + 1,
        rec.train_loss,
        rec.train_top1,
        rec.lr,
        rec.images_per_s,
        rec.seconds
    );
}
