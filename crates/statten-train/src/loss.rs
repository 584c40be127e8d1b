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

/// timm `SoftTargetCrossEntropy`: `mean_b Σ_k −t_bk · log p_bk` (mixup targets).
pub fn soft_target_cross_entropy(logits: Tensor<2>, targets: Tensor<2>) -> Tensor<1> {
    let logp = log_softmax(logits, 1);
    (targets * logp).sum_dim(1).neg().mean()
}

/// The reference's `TET_loss` on per-timestep logits `[T, B, K]`:
/// `(1 − λ)·mean_t CE_ε(out[t], y) + λ·MSE(out, means)`, the MSE over every element against
/// the constant `means`.
pub fn tet_loss(
    out: Tensor<3>,
    targets: Tensor<1, Int>,
    eps: f64,
    lambda: f64,
    means: f64,
) -> Tensor<1> {
    let [t, b, k] = out.dims();
    let mut ce: Option<Tensor<1>> = None;
    for i in 0..t {
        let o = out.clone().slice([i..i + 1, 0..b, 0..k]).reshape([b, k]);
        let l = cross_entropy(o, targets.clone(), eps);
        ce = Some(match ce {
            Some(a) => a + l,
            None => l,
        });
    }
    let ce = ce.expect("T ≥ 1").div_scalar(t as f64);
    if lambda == 0.0 {
        return ce;
    }
    let mse = out.sub_scalar(means).powi_scalar(2).mean();
    ce.mul_scalar(1.0 - lambda) + mse.mul_scalar(lambda)
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

    #[test]
    fn soft_targets_equal_label_smoothing_for_one_hot_mixtures() {
        // Smoothed one-hot soft targets give the label-smoothing loss.
        let dev = Device::flex();
        let logits: Tensor<2> = Tensor::from_floats([[1.0, 2.0, 0.5], [0.0, 0.0, 3.0]], &dev);
        let eps = 0.1;
        let (off, on) = (eps / 3.0, 1.0 - eps + eps / 3.0);
        let soft: Tensor<2> = Tensor::from_floats([[off, on, off], [on, off, off]], &dev);
        let a = soft_target_cross_entropy(logits.clone(), soft).into_scalar::<f32>();
        let b = cross_entropy(logits, Tensor::from_ints([1, 0], &dev), eps).into_scalar::<f32>();
        assert!((a - b).abs() < 1e-6, "{a} vs {b}");
    }

    #[test]
    fn tet_is_mean_ce_over_time_plus_mse() {
        let dev = Device::flex();
        let o: Tensor<3> = Tensor::from_floats([[[1.0, 2.0]], [[0.0, -1.0]]], &dev);
        let y: Tensor<1, Int> = Tensor::from_ints([1], &dev);
        let ce = |r: [f64; 2], t: usize| (r[0].exp() + r[1].exp()).ln() - r[t];
        let mean_ce = (ce([1.0, 2.0], 1) + ce([0.0, -1.0], 1)) / 2.0;
        let mse = ((1.0f64 - 1.0).powi(2) + (2.0f64 - 1.0).powi(2) + 1.0 + 4.0) / 4.0;
        let want = 0.999 * mean_ce + 0.001 * mse;
        let got = tet_loss(o, y, 0.0, 0.001, 1.0).into_scalar::<f32>() as f64;
        assert!((got - want).abs() < 1e-6, "{got} vs {want}");
    }
}
