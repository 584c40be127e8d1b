//! Stride-1, same-padded `k×k` convolutions on CPU: a backward of two large matrix products, and
//! a forward and weight gradient over the non-zeros of spike inputs.
//!
//! Burn's CPU backend computes a convolution's weight gradient as another convolution with batch
//! and channels swapped: for a 3×3 layer that is a product with only 9 output columns per input
//! channel, which runs in gemm's one-row edge kernel (a fifth of a CIFAR-10 training step's
//! time), behind a strided copy of the whole input. Its input gradient is a transposed
//! convolution. For a dense input this operator keeps Burn's forward (so outputs are bit-equal
//! to `Conv2d::forward`) and replaces the backward: for a chunk of samples at a time,
//!
//! - `cols [C·k·k, P]` (im2col of the saved input; `P` = positions in the chunk) and the output
//!   gradient as `dY [Co, P]`;
//! - `dW += dY · colsᵀ`, one product of shape `Co × C·k·k × P`;
//! - `dcols = Wᵀ · dY`, then col2im adds each column back into `dx` (skipped when the input
//!   needs no gradient, as for the first layer).
//!
//! Chunks hold about 4 M floats of columns, so the extra memory is bounded (16 MB) whatever the
//! batch. Every sum has a fixed order: results do not depend on the thread count.
//!
//! When few enough of the inputs are non-zero — spikes — the forward and the weight gradient run
//! over the non-zeros only (`kernels::cpu::conv::sparse`): a row of additions per non-zero
//! instead of a multiply-add per element. The output then equals Burn's to rounding (another
//! summation order); the choice depends on the data alone, so runs stay reproducible.
//!
//! Every kernel taken by default keeps the accuracy invariant of [`algorithm`] (each output
//! within `γ_n · Σ|terms|` of the float64 sum, so exact zeros stay exact). Two others are
//! chosen with [`ConvAlgorithm`] (`train.conv_algorithm`, `--conv-algorithm`, or
//! [`with_algorithm`] around a step): `winograd`, Winograd's F(2×2, 3×3) for both gradients of
//! 3×3 layers with 16 channels or more on each side (`kernels::cpu::conv::winograd`; 2.25×
//! fewer multiply-adds, **not reference-exact**), and `float64`, every sum in float64
//! (`kernels::cpu::conv::float64`; the oracle of the whole-model checks). The CPU kernels are
//! in `kernels::cpu::conv`; this file holds the operator, its backward and the GPU path.
//!
//! Backends: `Flex` and `Autodiff` over it. On CubeCL devices (wgpu) a `k×k` convolution runs
//! as im2col and one matrix product in tensor operations ([`gemm_conv`]); other devices use
//! Burn's `Conv2d::forward` ([`same_conv_supported`] and [`gemm_conv_plan`] tell which).

// Burn's `backend_extension` writes, for a build without `flex` (the one backend of this
// file's operator), a dispatch that takes the arguments and never uses them.
#![cfg_attr(not(feature = "flex"), allow(unused_variables))]

pub mod accuracy;
pub mod algorithm;
pub use algorithm::{with_algorithm, ConvAlgorithm};

use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::checkpoint::strategy::CheckpointStrategy;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops, OpsKind};
use burn::backend::autodiff::Autodiff;
use burn::backend::tensor::FloatTensor;
use burn::backend::{backend_extension, Backend, Dispatch};
use burn::nn::conv::Conv2d;
use burn::nn::PaddingConfig2d;
use burn::prelude::*;
use burn::tensor::ops::PadMode;
use burn::tensor::DType;

/// A stride-1 convolution with zero padding `k/2` on every side (`k` odd), no bias, one group.
#[backend_extension(Flex: cfg(feature = "flex"), Autodiff)]
pub trait SameConvOps: Backend {
    /// `conv(x, weight)`: `x [N, C, H, W]`, `weight [Co, C, k, k]`, output `[N, Co, H, W]`.
    fn same_conv(x: FloatTensor<Self>, weight: FloatTensor<Self>) -> FloatTensor<Self>;

    /// `(dL/dx, dL/dweight)` from `grad = dL/dy`. `dL/dx` is computed only when `need_x` (else a
    /// one-element zero tensor). `chunk` is the number of samples per chunk (0: chosen from the
    /// shapes).
    fn same_conv_backward(
        x: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        grad: FloatTensor<Self>,
        need_x: bool,
        chunk: usize,
    ) -> (FloatTensor<Self>, FloatTensor<Self>);
}

/// Whether `conv` has stride 1, dilation 1, one group and a square odd kernel with padding `k/2`
/// (every convolution of the SDT and Spikformer models).
pub fn same_shaped(conv: &Conv2d) -> bool {
    let [kh, kw] = conv.kernel_size;
    let p = kh / 2;
    let padded = match conv.padding {
        PaddingConfig2d::Same => true,
        PaddingConfig2d::Explicit(t, l, b, r) => [t, l, b, r] == [p; 4],
        PaddingConfig2d::Valid => kh == 1,
    };
    kh == kw
        && kh % 2 == 1
        && conv.stride == [1, 1]
        && conv.dilation == [1, 1]
        && conv.groups == 1
        && padded
}

