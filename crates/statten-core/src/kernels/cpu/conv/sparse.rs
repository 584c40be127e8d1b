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

/// The vector operations the kernels are written in (`W` lanes). Additions and products are
/// separate (no fused multiply-add), so every implementation rounds alike.
trait Simd {
    type V: Copy;
    const W: usize;
    unsafe fn zero() -> Self::V;
    unsafe fn splat(v: f32) -> Self::V;
    unsafe fn load(p: *const f32) -> Self::V;
    unsafe fn store(p: *mut f32, v: Self::V);
    unsafe fn add(a: Self::V, b: Self::V) -> Self::V;
    unsafe fn mul(a: Self::V, b: Self::V) -> Self::V;
}

/// One lane at a time (CPUs without AVX2).
struct Scalar;

impl Simd for Scalar {
    type V = f32;
    const W: usize = 1;
    #[inline(always)]
    unsafe fn zero() -> f32 {
        0.0
    }
    #[inline(always)]
    unsafe fn splat(v: f32) -> f32 {
        v
    }
    #[inline(always)]
    unsafe fn load(p: *const f32) -> f32 {
        // SAFETY: the caller provides a readable float at `p` (`Simd::load`'s contract).
        unsafe { *p }
    }
    #[inline(always)]
    unsafe fn store(p: *mut f32, v: f32) {
        // SAFETY: the caller provides a writable float at `p` (`Simd::store`'s contract).
        unsafe { *p = v }
    }
    #[inline(always)]
    unsafe fn add(a: f32, b: f32) -> f32 {
        a + b
    }
    #[inline(always)]
    unsafe fn mul(a: f32, b: f32) -> f32 {
        a * b
    }
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use super::Simd;
    use std::arch::x86_64::*;

    /// Eight lanes.
    pub(super) struct Avx2;
    /// Sixteen lanes.
    pub(super) struct Avx512;

    /// `Simd` for one x86 vector type: its lanes, the target feature and its intrinsics.
    macro_rules! x86_simd {
        ($isa:ident, $v:ty, $w:expr, $feat:literal,
         $zero:ident, $splat:ident, $load:ident, $store:ident, $add:ident, $mul:ident) => {
            impl Simd for $isa {
                type V = $v;
                const W: usize = $w;
                #[inline]
                #[target_feature(enable = $feat)]
                unsafe fn zero() -> $v {
                    $zero()
                }
                #[inline]
                #[target_feature(enable = $feat)]
                unsafe fn splat(v: f32) -> $v {
                    $splat(v)
                }
                #[inline]
                #[target_feature(enable = $feat)]
                unsafe fn load(p: *const f32) -> $v {
                    // SAFETY: the caller provides `W` readable floats at `p`; this function runs only where the caller checked the CPU for the feature.
                    unsafe { $load(p) }
                }
                #[inline]
                #[target_feature(enable = $feat)]
                unsafe fn store(p: *mut f32, v: $v) {
                    // SAFETY: the caller provides `W` writable floats at `p`; this function runs only where the caller checked the CPU for the feature.
                    unsafe { $store(p, v) }
                }
                #[inline]
                #[target_feature(enable = $feat)]
                unsafe fn add(a: $v, b: $v) -> $v {
                    $add(a, b)
                }
                #[inline]
                #[target_feature(enable = $feat)]
                unsafe fn mul(a: $v, b: $v) -> $v {
                    $mul(a, b)
                }
            }
        };
    }

    x86_simd!(
        Avx2,
        __m256,
        8,
        "avx2",
        _mm256_setzero_ps,
        _mm256_set1_ps,
        _mm256_loadu_ps,
        _mm256_storeu_ps,
        _mm256_add_ps,
        _mm256_mul_ps
    );
    x86_simd!(
        Avx512,
        __m512,
        16,
        "avx512f",
        _mm512_setzero_ps,
        _mm512_set1_ps,
        _mm512_loadu_ps,
        _mm512_storeu_ps,
        _mm512_add_ps,
        _mm512_mul_ps
    );
}

/// `CB` floats of accumulators in `CB / W` vectors (at most 64 lanes).
struct Acc<S: Simd, const CB: usize> {
    v: [S::V; 64],
}

impl<S: Simd, const CB: usize> Acc<S, CB> {
    /// Vectors per block; a block is whole vectors (checked when compiled).
    const N: usize = {
        assert!(CB.is_multiple_of(S::W) && CB / S::W <= 64);
        CB / S::W
    };

    #[inline(always)]
    unsafe fn zero() -> Self {
        Self {
            // SAFETY: `S`'s instructions are available (this function's contract).
            v: [unsafe { S::zero() }; 64],
        }
    }

