//! The sparse forward: per output pixel, the weight rows of the non-zero inputs in its window
//! (row lists), or for a 1×1 convolution of spikes, per-pixel bitmasks of the non-zero channels.

use rayon::prelude::*;

use super::{block_width, pixel_lists, Geom, Lists};
use crate::kernels::cpu::simd::{with_best_simd, Acc, Simd};

/// The forward `y [N, Co, H, W] = conv(x, weight)` over the non-zeros of `x`; `binary`: every
/// element of `x` is 0 or 1 (see [`Scan`]). A 1×1 convolution of spikes runs
/// [`forward_masked`], anything else the row-list kernel; for the same input both give the same
/// bits (each output sums its weight rows in ascending channel order). `order` sets the
/// row-list tasks' order (`Some(true)`: kernel offsets outermost, `Some(false)`: pixel by
/// pixel; both give the same bits) or leaves it to the shapes (`None`, see [`by_offset`]).
pub(crate) fn forward(
    x: &[f32],
    weight: &[f32],
    g: Geom,
    n: usize,
    binary: bool,
    order: Option<bool>,
) -> Vec<f32> {
    let kr = g.col_rows();
    let cb = block_width(g.co, kr);
    match cb {
        64 => forward_cb::<64>(x, weight, g, n, binary, order),
        32 => forward_cb::<32>(x, weight, g, n, binary, order),
        _ => forward_cb::<16>(x, weight, g, n, binary, order),
    }
}

/// `weight [Co, C, k, k]` packed as blocks of `CB` output channels: block `b` holds rows
/// `(kh·k + kw)·C + ci` of `CB` floats (zero past `Co`).
fn pack_weight<const CB: usize>(weight: &[f32], g: Geom) -> Vec<f32> {
    let (k, kr) = (g.k, g.col_rows());
    let blocks = g.co.div_ceil(CB);
    let mut packed = vec![0f32; blocks * kr * CB];
    packed
        .par_chunks_mut(kr * CB)
        .enumerate()
        .for_each(|(b, blk)| {
            for j in 0..CB.min(g.co - b * CB) {
                let co = b * CB + j;
                for ci in 0..g.c {
                    for kh in 0..k {
                        for kw in 0..k {
                            let row = (kh * k + kw) * g.c + ci;
                            blk[row * CB + j] = weight[((co * g.c + ci) * k + kh) * k + kw];
                        }
                    }
                }
            }
        });
    packed
}

fn forward_cb<const CB: usize>(
    x: &[f32],
    weight: &[f32],
    g: Geom,
    n: usize,
    binary: bool,
    order: Option<bool>,
) -> Vec<f32> {
    if g.k == 1 && binary {
        return forward_masked::<CB>(x, weight, g, n);
    }
    let kr = g.col_rows();
    let lists = pixel_lists(x, g, n);
    let packed = pack_weight::<CB>(weight, g);
    let by_offset = order.unwrap_or_else(|| by_offset(g, CB));
    per_output_block::<CB>(g, n, |s, b, out| {
        let args = FwdArgs {
            lists: &lists,
            wb: &packed[b * kr * CB..][..kr * CB],
            g,
            s,
            out,
        };
        match (by_offset, binary) {
            (false, true) => with_best_simd!(forward_task, FwdArgs, CB, true, args),
            (false, false) => with_best_simd!(forward_task, FwdArgs, CB, false, args),
            (true, true) => with_best_simd!(forward_task_by_offset, FwdArgs, CB, true, args),
            (true, false) => with_best_simd!(forward_task_by_offset, FwdArgs, CB, false, args),
        }
    })
}

