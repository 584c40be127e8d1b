//! The sparse weight gradient: per (input channel, kernel offset), the output-gradient rows at
//! the non-zero inputs.

use rayon::prelude::*;

use super::{block_width, channel_lists, Geom, Lists};
use crate::kernels::cpu::simd::{with_best_simd, Acc, Simd};

/// Samples per chunk of the weight gradient: the chunk's transposed output gradient within
/// 512 K floats (2 MB), at least one sample.
fn grad_chunk(n: usize, g: Geom) -> usize {
    ((512 << 10) / (g.hw() * g.co).max(1)).clamp(1, n.max(1))
}

/// The weight gradient `dW [Co, C, k, k]` over the non-zeros of `x`; `grad = dL/dy [N, Co, H,
/// W]`. `chunk` samples at a time (0: chosen from the shapes); the result does not depend on it.
pub(crate) fn weight_grad(
    x: &[f32],
    grad: &[f32],
    g: Geom,
    n: usize,
    chunk: usize,
    binary: bool,
) -> Vec<f32> {
    let kr = g.col_rows();
    let cb = block_width(g.co, kr);
    match cb {
        64 => weight_grad_cb::<64>(x, grad, g, n, chunk, binary),
        32 => weight_grad_cb::<32>(x, grad, g, n, chunk, binary),
        _ => weight_grad_cb::<16>(x, grad, g, n, chunk, binary),
    }
}

fn weight_grad_cb<const CB: usize>(
    x: &[f32],
    grad: &[f32],
    g: Geom,
    n: usize,
    chunk: usize,
    binary: bool,
) -> Vec<f32> {
    let (hw, k) = (g.hw(), g.k);
    let blocks = g.co.div_ceil(CB);
    let cop = blocks * CB;
    let nb_max = if chunk == 0 {
        grad_chunk(n, g)
    } else {
        chunk.clamp(1, n.max(1))
    };
    // Accumulators per input channel: rows (kh, kw), each `blocks × CB` floats.
    let per_ci = k * k * cop;
    let mut acc = vec![0f32; g.c * per_ci];
    // The chunk's output gradient, pixel-major in blocks: [block][n·HW][CB].
    let mut dyt = vec![0f32; blocks * nb_max * hw * CB];
    let mut n0 = 0;
    while n0 < n {
        let nb = nb_max.min(n - n0);
        transpose_grad::<CB>(grad, g, n0, nb, &mut dyt[..blocks * nb * hw * CB]);
        let lists = channel_lists(x, g, n0, nb);
        let dyt = &dyt[..blocks * nb * hw * CB];
        acc.par_chunks_mut(per_ci).enumerate().for_each(|(ci, a)| {
            let args = GradArgs {
                lists: &lists,
                dyt,
                g,
                nb,
                ci,
                acc: a,
            };
            if binary {
                with_best_simd!(weight_grad_task, GradArgs, CB, true, args)
            } else {
                with_best_simd!(weight_grad_task, GradArgs, CB, false, args)
            }
        });
        n0 += nb;
    }
    // dW [co, ci, kh, kw] from acc [ci][kh·k + kw][co].
    let mut dw = vec![0f32; g.co * g.c * k * k];
    dw.par_chunks_mut(g.c * k * k)
        .enumerate()
        .for_each(|(co, row)| {
            for ci in 0..g.c {
                for r in 0..k * k {
                    row[ci * k * k + r] = acc[ci * per_ci + r * cop + co];
                }
            }
        });
    dw
}

/// Copies samples `n0..n0 + nb` of `grad [N, Co, H·W]` into `dyt [block][n·HW + pix][CB]`
/// (zero past `Co`).
fn transpose_grad<const CB: usize>(grad: &[f32], g: Geom, n0: usize, nb: usize, dyt: &mut [f32]) {
    let hw = g.hw();
    dyt.par_chunks_mut(hw * CB)
        .enumerate()
        .for_each(|(i, dst)| {
            // Chunk i: block b, sample s.
            let (b, s) = (i / nb, i % nb);
            let width = CB.min(g.co - b * CB);
            for j in 0..width {
                let src = &grad[((n0 + s) * g.co + b * CB + j) * hw..][..hw];
                for (pix, v) in src.iter().enumerate() {
                    dst[pix * CB + j] = *v;
                }
            }
            if width < CB {
                for pix in 0..hw {
                    dst[pix * CB + width..(pix + 1) * CB].fill(0.0);
                }
            }
        });
}

/// One weight-gradient task: input channel `ci` over a chunk of `nb` samples, adding into
/// `acc` (`[kh·k + kw][blocks·CB]`).
struct GradArgs<'a> {
    lists: &'a Lists,
    /// The chunk's output gradient, `[block][n·HW][CB]`.
    dyt: &'a [f32],
    g: Geom,
    nb: usize,
    ci: usize,
    acc: &'a mut [f32],
}

/// # Safety
/// `S`'s instructions run on this CPU; `a.dyt` holds `blocks · nb · H·W` rows of `CB` floats
/// and the lists' pixels are inside the image.
#[inline(always)]
unsafe fn weight_grad_task<S: Simd, const CB: usize, const BIN: bool>(a: GradArgs<'_>) {
    let g = a.g;
    let (hw, k, p, nb) = (g.hw(), g.k, g.k / 2, a.nb);
    let blocks = g.co.div_ceil(CB);
    let cop = blocks * CB;
    let (idx, val) = (&a.lists.idx[..], &a.lists.val[..]);
    assert!(a.dyt.len() >= blocks * nb * hw * CB && a.acc.len() >= k * k * cop);
    for b in 0..blocks {
        let dyb = a.dyt[b * nb * hw * CB..].as_ptr();
        for kh in 0..k {
            for kw in 0..k {
                let slot = a.acc[(kh * k + kw) * cop + b * CB..][..CB].as_mut_ptr();
                // SAFETY: `slot` is `CB` floats of `acc` (checked by the assertion above).
                let mut acc = unsafe { Acc::<S, CB>::load(slot) };
                for s in 0..nb {
                    for j in a.lists.range(s * g.c + a.ci) {
                        // SAFETY: j < end ≤ len.
                        let at = unsafe { *idx.get_unchecked(j) } as usize;
                        let (ih, iw) = (at >> 16, at & 0xffff);
                        // Output pixel (oh, ow) = (ih + p − kh, iw + p − kw), inside the image.
                        let (oh, ow) = (ih + p, iw + p);
                        if oh < kh || oh - kh >= g.h || ow < kw || ow - kw >= g.w {
                            continue;
                        }
                        let q = s * hw + (oh - kh) * g.w + (ow - kw);
                        // SAFETY: q < nb·HW, so the row is inside this block of `dyt`.
                        unsafe { acc.add_row::<BIN>(*val.get_unchecked(j), dyb.add(q * CB)) };
                    }
                }
                // SAFETY: as the load above: `CB` floats of `acc`.
                unsafe { acc.store(slot) };
            }
        }
    }
}
