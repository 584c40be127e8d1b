//! The fused multi-step neuron: one pass over T forward and one backward, through Burn's
//! `backend_extension`.
//!
//! The composite form ([`super::MultiStepNeuron::forward_per_step`]) records T small steps of
//! element-wise operations, each kept alive by the autodiff graph. This operator does the same
//! arithmetic in one kernel per direction:
//!
//! - forward: for every neuron, loop over T, write the spike and the charged membrane `h_t`
//!   (the one tensor the backward needs; spikes and the reset membrane are recomputed from it);
//! - backward: for every neuron, loop over T in reverse with the surrogate derivative, the reset
//!   and the charge equations differentiated by hand (PLIF also returns the per-neuron partial
//!   gradient of its decay, summed afterwards).
//!
//! The forward performs the very floating-point operations of the composite form in the same
//! order, so spikes are bit-equal; gradients agree to rounding.
//!
//! Backends: `Flex` (a plain-Rust kernel, parallel over neurons with rayon:
//! `kernels::cpu::lif`), `Cube` (a CubeCL kernel, one thread per neuron, under `Fusion` as
//! wgpu runs: `kernels::cube::lif`), and `Autodiff` over either.
//! Other backends (ndarray) use the composite form: [`fused_supported`] tells which.

// Burn's `backend_extension` writes, for a build with neither `flex` nor `wgpu` (the backends
// of this operator), a dispatch that takes the arguments and never uses them.
#![cfg_attr(not(any(feature = "flex", feature = "wgpu")), allow(unused_variables))]

use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::checkpoint::strategy::CheckpointStrategy;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops, OpsKind};
use burn::backend::autodiff::Autodiff;
// The fusion metadata functions exist only with the `wgpu` feature: Burn has no `fusion`
// module without it.
#[cfg(feature = "wgpu")]
use burn::backend::fusion::custom::TensorSpec;
use burn::backend::tensor::FloatTensor;
use burn::backend::{backend_extension, Backend, Dispatch};
use burn::prelude::*;
#[cfg(feature = "wgpu")]
use burn::tensor::Shape;

/// How the membrane is charged, with the exact floating-point form of each case.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Charge {
    /// LIF with `decay_input`: `h = v + (x − v) / tau` (first step `x / tau`).
    LifDecayInput,
    /// LIF without: `h = (v − v / tau) + x` (first step `x`).
    Lif,
    /// IF: `h = v + x`.
    If,
    /// PLIF with `decay_input`: `h = v + (x − v)·k`, `k = sigmoid(w)` (first step `x·k`).
    PlifDecayInput,
    /// PLIF without: `h = (v − v·k) + x` (first step `x`).
    Plif,
}

impl Charge {
    /// Whether the decay is the learnable `k` (PLIF).
    pub fn is_plif(self) -> bool {
        matches!(self, Charge::PlifDecayInput | Charge::Plif)
    }

    #[cfg(any(feature = "flex", feature = "wgpu"))]
    pub(crate) fn code(self) -> u32 {
        match self {
            Charge::LifDecayInput => 0,
            Charge::Lif => 1,
            Charge::If => 2,
            Charge::PlifDecayInput => 3,
            Charge::Plif => 4,
        }
    }
}

pub use super::surrogate::SurrogateKind;

/// Everything the fused kernels need besides the tensors.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LifSpec {
    /// Charge equation.
    pub charge: Charge,
    /// Membrane time constant (LIF; PLIF takes its decay from the `k` tensor).
    pub tau: f32,
    /// Threshold.
    pub v_threshold: f32,
    /// Soft reset (`v = h − s·v_th`) instead of hard (`v = h·(1 − s)`).
    pub soft_reset: bool,
    /// The spike in the reset carries no gradient.
    pub detach_reset: bool,
    /// Surrogate derivative.
    pub surrogate: SurrogateKind,
    /// Surrogate parameter α.
    pub alpha: f32,
}

/// The backward's outputs: `(grad_x [T, M], grad_k partials [M] for PLIF, else [1])`.
#[cfg(feature = "wgpu")]
fn backward_meta(
    grad: &TensorSpec,
    _h: &TensorSpec,
    _x: &TensorSpec,
    k: &TensorSpec,
    spec: &LifSpec,
) -> (TensorSpec, TensorSpec) {
    let m = grad.shape[1];
    let gk_shape = if spec.charge.is_plif() { [m] } else { [1] };
    (
        grad.clone(),
        TensorSpec::new(Shape::from(gk_shape.to_vec()), k.dtype),
    )
}

#[cfg(feature = "wgpu")]
fn forward_meta(x: &TensorSpec, _k: &TensorSpec, _spec: &LifSpec) -> (TensorSpec, TensorSpec) {
    (x.clone(), x.clone())
}

/// The fused multi-step neuron as a backend extension. Tensors are `[T, M]` (time first, any
/// number of neurons), `k` is a one-element tensor (PLIF's `sigmoid(w)`, unused otherwise).
#[backend_extension(
    Flex: cfg(feature = "flex"),
    Cube: cfg(feature = "wgpu"),
    Fusion: cfg(feature = "wgpu"),
    Autodiff
)]
pub trait FusedLifOps: Backend {
    /// The spikes, nothing saved (inference, or the autodiff wrapper when nothing is tracked).
    #[fusion(dtype = x, shape = x)]
    fn lif_spikes(x: FloatTensor<Self>, k: FloatTensor<Self>, spec: LifSpec) -> FloatTensor<Self>;