/// Whether a forward task walks the kernel offsets outermost ([`forward_task_by_offset`]): where
/// its accumulators, `H·W` pixels of `CB` floats, take at most 256 KiB (half of a Zen 3 L2).
/// Measured on the AVX2 Zen 3 at 2 threads (CIFAR-10 2-512 stem, medians of 12 calls): 3×3
/// layers 256→512 at 16×16 118 → 77 ms, 512→512 at 8×8 58 → 44 ms, 128→256 at 32×32 (the
/// 256 KiB case) 33 → 26 ms, 64→128 at 32×32 18 → 16 ms. Larger planes keep the pixel-by-pixel
/// order, which needs one row of accumulators only; both give the same bits.
fn by_offset(g: Geom, cb: usize) -> bool {
    g.hw() * cb * 4 <= 256 << 10
}

/// `y [N, Co, H·W]` from one task per (sample `s`, block `b` of `CB` output channels), run in
/// parallel: `task(s, b, out)` writes the block's `width ≤ CB` rows of sample `s` (`out`,
/// `width · H·W` floats).
fn per_output_block<const CB: usize>(
    g: Geom,
    n: usize,
    task: impl Fn(usize, usize, &mut [f32]) + Sync,
) -> Vec<f32> {
    let (hw, blocks) = (g.hw(), g.co.div_ceil(CB));
    let mut y = vec![0f32; n * g.co * hw];
    let ptr = crate::kernels::cpu::SendPtr(y.as_mut_ptr());
    (0..n * blocks).into_par_iter().for_each(|t| {
        let (s, b) = (t / blocks, t % blocks);
        let width = CB.min(g.co - b * CB);
        // SAFETY: rows `b·CB .. b·CB + width` of sample `s` belong to this task alone.
        task(s, b, unsafe {
            ptr.slice((s * g.co + b * CB) * hw, width * hw)
        });
    });
    y
}

/// Writes `pixels` pixel-major results of `tile` (`CB` floats per pixel) into the channel-major
/// rows of `out` (`width` rows of `hw`), from pixel `first` on: contiguous runs instead of
/// a store `hw` floats apart per channel.
fn untile<const CB: usize>(tile: &[f32], out: &mut [f32], hw: usize, first: usize, pixels: usize) {
    for (j, row) in out.chunks_exact_mut(hw).enumerate() {
        for (pix, d) in row[first..][..pixels].iter_mut().enumerate() {
            *d = tile[pix * CB + j];
        }
    }
}

/// One forward task: sample `s`, one block of output channels (`out`: its `width ≤ CB` rows).
struct FwdArgs<'a> {
    lists: &'a Lists,
    /// The block of the packed weight: `[C·k·k][CB]`.
    wb: &'a [f32],
    g: Geom,
    s: usize,
    out: &'a mut [f32],
}

impl<'a> FwdArgs<'a> {
    /// The lists' channels, values, starts and ends, once checked that the block of the weight
    /// holds `C·k·k` rows of `cb` floats and the lists cover sample `s` (what the tasks'
    /// unchecked reads rely on, with the channels below `C`).
    #[inline(always)]
    fn checked_lists(&self, cb: usize) -> (&'a [u32], &'a [f32], &'a [usize], &'a [usize]) {
        let l = self.lists;
        assert!(
            self.wb.len() >= self.g.col_rows() * cb && l.end.len() >= (self.s + 1) * self.g.hw()
        );
        (&l.idx, &l.val, &l.start, &l.end)
    }
}

