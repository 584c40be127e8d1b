//! The gradients of a 3×3 same convolution by Winograd's minimal filtering, F(2×2, 3×3): 2.25×
//! fewer multiply-adds than the direct products (`Wᵀ · dY` with col2im, `dY · colsᵀ`).
//!
//! F(2×2, 3×3) computes a 2×2 output tile from a 4×4 input tile as
//! `Aᵀ [(G g Gᵀ) ⊙ (Bᵀ d B)] A` (Lavin and Gray, 2016), so a sum over channels becomes 16
//! matrix products, one per point `ξ` of the 4×4 transformed tile — 16 multiply-adds per tile
//! and channel pair where the direct form takes 36.
//!
//! - **Input gradient** ([`input_grad`]). The input gradient of a stride-1 convolution with
//!   padding 1 is again one: `dx[ci]` is the sum over `co` of `dY[co]` correlated with `W[co,
//!   ci]` turned by 180°. `U[ξ] [C, Co]` holds the turned kernels' `G g Gᵀ` (`G` holds halves),
//!   `V[ξ] [Co, tiles]` the `Bᵀ d B` of each 4×4 tile of `dY` (zero outside the image; additions
//!   only), `M[ξ] = U[ξ] · V[ξ]`, and each `dx` tile is `Aᵀ M A` (additions only).
//! - **Weight gradient** ([`weight_grad`]). Each forward tile is linear in `U = G g Gᵀ`, so
//!   `dL/dU[ξ]` is the sum over tiles of `(A dy Aᵀ)[ξ] · (Bᵀ d B)[ξ]` — 16 products
//!   `[Co, tiles] · [tiles, C]` of transformed output gradients and inputs — and `dW = Gᵀ dU G`.
//!
//! The sums have one order whatever the thread count (a tile belongs to one task of each
//! transform; each product sums its inner dimension, `Co` or the chunk's tiles, in one order
//! however gemm splits the rest), so results are reproducible. The chunk of samples, chosen
//! from the shapes, sets the products' sizes, and gemm's kernels for other sizes may round
//! differently, as in the direct products. Results equal the direct form's to rounding (tests:
//! within 2e-6 of the gradient's largest magnitude): the transforms with halves round, the rest
//! are sums. Only gradients take this path; forwards, whose outputs meet spike thresholds and
//! max-pool ties, keep the direct kernels (Winograd's outputs depend on the position in a tile).
//!
//! **Not reference-exact**, hence an opt-in ([`super::ConvAlgorithm::Winograd`]): the error is
//! bounded by the size of a whole tile's terms, not of each element's. An element whose terms
//! are all zero — a kernel offset at which an input channel never fires, as at the border of a
//! 4×4 token grid — comes out as a residue of about 1e-9 instead of 0, which AdamW's first
//! step turns into an update of 0.1–0.3 × lr where the reference leaves the weight alone
//! (`conv::invariant` shows it).

use super::{matmul, Geom, Mat, Scratch};
use crate::kernels::cpu::{best_isa, SendPtr};
use rayon::prelude::*;

/// Transformed floats per chunk and buffer (16 MB), as the direct backward's columns.
const CHUNK_FLOATS: usize = super::CHUNK_FLOATS;

/// Whether the gradients of a convolution of geometry `g` can take this path (where
/// [`super::ConvAlgorithm::Winograd`] asks for it): 3×3, with at least 16 input and output
/// channels. Narrower products (the first layer's 3 image channels) run gemm far from its
/// peak, and there the direct product is faster.
pub(super) fn applies(g: Geom) -> bool {
    g.k == 3 && g.c.min(g.co) >= 16
}

/// Tiles per sample: rows and columns of 2×2 output tiles.
fn tiles(g: Geom) -> (usize, usize) {
    (g.h.div_ceil(2), g.w.div_ceil(2))
}

