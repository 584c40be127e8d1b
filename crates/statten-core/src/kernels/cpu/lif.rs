//! The multi-step LIF on the CPU: the kernels and the `FusedLifOps` implementation for
//! `Flex`.

use super::SendPtr;
use crate::neuron::fused::{FusedLifOps, LifSpec, SurrogateKind};
use crate::neuron::surrogate;

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
        // SAFETY: as above: this task's neurons only.
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
            let sg = surrogate::cpu::derivative::<SG>(alpha, ht - vth);
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
            crate::kernels::cpu::best_isa(
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
            crate::kernels::cpu::best_isa(
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

use burn::backend::Flex;
use burn::tensor::TensorData;
use burn_flex::FlexTensor;

fn contiguous_f32(t: &FlexTensor) -> std::borrow::Cow<'_, [f32]> {
    crate::kernels::cpu::contiguous_f32(t, "the fused LIF kernel")
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
