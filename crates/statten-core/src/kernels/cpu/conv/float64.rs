//! Same convolutions with every sum in float64, rounded once to f32
//! ([`super::ConvAlgorithm::Float64`]): the oracle the other kernels are checked against in
//! whole-model tests. Plain loops, parallel over output planes; each sum runs in one order, so
//! the bits do not depend on the thread count.

use super::Geom;
use rayon::prelude::*;

/// For kernel offset `kk` (`0..k`) and output extent `extent`: the output range whose input
/// `o + kk − p` is inside the image, and the input index of its first element.
fn span(kk: usize, p: usize, extent: usize) -> (usize, usize, usize) {
    let lo = p.saturating_sub(kk).min(extent);
    let hi = (extent + p).saturating_sub(kk).min(extent).max(lo);
    // An empty range (a plane narrower than the kernel's reach) reads nothing.
    (lo, hi, if lo < hi { lo + kk - p } else { 0 })
}

/// `planes` planes of `H·W` floats, each the float64 sums `fill(plane, acc)` adds into `acc`
/// rounded once; parallel over planes.
fn by_plane(planes: usize, g: Geom, fill: impl Fn(usize, &mut [f64]) + Sync) -> Vec<f32> {
    let hw = g.hw();
    let mut out = vec![0f32; planes * hw];
    out.par_chunks_mut(hw.max(1))
        .enumerate()
        .for_each(|(plane, out)| {
            let mut acc = vec![0f64; hw];
            fill(plane, &mut acc);
            for (d, a) in out.iter_mut().zip(&acc) {
                *d = *a as f32;
            }
        });
    out
}

/// `acc += wv · src` shifted by kernel offset `(kh, kw)`: the forward's gather (`acc[o] +=
/// src[o + offset − p]`) or, with `scatter`, its adjoint (`acc[o + offset − p] += src[o]`).
#[allow(clippy::too_many_arguments)]
fn add_shifted(
    acc: &mut [f64],
    src: &[f32],
    wv: f64,
    g: Geom,
    kh: usize,
    kw: usize,
    scatter: bool,
) {
    let p = g.k / 2;
    let (oh0, oh1, ih0) = span(kh, p, g.h);
    let (ow0, ow1, iw0) = span(kw, p, g.w);
    for (r, oh) in (oh0..oh1).enumerate() {
        let (o, i) = (oh * g.w + ow0, (ih0 + r) * g.w + iw0);
        let (to, from) = if scatter { (i, o) } else { (o, i) };
        for (d, v) in acc[to..][..ow1 - ow0]
            .iter_mut()
            .zip(&src[from..][..ow1 - ow0])
        {
            *d += wv * *v as f64;
        }
    }
}

/// `y [N, Co, H, W] = conv(x [N, C, H, W], weight [Co, C, k, k])`.
pub(super) fn forward(x: &[f32], weight: &[f32], g: Geom, n: usize) -> Vec<f32> {
    let (hw, k) = (g.hw(), g.k);
    by_plane(n * g.co, g, |plane, acc| {
        let (s, o) = (plane / g.co, plane % g.co);
        for ci in 0..g.c {
            let xp = &x[(s * g.c + ci) * hw..][..hw];
            for (kh, kw) in (0..k).flat_map(|kh| (0..k).map(move |kw| (kh, kw))) {
                let wv = weight[((o * g.c + ci) * k + kh) * k + kw] as f64;
                add_shifted(acc, xp, wv, g, kh, kw, false);
            }
        }
    })
}

/// `(dx, dW)` from `grad = dL/dy [N, Co, H, W]`; `dx` is empty unless `need_x`.
pub(super) fn backward(
    x: &[f32],
    weight: &[f32],
    grad: &[f32],
    g: Geom,
    n: usize,
    need_x: bool,
) -> (Vec<f32>, Vec<f32>) {
    let (hw, k, p) = (g.hw(), g.k, g.k / 2);
    // dx[s, ci, ih, iw] = Σ_{o, kh, kw} W[o, ci, kh, kw] · dY[s, o, ih − kh + p, iw − kw + p].
    let dx = if need_x {
        by_plane(n * g.c, g, |plane, acc| {
            let (s, ci) = (plane / g.c, plane % g.c);
            for o in 0..g.co {
                let dyp = &grad[(s * g.co + o) * hw..][..hw];
                for (kh, kw) in (0..k).flat_map(|kh| (0..k).map(move |kw| (kh, kw))) {
                    let wv = weight[((o * g.c + ci) * k + kh) * k + kw] as f64;
                    add_shifted(acc, dyp, wv, g, kh, kw, true);
                }
            }
        })
    } else {
        Vec::new()
    };
    // dW[o, ci, kh, kw] = Σ_{s, oh, ow} dY[s, o, oh, ow] · x[s, ci, oh + kh − p, ow + kw − p].
    let mut dw = vec![0f32; g.co * g.c * k * k];
    dw.par_chunks_mut(k * k)
        .enumerate()
        .for_each(|(pair, out)| {
            let (o, ci) = (pair / g.c, pair % g.c);
            for kh in 0..k {
                let (oh0, oh1, ih0) = span(kh, p, g.h);
                for kw in 0..k {
                    let (ow0, ow1, iw0) = span(kw, p, g.w);
                    let mut acc = 0f64;
                    for s in 0..n {
                        let dyp = &grad[(s * g.co + o) * hw..][..hw];
                        let xp = &x[(s * g.c + ci) * hw..][..hw];
                        for (r, oh) in (oh0..oh1).enumerate() {
                            let d = &dyp[oh * g.w + ow0..][..ow1 - ow0];
                            let v = &xp[(ih0 + r) * g.w + iw0..][..ow1 - ow0];
                            for (a, b) in d.iter().zip(v) {
                                acc += *a as f64 * *b as f64;
                            }
                        }
                    }
                    out[kh * k + kw] = acc as f32;
                }
            }
        });
    (dx, dw)
}