/// `U [16][C][Co]`: `G g Gᵀ` of each kernel `g = W[co, ci]` turned by 180°.
fn transform_weight(weight: &[f32], g: Geom) -> Vec<f32> {
    let (c, co) = (g.c, g.co);
    let mut u = vec![0f32; 16 * c * co];
    let ptr = SendPtr(u.as_mut_ptr());
    // Tasks of 16 input channels: for each output channel, their kernels are one contiguous
    // run of `W`, and each of the 16 points ξ gets 16 rows advancing together.
    (0..c.div_ceil(16)).into_par_iter().for_each(|blk| {
        for o in 0..co {
            for ci in blk * 16..(blk * 16 + 16).min(c) {
                let w = &weight[(o * c + ci) * 9..][..9];
                // Column s of G t, t the turned kernel (t[r][s] = w[2 − r][2 − s]): its rows
                // t0, (t0 + t1 + t2)/2, (t0 − t1 + t2)/2, t2.
                let col = |s: usize| {
                    let (a, b, d) = (w[6 + 2 - s], w[3 + 2 - s], w[2 - s]);
                    [a, 0.5 * (a + b + d), 0.5 * (a - b + d), d]
                };
                // Row r of G t is (a, b, d); row r of (G t) Gᵀ follows.
                let rows = col(0).into_iter().zip(col(1)).zip(col(2));
                for (r, ((a, b), d)) in rows.enumerate() {
                    let vals = [a, 0.5 * (a + b + d), 0.5 * (a - b + d), d];
                    for (s, v) in vals.into_iter().enumerate() {
                        // SAFETY: element (ξ, ci, o) is in `u`, written by the task of ci's block alone.
                        unsafe { ptr.slice(((r * 4 + s) * c + ci) * co + o, 1)[0] = v };
                    }
                }
            }
        }
    });
    u
}

/// `V [16][K][T]` for samples `n0..n0 + nb` of `src [N, K, H, W]` (`K = channels`): `Bᵀ d B`
/// of each tile, tile `t = (s·TH + ty)·TW + tx`.
fn transform_input(src: &[f32], channels: usize, g: Geom, n0: usize, nb: usize, v: &mut [f32]) {
    let (hw, co) = (g.hw(), channels);
    let (th, tw) = tiles(g);
    let t_all = nb * th * tw;
    let ptr = SendPtr(v.as_mut_ptr());
    (0..nb * co).into_par_iter().for_each(|i| {
        let (s, o) = (i / co, i % co);
        let plane = &src[((n0 + s) * co + o) * hw..][..hw];
        // SAFETY: each task writes the tiles of its own (sample, channel) in every ξ.
        best_isa(
            #[inline(always)]
            || unsafe { transform_plane(plane, g, co, s * th * tw, t_all, o, ptr) },
        )
    });
}

/// The tiles of one plane (channel `o` of `channels`) into `V[ξ][o][first..first + TH·TW]`.
///
/// # Safety
/// `v` holds `16 · channels · t_all` floats; no other thread writes these tiles.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
unsafe fn transform_plane(
    plane: &[f32],
    g: Geom,
    channels: usize,
    first: usize,
    t_all: usize,
    o: usize,
    v: SendPtr,
) {
    let (h, w) = (g.h, g.w);
    let (th, tw) = tiles(g);
    let zero = vec![0f32; w];
    let row = |r: isize| -> &[f32] {
        if r < 0 || r >= h as isize {
            &zero
        } else {
            &plane[r as usize * w..][..w]
        }
    };
    // The four rows of Bᵀ d, padded: p[x + 1] = t[x], zero at both ends and past W, so that
    // tile tx reads p[2tx .. 2tx + 4].
    let pl = 2 * tw + 2;
    let mut tp = vec![0f32; 4 * pl];
    let stride = channels * t_all;
    for ty in 0..th {
        let base = 2 * ty as isize - 1;
        let (d0, d1, d2, d3) = (row(base), row(base + 1), row(base + 2), row(base + 3));
        {
            // Bᵀ along the rows: d0 − d2, d1 + d2, d2 − d1, d1 − d3.
            let (t0, rest) = tp.split_at_mut(pl);
            let (t1, rest) = rest.split_at_mut(pl);
            let (t2, t3) = rest.split_at_mut(pl);
            let (t0, t1, t2, t3) = (
                &mut t0[1..=w],
                &mut t1[1..=w],
                &mut t2[1..=w],
                &mut t3[1..=w],
            );
            for x in 0..w {
                t0[x] = d0[x] - d2[x];
                t1[x] = d1[x] + d2[x];
                t2[x] = d2[x] - d1[x];
                t3[x] = d1[x] - d3[x];
            }
        }
        for i in 0..4 {
            let p = &tp[i * pl..][..pl];
            let at = (i * 4 * channels + o) * t_all + first + ty * tw;
            // SAFETY: the four rows start at `at + i·stride` (`i < 4`), `tw` floats each, inside `v`; each (channel, tile row) is written by one task only.
            let (o0, o1, o2, o3) = unsafe {
                (
                    v.slice(at, tw),
                    v.slice(at + stride, tw),
                    v.slice(at + 2 * stride, tw),
                    v.slice(at + 3 * stride, tw),
                )
            };
            // B along the columns: a − c, b + c, c − b, b − d of (a, b, c, d) = p[2tx..].
            for tx in 0..tw {
                let (a, b, c, d) = (p[2 * tx], p[2 * tx + 1], p[2 * tx + 2], p[2 * tx + 3]);
                o0[tx] = a - c;
                o1[tx] = b + c;
                o2[tx] = c - b;
                o3[tx] = b - d;
            }
        }
    }
}

