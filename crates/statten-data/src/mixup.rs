//! timm's batch-mode Mixup / CutMix with label smoothing (`timm.data.mixup.Mixup`,
//! `mode='batch'`): one λ per batch, each sample mixed with its mirror in the batch
//! (`x.flip(0)`), targets `λ·onehot_ε(y) + (1 − λ)·onehot_ε(y.flip(0))` with
//! `off = ε/K`, `on = 1 − ε + ε/K`.

use serde::{Deserialize, Serialize};

use crate::loader::HostBatch;
use crate::rng::Rng;

/// Mixup / CutMix settings (the reference's `mixup`, `cutmix`, `mixup_prob`,
/// `mixup_switch_prob`, `smoothing`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MixupConfig {
    /// Mixup α (0 = off).
    pub mixup_alpha: f64,
    /// CutMix α (0 = off).
    pub cutmix_alpha: f64,
    /// Probability that a batch is mixed at all.
    pub prob: f64,
    /// Probability of CutMix instead of Mixup when both are on.
    pub switch_prob: f64,
    /// Label smoothing ε folded into the targets.
    pub label_smoothing: f64,
    /// Epoch from which mixing stops (0 = never; the CIFAR recipe: 200).
    pub off_epoch: usize,
}

impl Default for MixupConfig {
    fn default() -> Self {
        Self {
            mixup_alpha: 0.0,
            cutmix_alpha: 0.0,
            prob: 1.0,
            switch_prob: 0.5,
            label_smoothing: 0.1,
            off_epoch: 0,
        }
    }
}

impl MixupConfig {
    /// Whether any mixing is configured.
    pub fn active(&self) -> bool {
        (self.mixup_alpha > 0.0 || self.cutmix_alpha > 0.0) && self.prob > 0.0
    }

    /// Whether mixing applies at `epoch`.
    pub fn active_at(&self, epoch: usize) -> bool {
        self.active() && (self.off_epoch == 0 || epoch < self.off_epoch)
    }
}

/// What was done to a batch.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct MixInfo {
    /// The effective λ (after CutMix's area correction).
    pub lam: f64,
    /// Whether CutMix was used.
    pub cutmix: bool,
}

/// Smoothed one-hot targets `[B·K]` for `labels`.
pub fn smooth_one_hot(labels: &[usize], k: usize, eps: f64) -> Vec<f32> {
    let off = eps / k as f64;
    let on = 1.0 - eps + off;
    let mut t = vec![off as f32; labels.len() * k];
    for (i, &l) in labels.iter().enumerate() {
        t[i * k + l] = on as f32;
    }
    t
}

