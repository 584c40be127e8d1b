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
//! Backends: `Flex` (a plain-Rust kernel, parallel over neurons with rayon), `Cube` (a CubeCL
//! kernel, one thread per neuron, under `Fusion` as wgpu runs), and `Autodiff` over either.
//! Other backends (ndarray) use the composite form: [`fused_supported`] tells which.

use crate::cpu_kernels::SendPtr;
use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::checkpoint::strategy::CheckpointStrategy;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops, OpsKind};
use burn::backend::autodiff::Autodiff;
use burn::backend::fusion::custom::TensorSpec;
use burn::backend::ops::FloatTensorOps;
use burn::backend::tensor::FloatTensor;
use burn::backend::{backend_extension, Backend, Dispatch, DispatchTensorKind};
use burn::prelude::*;
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

    fn code(self) -> u32 {
        match self {
            Charge::LifDecayInput => 0,
            Charge::Lif => 1,
            Charge::If => 2,
            Charge::PlifDecayInput => 3,
            Charge::Plif => 4,
        }
    }
}

/// The surrogate derivative, as the kernels evaluate it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum SurrogateKind {
    /// `α·σ(αu)·(1 − σ(αu))`.
    Sigmoid,
    /// `(α/2) / (1 + (π/2·α·u)²)`.
    Atan,
    /// `α − α²·|u|` for `|u| < 1/α`, else 0.
    PiecewiseQuadratic,
}

impl SurrogateKind {
    fn code(self) -> u32 {
        match self {
            SurrogateKind::Sigmoid => 0,
            SurrogateKind::Atan => 1,
            SurrogateKind::PiecewiseQuadratic => 2,
        }
    }
}

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
    fn kind_supported(kind: &DispatchTensorKind) -> bool {
        match kind {
            #[cfg(feature = "flex")]
            DispatchTensorKind::Flex(_) => true,
            #[cfg(feature = "wgpu")]
            DispatchTensorKind::Cube(_) => true,
            DispatchTensorKind::Autodiff(inner) => kind_supported(inner),
            #[allow(unreachable_patterns)]
            _ => false,
        }
    }
    let dispatch = x.clone().into_dispatch();
    kind_supported(&dispatch.kind)
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

// ---------------------------------------------------------------------------------------------
// The flex kernel. Each rayon task owns a block of neurons and loops over T outside, over its
// neurons inside, so the inner loops are straight-line element-wise code that LLVM vectorises
// (AVX2 where the CPU has it, chosen at run time; SSE2 otherwise). Every setting that changes
// the arithmetic is a const parameter, so no branch is left in an inner loop. No fused
// multiply-add is formed (Rust never contracts), so results are the same on every x86-64 CPU.

/// Neurons per rayon task: enough work to amortise a task, small enough to spread a layer.
const CHUNK: usize = 2048;

/// The charge of one step from the membrane `v` (ignored on the first step), in the composite
/// form's exact floating-point operations.
#[inline(always)]
fn charge<const C: u32, const FIRST: bool>(v: f32, x: f32, tau: f32, k: f32) -> f32 {
    match (C, FIRST) {
        (0, true) => x / tau,
        (0, false) => v + (x - v) / tau,
        (1, true) => x,
        (1, false) => (v - v / tau) + x,
        (2, true) => x,
        (2, false) => v + x,
        (3, true) => x * k,
        (3, false) => v + (x - v) * k,
        (_, true) => x,
        (_, false) => (v - v * k) + x,
    }
}

#[inline(always)]
fn fire(h: f32, vth: f32) -> f32 {
    if h - vth >= 0.0 {
        1.0
    } else {
        0.0
    }
}

#[inline(always)]
fn reset<const SOFT: bool>(h: f32, s: f32, vth: f32) -> f32 {
    if SOFT {
        h - s * vth
    } else {
        h * (-s + 1.0)
    }
}