/// Writes `Aᵀ M A` of each tile of `M [16][C][T]` into samples `n0..n0 + nb` of `dx [N, C, H, W]`.
fn transform_output(m: &[f32], g: Geom, n0: usize, nb: usize, dx: &mut [f32]) {
    let (hw, c) = (g.hw(), g.c);
    let (th, tw) = tiles(g);
    let t_all = nb * th * tw;
    dx[n0 * c * hw..(n0 + nb) * c * hw]
        .par_chunks_mut(hw)
        .enumerate()
        .for_each(|(i, plane)| {
            let (s, ci) = (i / c, i % c);
            let at = |xi: usize| &m[(xi * c + ci) * t_all + s * th * tw..][..th * tw];
            best_isa(
                #[inline(always)]
                || output_plane(&at, g, plane),
            )
        });
}

/// One plane of [`transform_output`]; `at(ξ)` is the plane's `TH·TW` tiles of `M[ξ]`.
#[inline(always)]
fn output_plane<'a>(at: &impl Fn(usize) -> &'a [f32], g: Geom, plane: &mut [f32]) {
    let (h, w) = (g.h, g.w);
    let (th, tw) = (h.div_ceil(2), w.div_ceil(2));
    // a[r][j] = Aᵀ along the rows: r = 0: m0j + m1j + m2j; r = 1: m1j − m2j − m3j.
    let mut a = vec![0f32; 8 * tw];
    let mut y = vec![0f32; 2 * tw];
    for ty in 0..th {
        let row = |xi: usize| &at(xi)[ty * tw..][..tw];
        for j in 0..4 {
            let (m0, m1, m2, m3) = (row(j), row(4 + j), row(8 + j), row(12 + j));
            let (a0, a1) = a.split_at_mut(4 * tw);
            for tx in 0..tw {
                a0[j * tw + tx] = m0[tx] + m1[tx] + m2[tx];
                a1[j * tw + tx] = m1[tx] - m2[tx] - m3[tx];
            }
        }
        for r in 0..2 {
            let oy = 2 * ty + r;
            if oy >= h {
                break;
            }
            let ar = &a[r * 4 * tw..][..4 * tw];
            let (c0, c1, c2, c3) = (
                &ar[..tw],
                &ar[tw..2 * tw],
                &ar[2 * tw..3 * tw],
                &ar[3 * tw..],
            );
            // A along the columns, interleaved: y[2tx] = c0 + c1 + c2, y[2tx + 1] = c1 − c2 − c3.
            for tx in 0..tw {
                y[2 * tx] = c0[tx] + c1[tx] + c2[tx];
                y[2 * tx + 1] = c1[tx] - c2[tx] - c3[tx];
            }
            plane[oy * w..][..w].copy_from_slice(&y[..w]);
        }
    }
}

/// Samples per chunk: `16 · max(C, Co) · tiles` within [`CHUNK_FLOATS`], at least one.
fn samples_per_chunk(n: usize, g: Geom) -> usize {
    let (th, tw) = tiles(g);
    (CHUNK_FLOATS / (16 * g.c.max(g.co) * th * tw).max(1)).clamp(1, n.max(1))
}

/// Runs `product(ξ, parallel)` for the 16 points ξ: one product per task while they keep the
/// threads busy, else one at a time over all threads (`parallel`). gemm sums the inner
/// dimension in the same order either way.
fn sixteen(product: impl Fn(usize, bool) + Sync) {
    if rayon::current_num_threads() <= 16 {
        (0..16).into_par_iter().for_each(|xi| product(xi, false));
    } else {
        (0..16).for_each(|xi| product(xi, true));
    }
}

