//! Training-mode BatchNorm on CPU as one operator with a hand-written backward.
//!
//! As composite tensor operations, BatchNorm keeps two full-size tensors per layer alive for the
//! backward (the centred input and the normalised one), and moves every element through a
//! dozen passes, with a layout copy on each side to sum per channel. This operator reads the
//! `[N, C, S]` input in place, per channel:
//!
//! - forward: the mean and the biased variance (two passes, summed in f64 with eight fixed
//!   lanes: more exact than the two-level f32 sums, and independent of the thread count), then
//!   `x̂ = (x − μ)·rstd` and `y = x̂·γ + β` in f32 with the composite form's operations;
//! - backward: `Σdy` and `Σdy·x̂` (f64), then `dx = γ·rstd·(dy − Σdy/M − x̂·Σdy·x̂/M)`,
//!   `dγ = Σdy·x̂`, `dβ = Σdy`.
//!
//! Only `x̂` (one full-size tensor) and the per-channel `rstd` are saved.
//!
//! Backends: `Flex` and `Autodiff` over it ([`fused_batch_norm_supported`]); elsewhere
//! [`crate::layers::TorchBatchNorm`] uses its composite or GPU path.

// Burn's `backend_extension` writes, for a build without `flex` (the one backend of this
// file's operator), a dispatch that takes the arguments and never uses them.
#![cfg_attr(not(feature = "flex"), allow(unused_variables))]

use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::checkpoint::strategy::CheckpointStrategy;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops, OpsKind};
use burn::backend::autodiff::Autodiff;
use burn::backend::tensor::FloatTensor;
use burn::backend::{backend_extension, Backend, Dispatch};
use burn::prelude::*;
use burn::tensor::DType;

/// Training-mode BatchNorm over dimension 1 of `[N, C, S]` tensors.
#[allow(clippy::type_complexity)]
#[backend_extension(Flex: cfg(feature = "flex"), Autodiff)]
pub trait FusedBatchNormOps: Backend {
    /// `(y, x̂, mean [C], biased var [C], rstd [C])`.
    fn bn_train_forward(
        x: FloatTensor<Self>,
        gamma: FloatTensor<Self>,
        beta: FloatTensor<Self>,
        eps: f64,
    ) -> (
        FloatTensor<Self>,
        FloatTensor<Self>,
        FloatTensor<Self>,
        FloatTensor<Self>,
        FloatTensor<Self>,
    );

    /// `(dx, dγ, dβ)` from `dy`, the saved `x̂`, `rstd` and `γ`.
    fn bn_train_backward(
        grad: FloatTensor<Self>,
        xhat: FloatTensor<Self>,
        rstd: FloatTensor<Self>,
        gamma: FloatTensor<Self>,
    ) -> (FloatTensor<Self>, FloatTensor<Self>, FloatTensor<Self>);

    /// `(y, mean, var)`, `y` differentiable with respect to `x`, `γ` and `β`; the statistics
    /// carry no gradient (they feed the running averages).
    fn bn_train(
        x: FloatTensor<Self>,
        gamma: FloatTensor<Self>,
        beta: FloatTensor<Self>,
        eps: f64,
    ) -> (FloatTensor<Self>, FloatTensor<Self>, FloatTensor<Self>);
}

/// Whether `x` is f32 on flex (autodiff or not), where [`fused_batch_norm`] runs.
pub fn fused_batch_norm_supported<const D: usize>(x: &Tensor<D>) -> bool {
    D >= 2 && x.dtype() == DType::F32 && crate::kernels::on_flex(&x.clone().into_dispatch().kind)
}

/// Training-mode BatchNorm of `x [N, C, ...]` with batch statistics: `(y, mean [C], biased
/// var [C])`.
pub fn fused_batch_norm<const D: usize>(
    x: Tensor<D>,
    gamma: Tensor<1>,
    beta: Tensor<1>,
    eps: f64,
) -> (Tensor<D>, Tensor<1>, Tensor<1>) {
    let dims = x.dims();
    let (n, c) = (dims[0], dims[1]);
    let s: usize = dims[2..].iter().product();
    let x3: Tensor<3> = x.reshape([n, c, s]);
    let (y, mean, var) = <Dispatch as FusedBatchNormOps>::bn_train(
        x3.into_dispatch(),
        gamma.into_dispatch(),
        beta.into_dispatch(),
        eps,
    );
    let y: Tensor<3> = Tensor::from_dispatch(y);
    (
        y.reshape(dims),
        Tensor::from_dispatch(mean),
        Tensor::from_dispatch(var),
    )
}

