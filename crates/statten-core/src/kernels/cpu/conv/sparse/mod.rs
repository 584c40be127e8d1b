//! Same convolutions whose input is mostly zeros — the spikes every convolution of the SDT and
//! Spikformer stems and blocks takes, except the first — computed over the non-zeros only.
//!
//! A dense product spends a multiply-add on every zero; here the forward gathers, for each output
//! pixel, the weight rows of the non-zero inputs in its window, and the weight gradient gathers,
//! for each (input channel, kernel offset), the output-gradient rows at the non-zero inputs. Both
//! are vectorised over a block of output channels held in registers. A 1×1 forward of spikes
//! walks per-pixel bitmasks of its non-zero channels instead, 64 channels at a time, so that
//! their weight rows stay in L1. The input gradient `Wᵀ · dY` has no sparse factor and stays a
//! dense product.
//!
//! Every sum runs in one fixed order — forward over `(kh, kw, ci)`, weight gradient over
//! `(n, pixel)` — whatever the thread count, the block sizes or the CPU's vector width (no fused
//! multiply-add), so results are reproducible across machines. They equal the dense kernels' to
//! rounding: the order differs from gemm's.

use super::Geom;
use rayon::prelude::*;

/// Which of the two sparse kernels a density decides for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Pass {
    /// The forward `y = conv(x, W)`.
    Forward,
    /// The weight gradient `dW`.
    WeightGrad,
    /// The weight gradient of a layer whose dense alternative is Winograd's (see
    /// `super::winograd`), 2.25× cheaper than the direct product.
    WeightGradWinograd,
}

/// The largest fraction of non-zeros at which the sparse kernels beat the dense ones (`binary`:
/// the input is spikes, 0 or 1). A non-zero costs a row of `Co` additions where gemm runs near
/// the core's peak from registers, so sparse wins below a break-even density, measured with the
/// shapes of the CIFAR-10 2-512 model (BENCHMARKS.md, "Spike-sparse convolutions" and "The 1×1
/// forward of spikes from bitmasks"): a `k×k` forward still wins at 28 % (its windows overlap,
/// so rows are reused from L1), its weight gradient up to about 20 %, any other 1×1 product up
/// to about 10 % (on a 2-core AVX-512 EPYC; on an AVX2 Zen 3 neither the `k×k` weight gradient
/// at 25 % nor the row-list 1×1 kernel at 28 % won either). A 1×1 forward of spikes runs the
/// bitmask kernel ([`forward_masked`]), whose weight rows stay in L1: on the AVX2 Zen 3 at 2
/// threads 1.2–1.5× faster than gemm at 28–35 %, still ahead at 55 %, hence 40 %.
pub(super) fn max_density(k: usize, pass: Pass, binary: bool) -> f64 {
    match (k, pass) {
        (1, Pass::Forward) if binary => 0.4,
        (1, _) => 0.1,
        (_, Pass::Forward) => 0.3,
        (_, Pass::WeightGrad) => 0.2,
        // Against Winograd's dense weight gradient the break-even fell to 8–10 % on the AVX2
        // Zen 3 at 2 threads (CIFAR-10 2-512 stem, 64→128 and 128→256 channels at 32×32).
        (_, Pass::WeightGradWinograd) => 0.09,
    }
}

/// What one pass over an input tells the kernels.
#[derive(Debug, Clone, Copy)]
pub(super) struct Scan {
    /// The fraction of non-zero elements (NaN counts as non-zero; 1 for an empty input).
    pub(super) density: f64,
    /// Every element is 0 or 1 (spikes): the kernels then add rows without multiplying.
    pub(super) binary: bool,
}

/// One parallel pass over `x`: its density and whether it is binary.
pub(super) fn scan(x: &[f32]) -> Scan {
    if x.is_empty() {
        return Scan {
            density: 1.0,
            binary: true,
        };
    }
    // Both counts in one branch-free pass (vectorised; a short-circuiting `all` is not).
    let (nnz, other) = x
        .par_chunks(1 << 16)
        .map(|c| {
            crate::kernels::cpu::best_isa(
                #[inline(always)]
                || {
                    let (mut nnz, mut other) = (0u32, 0u32);
                    for &v in c {
                        nnz += (v != 0.0) as u32;
                        other += (v != 0.0 && v != 1.0) as u32;
                    }
                    (nnz as usize, other as usize)
                },
            )
        })
        .reduce(|| (0, 0), |a, b| (a.0 + b.0, a.1 + b.1));
    Scan {
        density: nnz as f64 / x.len() as f64,
        binary: other == 0,
    }
}

/// Whether the environment turns the sparse kernels off (`STATTEN_DENSE_CONV=1`, read once): for
/// measuring them against the dense path with one binary.
fn turned_off() -> bool {
    static OFF: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *OFF.get_or_init(|| std::env::var("STATTEN_DENSE_CONV").is_ok_and(|v| v == "1"))
}

/// The scan of `x` when the sparse kernel of `pass` takes it in a convolution of geometry `g`
/// (pixel coordinates are kept in 16 bits), else `None`.
pub(super) fn applies(x: &[f32], g: Geom, pass: Pass) -> Option<Scan> {
    if g.h >= 1 << 16 || g.w >= 1 << 16 || turned_off() {
        return None;
    }
    let sc = scan(x);
    (sc.density <= max_density(g.k, pass, sc.binary)).then_some(sc)
}