/// `dx [N, C, H, W]` of a 3×3 same convolution from `grad = dL/dy [N, Co, H, W]` and
/// `weight [Co, C, 3, 3]`, `chunk` samples at a time (0: chosen from the shapes).
pub(super) fn input_grad(
    grad: &[f32],
    weight: &[f32],
    g: Geom,
    n: usize,
    chunk: usize,
) -> Vec<f32> {
    assert_eq!(g.k, 3, "Winograd F(2x2, 3x3) takes 3x3 kernels");
    let (th, tw) = tiles(g);
    let nb_max = if chunk == 0 {
        samples_per_chunk(n, g)
    } else {
        chunk.clamp(1, n.max(1))
    };
    let u = transform_weight(weight, g);
    // Every element of V (tiles of the chunk) and M (the products) is written before it is read.
    let mut v = Scratch::take(16 * g.co * nb_max * th * tw);
    let mut m = Scratch::take(16 * g.c * nb_max * th * tw);
    let mut dx = vec![0f32; n * g.c * g.hw()];
    let mut n0 = 0;
    while n0 < n {
        let nb = nb_max.min(n - n0);
        let t_all = nb * th * tw;
        transform_input(grad, g.co, g, n0, nb, &mut v);
        let (vp, mp) = (SendPtr(v.as_mut_ptr()), SendPtr(m.as_mut_ptr()));
        let product = |xi: usize, parallel: bool| {
            let lhs = Mat {
                ptr: u[xi * g.c * g.co..].as_ptr(),
                rs: g.co as isize,
                cs: 1,
            };
            let rhs = Mat {
                // SAFETY: the products read V[ξ] and write M[ξ]: disjoint for distinct ξ.
                ptr: unsafe { vp.slice(xi * g.co * t_all, g.co * t_all) }.as_ptr(),
                rs: t_all as isize,
                cs: 1,
            };
            // SAFETY: M[ξ] is written by the product of ξ alone (disjoint for distinct ξ).
            let dst = unsafe { mp.slice(xi * g.c * t_all, g.c * t_all) };
            matmul(dst, g.c, t_all, g.co, lhs, rhs, false, parallel);
        };
        sixteen(product);
        transform_output(&m, g, n0, nb, &mut dx);
        n0 += nb;
    }
    dx
}

/// `Y [16][Co][T]` for samples `n0..n0 + nb` of `grad [N, Co, H, W]`: `A dy Aᵀ` of each 2×2
/// tile (zero past the image), `A` the 4×2 transpose of `Aᵀ`.
fn transform_grad(grad: &[f32], g: Geom, n0: usize, nb: usize, y: &mut [f32]) {
    let (hw, co) = (g.hw(), g.co);
    let (th, tw) = tiles(g);
    let t_all = nb * th * tw;
    let ptr = SendPtr(y.as_mut_ptr());
    (0..nb * co).into_par_iter().for_each(|i| {
        let (s, o) = (i / co, i % co);
        let plane = &grad[((n0 + s) * co + o) * hw..][..hw];
        // SAFETY: each task writes the tiles of its own (sample, channel) in every ξ.
        best_isa(
            #[inline(always)]
            || unsafe { grad_plane(plane, g, s * th * tw, t_all, o, ptr) },
        )
    });
}

/// The tiles of one plane of `dY` (channel `o`) into `Y[ξ][o][first..first + TH·TW]`.
///
/// # Safety
/// `y` holds `16 · Co · t_all` floats; no other thread writes these tiles.
#[inline(always)]
unsafe fn grad_plane(plane: &[f32], g: Geom, first: usize, t_all: usize, o: usize, y: SendPtr) {
    let (h, w) = (g.h, g.w);
    let (th, tw) = tiles(g);
    let zero = vec![0f32; w];
    let row = |r: usize| -> &[f32] {
        if r >= h {
            &zero
        } else {
            &plane[r * w..][..w]
        }
    };
    // The four rows of A dy (dy rows 2ty and 2ty + 1): d0, d0 + d1, d0 − d1, −d1, each padded
    // with a zero past W, so that tile tx reads p[2tx], p[2tx + 1].
    let pl = 2 * tw;
    let mut tp = vec![0f32; 4 * pl];
    let stride = g.co * t_all;
    for ty in 0..th {
        let (d0, d1) = (row(2 * ty), row(2 * ty + 1));
        {
            let (t0, rest) = tp.split_at_mut(pl);
            let (t1, rest) = rest.split_at_mut(pl);
            let (t2, t3) = rest.split_at_mut(pl);
            let (t0, t1, t2, t3) = (&mut t0[..w], &mut t1[..w], &mut t2[..w], &mut t3[..w]);
            for x in 0..w {
                t0[x] = d0[x];
                t1[x] = d0[x] + d1[x];
                t2[x] = d0[x] - d1[x];
                t3[x] = -d1[x];
            }
        }
        for i in 0..4 {
            let p = &tp[i * pl..][..pl];
            let at = (i * 4 * g.co + o) * t_all + first + ty * tw;
            // SAFETY: the four rows start at `at + i·stride` (`i < 4`), `tw` floats each, inside `v`; each (channel, tile row) is written by one task only.
            let (o0, o1, o2, o3) = unsafe {
                (
                    y.slice(at, tw),
                    y.slice(at + stride, tw),
                    y.slice(at + 2 * stride, tw),
                    y.slice(at + 3 * stride, tw),
                )
            };
            // A along the columns: a, a + b, a − b, −b of (a, b) = p[2tx..].
            for tx in 0..tw {
                let (a, b) = (p[2 * tx], p[2 * tx + 1]);
                o0[tx] = a;
                o1[tx] = a + b;
                o2[tx] = a - b;
                o3[tx] = -b;
            }
        }
    }
}

