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
