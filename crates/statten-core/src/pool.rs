//! The models' 3×3 max pools (padding 1, stride 2 in the stems, stride 1 as the DVS attention's
//! max filter) on CPU as one operator with a hand-written backward.
//!
//! Burn's flex max pool is written for any kernel, stride, padding and dilation in three
//! dimensions: per output element it recomputes the window's bounds with integer divisions, and
//! it saves 64-bit indices. This one knows its window: per plane the row and column bounds are
//! computed once, and it saves 32-bit indices. The semantics are Burn's and PyTorch's: padding
//! acts as −∞, the window is scanned row by row, the first maximum wins a tie (spikes tie all
//! the time, and the gradient goes to the winner), and a NaN always wins. The backward adds each
//! output gradient to its winner in output order, as Burn does, so gradients are bit-equal.
//!
//! Backends: `Flex` and `Autodiff` over it ([`max_pool3_supported`]); elsewhere [`max_pool3`]
//! calls Burn's pool.

// Burn's `backend_extension` writes, for a build without `flex` (the one backend of this
// file's operator), a dispatch that takes the arguments and never uses them.
#![cfg_attr(not(feature = "flex"), allow(unused_variables))]

use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::checkpoint::strategy::CheckpointStrategy;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops, OpsKind};
use burn::backend::autodiff::Autodiff;
use burn::backend::tensor::{FloatTensor, IntTensor};
use burn::backend::{backend_extension, Backend, Dispatch, TensorMetadata};
use burn::prelude::*;
use burn::tensor::DType;

/// 3×3 max pooling of `[N, C, H, W]` tensors, padding 1, floor mode.
#[backend_extension(Flex: cfg(feature = "flex"), Autodiff)]
pub trait MaxPool3Ops: Backend {
    /// `(y, winners)`: `y [N, C, OH, OW]` and, per output, the flat index `ih·W + iw` of its
    /// window's winner within the input plane (i32).
    fn max_pool3_with_indices(
        x: FloatTensor<Self>,
        stride: usize,
    ) -> (FloatTensor<Self>, IntTensor<Self>);

    /// `dx [N, C, h, w]` from the output gradient and the winners.
    fn max_pool3_backward(
        grad: FloatTensor<Self>,
        winners: IntTensor<Self>,
        h: usize,
        w: usize,
    ) -> FloatTensor<Self>;

    /// `y`, differentiable with respect to `x`.
    fn max_pool3(x: FloatTensor<Self>, stride: usize) -> FloatTensor<Self>;
}

/// Whether [`max_pool3`] runs `x`: f32 on flex (autodiff or not), no empty dimension, planes
/// within i32 indexing.
pub fn max_pool3_supported(x: &Tensor<4>) -> bool {
    let [n, c, h, w] = x.dims();
    n * c * h * w > 0
        && h.checked_mul(w).is_some_and(|p| p <= i32::MAX as usize)
        && x.dtype() == DType::F32
        && crate::kernels::on_flex(&x.clone().into_dispatch().kind)
}

/// `MaxPool2d(kernel 3, stride, padding 1)` of `x [N, C, H, W]`: the operator where
/// [`max_pool3_supported`], Burn's pool elsewhere (same semantics).
pub fn max_pool3(x: Tensor<4>, stride: usize) -> Tensor<4> {
    assert!(stride > 0, "max pool: stride 0");
    if !max_pool3_supported(&x) {
        return burn::tensor::module::max_pool2d(
            x,
            burn::tensor::ops::MaxPoolOptions::new([3, 3])
                .with_stride([stride, stride])
                .with_padding([1, 1]),
        );
    }
    Tensor::from_dispatch(<Dispatch as MaxPool3Ops>::max_pool3(
        x.into_dispatch(),
        stride,
    ))
}

// ---------------------------------------------------------------------------------------------
// Autodiff: the forward saves the winners only.

#[derive(Debug)]
struct MaxPool3Backward;

impl<B: MaxPool3Ops> Backward<B, 1> for MaxPool3Backward {
    /// `(winners, h, w)`.
    type State = (IntTensor<B>, usize, usize);

    fn backward(self, ops: Ops<Self::State, 1>, grads: &mut Gradients, _: &mut Checkpointer) {
        let (winners, h, w) = ops.state;
        let [node_x] = ops.parents;
        let grad = grads.consume::<B>(&ops.node);
        if let Some(node) = node_x {
            grads.register::<B>(node.id, B::max_pool3_backward(grad, winners, h, w));
        }
    }
}

impl<B: MaxPool3Ops, C: CheckpointStrategy> MaxPool3Ops for Autodiff<B, C> {
    fn max_pool3_with_indices(
        x: FloatTensor<Self>,
        stride: usize,
    ) -> (FloatTensor<Self>, IntTensor<Self>) {
        let (y, winners) = B::max_pool3_with_indices(x.into_primitive(), stride);
        (
            <Autodiff<B> as burn::backend::AutodiffBackend>::from_inner(y),
            winners,
        )
    }

    fn max_pool3_backward(
        grad: FloatTensor<Self>,
        winners: IntTensor<Self>,
        h: usize,
        w: usize,
    ) -> FloatTensor<Self> {
        <Autodiff<B> as burn::backend::AutodiffBackend>::from_inner(B::max_pool3_backward(
            grad.into_primitive(),
            winners,
            h,
            w,
        ))
    }

    fn max_pool3(x: FloatTensor<Self>, stride: usize) -> FloatTensor<Self> {
        let shape = x.shape();
        let (h, w) = (shape[2], shape[3]);
        let prep = MaxPool3Backward
            .prepare::<C>([x.node()])
            .compute_bound()
            .stateful();
        match prep {
            OpsKind::Tracked(prep) => {
                let (y, winners) = B::max_pool3_with_indices(x.into_primitive(), stride);
                prep.finish((winners, h, w), y)
            }
            OpsKind::UnTracked(prep) => {
                prep.finish(B::max_pool3_with_indices(x.into_primitive(), stride).0)
            }
        }
    }
}
