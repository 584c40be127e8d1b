//! Losses.

use burn::prelude::*;
use burn::tensor::activation::log_softmax;

/// Mean cross-entropy of `logits` `[B, K]` against integer `targets` `[B]`, with label smoothing
/// `eps` as timm's `LabelSmoothingCrossEntropy`: `(1−ε)·NLL + ε·mean_k(−log p_k)`.
pub fn cross_entropy(logits: Tensor<2>, targets: Tensor<1, Int>, eps: f64) -> Tensor<1> {
    let [b, _k] = logits.dims();
    let logp = log_softmax(logits, 1);
    let nll = logp
        .clone()
        .gather(1, targets.reshape([b, 1]))
        .neg()
        .reshape([b]);
    let loss = if eps > 0.0 {
        let smooth = logp.mean_dim(1).neg().reshape([b]);
        nll.mul_scalar(1.0 - eps) + smooth.mul_scalar(eps)
    } else {
        nll
    };
    loss.mean()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cross_entropy_with_label_smoothing_matches_hand_computation() {
        let dev = Device::flex();
        let logits: Tensor<2> = Tensor::from_floats([[1.0, 2.0, 0.5], [0.0, 0.0, 3.0]], &dev);
        let targets: Tensor<1, Int> = Tensor::from_ints([1, 0], &dev);
        let lse = |r: [f64; 3]| r.iter().map(|v| v.exp()).sum::<f64>().ln();
        let rows = [[1.0, 2.0, 0.5], [0.0, 0.0, 3.0]];
        let (t, eps) = ([1usize, 0], 0.1);
        let mut want = 0.0;
        for (r, &ti) in rows.iter().zip(&t) {
            let l = lse(*r);
            let nll = l - r[ti];
            let smooth = r.iter().map(|v| l - v).sum::<f64>() / 3.0;
            want += (1.0 - eps) * nll + eps * smooth;
        }
        want /= 2.0;
        let got = cross_entropy(logits, targets, eps).into_scalar::<f32>() as f64;
        assert!((got - want).abs() < 1e-6, "{got} vs {want}");
    }
}