/// # Safety
/// `S`'s instructions run on this CPU; `a.wb` holds `C·k·k` rows of `CB` floats and the lists'
/// channels are below `C`.
#[inline(always)]
unsafe fn forward_task<S: Simd, const CB: usize, const BIN: bool>(a: FwdArgs<'_>) {
    let g = a.g;
    let (hw, k, p) = (g.hw(), g.k, g.k / 2);
    let (idx, val, starts, ends) = a.checked_lists(CB);
    let wb = a.wb.as_ptr();
    // One output row's results, pixel-major, written out channel by channel after the row
    // (contiguous runs instead of a store `H·W` floats apart per channel).
    let mut tile = vec![0f32; g.w * CB];
    for oh in 0..g.h {
        for ow in 0..g.w {
            // SAFETY: `S`'s instructions are available (this function's contract).
            let mut acc = unsafe { Acc::<S, CB>::zero() };
            for kh in 0..k {
                let ih = oh + kh;
                if ih < p || ih - p >= g.h {
                    continue;
                }
                for kw in 0..k {
                    let iw = ow + kw;
                    if iw < p || iw - p >= g.w {
                        continue;
                    }
                    let pixel = a.s * hw + (ih - p) * g.w + (iw - p);
                    let base = (kh * k + kw) * g.c;
                    for j in starts[pixel]..ends[pixel] {
                        // SAFETY: j < end ≤ len; the channel is below C, so the row
                        // r < C·k·k is in `wb`.
                        unsafe {
                            let r = base + *idx.get_unchecked(j) as usize;
                            acc.add_row::<BIN>(*val.get_unchecked(j), wb.add(r * CB));
                        }
                    }
                }
            }
            // SAFETY: the tile holds `W·CB` floats.
            unsafe { acc.store(tile.as_mut_ptr().add(ow * CB)) };
        }
        untile::<CB>(&tile, a.out, hw, oh * g.w, g.w);
    }
}

/// [`forward_task`] with the kernel offsets outermost: for each offset `(kh, kw)`, every output
/// pixel adds the rows of its shifted input pixel's non-zeros to its accumulators, kept for the
/// whole sample in a pixel-major tile. One offset's `C` weight rows are then read for the whole
/// plane while they sit in L2, where the pixel-by-pixel order reads all `C·k·k` rows for each
/// pixel. Each output still sums over `(kh, kw, ci)` in that order from +0.0, so the results
/// are the same bits.
///
/// # Safety
/// As [`forward_task`].
#[inline(always)]
unsafe fn forward_task_by_offset<S: Simd, const CB: usize, const BIN: bool>(a: FwdArgs<'_>) {
    let g = a.g;
    let (hw, k, p) = (g.hw(), g.k, g.k / 2);
    let (idx, val, starts, ends) = a.checked_lists(CB);
    let wb = a.wb.as_ptr();
    let mut tile = vec![0f32; hw * CB];
    for kh in 0..k {
        // Output rows whose input row `oh + kh − p` is inside the image.
        let (oh_lo, oh_hi) = (p.saturating_sub(kh), (g.h + p).saturating_sub(kh).min(g.h));
        for kw in 0..k {
            let (ow_lo, ow_hi) = g.valid(kw, g.w);
            let base = (kh * k + kw) * g.c;
            for oh in oh_lo..oh_hi {
                for ow in ow_lo..ow_hi {
                    let pixel = a.s * hw + (oh + kh - p) * g.w + (ow + kw - p);
                    let (j0, j1) = (starts[pixel], ends[pixel]);
                    if j0 == j1 {
                        continue;
                    }
                    // SAFETY: the tile holds `H·W·CB` floats; j < end ≤ len; the channel is
                    // below C, so the row r < C·k·k is in `wb`.
                    unsafe {
                        let at = tile.as_mut_ptr().add((oh * g.w + ow) * CB);
                        let mut acc = Acc::<S, CB>::load(at);
                        for j in j0..j1 {
                            let r = base + *idx.get_unchecked(j) as usize;
                            acc.add_row::<BIN>(*val.get_unchecked(j), wb.add(r * CB));
                        }
                        acc.store(at);
                    }
                }
            }
        }
    }
    untile::<CB>(&tile, a.out, hw, 0, hw);
}