/// A block of output channels: the widest of 64 and 32 that does not exceed `co` rounded up to
/// 16 and keeps one block of a `k_rows`-row packed matrix within 1 MiB (an L2 cache), else 16
/// (one AVX-512 vector: no block is narrower).
fn block_width(co: usize, k_rows: usize) -> usize {
    let co16 = co.div_ceil(16) * 16;
    for cb in [64usize, 32] {
        if cb <= co16 && k_rows * cb * 4 <= 1 << 20 {
            return cb;
        }
    }
    16
}

/// Compressed lists of non-zeros: list `i` is `idx[start[i]..end[i]]` with values `val[..]`.
/// Each list has one slot of slack after it, so that the fill can write without branching.
struct Lists {
    start: Vec<usize>,
    end: Vec<usize>,
    idx: Vec<u32>,
    val: Vec<f32>,
}

impl Lists {
    /// Lists from per-list counts; `fill(first, starts, idx, val)` writes the lists of one
    /// group (`starts`: their starts relative to the group's storage, one past the last too)
    /// and may write one slot past each list's end. Groups of `group` consecutive lists are
    /// filled in parallel.
    fn build(
        counts: Vec<usize>,
        group: usize,
        fill: impl Fn(usize, &[usize], &mut [u32], &mut [f32]) + Sync,
    ) -> Self {
        let mut start = Vec::with_capacity(counts.len() + 1);
        let mut total = 0usize;
        for c in &counts {
            start.push(total);
            total += c + 1;
        }
        start.push(total);
        let end: Vec<usize> = counts.iter().zip(&start).map(|(c, s)| s + c).collect();
        let mut idx = vec![0u32; total];
        let mut val = vec![0f32; total];
        // Split the storage at group boundaries; each group is filled by one task.
        let groups = counts.len().div_ceil(group.max(1));
        let mut parts = Vec::with_capacity(groups);
        let (mut ri, mut rv) = (&mut idx[..], &mut val[..]);
        for gi in 0..groups {
            let (a, b) = (gi * group, ((gi + 1) * group).min(counts.len()));
            let len = start[b] - start[a];
            let (hi, ti) = ri.split_at_mut(len);
            let (hv, tv) = rv.split_at_mut(len);
            parts.push((a, b, hi, hv));
            ri = ti;
            rv = tv;
        }
        parts.into_par_iter().for_each(|(a, b, pi, pv)| {
            let base = start[a];
            let rel: Vec<usize> = start[a..=b].iter().map(|o| o - base).collect();
            fill(a, &rel, pi, pv);
        });
        Self {
            start,
            end,
            idx,
            val,
        }
    }

    #[inline(always)]
    fn range(&self, i: usize) -> std::ops::Range<usize> {
        self.start[i]..self.end[i]
    }
}

/// Per input pixel `(n, ih, iw)` of `x [N, C, H·W]`, its non-zero channels in ascending order.
fn pixel_lists(x: &[f32], g: Geom, n: usize) -> Lists {
    let hw = g.hw();
    let counts: Vec<usize> = (0..n)
        .into_par_iter()
        .flat_map_iter(|s| {
            let mut cnt = vec![0usize; hw];
            for ci in 0..g.c {
                let plane = &x[(s * g.c + ci) * hw..][..hw];
                for (c, v) in cnt.iter_mut().zip(plane) {
                    *c += (*v != 0.0) as usize;
                }
            }
            cnt
        })
        .collect();
    Lists::build(counts, hw, |first, rel, idx, val| {
        let s = first / hw;
        let mut cursor: Vec<usize> = rel[..hw].to_vec();
        for ci in 0..g.c {
            let plane = &x[(s * g.c + ci) * hw..][..hw];
            // Branch-free: every element is written, a zero is overwritten by the next
            // non-zero or left in the slack.
            for (cur, v) in cursor.iter_mut().zip(plane) {
                let at = *cur;
                idx[at] = ci as u32;
                val[at] = *v;
                *cur = at + (*v != 0.0) as usize;
            }
        }
    })
}

/// Per plane `(n, ci)` of samples `n0..n0 + nb` of `x [N, C, H·W]`, its non-zero pixels
/// `(ih, iw)` as `ih << 16 | iw`, in ascending order (list `(n − n0)·C + ci`).
fn channel_lists(x: &[f32], g: Geom, n0: usize, nb: usize) -> Lists {
    let hw = g.hw();
    let plane = |i: usize| &x[(n0 * g.c + i) * hw..][..hw];
    let counts: Vec<usize> = (0..nb * g.c)
        .into_par_iter()
        .map(|i| plane(i).iter().map(|v| (*v != 0.0) as usize).sum())
        .collect();
    Lists::build(counts, 64, |first, rel, idx, val| {
        for (j, bounds) in rel.windows(2).enumerate() {
            let mut at = bounds[0];
            let mut pix = 0usize;
            for ih in 0..g.h {
                for iw in 0..g.w {
                    // Branch-free, as in `pixel_lists`.
                    let v = plane(first + j)[pix];
                    idx[at] = (ih << 16 | iw) as u32;
                    val[at] = v;
                    at += (v != 0.0) as usize;
                    pix += 1;
                }
            }
        }
    })
}

mod forward;
mod weight_grad;

pub(super) use forward::forward;
pub(super) use weight_grad::weight_grad;