/// `e^x` to about one ulp without a library call, so that loops over it vectorise (Cody–Waite
/// range reduction and Cephes' `expf` polynomial; inputs clamped to the finite range).
#[inline(always)]
fn exp_f32(x: f32) -> f32 {
    const LOG2E: f32 = std::f32::consts::LOG2_E;
    const LN2_HI: f32 = 0.693_359_4;
    const LN2_LO: f32 = -2.121_944_4e-4;
    const ROUND: f32 = 12_582_912.0; // 1.5·2²³: adding and subtracting it rounds to an integer
    let x = x.clamp(-87.0, 88.0);
    let n = (x * LOG2E + ROUND) - ROUND;
    let r = x - n * LN2_HI - n * LN2_LO;
    let mut p = 1.987_569_1e-4_f32;
    p = p * r + 1.398_199_9e-3;
    p = p * r + 8.333_452e-3;
    p = p * r + 4.166_579_6e-2;
    p = p * r + 1.666_666_5e-1;
    p = p * r + 0.5; // Cephes' 5.0000001201e-1, which rounds to 0.5 in f32
    let y = p * r * r + r + 1.0;
    y * f32::from_bits(((n as i32 + 127) as u32) << 23)
}

/// The surrogate derivative at `u`.
#[inline(always)]
fn surrogate<const SG: u32>(alpha: f32, u: f32) -> f32 {
    match SG {
        0 => {
            let s = 1.0 / (1.0 + exp_f32(-alpha * u));
            alpha * s * (1.0 - s)
        }
        1 => {
            let z = std::f32::consts::FRAC_PI_2 * alpha * u;
            alpha / 2.0 / (1.0 + z * z)
        }
        _ => {
            let a = u.abs();
            if a < 1.0 / alpha {
                alpha - alpha * alpha * a
            } else {
                0.0
            }
        }
    }
}

/// Scalars and buffers of one forward call.
struct Fwd<'a> {
    x: &'a [f32],
    t_steps: usize,
    m: usize,
    k: f32,
    tau: f32,
    vth: f32,
    spikes: SendPtr,
    h: Option<SendPtr>,
}

/// One forward step of a block: charge, fire, (save h), reset.
#[inline(always)]
fn forward_row<const C: u32, const SOFT: bool, const FIRST: bool>(
    a: &Fwd,
    v: &mut [f32],
    xr: &[f32],
    sr: &mut [f32],
    hr: Option<&mut [f32]>,
) {
    let (tau, k, vth) = (a.tau, a.k, a.vth);
    match hr {
        Some(hr) => {
            for (((vj, &xj), sj), hj) in v.iter_mut().zip(xr).zip(sr.iter_mut()).zip(hr) {
                let h = charge::<C, FIRST>(*vj, xj, tau, k);
                let s = fire(h, vth);
                *sj = s;
                *hj = h;
                *vj = reset::<SOFT>(h, s, vth);
            }
        }
        None => {
            for ((vj, &xj), sj) in v.iter_mut().zip(xr).zip(sr.iter_mut()) {
                let h = charge::<C, FIRST>(*vj, xj, tau, k);
                let s = fire(h, vth);
                *sj = s;
                *vj = reset::<SOFT>(h, s, vth);
            }
        }
    }
}

/// Forward over neurons `m0..m1`.
#[inline(always)]
fn forward_block<const C: u32, const SOFT: bool>(a: &Fwd, m0: usize, m1: usize) {
    let len = m1 - m0;
    let mut v = [0f32; CHUNK];
    let v = &mut v[..len];
    for t in 0..a.t_steps {
        let off = t * a.m + m0;
        let xr = &a.x[off..off + len];
        // SAFETY: rows of this task's neurons; tasks own disjoint neuron ranges.
        let sr = unsafe { a.spikes.slice(off, len) };
        let hr = a.h.map(|p| unsafe { p.slice(off, len) });
        if t == 0 {
            forward_row::<C, SOFT, true>(a, v, xr, sr, hr);
        } else {
            forward_row::<C, SOFT, false>(a, v, xr, sr, hr);
        }
    }
}

/// Scalars and buffers of one backward call.
struct Bwd<'a> {
    grad: &'a [f32],
    h: &'a [f32],
    x: &'a [f32],
    t_steps: usize,
    m: usize,
    k: f32,
    tau: f32,
    vth: f32,
    alpha: f32,
    /// 0 with `detach_reset`, 1 without: the weight of the reset's path through the spike.
    through_reset: f32,
    grad_x: SendPtr,
    grad_k: Option<SendPtr>,
}