/// `dW [Co, C, 3, 3]` of a 3×3 same convolution from its input `x [N, C, H, W]` and
/// `grad = dL/dy [N, Co, H, W]`, `chunk` samples at a time (0: chosen from the shapes).
///
/// The forward is `y = Aᵀ [(G g Gᵀ) ⊙ (Bᵀ d B)] A` per tile, so `dL/d(G g Gᵀ)` is the sum over
/// tiles of `(A dy Aᵀ) ⊙ (Bᵀ d B)` — 16 products `[Co, T] · [T, C]` — and `dW = Gᵀ (…) G`.
pub(super) fn weight_grad(x: &[f32], grad: &[f32], g: Geom, n: usize, chunk: usize) -> Vec<f32> {
    assert_eq!(g.k, 3, "Winograd F(2x2, 3x3) takes 3x3 kernels");
    let (c, co) = (g.c, g.co);
    let (th, tw) = tiles(g);
    let nb_max = if chunk == 0 {
        samples_per_chunk(n, g)
    } else {
        chunk.clamp(1, n.max(1))
    };
    let mut v = Scratch::take(16 * c * nb_max * th * tw);
    let mut y = Scratch::take(16 * co * nb_max * th * tw);
    // dU [16][Co][C], summed over the chunks.
    let mut du = vec![0f32; 16 * co * c];
    let mut n0 = 0;
    while n0 < n {
        let nb = nb_max.min(n - n0);
        let t_all = nb * th * tw;
        transform_input(x, c, g, n0, nb, &mut v);
        transform_grad(grad, g, n0, nb, &mut y);
        let (vp, yp) = (SendPtr(v.as_mut_ptr()), SendPtr(y.as_mut_ptr()));
        let dup = SendPtr(du.as_mut_ptr());
        let product = |xi: usize, parallel: bool| {
            // SAFETY: the products read Y[ξ] and V[ξ] and write dU[ξ]: disjoint for distinct ξ.
            let lhs = Mat {
                // SAFETY: Y[ξ] is read only (disjoint for distinct ξ).
                ptr: unsafe { yp.slice(xi * co * t_all, co * t_all) }.as_ptr(),
                rs: t_all as isize,
                cs: 1,
            };
            let rhs = Mat {
                // SAFETY: V[ξ] is read only.
                ptr: unsafe { vp.slice(xi * c * t_all, c * t_all) }.as_ptr(),
                rs: 1,
                cs: t_all as isize,
            };
            // SAFETY: dU[ξ] is written by the product of ξ alone.
            let dst = unsafe { dup.slice(xi * co * c, co * c) };
            matmul(dst, co, c, t_all, lhs, rhs, n0 > 0, parallel);
        };
        sixteen(product);
        n0 += nb;
    }
    // dW = Gᵀ dU G per (co, ci); Gᵀ = [[1, ½, ½, 0], [0, ½, −½, 0], [0, ½, ½, 1]].
    let mut dw = vec![0f32; co * c * 9];
    dw.par_chunks_mut(9).enumerate().for_each(|(i, out)| {
        let d = |r: usize, s: usize| du[(r * 4 + s) * co * c + i];
        let gt =
            |a: f32, b: f32, e: f32, f: f32| [a + 0.5 * (b + e), 0.5 * (b - e), 0.5 * (b + e) + f];
        // Rows: Gᵀ along r for each column s; then along s.
        let cols = [0, 1, 2, 3].map(|s| gt(d(0, s), d(1, s), d(2, s), d(3, s)));
        for r in 0..3 {
            let row = gt(cols[0][r], cols[1][r], cols[2][r], cols[3][r]);
            out[r * 3..][..3].copy_from_slice(&row);
        }
    });
    dw
}
