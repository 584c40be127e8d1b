//! Checkpoints of a run (rank 0 alone writes them): `last` with the position inside the
//! epoch, and at an epoch's end `last`, `best`, `best_weights` and `epoch_NNNN` when due.

use std::time::Instant;

use super::Trainer;
use crate::checkpoint::{self, CheckpointMeta, PartialEpoch};
use crate::config::BestMetric;
use crate::error::Result;

impl Trainer<'_> {
    /// The checkpoint's metadata: where the run is and what it has recorded.
    fn meta(
        &self,
        epochs_done: usize,
        batches_done: usize,
        partial: Option<PartialEpoch>,
    ) -> CheckpointMeta {
        CheckpointMeta {
            version: 1,
            epochs_done,
            best_top1: self.best,
            history: self.history.clone(),
            optim_steps: Default::default(),
            config: self.cfg.to_toml(),
            batches_done,
            partial,
            skipped_steps: self.skipped_steps,
            optimizer: self.opt.kind_name().to_string(),
            ema_updates: None,
            loss_scale: self.loss_scale.map(|s| s.to_row()),
        }
    }

    /// `last`: the model, the EMA model when there is one, the optimizer and `meta`.
    fn save_last(&self, meta: &CheckpointMeta) -> Result<()> {
        let ema = self.ema.as_ref().map(|e| (e.model(), e.updates()));
        checkpoint::save_with_ema(
            &self.dir.last_checkpoint(),
            self.model(),
            ema,
            &self.opt,
            meta,
        )
    }

    /// `last` with the position inside the epoch.
    pub(super) fn save_mid_epoch(
        &mut self,
        epoch: usize,
        done: usize,
        stats: PartialEpoch,
    ) -> Result<()> {
        if self.replicas.rank > 0 {
            return Ok(());
        }
        let meta = self.meta(epoch, done, Some(stats));
        self.save_last(&meta)?;
        self.last_checkpoint_at = Instant::now();
        Ok(())
    }

    /// `last`, and `best`, `best_weights` and `epoch_NNNN` when due.
    pub(super) fn save_epoch_end(&mut self, epochs_done: usize, improved: bool) -> Result<()> {
        if self.replicas.rank > 0 {
            return Ok(());
        }
        let meta = self.meta(epochs_done, 0, None);
        let last = self.dir.last_checkpoint();
        self.save_last(&meta)?;
        self.last_checkpoint_at = Instant::now();
        if improved {
            checkpoint::copy(&last, &self.dir.best_checkpoint())?;
            // The weights of the model whose figure picked it.
            let best = match (self.cfg.train.best_metric, &self.ema) {
                (BestMetric::EmaTop1, Some(ema)) => ema.model(),
                _ => self.model(),
            };
            statten_core::checkpoint::save_reference(best, &self.dir.best_weights())?;
        }
        let every = self.cfg.train.checkpoint_every;
        if every > 0 && epochs_done.is_multiple_of(every) {
            checkpoint::copy(&last, &self.dir.epoch_checkpoint(epochs_done))?;
            self.dir
                .prune_epoch_checkpoints(self.cfg.train.keep_checkpoints)?;
        }
        Ok(())
    }
}
