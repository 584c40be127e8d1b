//! timm's `CosineLRScheduler` as the reference uses it: `t_in_epochs = True`,
//! `warmup_prefix = False`, `cycle_limit = 1`, `k_decay = 1`, no noise, stepped once per epoch;
//! the run lasts `epochs + cooldown_epochs` epochs (timm `create_scheduler`).

use serde::{Deserialize, Serialize};

/// The `[schedule]` table.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ScheduleConfig {
    /// Cosine period in epochs (`epochs` of the timm config).
    pub epochs: usize,
    /// Linear warm-up epochs.
    pub warmup_epochs: usize,
    /// Learning rate at epoch 0 of the warm-up.
    pub warmup_lr: f64,
    /// Floor of the cosine and the cooldown learning rate.
    pub min_lr: f64,
    /// Epochs at `min_lr` after the cosine.
    pub cooldown_epochs: usize,
    /// Update the learning rate every iteration (fractional epoch) instead of every epoch.
    pub per_iteration: bool,
    /// Fit the schedule to `train.epochs` when that is set: `epochs` becomes `train.epochs −
    /// cooldown_epochs` (and the cooldown 0 where the run is not longer than it), so that one
    /// setting is the run's length and the schedule's (as timm's `--epochs`). `false` keeps `epochs` as given while the run lasts `train.epochs` (ending
    /// before the schedule does, or running on at `min_lr`); the dry run shows both.
    pub fit_to_run: bool,
}

impl Default for ScheduleConfig {
    fn default() -> Self {
        Self {
            epochs: 200,
            warmup_epochs: 20,
            warmup_lr: 1e-6,
            min_lr: 1e-5,
            cooldown_epochs: 10,
            per_iteration: false,
            fit_to_run: true,
        }
    }
}

impl ScheduleConfig {
    /// Total epochs of a run.
    pub fn total_epochs(&self) -> usize {
        self.epochs + self.cooldown_epochs
    }

    /// The learning rate at (possibly fractional) epoch `t` for peak `lr`: timm's `_get_lr(t)`.
    pub fn lr_at(&self, lr: f64, t: f64) -> f64 {
        let w = self.warmup_epochs as f64;
        if t < w {
            return self.warmup_lr + t * (lr - self.warmup_lr) / w;
        }
        let t_i = self.epochs as f64;
        if t_i <= 0.0 || t >= t_i {
            return self.min_lr;
        }
        self.min_lr + 0.5 * (lr - self.min_lr) * (1.0 + (std::f64::consts::PI * t / t_i).cos())
    }

    /// The learning rate of iteration `iter` of `iters` in epoch `epoch`.
    pub fn lr_for(&self, lr: f64, epoch: usize, iter: usize, iters: usize) -> f64 {
        if self.per_iteration && iters > 0 {
            self.lr_at(lr, epoch as f64 + iter as f64 / iters as f64)
        } else {
            self.lr_at(lr, epoch as f64)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cifar_recipe_matches_timm_at_the_checked_epochs() {
        // CIFAR: lr 3e-4, warmup 20 from 1e-6, min 1e-5, 200 + 10 epochs. Values computed with
        // timm 0.6.12's formula by hand.
        let s = ScheduleConfig::default();
        let lr = 3e-4;
        let cos =
            |e: f64| 1e-5 + 0.5 * (3e-4 - 1e-5) * (1.0 + (std::f64::consts::PI * e / 200.0).cos());
        let cases = [
            (0.0, 1e-6),
            (19.0, 1e-6 + 19.0 * (3e-4 - 1e-6) / 20.0),
            (20.0, cos(20.0)),
            (100.0, 1.55e-4),
            (199.0, cos(199.0)),
            (205.0, 1e-5),
        ];
        for (e, want) in cases {
            let got = s.lr_at(lr, e);
            assert!((got - want).abs() < 1e-15, "epoch {e}: {got} vs {want}");
        }
        assert!((s.lr_at(lr, 19.0) - 2.8505e-4).abs() < 1e-12);
        assert!(
            (s.lr_at(lr, 20.0) - 2.9290319e-4).abs() < 1e-10,
            "{}",
            s.lr_at(lr, 20.0)
        );
        assert_eq!(s.total_epochs(), 210);
    }
}