/// Backward over neurons `m0..m1`: BPTT in reverse time with the surrogate in place of Θ'.
#[inline(always)]
fn backward_block<const C: u32, const SOFT: bool, const SG: u32>(a: &Bwd, m0: usize, m1: usize) {
    let len = m1 - m0;
    let mut gv = [0f32; CHUNK];
    let mut gk = [0f32; CHUNK];
    let mut vp = [0f32; CHUNK];
    let (gv, gk, vp) = (&mut gv[..len], &mut gk[..len], &mut vp[..len]);
    let (tau, k, vth, alpha, tr) = (a.tau, a.k, a.vth, a.alpha, a.through_reset);
    let plif = C >= 3;
    for t in (0..a.t_steps).rev() {
        let off = t * a.m + m0;
        let hr = &a.h[off..off + len];
        let gr = &a.grad[off..off + len];
        // The membrane after the previous step's reset (0 before the first step).
        if t > 0 {
            let pr = &a.h[off - a.m..off - a.m + len];
            for (vj, &hp) in vp.iter_mut().zip(pr) {
                *vj = reset::<SOFT>(hp, fire(hp, vth), vth);
            }
        } else {
            vp.fill(0.0);
        }
        let xr = if plif { &a.x[off..off + len] } else { hr };
        // SAFETY: rows of this task's neurons; tasks own disjoint neuron ranges.
        let gxr = unsafe { a.grad_x.slice(off, len) };
        for j in 0..len {
            let ht = hr[j];
            let s = fire(ht, vth);
            let sg = surrogate::<SG>(alpha, ht - vth);
            let dv_ds = if SOFT { -vth } else { -ht };
            let gs = gr[j] + gv[j] * dv_ds * tr;
            let keep = if SOFT { 1.0 } else { -s + 1.0 };
            let gh = gv[j] * keep + sg * gs;
            let (gx, gvp) = match C {
                0 => {
                    let gx = gh / tau;
                    (gx, gh - gx)
                }
                1 => (gh, gh - gh / tau),
                2 => (gh, gh),
                3 => {
                    let gx = gh * k;
                    gk[j] += gh * (xr[j] - vp[j]);
                    (gx, gh - gx)
                }
                _ => {
                    gk[j] += -gh * vp[j];
                    (gh, gh - gh * k)
                }
            };
            gxr[j] = gx;
            gv[j] = gvp;
        }
    }
    if let Some(p) = a.grad_k {
        // SAFETY: this task's neurons.
        unsafe { p.slice(m0, len) }.copy_from_slice(gk);
    }
}

/// Run `f` on every block of [`CHUNK`] neurons of `0..m`, in parallel.
fn for_blocks(m: usize, f: impl Fn(usize, usize) + Send + Sync) {
    use rayon::prelude::*;
    (0..m.div_ceil(CHUNK))
        .into_par_iter()
        .for_each(|c| f(c * CHUNK, ((c + 1) * CHUNK).min(m)));
}

macro_rules! dispatch_charge_soft {
    ($c:expr, $soft:expr, $f:ident, [$($extra:tt)*], $($arg:expr),*) => {
        match ($c, $soft) {
            (0, false) => $f::<0, false $($extra)*>($($arg),*),
            (0, true) => $f::<0, true $($extra)*>($($arg),*),
            (1, false) => $f::<1, false $($extra)*>($($arg),*),
            (1, true) => $f::<1, true $($extra)*>($($arg),*),
            (2, false) => $f::<2, false $($extra)*>($($arg),*),
            (2, true) => $f::<2, true $($extra)*>($($arg),*),
            (3, false) => $f::<3, false $($extra)*>($($arg),*),
            (3, true) => $f::<3, true $($extra)*>($($arg),*),
            (_, false) => $f::<4, false $($extra)*>($($arg),*),
            (_, true) => $f::<4, true $($extra)*>($($arg),*),
        }
    };
}

fn run_forward_blocks(a: &Fwd, spec: &LifSpec) {
    fn go<const C: u32, const SOFT: bool>(a: &Fwd) {
        for_blocks(a.m, |m0, m1| {
            crate::cpu_kernels::best_isa(
                #[inline(always)]
                || forward_block::<C, SOFT>(a, m0, m1),
            )
        });
    }
    dispatch_charge_soft!(spec.charge.code(), spec.soft_reset, go, [], a);
}

fn run_backward_blocks(a: &Bwd, spec: &LifSpec) {
    fn go<const C: u32, const SOFT: bool, const SG: u32>(a: &Bwd) {
        for_blocks(a.m, |m0, m1| {
            crate::cpu_kernels::best_isa(
                #[inline(always)]
                || backward_block::<C, SOFT, SG>(a, m0, m1),
            )
        });
    }
    let (c, soft) = (spec.charge.code(), spec.soft_reset);
    match spec.surrogate {
        SurrogateKind::Sigmoid => dispatch_charge_soft!(c, soft, go, [, 0], a),
        SurrogateKind::Atan => dispatch_charge_soft!(c, soft, go, [, 1], a),
        SurrogateKind::PiecewiseQuadratic => dispatch_charge_soft!(c, soft, go, [, 2], a),
    }
}

