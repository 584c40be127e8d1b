//! Top-k accuracy and running means.

use burn::prelude::*;

/// Number of rows of `logits` `[B, K]` whose target is among the `k` largest logits (ties are
/// counted against: a target ranks after every strictly larger logit and every equal logit
/// of a lower index, as `torch.topk` on CPU).
pub fn topk_correct(logits: &[f32], k_classes: usize, targets: &[usize], k: usize) -> usize {
    logits
        .chunks_exact(k_classes)
        .zip(targets)
        .filter(|(row, &t)| {
            let v = row[t];
            let rank = row
                .iter()
                .enumerate()
                .filter(|&(j, &x)| x > v || (x == v && j < t))
                .count();
            rank < k
        })
        .count()
}

/// Top-1 and top-5 correct counts of a logits tensor.
pub fn top1_top5(logits: Tensor<2>, targets: &[usize]) -> (usize, usize) {
    let [_, k] = logits.dims();
    let v: Vec<f32> = logits.into_data().iter::<f32>().collect();
    (
        topk_correct(&v, k, targets, 1),
        topk_correct(&v, k, targets, 5.min(k)),
    )
}

/// A running mean weighted by counts.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Mean {
    sum: f64,
    n: f64,
}

impl Mean {
    /// Add `value` with weight `n`.
    pub fn add(&mut self, value: f64, n: usize) {
        self.sum += value * n as f64;
        self.n += n as f64;
    }

    /// A mean from its parts, as [`Mean::parts`] gives them.
    pub fn from_parts(sum: f64, n: f64) -> Self {
        Self { sum, n }
    }

    /// `(weighted sum, total weight)`.
    pub fn parts(&self) -> (f64, f64) {
        (self.sum, self.n)
    }

    /// The mean (0 when empty).
    pub fn get(&self) -> f64 {
        if self.n > 0.0 {
            self.sum / self.n
        } else {
            0.0
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn topk_counts() {
        let logits = [0.1, 0.9, 0.0, 0.5, 0.2, 0.3];
        assert_eq!(topk_correct(&logits, 3, &[1, 2], 1), 1);
        assert_eq!(topk_correct(&logits, 3, &[1, 2], 2), 2);
        assert_eq!(topk_correct(&logits, 3, &[0, 1], 1), 0);
    }
}