    /// The spikes and the charged membrane `h` of every step.
    #[fusion(meta = forward_meta)]
    fn lif_forward(
        x: FloatTensor<Self>,
        k: FloatTensor<Self>,
        spec: LifSpec,
    ) -> (FloatTensor<Self>, FloatTensor<Self>);

    /// `(dL/dx, per-neuron dL/dk)` from `dL/ds`, the saved `h` and (PLIF only) the input `x`.
    #[fusion(meta = backward_meta)]
    fn lif_backward(
        grad: FloatTensor<Self>,
        h: FloatTensor<Self>,
        x: FloatTensor<Self>,
        k: FloatTensor<Self>,
        spec: LifSpec,
    ) -> (FloatTensor<Self>, FloatTensor<Self>);
}

/// Whether `x` lives on a backend with the fused kernels (flex, or a CubeCL runtime such as wgpu).
pub fn fused_supported<const D: usize>(x: &Tensor<D>) -> bool {
    let kind = x.clone().into_dispatch().kind;
    crate::kernels::on_flex(&kind) || crate::kernels::on_cube(&kind)
}

/// Run the fused neuron on `x: [T, M]`; `k` is `[1]`. Spikes of the same shape.
pub fn fused_lif(x: Tensor<2>, k: Tensor<1>, spec: LifSpec) -> Tensor<2> {
    let out = <Dispatch as FusedLifOps>::lif_spikes(x.into_dispatch(), k.into_dispatch(), spec);
    Tensor::from_dispatch(out)
}

// ---------------------------------------------------------------------------------------------
// Autodiff: the forward saves `h` (and `x` for PLIF); the backward runs the backward kernel.

#[derive(Debug)]
struct LifBackward;

impl<B: FusedLifOps> Backward<B, 2> for LifBackward {
    /// `(h, x (PLIF) or h again, k, spec)`.
    type State = (FloatTensor<B>, FloatTensor<B>, FloatTensor<B>, LifSpecState);

    fn backward(self, ops: Ops<Self::State, 2>, grads: &mut Gradients, _: &mut Checkpointer) {
        let (h, x, k, LifSpecState(spec)) = ops.state;
        let [node_x, node_k] = ops.parents;
        let grad = grads.consume::<B>(&ops.node);
        let (grad_x, grad_k) = B::lif_backward(grad, h, x, k, spec);
        if let Some(node) = node_x {
            grads.register::<B>(node.id, grad_x);
        }
        if let Some(node) = node_k {
            grads.register::<B>(node.id, B::float_sum(grad_k));
        }
    }
}

/// The spec as autodiff state (which must be `Debug + Clone + Send`).
#[derive(Debug, Clone, Copy)]
struct LifSpecState(LifSpec);

impl<B: FusedLifOps, C: CheckpointStrategy> FusedLifOps for Autodiff<B, C> {
    fn lif_spikes(x: FloatTensor<Self>, k: FloatTensor<Self>, spec: LifSpec) -> FloatTensor<Self> {
        let prep = LifBackward
            .prepare::<C>([x.node(), k.node()])
            .compute_bound()
            .stateful();
        match prep {
            OpsKind::Tracked(prep) => {
                let x_inner = x.primitive().clone();
                let k_inner = k.into_primitive();
                let (spikes, h) = B::lif_forward(x_inner.clone(), k_inner.clone(), spec);
                let x_saved = if spec.charge.is_plif() {
                    x_inner
                } else {
                    h.clone()
                };
                drop(x);
                prep.finish((h, x_saved, k_inner, LifSpecState(spec)), spikes)
            }
            OpsKind::UnTracked(prep) => {
                let out = B::lif_spikes(x.into_primitive(), k.into_primitive(), spec);
                prep.finish(out)
            }
        }
    }

    fn lif_forward(
        x: FloatTensor<Self>,
        k: FloatTensor<Self>,
        spec: LifSpec,
    ) -> (FloatTensor<Self>, FloatTensor<Self>) {
        // Not differentiable itself: the autodiff path goes through `lif_spikes`.
        let (s, h) = B::lif_forward(x.into_primitive(), k.into_primitive(), spec);
        (untracked::<B>(s), untracked::<B>(h))
    }

    fn lif_backward(
        grad: FloatTensor<Self>,
        h: FloatTensor<Self>,
        x: FloatTensor<Self>,
        k: FloatTensor<Self>,
        spec: LifSpec,
    ) -> (FloatTensor<Self>, FloatTensor<Self>) {
        let (gx, gk) = B::lif_backward(
            grad.into_primitive(),
            h.into_primitive(),
            x.into_primitive(),
            k.into_primitive(),
            spec,
        );
        (untracked::<B>(gx), untracked::<B>(gk))
    }
}

fn untracked<B: Backend>(t: FloatTensor<B>) -> FloatTensor<Autodiff<B>> {
    <Autodiff<B> as burn::backend::AutodiffBackend>::from_inner(t)
}
