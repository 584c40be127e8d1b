//! Training-mode BatchNorm on the CPU (see [`crate::norm`] for the operator and its
//! equations): the per-channel kernels and the `FusedBatchNormOps` implementation for `Flex`.

use crate::kernels::cpu::SendPtr;
use crate::norm::FusedBatchNormOps;

// ---------------------------------------------------------------------------------------------
// The flex kernels: one rayon task per channel.

/// `Σ f(a[i], b[i])` in f64 with eight lanes (a fixed order, so LLVM may vectorise it): lane
/// `j` sums elements `j, j + 8, …`, the remainder goes to the first lanes, and the lanes are
/// added pairwise. Plain loops, so that it all inlines into the caller's AVX2 copy.
#[inline(always)]
fn sum8(a: &[f32], b: &[f32], f: impl Fn(f32, f32) -> f64) -> f64 {
    let len = a.len();
    assert_eq!(b.len(), len);
    let mut acc = [0f64; 8];
    let full = len / 8 * 8;
    let mut i = 0;
    while i < full {
        let (x, y) = (&a[i..i + 8], &b[i..i + 8]);
        for j in 0..8 {
            acc[j] += f(x[j], y[j]);
        }
        i += 8;
    }
    for j in 0..len - full {
        acc[j] += f(a[full + j], b[full + j]);
    }
    ((acc[0] + acc[4]) + (acc[1] + acc[5])) + ((acc[2] + acc[6]) + (acc[3] + acc[7]))
}

/// Per-channel statistics and outputs of the forward.
struct Forward {
    y: Vec<f32>,
    xhat: Vec<f32>,
    mean: Vec<f32>,
    var: Vec<f32>,
    rstd: Vec<f32>,
}

/// The statistics `(mean, var, rstd)` of channel `ch`, and its `y` and `x̂` slabs.
///
/// # Safety
/// `py` and `px` hold `n·c·s` floats, and no other thread writes channel `ch`'s slabs.
#[allow(clippy::too_many_arguments)]
#[inline(always)]
unsafe fn forward_channel(
    x: &[f32],
    (gamma, beta): (&[f32], &[f32]),
    [n, c, s]: [usize; 3],
    ch: usize,
    eps: f32,
    py: SendPtr,
    px: SendPtr,
) -> (f32, f32, f32) {
    let m = (n * s) as f64;
    let slab = |i: usize| &x[(i * c + ch) * s..][..s];
    // Per sample a sum of eight lanes, the samples' sums added in order.
    let mut sum = 0f64;
    for i in 0..n {
        sum += sum8(slab(i), slab(i), |v, _| v as f64);
    }
    let mean64 = sum / m;
    let mut sum = 0f64;
    for i in 0..n {
        sum += sum8(slab(i), slab(i), |v, _| {
            let d = v as f64 - mean64;
            d * d
        });
    }
    let var64 = sum / m;
    let (mean, var) = (mean64 as f32, var64 as f32);
    let rstd = 1.0 / (var + eps).sqrt();
    let (g, b) = (gamma[ch], beta[ch]);
    for i in 0..n {
        let off = (i * c + ch) * s;
        // SAFETY: this channel's slabs only.
        let (yo, xo) = unsafe { (py.slice(off, s), px.slice(off, s)) };
        for ((yv, xv), &v) in yo.iter_mut().zip(xo.iter_mut()).zip(slab(i)) {
            let h = (v - mean) * rstd;
            *xv = h;
            *yv = h * g + b;
        }
    }
    (mean, var, rstd)
}

fn forward_f32(
    x: &[f32],
    gamma: &[f32],
    beta: &[f32],
    n: usize,
    c: usize,
    s: usize,
    eps: f32,
) -> Forward {
    use rayon::prelude::*;
    let total = n * c * s;
    let mut y = vec![0f32; total];
    let mut xhat = vec![0f32; total];
    let (py, px) = (SendPtr(y.as_mut_ptr()), SendPtr(xhat.as_mut_ptr()));
    let stats: Vec<(f32, f32, f32)> = (0..c)
        .into_par_iter()
        .map(|ch| {
            // SAFETY: each task writes its own channel's slabs of `y` and `x̂`.
            crate::kernels::cpu::best_isa(
                #[inline(always)]
                || unsafe { forward_channel(x, (gamma, beta), [n, c, s], ch, eps, py, px) },
            )
        })
        .collect();
    Forward {
        y,
        xhat,
        mean: stats.iter().map(|t| t.0).collect(),
        var: stats.iter().map(|t| t.1).collect(),
        rstd: stats.iter().map(|t| t.2).collect(),
    }
}

