//! The input gradient of a 3×3 same convolution by Winograd's minimal filtering, F(2×2, 3×3):
//! 2.25× fewer multiply-adds than `Wᵀ · dY` and col2im.
//!
//! The input gradient of a stride-1 convolution with padding 1 is again one: `dx[ci]` is the
//! sum over `co` of `dY[co]` correlated with the kernel `W[co, ci]` turned by 180°. F(2×2, 3×3)
//! computes a 2×2 output tile from a 4×4 input tile as `Aᵀ [(G g Gᵀ) ⊙ (Bᵀ d B)] A` (Lavin and
//! Gray, 2016), so the channel sum becomes 16 matrix products, one per point `ξ` of the 4×4
//! transformed tile, each `[C, Co] · [Co, tiles]` — 16 multiply-adds per tile and channel pair
//! where the direct form takes 36:
//!
//! - `U[ξ] [C, Co]`: the turned kernels, `G g Gᵀ` (`G` holds halves: the one rounding step of
//!   the transforms, with the products' sums);
//! - `V[ξ] [Co, tiles]`: `Bᵀ d B` of each 4×4 tile of `dY` (zero outside the image; additions
//!   and subtractions only);
//! - `M[ξ] = U[ξ] · V[ξ]`, then `dx` tile `= Aᵀ M A` (additions only).
//!
//! The sums have one order whatever the thread count (a tile belongs to one task of each pass;
//! gemm sums over `Co` in one order however it splits the columns), so results are
//! reproducible. The chunk of samples, chosen from the shapes, sets the products' widths, and
//! gemm's kernels for other widths may round differently, as in the direct product.
//! They equal the direct form's to rounding, within a few units in the last place of the
//! gradient's scale: the rounding of the transformed kernels, and of the 16 products' sums.
//! Only gradients take this path; forwards, whose outputs meet spike thresholds and max-pool
//! ties, keep the direct kernels.

use super::{matmul, Geom, Mat, Scratch};
use crate::cpu_kernels::{best_isa, SendPtr};
use rayon::prelude::*;

/// Transformed floats per chunk and buffer (16 MB), as the direct backward's columns.
const CHUNK_FLOATS: usize = super::CHUNK_FLOATS;

/// Whether the environment turns this path off (`STATTEN_NO_WINOGRAD=1`, read once): for
/// measuring it against the direct product with one binary.
fn turned_off() -> bool {
    static OFF: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *OFF.get_or_init(|| std::env::var("STATTEN_NO_WINOGRAD").is_ok_and(|v| v == "1"))
}

/// Whether [`input_grad`] takes the input gradient of a convolution of geometry `g`.
pub(super) fn applies(g: Geom) -> bool {
    g.k == 3 && !turned_off()
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
    (0..c).into_par_iter().for_each(|ci| {
        for o in 0..co {
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
                    // SAFETY: element (ξ, ci, o) is written by the task of `ci` alone.
                    unsafe { ptr.slice(((r * 4 + s) * c + ci) * co + o, 1)[0] = v };
                }
            }
        }
    });
    u
}

/// `V [16][Co][T]` for samples `n0..n0 + nb` of `grad [N, Co, H, W]`: `Bᵀ d B` of each tile,
/// tile `t = (s·TH + ty)·TW + tx`.
fn transform_input(grad: &[f32], g: Geom, n0: usize, nb: usize, v: &mut [f32]) {
    let (hw, co) = (g.hw(), g.co);
    let (th, tw) = tiles(g);
    let t_all = nb * th * tw;
    let ptr = SendPtr(v.as_mut_ptr());
    (0..nb * co).into_par_iter().for_each(|i| {
        let (s, o) = (i / co, i % co);
        let plane = &grad[((n0 + s) * co + o) * hw..][..hw];
        // SAFETY: each task writes the tiles of its own (sample, channel) in every ξ.
        best_isa(
            #[inline(always)]
            || unsafe { transform_plane(plane, g, s * th * tw, t_all, o, ptr) },
        )
    });
}

/// The tiles of one plane of `dY` into `V[ξ][o][first..first + TH·TW]`.
///
/// # Safety
/// `v` holds `16 · Co · t_all` floats; no other thread writes these tiles.
#[inline(always)]
unsafe fn transform_plane(
    plane: &[f32],
    g: Geom,
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
    // Padded row p[x + 1] = t[x] (zero at both ends and past W), split into even and odd
    // positions: tile tx reads p[2tx .. 2tx + 4] = E[tx], O[tx], E[tx + 1], O[tx + 1].
    let mut padded = vec![0f32; 2 * tw + 2];
    let mut even = vec![0f32; tw + 1];
    let mut odd = vec![0f32; tw + 1];
    let mut t = vec![0f32; w];
    for ty in 0..th {
        let base = 2 * ty as isize - 1;
        let (d0, d1, d2, d3) = (row(base), row(base + 1), row(base + 2), row(base + 3));
        for i in 0..4 {
            // Bᵀ along the rows: d0 − d2, d1 + d2, d2 − d1, d1 − d3.
            for x in 0..w {
                t[x] = match i {
                    0 => d0[x] - d2[x],
                    1 => d1[x] + d2[x],
                    2 => d2[x] - d1[x],
                    _ => d1[x] - d3[x],
                };
            }
            padded[1..=w].copy_from_slice(&t);
            for k in 0..=tw {
                even[k] = padded[2 * k];
                odd[k] = padded[2 * k + 1];
            }
            let at = |j: usize| unsafe {
                v.slice(((i * 4 + j) * g.co + o) * t_all + first + ty * tw, tw)
            };
            // B along the columns.
            for (tx, d) in at(0).iter_mut().enumerate() {
                *d = even[tx] - even[tx + 1];
            }
            for (tx, d) in at(1).iter_mut().enumerate() {
                *d = odd[tx] + even[tx + 1];
            }
            for (tx, d) in at(2).iter_mut().enumerate() {
                *d = even[tx + 1] - odd[tx];
            }
            for (tx, d) in at(3).iter_mut().enumerate() {
                *d = odd[tx] - odd[tx + 1];
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
        transform_input(grad, g, n0, nb, &mut v);
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
            let dst = unsafe { mp.slice(xi * g.c * t_all, g.c * t_all) };
            matmul(dst, g.c, t_all, g.co, lhs, rhs, false, parallel);
        };
        // Sixteen products: one per task while they keep the threads busy, else one at a time
        // over all threads. gemm sums over Co in the same order either way.
        if rayon::current_num_threads() <= 16 {
            (0..16).into_par_iter().for_each(|xi| product(xi, false));
        } else {
            (0..16).for_each(|xi| product(xi, true));
        }
        transform_output(&m, g, n0, nb, &mut dx);
        n0 += nb;
    }
    dx
}