#[cfg(feature = "flex")]
mod flex_impl {
    use super::*;
    use burn::backend::Flex;
    use burn::tensor::TensorData;
    use burn_flex::FlexTensor;

    fn contiguous_f32(t: &FlexTensor) -> std::borrow::Cow<'_, [f32]> {
        crate::cpu_kernels::contiguous_f32(t, "the fused LIF kernel")
    }

    fn dims2(t: &FlexTensor) -> (usize, usize) {
        let shape = t.layout().shape();
        assert_eq!(shape.num_dims(), 2, "the fused LIF kernel takes [T, M]");
        (shape[0], shape[1])
    }

    fn scalar(k: &FlexTensor) -> f32 {
        contiguous_f32(k)[0]
    }

    fn from_vec(data: Vec<f32>, shape: Vec<usize>) -> FlexTensor {
        FlexTensor::from_data(TensorData::new(data, shape))
    }

    fn run_forward(
        x: &FlexTensor,
        k: &FlexTensor,
        spec: &LifSpec,
        save: bool,
    ) -> (FlexTensor, Option<FlexTensor>) {
        let (t_steps, m) = dims2(x);
        let xs = contiguous_f32(x);
        let n = t_steps * m;
        let mut spikes = vec![0f32; n];
        let mut h = if save { vec![0f32; n] } else { Vec::new() };
        let args = Fwd {
            x: &xs,
            t_steps,
            m,
            k: scalar(k),
            tau: spec.tau,
            vth: spec.v_threshold,
            spikes: SendPtr(spikes.as_mut_ptr()),
            h: save.then_some(SendPtr(h.as_mut_ptr())),
        };
        run_forward_blocks(&args, spec);
        let shape = vec![t_steps, m];
        let h = save.then(|| from_vec(h, shape.clone()));
        (from_vec(spikes, shape), h)
    }

    impl FusedLifOps for Flex {
        fn lif_spikes(x: FlexTensor, k: FlexTensor, spec: LifSpec) -> FlexTensor {
            run_forward(&x, &k, &spec, false).0
        }

        fn lif_forward(x: FlexTensor, k: FlexTensor, spec: LifSpec) -> (FlexTensor, FlexTensor) {
            let (s, h) = run_forward(&x, &k, &spec, true);
            (s, h.expect("h is saved"))
        }

        fn lif_backward(
            grad: FlexTensor,
            h: FlexTensor,
            x: FlexTensor,
            k: FlexTensor,
            spec: LifSpec,
        ) -> (FlexTensor, FlexTensor) {
            let (t_steps, m) = dims2(&h);
            let gs = contiguous_f32(&grad);
            let hs = contiguous_f32(&h);
            let plif = spec.charge.is_plif();
            let xs = if plif {
                contiguous_f32(&x)
            } else {
                std::borrow::Cow::Borrowed(&[][..])
            };
            let mut gx = vec![0f32; t_steps * m];
            let mut gk = vec![0f32; if plif { m } else { 1 }];
            let args = Bwd {
                grad: &gs,
                h: &hs,
                x: &xs,
                t_steps,
                m,
                k: scalar(&k),
                tau: spec.tau,
                vth: spec.v_threshold,
                alpha: spec.alpha,
                through_reset: if spec.detach_reset { 0.0 } else { 1.0 },
                grad_x: SendPtr(gx.as_mut_ptr()),
                grad_k: plif.then_some(SendPtr(gk.as_mut_ptr())),
            };
            run_backward_blocks(&args, &spec);
            let gk_len = gk.len();
            (from_vec(gx, vec![t_steps, m]), from_vec(gk, vec![gk_len]))
        }
    }
}

#[cfg(feature = "wgpu")]
mod cube_impl {
    use super::*;
    use burn::tensor::DType;
    use burn_cubecl::kernel::into_contiguous;
    use burn_cubecl::ops::numeric::empty_device_dtype;
    use burn_cubecl::tensor::CubeTensor;
    use burn_cubecl::CubeBackend;
    use cubecl::prelude::Tensor as KTensor;
    use cubecl::prelude::*;
    use cubecl::{calculate_cube_count_elemwise, CubeDim};