/// `(Σdy·x̂, Σdy)` of channel `ch`, and its `dx` slabs.
///
/// # Safety
/// `pd` holds `n·c·s` floats, and no other thread writes channel `ch`'s slabs.
#[allow(clippy::too_many_arguments)]
#[inline(always)]
unsafe fn backward_channel(
    (grad, xhat): (&[f32], &[f32]),
    (rstd, gamma): (&[f32], &[f32]),
    [n, c, s]: [usize; 3],
    ch: usize,
    pd: SendPtr,
) -> (f32, f32) {
    let m = (n * s) as f64;
    let g_slab = |i: usize| &grad[(i * c + ch) * s..][..s];
    let h_slab = |i: usize| &xhat[(i * c + ch) * s..][..s];
    let (mut sum_dy, mut sum_dyh) = (0f64, 0f64);
    for i in 0..n {
        sum_dy += sum8(g_slab(i), g_slab(i), |g, _| g as f64);
    }
    for i in 0..n {
        sum_dyh += sum8(g_slab(i), h_slab(i), |g, h| g as f64 * h as f64);
    }
    let scale = gamma[ch] * rstd[ch];
    let (a, b) = ((sum_dy / m) as f32, (sum_dyh / m) as f32);
    for i in 0..n {
        // SAFETY: this channel's slabs only.
        let out = unsafe { pd.slice((i * c + ch) * s, s) };
        for ((o, &g), &h) in out.iter_mut().zip(g_slab(i)).zip(h_slab(i)) {
            *o = scale * (g - a - h * b);
        }
    }
    (sum_dyh as f32, sum_dy as f32)
}

/// `(dx, dγ, dβ)`.
fn backward_f32(
    grad: &[f32],
    xhat: &[f32],
    rstd: &[f32],
    gamma: &[f32],
    n: usize,
    c: usize,
    s: usize,
) -> (Vec<f32>, Vec<f32>, Vec<f32>) {
    use rayon::prelude::*;
    let mut dx = vec![0f32; n * c * s];
    let pd = SendPtr(dx.as_mut_ptr());
    let sums: Vec<(f32, f32)> = (0..c)
        .into_par_iter()
        .map(|ch| {
            // SAFETY: each task writes its own channel's slabs of `dx`.
            crate::kernels::cpu::best_isa(
                #[inline(always)]
                || unsafe { backward_channel((grad, xhat), (rstd, gamma), [n, c, s], ch, pd) },
            )
        })
        .collect();
    (
        dx,
        sums.iter().map(|t| t.0).collect(),
        sums.iter().map(|t| t.1).collect(),
    )
}

mod flex_impl {
    use super::*;
    use burn::backend::Flex;
    use burn::tensor::TensorData;
    use burn_flex::FlexTensor;