    /// From `CB` floats at `p`.
    #[inline(always)]
    unsafe fn load(p: *const f32) -> Self {
        // SAFETY: `S`'s instructions are available (this function's contract).
        let mut v = [unsafe { S::zero() }; 64];
        for (i, x) in v.iter_mut().enumerate().take(Self::N) {
            // SAFETY: `S`'s instructions are available; the caller provides `CB` floats at `p`.
            *x = unsafe { S::load(p.add(i * S::W)) };
        }
        Self { v }
    }

    #[inline(always)]
    unsafe fn store(&self, p: *mut f32) {
        for i in 0..Self::N {
            // SAFETY: `S`'s instructions are available; the caller provides `CB` writable floats at `p`.
            unsafe { S::store(p.add(i * S::W), self.v[i]) };
        }
    }

    /// `self += row` (`BIN`: the input is 1) or `self += x · row`, `row` `CB` floats at `p`.
    #[inline(always)]
    unsafe fn add_row<const BIN: bool>(&mut self, x: f32, p: *const f32) {
        if BIN {
            for i in 0..Self::N {
                // SAFETY: `S`'s instructions are available; the caller provides `CB` floats at `p`.
                self.v[i] = unsafe { S::add(self.v[i], S::load(p.add(i * S::W))) };
            }
        } else {
            // SAFETY: `S`'s instructions are available (this function's contract).
            let x = unsafe { S::splat(x) };
            for i in 0..Self::N {
                // SAFETY: `S`'s instructions are available; the caller provides `CB` floats at `p`.
                self.v[i] = unsafe { S::add(self.v[i], S::mul(x, S::load(p.add(i * S::W)))) };
            }
        }
    }
}

/// Calls `$task::<S, CB, BIN>($args)` with the widest vectors the CPU has.
macro_rules! with_best_simd {
    ($task:ident, $args_ty:ident, $cb:expr, $bin:expr, $args:expr) => {{
        #[cfg(target_arch = "x86_64")]
        {
            #[target_feature(enable = "avx512f")]
            unsafe fn v4<const CB: usize, const BIN: bool>(a: $args_ty<'_>) {
                // SAFETY: AVX-512F is enabled in this function; the arguments are the task's own (its contract holds as for the caller).
                unsafe { $task::<x86::Avx512, CB, BIN>(a) }
            }
            #[target_feature(enable = "avx2")]
            unsafe fn v3<const CB: usize, const BIN: bool>(a: $args_ty<'_>) {
                // SAFETY: AVX2 is enabled in this function; the arguments are the task's own.
                unsafe { $task::<x86::Avx2, CB, BIN>(a) }
            }
            if std::arch::is_x86_feature_detected!("avx512f") {
                // SAFETY: the CPU has AVX-512F.
                unsafe { v4::<$cb, $bin>($args) }
            } else if std::arch::is_x86_feature_detected!("avx2") {
                // SAFETY: the CPU has AVX2.
                unsafe { v3::<$cb, $bin>($args) }
            } else {
                // SAFETY: the scalar form needs no CPU feature; the arguments are the task's own.
                unsafe { $task::<Scalar, $cb, $bin>($args) }
            }
        }
        #[cfg(not(target_arch = "x86_64"))]
        {
            unsafe { $task::<Scalar, $cb, $bin>($args) }
        }
    }};
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

/// The forward `y [N, Co, H, W] = conv(x, weight)` over the non-zeros of `x`; `binary`: every
/// element of `x` is 0 or 1 (see [`Scan`]). A 1×1 convolution of spikes runs
/// [`forward_masked`], anything else the row-list kernel; for the same input both give the same
/// bits (each output sums its weight rows in ascending channel order). `order` sets the
/// row-list tasks' order (`Some(true)`: kernel offsets outermost, `Some(false)`: pixel by
/// pixel; both give the same bits) or leaves it to the shapes (`None`, see [`by_offset`]).
pub(super) fn forward(
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

/// Samples per chunk of the weight gradient: the chunk's transposed output gradient within
/// 512 K floats (2 MB), at least one sample.
fn grad_chunk(n: usize, g: Geom) -> usize {
    ((512 << 10) / (g.hw() * g.co).max(1)).clamp(1, n.max(1))
}

/// The weight gradient `dW [Co, C, k, k]` over the non-zeros of `x`; `grad = dL/dy [N, Co, H,
/// W]`. `chunk` samples at a time (0: chosen from the shapes); the result does not depend on it.
pub(super) fn weight_grad(
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