/// Mix `batch` in place and return its soft targets `[B·K]` (row-major `[B, K]`).
///
/// The batch size must be even (as timm asserts); an odd batch is an error naming it.
pub fn mix_batch(
    batch: &mut HostBatch,
    k: usize,
    cfg: &MixupConfig,
    rng: &mut Rng,
) -> Result<(Vec<f32>, MixInfo), String> {
    let b = batch.len();
    if !b.is_multiple_of(2) {
        return Err(format!(
            "mixup needs an even batch size, got {b} (set loader drop_last or an even batch_size)"
        ));
    }
    let mut lam = 1.0;
    let mut cutmix = false;
    if cfg.active() && rng.uniform() < cfg.prob {
        if cfg.mixup_alpha > 0.0 && cfg.cutmix_alpha > 0.0 {
            cutmix = rng.uniform() < cfg.switch_prob;
            lam = if cutmix {
                rng.beta(cfg.cutmix_alpha, cfg.cutmix_alpha)
            } else {
                rng.beta(cfg.mixup_alpha, cfg.mixup_alpha)
            };
        } else if cfg.mixup_alpha > 0.0 {
            lam = rng.beta(cfg.mixup_alpha, cfg.mixup_alpha);
        } else {
            cutmix = true;
            lam = rng.beta(cfg.cutmix_alpha, cfg.cutmix_alpha);
        }
    }
    let per = batch.data.len() / b.max(1);
    let shape = &batch.shape;
    let (h, w) = (shape[shape.len() - 2], shape[shape.len() - 1]);
    if lam < 1.0 {
        let src = batch.data.clone();
        if cutmix {
            let ratio = (1.0 - lam).sqrt();
            let (ch, cw) = ((h as f64 * ratio) as usize, (w as f64 * ratio) as usize);
            let cy = rng.below(h) as i64;
            let cx = rng.below(w) as i64;
            let clip = |v: i64, hi: usize| v.clamp(0, hi as i64) as usize;
            let (yl, yh) = (clip(cy - ch as i64 / 2, h), clip(cy + ch as i64 / 2, h));
            let (xl, xh) = (clip(cx - cw as i64 / 2, w), clip(cx + cw as i64 / 2, w));
            for i in 0..b {
                let j = b - 1 - i;
                for plane in 0..per / (h * w) {
                    for y in yl..yh {
                        for x in xl..xh {
                            let o = plane * h * w + y * w + x;
                            batch.data[i * per + o] = src[j * per + o];
                        }
                    }
                }
            }
            lam = 1.0 - ((yh - yl) * (xh - xl)) as f64 / (h * w) as f64;
        } else {
            let (l, r) = (lam as f32, (1.0 - lam) as f32);
            for i in 0..b {
                let j = b - 1 - i;
                for o in 0..per {
                    batch.data[i * per + o] = src[i * per + o] * l + src[j * per + o] * r;
                }
            }
        }
    }
    let y1 = smooth_one_hot(&batch.labels, k, cfg.label_smoothing);
    let flipped: Vec<usize> = batch.labels.iter().rev().copied().collect();
    let y2 = smooth_one_hot(&flipped, k, cfg.label_smoothing);
    let t = y1
        .iter()
        .zip(&y2)
        .map(|(a, c)| (*a as f64 * lam + *c as f64 * (1.0 - lam)) as f32)
        .collect();
    Ok((t, MixInfo { lam, cutmix }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn batch(b: usize) -> HostBatch {
        HostBatch {
            data: (0..b * 2 * 4 * 4).map(|v| v as f32).collect(),
            shape: vec![b, 2, 4, 4],
            labels: (0..b).map(|i| i % 3).collect(),
            indices: (0..b).collect(),
        }
    }

    #[test]
    fn targets_sum_to_one_for_mixup_and_cutmix() {
        let mut rng = Rng::new(4);
        for cfg in [
            MixupConfig {
                mixup_alpha: 0.5,
                ..Default::default()
            },
            MixupConfig {
                cutmix_alpha: 1.0,
                ..Default::default()
            },
            MixupConfig {
                mixup_alpha: 0.2,
                cutmix_alpha: 1.0,
                prob: 0.6,
                ..Default::default()
            },
        ] {
            for _ in 0..20 {
                let mut hb = batch(6);
                let (t, info) = mix_batch(&mut hb, 3, &cfg, &mut rng).unwrap();
                assert!(info.lam > 0.0 && info.lam <= 1.0);
                for row in t.chunks(3) {
                    let s: f32 = row.iter().sum();
                    assert!((s - 1.0).abs() < 1e-5, "{row:?}");
                }
            }
        }
    }

    #[test]
    fn mixup_is_a_convex_combination_with_the_mirror() {
        let cfg = MixupConfig {
            mixup_alpha: 0.5,
            label_smoothing: 0.0,
            ..Default::default()
        };
        let mut hb = batch(4);
        let orig = hb.clone();
        let (t, info) = mix_batch(&mut hb, 3, &cfg, &mut Rng::new(7)).unwrap();
        let per = 32;
        let l = info.lam as f32;
        assert!(
            (hb.data[5] - (orig.data[5] * l + orig.data[3 * per + 5] * (1.0 - l))).abs() < 1e-3
        );
        // Sample 0 (label 0) mixed with sample 3 (label 0): all mass on class 0.
        assert!((t[0] - 1.0).abs() < 1e-6);
    }

    #[test]
    fn odd_batches_are_refused() {
        let cfg = MixupConfig {
            mixup_alpha: 0.5,
            ..Default::default()
        };
        assert!(mix_batch(&mut batch(3), 3, &cfg, &mut Rng::new(0)).is_err());
    }
}