    #[cube]
    fn k_charge(#[comptime] c: u32, first: bool, v: f32, x: f32, tau: f32, k: f32) -> f32 {
        let mut h = x;
        if c == 0 {
            if first {
                h = x / tau;
            } else {
                h = v + (x - v) / tau;
            }
        } else if c == 1 {
            if !first {
                h = (v - v / tau) + x;
            }
        } else if c == 2 {
            if !first {
                h = v + x;
            }
        } else if c == 3 {
            if first {
                h = x * k;
            } else {
                h = v + (x - v) * k;
            }
        } else if !first {
            h = (v - v * k) + x;
        }
        h
    }

    #[cube]
    fn k_fire(h: f32, vth: f32) -> f32 {
        let mut s = 0.0f32;
        if h - vth >= 0.0 {
            s = 1.0;
        }
        s
    }

    #[cube]
    fn k_reset(h: f32, s: f32, vth: f32, #[comptime] soft: bool) -> f32 {
        let mut v = h * (-s + 1.0);
        if soft {
            v = h - s * vth;
        }
        v
    }

    #[cube]
    fn k_surrogate(#[comptime] kind: u32, alpha: f32, u: f32) -> f32 {
        let mut g = 0.0f32;
        if kind == 0 {
            let s = 1.0 / (1.0 + f32::exp(-alpha * u));
            g = alpha * s * (1.0 - s);
        } else if kind == 1 {
            let z = 1.570_796_4 * alpha * u;
            g = alpha / 2.0 / (1.0 + z * z);
        } else if f32::abs(u) < 1.0 / alpha {
            g = alpha - alpha * alpha * f32::abs(u);
        }
        g
    }

    #[cube(launch)]
    #[allow(clippy::too_many_arguments)]
    fn lif_forward_kernel(
        x: &KTensor<f32>,
        k: &KTensor<f32>,
        spikes: &mut KTensor<f32>,
        h_out: &mut KTensor<f32>,
        t_steps: u32,
        m: u32,
        tau: f32,
        vth: f32,
        #[comptime] charge: u32,
        #[comptime] soft: bool,
        #[comptime] save: bool,
    ) {
        let n = ABSOLUTE_POS;
        let m = m as usize;
        if n >= m {
            terminate!();
        }
        let kv = k[0];
        let mut v = 0.0f32;
        let t_steps = t_steps as usize;
        for t in 0..t_steps {
            let i = t * m + n;
            let h = k_charge(charge, t == 0, v, x[i], tau, kv);
            let s = k_fire(h, vth);
            spikes[i] = s;
            if save {
                h_out[i] = h;
            }
            v = k_reset(h, s, vth, soft);
        }
    }

    #[cube(launch)]
    #[allow(clippy::too_many_arguments)]
    fn lif_backward_kernel(
        grad: &KTensor<f32>,
        h: &KTensor<f32>,
        x: &KTensor<f32>,
        k: &KTensor<f32>,
        grad_x: &mut KTensor<f32>,
        grad_k: &mut KTensor<f32>,
        t_steps: u32,
        m: u32,
        tau: f32,
        vth: f32,
        alpha: f32,
        #[comptime] charge: u32,
        #[comptime] soft: bool,
        #[comptime] detach: bool,
        #[comptime] sg_kind: u32,
    ) {
        let n = ABSOLUTE_POS;
        let m = m as usize;
        if n >= m {
            terminate!();
        }
        let kv = k[0];
        let mut gv = 0.0f32;
        let mut gk = 0.0f32;
        let t_steps = t_steps as usize;
        for r in 0..t_steps {
            let t = t_steps - 1 - r;
            let i = t * m + n;
            let ht = h[i];
            let s = k_fire(ht, vth);
            let sg = k_surrogate(sg_kind, alpha, ht - vth);
            let mut gs = grad[i];
            if !detach {
                if soft {
                    gs += gv * (-vth);
                } else {
                    gs += gv * (-ht);
                }
            }
            let mut keep = -s + 1.0;
            if soft {
                keep = 1.0;
            }
            let gh = gv * keep + sg * gs;
            let mut v_prev = 0.0f32;
            if t > 0 {
                let hp = h[i - m];
                v_prev = k_reset(hp, k_fire(hp, vth), vth, soft);
            }
            let mut gx = gh;
            let mut gvp = gh;
            if charge == 0 {
                gx = gh / tau;
                gvp = gh - gx;
            } else if charge == 1 {
                gvp = gh - gh / tau;
            } else if charge == 3 {
                gx = gh * kv;
                gvp = gh - gx;
                gk += gh * (x[i] - v_prev);
            } else if charge == 4 {
                gvp = gh - gh * kv;
                if t > 0 {
                    gk += -gh * v_prev;
                }
            }
            grad_x[i] = gx;
            gv = gvp;
        }
        if charge >= 3 {
            grad_k[n] = gk;
        }
    }