    fn contiguous_f32(t: &FlexTensor) -> std::borrow::Cow<'_, [f32]> {
        crate::kernels::cpu::contiguous_f32(t, "the fused BatchNorm")
    }

    fn dims3(t: &FlexTensor) -> [usize; 3] {
        let s = t.layout().shape();
        assert_eq!(s.num_dims(), 3, "the fused BatchNorm takes [N, C, S]");
        [s[0], s[1], s[2]]
    }

    fn tensor(data: Vec<f32>, shape: Vec<usize>) -> FlexTensor {
        FlexTensor::from_data(TensorData::new(data, shape))
    }

    impl FusedBatchNormOps for Flex {
        fn bn_train_forward(
            x: FlexTensor,
            gamma: FlexTensor,
            beta: FlexTensor,
            eps: f64,
        ) -> (FlexTensor, FlexTensor, FlexTensor, FlexTensor, FlexTensor) {
            let [n, c, s] = dims3(&x);
            let (xs, gs, bs) = (
                contiguous_f32(&x),
                contiguous_f32(&gamma),
                contiguous_f32(&beta),
            );
            assert!(
                gs.len() == c && bs.len() == c,
                "BatchNorm: γ/β length is not C = {c}"
            );
            let f = forward_f32(&xs, &gs, &bs, n, c, s, eps as f32);
            let shape = vec![n, c, s];
            (
                tensor(f.y, shape.clone()),
                tensor(f.xhat, shape),
                tensor(f.mean, vec![c]),
                tensor(f.var, vec![c]),
                tensor(f.rstd, vec![c]),
            )
        }

        fn bn_train_backward(
            grad: FlexTensor,
            xhat: FlexTensor,
            rstd: FlexTensor,
            gamma: FlexTensor,
        ) -> (FlexTensor, FlexTensor, FlexTensor) {
            let [n, c, s] = dims3(&xhat);
            assert_eq!(dims3(&grad), [n, c, s], "BatchNorm: gradient shape");
            let (g, h) = (contiguous_f32(&grad), contiguous_f32(&xhat));
            let (r, gm) = (contiguous_f32(&rstd), contiguous_f32(&gamma));
            let (dx, dg, db) = backward_f32(&g, &h, &r, &gm, n, c, s);
            (
                tensor(dx, vec![n, c, s]),
                tensor(dg, vec![c]),
                tensor(db, vec![c]),
            )
        }

        fn bn_train(
            x: FlexTensor,
            gamma: FlexTensor,
            beta: FlexTensor,
            eps: f64,
        ) -> (FlexTensor, FlexTensor, FlexTensor) {
            let (y, _, mean, var, _) = Self::bn_train_forward(x, gamma, beta, eps);
            (y, mean, var)
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::norm::*;
    use burn::prelude::*;
    use burn::tensor::module::batch_norm_train;
    use burn::tensor::Distribution;

    use crate::kernels::max_rel;

    /// Output, statistics and the three gradients equal Burn's own training BatchNorm to
    /// rounding, on a 4-D and a 3-D input with a non-zero mean.
    #[test]
    fn fused_batch_norm_matches_burn() {
        let device = Device::flex().autodiff();
        fn check<const D: usize>(dims: [usize; D], device: &Device) {
            let c = dims[1];
            let x =
                Tensor::<D>::random(dims, Distribution::Normal(0.7, 2.0), device).require_grad();
            let g =
                Tensor::<1>::random([c], Distribution::Uniform(0.5, 1.5), device).require_grad();
            let b = Tensor::<1>::random([c], Distribution::Normal(0.0, 1.0), device).require_grad();
            assert!(fused_batch_norm_supported(&x));
            let (y1, m1, v1) = fused_batch_norm(x.clone(), g.clone(), b.clone(), 1e-5);
            let burn = batch_norm_train(x.clone(), g.clone(), b.clone(), 1e-5);
            assert!(max_rel(&y1, &burn.output) < 2e-6, "y {dims:?}");
            assert!(max_rel(&m1, &burn.mean) < 2e-6, "mean {dims:?}");
            assert!(max_rel(&v1, &burn.variance) < 2e-6, "var {dims:?}");
            let r = Tensor::<D>::random(dims, Distribution::Normal(0.0, 1.0), device);
            let g1 = (y1 * r.clone()).sum().backward();
            let g2 = (burn.output * r).sum().backward();
            let (dx1, dx2) = (x.grad(&g1).unwrap(), x.grad(&g2).unwrap());
            assert!(
                max_rel(&dx1, &dx2) < 1e-5,
                "dx {dims:?}: {}",
                max_rel(&dx1, &dx2)
            );
            for (name, a, bb) in [
                ("gamma", g.grad(&g1).unwrap(), g.grad(&g2).unwrap()),
                ("beta", b.grad(&g1).unwrap(), b.grad(&g2).unwrap()),
            ] {
                assert!(
                    max_rel(&a, &bb) < 1e-5,
                    "d{name} {dims:?}: {}",
                    max_rel(&a, &bb)
                );
            }
        }
        check([4, 3, 5, 6], &device);
        check([7, 5, 9], &device);
    }

    /// The statistics of 10⁶ values of mean 1000 and spread 1 are exact to f32 rounding
    /// (a running f32 sum would be off by ~1e-4 in the mean).
    #[test]
    fn fused_batch_norm_statistics_are_exact() {
        let device = Device::flex();
        let n = 1000;
        let s = 1000;
        // x = 1000 + (±1 alternating): mean exactly 1000, variance exactly 1.
        let data: Vec<f32> = (0..n * s)
            .map(|i| if i % 2 == 0 { 1001.0 } else { 999.0 })
            .collect();
        let x = Tensor::<3>::from_data(TensorData::new(data, [n, 1, s]), &device);
        let (_, mean, var) = fused_batch_norm(
            x,
            Tensor::ones([1], &device),
            Tensor::zeros([1], &device),
            1e-5,
        );
        assert_eq!(mean.into_scalar::<f32>(), 1000.0);
        assert_eq!(var.into_scalar::<f32>(), 1.0);
    }
}