/// Whether `conv` applied to `x` can run as [`same_conv`]: `x` is f32 on flex (autodiff or not)
/// and `conv` is [`same_shaped`].
pub fn same_conv_supported(conv: &Conv2d, x: &Tensor<4>) -> bool {
    same_shaped(conv)
        && x.dtype() == DType::F32
        && !crate::precision::current().is_half()
        && crate::kernels::on_flex(&x.clone().into_dispatch().kind)
}

/// The `max_cols` [`gemm_conv`] runs `conv` on `x` with, or `None` where it does not apply:
/// `conv` is [`same_shaped`] with a kernel larger than 1×1, `x` is on a CubeCL device (wgpu),
/// one sample's columns and output fit [`gemm_conv_max_cols`], and `STATTEN_BURN_CONV=1` does
/// not ask for Burn's convolution there. In half precision ([`crate::precision`]) it applies
/// to every [`same_shaped`] convolution on every device, 1×1 included: the product is where
/// the half format is taken.
pub fn gemm_conv_plan(conv: &Conv2d, x: &Tensor<4>) -> Option<usize> {
    static BURN_CONV: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    if !same_shaped(conv) {
        return None;
    }
    if !crate::precision::current().is_half() {
        let burn_conv =
            *BURN_CONV.get_or_init(|| std::env::var("STATTEN_BURN_CONV").is_ok_and(|v| v == "1"));
        if burn_conv
            || conv.kernel_size[0] <= 1
            || !crate::kernels::on_cube(&x.clone().into_dispatch().kind)
        {
            return None;
        }
    }
    let [_, c, h, w] = x.dims();
    let max_cols = gemm_conv_max_cols(&x.device());
    (gemm_floats_per_sample(c, conv.weight.dims()[0], conv.kernel_size[0], h, w) <= max_cols)
        .then_some(max_cols)
}

/// Floats of columns or of output, whichever is more, that one sample of a `C → Co`, `k×k`
/// [`gemm_conv`] at `H×W` takes.
pub fn gemm_floats_per_sample(c: usize, co: usize, k: usize, h: usize, w: usize) -> usize {
    (c * k * k).max(co) * h * w
}

/// Floats one [`gemm_conv`] product may take for its columns or its output: half the largest
/// buffer the device allocates (wgpu: 2 GiB on most GPUs, 128 MiB on Mesa's software Vulkan),
/// at most 1 GiB of f32, and 1 GiB off GPUs.
pub fn gemm_conv_max_cols(device: &Device) -> usize {
    let cap = 1usize << 28;
    match max_buffer_bytes(device) {
        Some(bytes) => ((bytes / 4 / 2) as usize).clamp(1, cap),
        None => cap,
    }
}

/// Output positions (columns) one [`gemm_conv`] product takes at most.
const MAX_GEMM_COLUMNS: usize = 1 << 19;

/// The largest buffer, in bytes, the CubeCL device `device` allocates; `None` for other devices.
pub(crate) fn max_buffer_bytes(device: &Device) -> Option<u64> {
    #[cfg(feature = "wgpu")]
    {
        crate::gpu::with_cube(device, |props, _| props.memory.max_page_size)
    }
    #[cfg(not(feature = "wgpu"))]
    {
        let _ = device;
        None
    }
}