    fn dims2(t: &CubeTensor) -> (usize, usize) {
        let shape = t.meta.shape();
        assert_eq!(shape.num_dims(), 2, "the fused LIF kernel takes [T, M]");
        (shape[0], shape[1])
    }

    fn check_f32(t: &CubeTensor) {
        assert_eq!(
            t.dtype,
            DType::F32,
            "the fused LIF kernel runs on f32 tensors"
        );
    }

    fn run_forward(
        x: CubeTensor,
        k: CubeTensor,
        spec: &LifSpec,
        save: bool,
    ) -> (CubeTensor, CubeTensor) {
        check_f32(&x);
        let x = into_contiguous(x);
        let k = into_contiguous(k);
        let (t_steps, m) = dims2(&x);
        let client = x.client.clone();
        let device = x.device.clone();
        let spikes = empty_device_dtype(
            client.clone(),
            device.clone(),
            x.meta.shape().clone(),
            DType::F32,
        );
        let h_shape = if save {
            x.meta.shape().clone()
        } else {
            Shape::new([1])
        };
        let h = empty_device_dtype(client.clone(), device, h_shape, DType::F32);
        let cube_dim = CubeDim::new(&client, m);
        let cube_count = calculate_cube_count_elemwise(&client, m, cube_dim);
        lif_forward_kernel::launch(
            &client,
            cube_count,
            cube_dim,
            x.into_tensor_arg(),
            k.into_tensor_arg(),
            spikes.clone().into_tensor_arg(),
            h.clone().into_tensor_arg(),
            t_steps as u32,
            m as u32,
            spec.tau,
            spec.v_threshold,
            spec.charge.code(),
            spec.soft_reset,
            save,
        );
        (spikes, h)
    }

    impl FusedLifOps for CubeBackend {
        fn lif_spikes(x: CubeTensor, k: CubeTensor, spec: LifSpec) -> CubeTensor {
            run_forward(x, k, &spec, false).0
        }

        fn lif_forward(x: CubeTensor, k: CubeTensor, spec: LifSpec) -> (CubeTensor, CubeTensor) {
            run_forward(x, k, &spec, true)
        }

        fn lif_backward(
            grad: CubeTensor,
            h: CubeTensor,
            x: CubeTensor,
            k: CubeTensor,
            spec: LifSpec,
        ) -> (CubeTensor, CubeTensor) {
            check_f32(&grad);
            let grad = into_contiguous(grad);
            let h = into_contiguous(h);
            let x = into_contiguous(x);
            let k = into_contiguous(k);
            let (t_steps, m) = dims2(&h);
            let client = h.client.clone();
            let device = h.device.clone();
            let grad_x = empty_device_dtype(
                client.clone(),
                device.clone(),
                h.meta.shape().clone(),
                DType::F32,
            );
            // LIF/IF have no decay gradient: a defined [1] zero that the kernel leaves alone.
            let grad_k = if spec.charge.is_plif() {
                empty_device_dtype(client.clone(), device, Shape::new([m]), DType::F32)
            } else {
                <CubeBackend as FloatTensorOps<CubeBackend>>::float_zeros(
                    Shape::new([1]),
                    &device,
                    burn::tensor::FloatDType::F32,
                )
            };
            let cube_dim = CubeDim::new(&client, m);
            let cube_count = calculate_cube_count_elemwise(&client, m, cube_dim);
            lif_backward_kernel::launch(
                &client,
                cube_count,
                cube_dim,
                grad.into_tensor_arg(),
                h.into_tensor_arg(),
                x.into_tensor_arg(),
                k.into_tensor_arg(),
                grad_x.clone().into_tensor_arg(),
                grad_k.clone().into_tensor_arg(),
                t_steps as u32,
                m as u32,
                spec.tau,
                spec.v_threshold,
                spec.alpha,
                spec.charge.code(),
                spec.soft_reset,
                spec.detach_reset,
                spec.surrogate.code(),
            );
            (grad_x, grad_k)
        }
    }
}