// ---------------------------------------------------------------------------------------------
// Autodiff.

#[derive(Debug)]
struct BnBackward;

impl<B: FusedBatchNormOps> Backward<B, 3> for BnBackward {
    /// `(x̂, rstd, γ)`.
    type State = (FloatTensor<B>, FloatTensor<B>, FloatTensor<B>);

    fn backward(self, ops: Ops<Self::State, 3>, grads: &mut Gradients, _: &mut Checkpointer) {
        let (xhat, rstd, gamma) = ops.state;
        let [node_x, node_g, node_b] = ops.parents;
        let grad = grads.consume::<B>(&ops.node);
        let (gx, gg, gb) = B::bn_train_backward(grad, xhat, rstd, gamma);
        if let Some(node) = node_x {
            grads.register::<B>(node.id, gx);
        }
        if let Some(node) = node_g {
            grads.register::<B>(node.id, gg);
        }
        if let Some(node) = node_b {
            grads.register::<B>(node.id, gb);
        }
    }
}

fn untracked<B: Backend>(t: FloatTensor<B>) -> FloatTensor<Autodiff<B>> {
    <Autodiff<B> as burn::backend::AutodiffBackend>::from_inner(t)
}

impl<B: FusedBatchNormOps, C: CheckpointStrategy> FusedBatchNormOps for Autodiff<B, C> {
    fn bn_train_forward(
        x: FloatTensor<Self>,
        gamma: FloatTensor<Self>,
        beta: FloatTensor<Self>,
        eps: f64,
    ) -> (
        FloatTensor<Self>,
        FloatTensor<Self>,
        FloatTensor<Self>,
        FloatTensor<Self>,
        FloatTensor<Self>,
    ) {
        let (y, xhat, mean, var, rstd) = B::bn_train_forward(
            x.into_primitive(),
            gamma.into_primitive(),
            beta.into_primitive(),
            eps,
        );
        (
            untracked::<B>(y),
            untracked::<B>(xhat),
            untracked::<B>(mean),
            untracked::<B>(var),
            untracked::<B>(rstd),
        )
    }

    fn bn_train_backward(
        grad: FloatTensor<Self>,
        xhat: FloatTensor<Self>,
        rstd: FloatTensor<Self>,
        gamma: FloatTensor<Self>,
    ) -> (FloatTensor<Self>, FloatTensor<Self>, FloatTensor<Self>) {
        let (gx, gg, gb) = B::bn_train_backward(
            grad.into_primitive(),
            xhat.into_primitive(),
            rstd.into_primitive(),
            gamma.into_primitive(),
        );
        (untracked::<B>(gx), untracked::<B>(gg), untracked::<B>(gb))
    }

    fn bn_train(
        x: FloatTensor<Self>,
        gamma: FloatTensor<Self>,
        beta: FloatTensor<Self>,
        eps: f64,
    ) -> (FloatTensor<Self>, FloatTensor<Self>, FloatTensor<Self>) {
        let prep = BnBackward
            .prepare::<C>([x.node(), gamma.node(), beta.node()])
            .compute_bound()
            .stateful();
        let gamma_inner = gamma.into_primitive();
        let (y, xhat, mean, var, rstd) = B::bn_train_forward(
            x.into_primitive(),
            gamma_inner.clone(),
            beta.into_primitive(),
            eps,
        );
        let y = match prep {
            OpsKind::Tracked(prep) => prep.finish((xhat, rstd, gamma_inner), y),
            OpsKind::UnTracked(prep) => prep.finish(y),
        };
        (y, untracked::<B>(mean), untracked::<B>(var))
    }
}
