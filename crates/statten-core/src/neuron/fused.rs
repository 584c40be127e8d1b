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
#[backend_extension(Flex, Cube, Fusion, Autodiff)]
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
            DispatchTensorKind::Flex(_) => true,
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
// The per-neuron arithmetic, shared by the Flex kernel (and mirrored by the CubeCL kernel).

/// One neuron's forward step from the membrane `v` (None at t = 0).
#[inline(always)]
fn charge(c: u32, v: Option<f32>, x: f32, tau: f32, k: f32) -> f32 {
    match (c, v) {
        (0, None) => x / tau,
        (0, Some(v)) => v + (x - v) / tau,
        (1, None) => x,
        (1, Some(v)) => (v - v / tau) + x,
        (2, None) => x,
        (2, Some(v)) => v + x,
        (3, None) => x * k,
        (3, Some(v)) => v + (x - v) * k,
        (_, None) => x,
        (_, Some(v)) => (v - v * k) + x,
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
fn reset(h: f32, s: f32, vth: f32, soft: bool) -> f32 {
    if soft {
        h - s * vth
    } else {
        h * (-s + 1.0)
    }
}

#[inline(always)]
fn surrogate(kind: u32, alpha: f32, u: f32) -> f32 {
    match kind {
        0 => {
            let s = 1.0 / (1.0 + (-alpha * u).exp());
            alpha * s * (1.0 - s)
        }
        1 => {
            let z = std::f32::consts::FRAC_PI_2 * alpha * u;
            alpha / 2.0 / (1.0 + z * z)
        }
        _ => {
            if u.abs() < 1.0 / alpha {
                alpha - alpha * alpha * u.abs()
            } else {
                0.0
            }
        }
    }
}

/// Neurons per rayon task: enough work to amortise a task, small enough to spread a layer.
const CHUNK: usize = 2048;

/// A raw pointer that may cross threads; each task writes a disjoint set of indices.
#[derive(Clone, Copy)]
struct SendPtr(*mut f32);
unsafe impl Send for SendPtr {}
unsafe impl Sync for SendPtr {}

impl SendPtr {
    /// # Safety
    /// `i` is in bounds and no other thread writes it.
    #[inline(always)]
    unsafe fn write(self, i: usize, v: f32) {
        unsafe { *self.0.add(i) = v }
    }
}

/// Forward over neurons `m0..m1`: spikes and (optionally) `h` into `[T, M]` buffers.
#[allow(clippy::too_many_arguments)]
#[inline(always)]
fn forward_range(
    x: &[f32],
    t_steps: usize,
    m: usize,
    m0: usize,
    m1: usize,
    k: f32,
    spec: &LifSpec,
    spikes: SendPtr,
    h_out: Option<SendPtr>,
) {
    let c = spec.charge.code();
    let (tau, vth, soft) = (spec.tau, spec.v_threshold, spec.soft_reset);
    let mut v = [0f32; CHUNK];
    let v = &mut v[..m1 - m0];
    for t in 0..t_steps {
        let row = &x[t * m + m0..t * m + m1];
        for (j, (&xi, vj)) in row.iter().zip(v.iter_mut()).enumerate() {
            let h = charge(c, if t == 0 { None } else { Some(*vj) }, xi, tau, k);
            let s = fire(h, vth);
            let i = t * m + m0 + j;
            // SAFETY: i is in [0, T·M) and neuron m0 + j belongs to this task alone.
            unsafe {
                spikes.write(i, s);
                if let Some(hp) = h_out {
                    hp.write(i, h);
                }
            }
            *vj = reset(h, s, vth, soft);
        }
    }
}

/// Backward over neurons `m0..m1`.
#[allow(clippy::too_many_arguments)]
#[inline(always)]
fn backward_range(
    grad: &[f32],
    h: &[f32],
    x: &[f32],
    t_steps: usize,
    m: usize,
    m0: usize,
    m1: usize,
    k: f32,
    spec: &LifSpec,
    grad_x: SendPtr,
    grad_k: Option<SendPtr>,
) {
    let c = spec.charge.code();
    let (tau, vth, soft, detach) = (
        spec.tau,
        spec.v_threshold,
        spec.soft_reset,
        spec.detach_reset,
    );
    let (sg_kind, alpha) = (spec.surrogate.code(), spec.alpha);
    for n in m0..m1 {
        let mut gv = 0f32;
        let mut gk = 0f32;
        for t in (0..t_steps).rev() {
            let i = t * m + n;
            let ht = h[i];
            let u = ht - vth;
            let s = fire(ht, vth);
            let sg = surrogate(sg_kind, alpha, u);
            let mut gs = grad[i];
            if !detach {
                gs += gv * if soft { -vth } else { -ht };
            }
            let gh = gv * if soft { 1.0 } else { -s + 1.0 } + sg * gs;
            let v_prev = if t == 0 {
                None
            } else {
                let hp = h[i - m];
                Some(reset(hp, fire(hp, vth), vth, soft))
            };
            let (gx, gvp) = match c {
                0 => {
                    let gx = gh / tau;
                    (gx, gh - gx)
                }
                1 => (gh, gh - gh / tau),
                2 => (gh, gh),
                3 => {
                    let gx = gh * k;
                    gk += gh * (x[i] - v_prev.unwrap_or(0.0));
                    (gx, gh - gx)
                }
                _ => {
                    if let Some(vp) = v_prev {
                        gk += -gh * vp;
                    }
                    (gh, gh - gh * k)
                }
            };
            // SAFETY: i is in [0, T·M) and neuron n belongs to this task alone.
            unsafe { grad_x.write(i, gx) };
            gv = gvp;
        }
        if let Some(p) = grad_k {
            // SAFETY: n < M, written by this task alone.
            unsafe { p.write(n, gk) };
        }
    }
}

/// Split `0..m` into tasks of [`CHUNK`] neurons and run `f(m0, m1)` on each, in parallel.
fn for_chunks(m: usize, f: impl Fn(usize, usize) + Send + Sync) {
    use rayon::prelude::*;
    (0..m.div_ceil(CHUNK))
        .into_par_iter()
        .for_each(|c| f(c * CHUNK, ((c + 1) * CHUNK).min(m)));
}

mod flex_impl {
    use super::*;
    use burn::backend::Flex;
    use burn::tensor::{DType, TensorData};
    use burn_flex::FlexTensor;

    fn contiguous_f32(t: &FlexTensor) -> std::borrow::Cow<'_, [f32]> {
        assert_eq!(
            t.dtype(),
            DType::F32,
            "the fused LIF kernel runs on f32 tensors"
        );
        match t.as_slice::<f32>() {
            Some(s) => std::borrow::Cow::Borrowed(s),
            None => std::borrow::Cow::Owned(t.to_contiguous().as_slice::<f32>().unwrap().to_vec()),
        }
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
        let kv = scalar(k);
        let n = t_steps * m;
        let mut spikes = vec![0f32; n];
        let mut h = if save { vec![0f32; n] } else { Vec::new() };
        let sp = SendPtr(spikes.as_mut_ptr());
        let hp = save.then(|| SendPtr(h.as_mut_ptr()));
        for_chunks(m, |m0, m1| {
            forward_range(&xs, t_steps, m, m0, m1, kv, spec, sp, hp)
        });
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
            let kv = scalar(&k);
            let mut gx = vec![0f32; t_steps * m];
            let mut gk = vec![0f32; if plif { m } else { 1 }];
            let gxp = SendPtr(gx.as_mut_ptr());
            let gkp = plif.then(|| SendPtr(gk.as_mut_ptr()));
            for_chunks(m, |m0, m1| {
                backward_range(&gs, &hs, &xs, t_steps, m, m0, m1, kv, &spec, gxp, gkp)
            });
            let gk_len = gk.len();
            (from_vec(gx, vec![t_steps, m]), from_vec(gk, vec![gk_len]))
        }
    }
}

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
            let gk_len = if spec.charge.is_plif() { m } else { 1 };
            let grad_k =
                empty_device_dtype(client.clone(), device, Shape::new([gk_len]), DType::F32);
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
            if !spec.charge.is_plif() {
                // Not read by anyone (LIF/IF have no decay gradient), but defined.
                let zero = <CubeBackend as FloatTensorOps<CubeBackend>>::float_zeros(
                    Shape::new([1]),
                    &grad_k.device,
                    burn::tensor::FloatDType::F32,
                );
                return (grad_x, zero);
            }
            (grad_x, grad_k)
        }
    }
}