/// A [`same_shaped`] convolution (no bias) as im2col and one matrix product, in tensor
/// operations alone, so that autodiff differentiates it: `cols [C·k·k, N·H·W]` gathered from
/// `k·k` shifted slices of the zero-padded input, then `W [Co, C·k·k] · cols`. On GPUs this
/// replaces Burn's convolution for f32, whose only kernel there without tensor cores is a direct
/// convolution (47–75 ms per CIFAR-10 stem layer at batch 64 on an H200, 65 % of the step);
/// the products run in Burn's tuned matmul. The columns are `k·k` times the input: the batch is
/// cut into chunks of at most `max_cols` floats of them and of output (one sample per chunk at
/// least; see [`gemm_conv_max_cols`]). In half precision ([`crate::precision`]) the input and
/// the weight are cast first (so the columns take half the memory), the output back to f32.
pub fn gemm_conv(x: Tensor<4>, weight: Tensor<4>, max_cols: usize) -> Tensor<4> {
    let precision = crate::precision::current();
    let (x, weight) = if precision.is_half() {
        (x.cast(precision.dtype()), weight.cast(precision.dtype()))
    } else {
        (x, weight)
    };
    let [n, c, h, w] = x.dims();
    let [co, ci, k, k2] = weight.dims();
    assert!(
        ci == c && k == k2 && k % 2 == 1,
        "gemm_conv: weight {:?} for input {:?}",
        weight.dims(),
        x.dims()
    );
    let p = k / 2;
    let wm: Tensor<2> = weight.reshape([co, c * k * k]);
    let per_sample = gemm_floats_per_sample(c, co, k, h, w).max(1);
    // At most 2^19 output columns per product as well: matmul kernels launch a grid over the
    // columns, and Vulkan devices allow 65,535 workgroups per grid dimension.
    let nb = (max_cols / per_sample)
        .min(MAX_GEMM_COLUMNS / (h * w).max(1))
        .clamp(1, n.max(1));
    // [C, N, H, W]: one chunk's columns are then a [C·k·k, nb·H·W] matrix without a transpose.
    let xc = x.swap_dims(0, 1);
    let mut outs = Vec::with_capacity(n.div_ceil(nb));
    for n0 in (0..n).step_by(nb) {
        let n1 = (n0 + nb).min(n);
        let xs = if n0 == 0 && n1 == n {
            xc.clone()
        } else {
            xc.clone().slice([0..c, n0..n1, 0..h, 0..w])
        };
        let xp = xs.pad((p, p, p, p), PadMode::Constant(0.0));
        let shifts: Vec<Tensor<4>> = (0..k)
            .flat_map(|ky| (0..k).map(move |kx| (ky, kx)))
            .map(|(ky, kx)| xp.clone().slice([0..c, 0..n1 - n0, ky..ky + h, kx..kx + w]))
            .collect();
        // [C, k·k, nb, H, W]: row c·k·k + ky·k + kx, the weight's own order.
        let cols: Tensor<2> = Tensor::stack::<5>(shifts, 1).reshape([c * k * k, (n1 - n0) * h * w]);
        outs.push(wm.clone().matmul(cols).reshape([co, n1 - n0, h, w]));
    }
    let y = if outs.len() == 1 {
        outs.pop().expect("one chunk")
    } else {
        Tensor::cat(outs, 1)
    };
    let y = y.swap_dims(0, 1);
    if precision.is_half() {
        y.cast(DType::F32)
    } else {
        y
    }
}

/// `conv(x, weight)` through [`SameConvOps`] (see [`same_conv_supported`]); no bias.
pub fn same_conv(x: Tensor<4>, weight: Tensor<4>) -> Tensor<4> {
    let out = <Dispatch as SameConvOps>::same_conv(x.into_dispatch(), weight.into_dispatch());
    Tensor::from_dispatch(out)
}

/// [`SameConvOps::same_conv_backward`] on tensors (for tests and benchmarks).
pub fn same_conv_backward(
    x: Tensor<4>,
    weight: Tensor<4>,
    grad: Tensor<4>,
    need_x: bool,
    chunk: usize,
) -> (Tensor<4>, Tensor<4>) {
    let (gx, gw) = <Dispatch as SameConvOps>::same_conv_backward(
        x.into_dispatch(),
        weight.into_dispatch(),
        grad.into_dispatch(),
        need_x,
        chunk,
    );
    (Tensor::from_dispatch(gx), Tensor::from_dispatch(gw))
}

// ---------------------------------------------------------------------------------------------
// Autodiff: the forward saves the input and the weight, as Burn's convolution does.

#[derive(Debug)]
struct SameConvBackward;

impl<B: SameConvOps> Backward<B, 2> for SameConvBackward {
    type State = (FloatTensor<B>, FloatTensor<B>);

    fn backward(self, ops: Ops<Self::State, 2>, grads: &mut Gradients, _: &mut Checkpointer) {
        let (x, weight) = ops.state;
        let [node_x, node_w] = ops.parents;
        let grad = grads.consume::<B>(&ops.node);
        let (gx, gw) = B::same_conv_backward(x, weight, grad, node_x.is_some(), 0);
        if let Some(node) = node_x {
            grads.register::<B>(node.id, gx);
        }
        if let Some(node) = node_w {
            grads.register::<B>(node.id, gw);
        }
    }
}

impl<B: SameConvOps, C: CheckpointStrategy> SameConvOps for Autodiff<B, C> {
    fn same_conv(x: FloatTensor<Self>, weight: FloatTensor<Self>) -> FloatTensor<Self> {
        let prep = SameConvBackward
            .prepare::<C>([x.node(), weight.node()])
            .compute_bound()
            .stateful();
        match prep {
            OpsKind::Tracked(prep) => {
                let x = x.into_primitive();
                let weight = weight.into_primitive();
                let y = B::same_conv(x.clone(), weight.clone());
                prep.finish((x, weight), y)
            }
            OpsKind::UnTracked(prep) => {
                prep.finish(B::same_conv(x.into_primitive(), weight.into_primitive()))
            }
        }
    }

    fn same_conv_backward(
        x: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        grad: FloatTensor<Self>,
        need_x: bool,
        chunk: usize,
    ) -> (FloatTensor<Self>, FloatTensor<Self>) {
        let (gx, gw) = B::same_conv_backward(
            x.into_primitive(),
            weight.into_primitive(),
            grad.into_primitive(),
            need_x,
            chunk,
        );
        let lift = <Autodiff<B> as burn::backend::AutodiffBackend>::from_inner;
        (lift(gx), lift(gw))
    }
}