/// Per sample, group of 64 channels and pixel of `x [N, C, H·W]`: the bits of the group's
/// non-zero channels (bit `i`: channel `64·group + i`), as `[n][group][pixel]`.
fn pixel_masks(x: &[f32], g: Geom, n: usize) -> Vec<u64> {
    let (hw, groups) = (g.hw(), g.c.div_ceil(64));
    let mut masks = vec![0u64; n * groups * hw];
    masks.par_chunks_mut(hw).enumerate().for_each(|(i, dst)| {
        crate::kernels::cpu::best_isa(
            #[inline(always)]
            || {
                let (s, grp) = (i / groups, i % groups);
                for bit in 0..64.min(g.c - grp * 64) {
                    let plane = &x[(s * g.c + grp * 64 + bit) * hw..][..hw];
                    for (m, v) in dst.iter_mut().zip(plane) {
                        *m |= ((*v != 0.0) as u64) << bit;
                    }
                }
            },
        )
    });
    masks
}

/// The 1×1 forward of binary `x` from bitmasks: per task (sample, block of `CB` output
/// channels), 64 input channels at a time, whose `64 × CB` weight rows (16 KiB at `CB` = 64)
/// stay in L1 while every pixel of the sample adds those of its set bits. The row-list kernel
/// reads each row from L2 instead, and loses to gemm on the 27–29 % spikes of the q/k/v and
/// first MLP layers; this one beats it there.
fn forward_masked<const CB: usize>(x: &[f32], weight: &[f32], g: Geom, n: usize) -> Vec<f32> {
    debug_assert_eq!(g.k, 1);
    let hw = g.hw();
    let masks = pixel_masks(x, g, n);
    // Rows `ci` of `CB` floats per block: group `grp`'s rows are `64·grp ..`.
    let packed = pack_weight::<CB>(weight, g);
    let groups = g.c.div_ceil(64);
    per_output_block::<CB>(g, n, |s, b, out| {
        let args = MaskArgs {
            masks: &masks[s * groups * hw..][..groups * hw],
            wb: &packed[b * g.c * CB..][..g.c * CB],
            c: g.c,
            hw,
            out,
        };
        with_best_simd!(forward_masked_task, MaskArgs, CB, true, args)
    })
}

/// One masked forward task: one sample, one block of output channels (`out`: its `width ≤ CB`
/// rows of `hw` pixels).
struct MaskArgs<'a> {
    /// The sample's masks, `[group][pixel]`.
    masks: &'a [u64],
    /// The block of the packed weight: `[C][CB]`.
    wb: &'a [f32],
    c: usize,
    hw: usize,
    out: &'a mut [f32],
}

/// # Safety
/// `S`'s instructions run on this CPU; `a.wb` holds `C` rows of `CB` floats and no mask has a
/// bit at or past channel `C`.
#[inline(always)]
unsafe fn forward_masked_task<S: Simd, const CB: usize, const BIN: bool>(a: MaskArgs<'_>) {
    let (hw, groups) = (a.hw, a.c.div_ceil(64));
    assert!(a.wb.len() >= a.c * CB && a.masks.len() >= groups * hw);
    // The running sums, pixel-major: each pixel's `CB` floats are contiguous.
    let mut tile = vec![0f32; hw * CB];
    for grp in 0..groups {
        let rows = a.wb[grp * 64 * CB..].as_ptr();
        for (pix, &mask) in a.masks[grp * hw..][..hw].iter().enumerate() {
            // SAFETY: the tile holds `hw · CB` floats.
            let t = unsafe { tile.as_mut_ptr().add(pix * CB) };
            // SAFETY: `t` is `CB` floats of the tile (`hw · CB` floats).
            let mut acc = unsafe { Acc::<S, CB>::load(t) };
            let mut m = mask;
            while m != 0 {
                // SAFETY: bit `i` is set only for channel `64·grp + i < C`, a row of `wb`.
                unsafe { acc.add_row::<BIN>(1.0, rows.add(m.trailing_zeros() as usize * CB)) };
                m &= m - 1;
            }
            // SAFETY: as the load above.
            unsafe { acc.store(t) };
        }
    }
    untile::<CB>(&tile, a.out, hw, 0, hw);
}
