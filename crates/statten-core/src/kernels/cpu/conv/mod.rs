//! The same convolution on the CPU: im2col + gemm for dense inputs (the backward's two
//! products, col2im), the row lists of the non-zeros for spike inputs ([`sparse`]), Winograd's
//! F(2×2, 3×3) for the opt-in `winograd` algorithm ([`winograd`]), every sum in float64 for the
//! `float64` oracle ([`float64`]), and the `SameConvOps` implementation for `Flex` that picks
//! among them. The operator and its backward are in [`crate::conv`].

mod float64;
#[cfg(test)]
mod invariant;
mod sparse;
mod winograd;

use crate::conv::algorithm::{self, ConvAlgorithm};
use crate::conv::SameConvOps;
use crate::kernels::cpu::SendPtr;

// ---------------------------------------------------------------------------------------------
// The flex kernels.

/// Columns per chunk, in floats (16 MB).
const CHUNK_FLOATS: usize = 1 << 22;

/// Samples per chunk: as many as keep `C·k·k × P` within [`CHUNK_FLOATS`], at least one.
fn samples_per_chunk(n: usize, col_rows: usize, hw: usize) -> usize {
    (CHUNK_FLOATS / (col_rows * hw).max(1)).clamp(1, n.max(1))
}

/// The geometry of one convolution.
#[derive(Debug, Clone, Copy)]
struct Geom {
    c: usize,
    co: usize,
    h: usize,
    w: usize,
    k: usize,
}

impl Geom {
    fn hw(&self) -> usize {
        self.h * self.w
    }
    fn col_rows(&self) -> usize {
        self.c * self.k * self.k
    }
    /// Output columns `ow` whose input column `ow + kw − p` is inside the image (an empty range
    /// at `extent` where none is: a plane narrower than the kernel's reach).
    fn valid(&self, kx: usize, extent: usize) -> (usize, usize) {
        let p = self.k / 2;
        let lo = p.saturating_sub(kx).min(extent);
        let hi = (extent + p).saturating_sub(kx).min(extent);
        (lo, hi.max(lo))
    }
}

/// im2col of samples `n0..n0 + nb` of `x [N, C, H, W]` into `cols [C·k·k, nb·H·W]` (row
/// `(ci, kh, kw)`, column `(n, oh, ow)`), zero where the window leaves the image.
fn im2col(x: &[f32], g: Geom, n0: usize, nb: usize, cols: &mut [f32]) {
    use rayon::prelude::*;
    let plen = nb * g.hw();
    cols[..g.col_rows() * plen]
        .par_chunks_mut(plen)
        .enumerate()
        .for_each(|(row, out)| {
            crate::kernels::cpu::best_isa(
                #[inline(always)]
                || im2col_row(x, g, n0, nb, row, out),
            )
        });
}

/// Row `row` of [`im2col`].
#[inline(always)]
fn im2col_row(x: &[f32], g: Geom, n0: usize, nb: usize, row: usize, out: &mut [f32]) {
    let (hw, p, k) = (g.hw(), g.k / 2, g.k);
    let (ci, kh, kw) = (row / (k * k), (row / k) % k, row % k);
    let (w_lo, w_hi) = g.valid(kw, g.w);
    for n in 0..nb {
        let plane = &x[((n0 + n) * g.c + ci) * hw..][..hw];
        for oh in 0..g.h {
            let dst = &mut out[n * hw + oh * g.w..][..g.w];
            let ih = oh + kh;
            if ih < p || ih - p >= g.h {
                dst.fill(0.0);
                continue;
            }
            let src = &plane[(ih - p) * g.w..][..g.w];
            dst[..w_lo].fill(0.0);
            dst[w_hi..].fill(0.0);
            if w_lo < w_hi {
                // Input column of output column ow: ow + kw − p.
                dst[w_lo..w_hi].copy_from_slice(&src[w_lo + kw - p..w_hi + kw - p]);
            }
        }
    }
}

/// Adds `dcols [C·k·k, nb·H·W]` back into samples `n0..n0 + nb` of `dx [N, C, H, W]` (the
/// adjoint of [`im2col`]); each channel sums its `k·k` rows in order. Overwrites the columns of
/// `dcols` whose input column leaves the image with zeros.
fn col2im(dcols: &mut [f32], g: Geom, n0: usize, nb: usize, dx: &mut [f32]) {
    use rayon::prelude::*;
    let ptr = SendPtr(dx.as_mut_ptr());
    let per_channel = g.k * g.k * nb * g.hw();
    dcols[..g.c * per_channel]
        .par_chunks_mut(per_channel)
        .enumerate()
        .for_each(|(ci, rows)| {
            // SAFETY: each task writes the planes of its own channel only.
            crate::kernels::cpu::best_isa(
                #[inline(always)]
                || unsafe { col2im_channel(rows, g, n0, nb, ci, ptr) },
            )
        });
}

/// Channel `ci` of [`col2im`], from its `k·k` rows of `dcols`.
///
/// Each kernel offset `(kh, kw)` moves a pixel by a fixed flat distance, `(kh − p)·W + kw − p`,
/// so its valid output rows are added as one run, which vectorises (rows of 8–32 floats do not),
/// once the few columns whose input column leaves the image are set to zero in `rows`: those
/// land on a neighbouring pixel, and adding +0.0 there is exact (a sum that starts from +0.0 is
/// never −0.0). The sums per pixel run over `(kh, kw)` in order, as before.
///
/// # Safety
/// `dx` holds samples `n0..n0 + nb` of `[N, C, H, W]`, and no other thread writes channel `ci`.
#[inline(always)]
unsafe fn col2im_channel(rows: &mut [f32], g: Geom, n0: usize, nb: usize, ci: usize, dx: SendPtr) {
    let (hw, p, k, w) = (g.hw(), g.k / 2, g.k, g.w);
    let plen = nb * hw;
    for n in 0..nb {
        // SAFETY: channel `ci` of samples `n0..n0 + nb` is inside `dx`, and this thread alone writes it (this function's contract).
        let plane = unsafe { dx.slice(((n0 + n) * g.c + ci) * hw, hw) };
        for kh in 0..k {
            // Output rows whose input row `oh + kh − p` is inside the image.
            let (oh_lo, oh_hi) = (p.saturating_sub(kh), (g.h + p).saturating_sub(kh).min(g.h));
            for kw in 0..k {
                let row = &mut rows[(kh * k + kw) * plen + n * hw..][..hw];
                let (w_lo, w_hi) = g.valid(kw, w);
                if w_lo > 0 || w_hi < w {
                    for oh in 0..g.h {
                        row[oh * w..oh * w + w_lo].fill(0.0);
                        row[oh * w + w_hi..(oh + 1) * w].fill(0.0);
                    }
                }
                if oh_lo >= oh_hi {
                    continue;
                }
                let shift = (kh as isize - p as isize) * w as isize + kw as isize - p as isize;
                // Clip to the plane: what falls off either end is a zeroed column.
                let s_lo = (oh_lo * w).max((-shift).max(0) as usize);
                let s_hi = (oh_hi * w).min((hw as isize - shift).max(0) as usize);
                if s_lo >= s_hi {
                    // A plane narrower than the kernel's reach: nothing lands in it.
                    continue;
                }
                let src = &row[s_lo..s_hi];
                let d0 = (s_lo as isize + shift) as usize;
                for (d, s) in plane[d0..d0 + src.len()].iter_mut().zip(src) {
                    *d += *s;
                }
            }
        }
    }
}

/// Copies samples `n0..n0 + nb` of `grad [N, Co, H, W]` into `dy [Co, nb·H·W]`.
fn gather_grad(grad: &[f32], g: Geom, n0: usize, nb: usize, dy: &mut [f32]) {
    use rayon::prelude::*;
    let hw = g.hw();
    dy[..g.co * nb * hw]
        .par_chunks_mut(nb * hw)
        .enumerate()
        .for_each(|(co, out)| {
            for n in 0..nb {
                out[n * hw..][..hw].copy_from_slice(&grad[((n0 + n) * g.co + co) * hw..][..hw]);
            }
        });
}

/// A row-major matrix view for [`matmul`]: element `(i, j)` at `i·rs + j·cs`.
#[derive(Clone, Copy)]
struct Mat {
    ptr: *const f32,
    rs: isize,
    cs: isize,
}

/// `dst [m, n] (row-major) = (accumulate ? dst : 0) + lhs [m, k] · rhs [k, n]`, over the
/// thread pool where `parallel` and the product is large. The sums do not depend on it.
#[allow(clippy::too_many_arguments)]
fn matmul(
    dst: &mut [f32],
    m: usize,
    n: usize,
    k: usize,
    lhs: Mat,
    rhs: Mat,
    accumulate: bool,
    parallel: bool,
) {
    assert!(dst.len() >= m * n);
    let parallelism = if parallel && m * n * k >= 192 * 192 * 192 {
        gemm::Parallelism::Rayon(0)
    } else {
        gemm::Parallelism::None
    };
    // SAFETY: the views cover `m × k` and `k × n` elements of live buffers (checked by the
    // callers' shapes), `dst` covers `m × n`.
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            dst.as_mut_ptr(),
            1,
            n as isize,
            accumulate,
            lhs.ptr,
            lhs.cs,
            lhs.rs,
            rhs.ptr,
            rhs.cs,
            rhs.rs,
            if accumulate { 1.0 } else { 0.0 },
            1.0,
            false,
            false,
            false,
            parallelism,
        );
    }
}

/// A work buffer of the convolution backward, taken from a small pool and returned to it on
/// drop. Its contents are whatever an earlier user left: only for buffers written before read.
struct Scratch(Vec<f32>);

impl Scratch {
    /// Buffers kept between calls (the backward holds three at a time).
    const KEEP: usize = 3;

    fn pool() -> &'static std::sync::Mutex<Vec<Vec<f32>>> {
        static POOL: std::sync::Mutex<Vec<Vec<f32>>> = std::sync::Mutex::new(Vec::new());
        &POOL
    }

    /// A buffer of `len` floats: the pool's largest, grown (zero-filled) where too short.
    fn take(len: usize) -> Self {
        if len == 0 {
            return Self(Vec::new());
        }
        let mut pool = Self::pool().lock().unwrap_or_else(|e| e.into_inner());
        let largest = (0..pool.len()).max_by_key(|&i| pool[i].len());
        let mut v = largest.map(|i| pool.swap_remove(i)).unwrap_or_default();
        drop(pool);
        v.resize(len.max(v.len()), 0.0);
        Self(v)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let v = std::mem::take(&mut self.0);
        if v.is_empty() {
            return;
        }
        let mut pool = Self::pool().lock().unwrap_or_else(|e| e.into_inner());
        if pool.len() < Self::KEEP {
            pool.push(v);
        }
    }
}

impl std::ops::Deref for Scratch {
    type Target = Vec<f32>;
    fn deref(&self) -> &Vec<f32> {
        &self.0
    }
}

impl std::ops::DerefMut for Scratch {
    fn deref_mut(&mut self) -> &mut Vec<f32> {
        &mut self.0
    }
}

/// The backward of a same convolution on plain buffers: `(dx, dw)`; `dx` is empty unless
/// `need_x`.
#[allow(clippy::too_many_arguments)]
fn backward_f32(
    x: &[f32],
    weight: &[f32],
    grad: &[f32],
    g: Geom,
    n: usize,
    need_x: bool,
    dense_dw: bool,
    chunk: usize,
) -> (Vec<f32>, Vec<f32>) {
    let (hw, kr) = (g.hw(), g.col_rows());
    let nb_max = if chunk == 0 {
        samples_per_chunk(n, kr, hw)
    } else {
        chunk.min(n).max(1)
    };
    // The three work buffers are written in full before they are read (im2col and the gather
    // write every element of their part; the input-gradient product does not read `dcols`), so
    // buffers of an earlier call serve as they are: no zeroing, no fresh pages.
    let mut cols = Scratch::take(if dense_dw { kr * nb_max * hw } else { 0 });
    let mut dy = Scratch::take(if dense_dw || need_x {
        g.co * nb_max * hw
    } else {
        0
    });
    let mut dcols = Scratch::take(if need_x { kr * nb_max * hw } else { 0 });
    let mut dw = if dense_dw {
        vec![0f32; g.co * kr]
    } else {
        Vec::new()
    };
    let mut dx = if need_x {
        vec![0f32; n * g.c * hw]
    } else {
        Vec::new()
    };
    // Neither product wanted (a sparse first layer): nothing to gather.
    let mut n0 = if dense_dw || need_x { 0 } else { n };
    while n0 < n {
        let nb = nb_max.min(n - n0);
        let plen = (nb * hw) as isize;
        gather_grad(grad, g, n0, nb, &mut dy);
        let dy_view = Mat {
            ptr: dy.as_ptr(),
            rs: plen,
            cs: 1,
        };
        if dense_dw {
            // dW [Co, K] += dY [Co, P] · colsᵀ [P, K].
            im2col(x, g, n0, nb, &mut cols);
            let cols_t = Mat {
                ptr: cols.as_ptr(),
                rs: 1,
                cs: plen,
            };
            matmul(&mut dw, g.co, kr, nb * hw, dy_view, cols_t, n0 > 0, true);
        }
        if need_x {
            // dcols [K, P] = Wᵀ [K, Co] · dY [Co, P].
            let w_t = Mat {
                ptr: weight.as_ptr(),
                rs: 1,
                cs: kr as isize,
            };
            matmul(&mut dcols, kr, nb * hw, g.co, w_t, dy_view, false, true);
            col2im(&mut dcols, g, n0, nb, &mut dx);
        }
        n0 += nb;
    }
    (dx, dw)
}

/// The backward of a same convolution on plain buffers with the kernels `alg` allows: `(dx,
/// dw)`, `dx` empty unless `need_x`. Dense products, the sparse weight gradient where the input
/// is sparse enough, and Winograd or float64 sums where `alg` asks for them.
#[allow(clippy::too_many_arguments)]
fn backward_by(
    alg: ConvAlgorithm,
    xs: &[f32],
    ws: &[f32],
    gs: &[f32],
    g: Geom,
    n: usize,
    need_x: bool,
    chunk: usize,
) -> (Vec<f32>, Vec<f32>) {
    if alg == ConvAlgorithm::Float64 {
        return float64::backward(xs, ws, gs, g, n, need_x);
    }
    // Opt-in (not reference-exact): a 3×3 layer's input gradient, and its weight gradient
    // where the input is not sparse enough, by Winograd's minimal filtering.
    let wino = alg == ConvAlgorithm::Winograd && winograd::applies(g);
    let pass = if wino {
        sparse::Pass::WeightGradWinograd
    } else {
        sparse::Pass::WeightGrad
    };
    let sparse_x = sparse::applies(xs, g, pass);
    let (wino_dx, wino_dw) = (need_x && wino, sparse_x.is_none() && wino);
    let dense_dw = sparse_x.is_none() && !wino_dw;
    let (dx, mut dw) = backward_f32(xs, ws, gs, g, n, need_x && !wino_dx, dense_dw, chunk);
    let dx = if wino_dx {
        winograd::input_grad(gs, ws, g, n, chunk)
    } else {
        dx
    };
    if let Some(sc) = sparse_x {
        dw = sparse::weight_grad(xs, gs, g, n, chunk, sc.binary);
    } else if wino_dw {
        dw = winograd::weight_grad(xs, gs, g, n, chunk);
    }
    (dx, dw)
}

mod flex_impl {
    use super::*;
    use burn::backend::ops::{ConvOptions, ModuleOps};
    use burn::backend::Flex;
    use burn::tensor::TensorData;
    use burn_flex::FlexTensor;

    fn contiguous_f32(t: &FlexTensor) -> std::borrow::Cow<'_, [f32]> {
        crate::kernels::cpu::contiguous_f32(t, "the same-conv kernel")
    }

    fn dims4(t: &FlexTensor) -> [usize; 4] {
        let s = t.layout().shape();
        assert_eq!(s.num_dims(), 4, "the same-conv kernel takes 4-D tensors");
        [s[0], s[1], s[2], s[3]]
    }

    impl SameConvOps for Flex {
        fn same_conv(x: FlexTensor, weight: FlexTensor) -> FlexTensor {
            let [n, c, h, w] = dims4(&x);
            let [co, _, k, _] = dims4(&weight);
            {
                let xs = contiguous_f32(&x);
                let g = Geom { c, co, h, w, k };
                if algorithm::current() == ConvAlgorithm::Float64 {
                    let y = float64::forward(&xs, &contiguous_f32(&weight), g, n);
                    return FlexTensor::from_data(TensorData::new(y, vec![n, co, h, w]));
                }
                if let Some(sc) = sparse::applies(&xs, g, sparse::Pass::Forward) {
                    let y = sparse::forward(&xs, &contiguous_f32(&weight), g, n, sc.binary, None);
                    return FlexTensor::from_data(TensorData::new(y, vec![n, co, h, w]));
                }
            }
            let p = k / 2;
            let options = ConvOptions::new([1, 1], [p, p], [1, 1], 1);
            <Flex as ModuleOps<Flex>>::conv2d(x, weight, None, options)
        }

        fn same_conv_backward(
            x: FlexTensor,
            weight: FlexTensor,
            grad: FlexTensor,
            need_x: bool,
            chunk: usize,
        ) -> (FlexTensor, FlexTensor) {
            let [n, c, h, w] = dims4(&x);
            let [co, ci, k, k2] = dims4(&weight);
            assert!(
                ci == c && k == k2 && k % 2 == 1,
                "same conv: weight {:?} does not fit input {:?}",
                [co, ci, k, k2],
                [n, c, h, w]
            );
            assert_eq!(
                dims4(&grad),
                [n, co, h, w],
                "same conv: output gradient shape"
            );
            let g = Geom { c, co, h, w, k };
            let xs = contiguous_f32(&x);
            let ws = contiguous_f32(&weight);
            let gs = contiguous_f32(&grad);
            let (dx, dw) = backward_by(algorithm::current(), &xs, &ws, &gs, g, n, need_x, chunk);
            let dx = if need_x {
                FlexTensor::from_data(TensorData::new(dx, vec![n, c, h, w]))
            } else {
                FlexTensor::from_data(TensorData::new(vec![0f32], vec![1, 1, 1, 1]))
            };
            let dw = FlexTensor::from_data(TensorData::new(dw, vec![co, c, k, k]));
            (dx, dw)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::layers::conv2d;
    use burn::tensor::{Distribution, TensorData};

    use crate::conv::accuracy::on_threads;
    use crate::conv::*;
    use crate::kernels::max_rel;
    use burn::nn::PaddingConfig2d;
    use burn::prelude::*;

    /// Forward bit-equal to `Conv2d::forward`, gradients equal to Burn's to rounding, for
    /// spike-like and real-valued inputs, 1×1 / 3×3 / 5×5 kernels, one chunk or several.
    #[test]
    fn same_conv_matches_burn_conv() {
        let device = Device::flex().autodiff();
        for (k, c, co, h, w) in [
            (3, 5, 4, 7, 6),
            (3, 2, 8, 4, 4),
            (1, 6, 3, 5, 5),
            (5, 3, 2, 6, 7),
        ] {
            let conv = conv2d(c, co, k, false, &device);
            // Half the inputs non-zero: too dense for the sparse kernels, Burn's forward.
            let x = Tensor::<4>::random([3, c, h, w], Distribution::Bernoulli(0.5), &device)
                .require_grad();
            assert!(same_conv_supported(&conv, &x));
            let ours = same_conv(x.clone(), conv.weight.val());
            let burn = conv.forward(x.clone());
            assert_eq!(
                ours.to_data().try_to_vec::<f32>().unwrap(),
                burn.to_data().try_to_vec::<f32>().unwrap(),
                "forward k={k}"
            );
            let r = Tensor::<4>::random(ours.dims(), Distribution::Normal(0.0, 1.0), &device);
            let g1 = (ours * r.clone()).sum().backward();
            let g2 = (burn * r.clone()).sum().backward();
            let dx1 = x.grad(&g1).unwrap();
            let dx2 = x.grad(&g2).unwrap();
            let dw1 = conv.weight.grad(&g1).unwrap();
            let dw2 = conv.weight.grad(&g2).unwrap();
            assert!(
                max_rel(&dx1, &dx2) < 1e-5,
                "dx k={k}: {}",
                max_rel(&dx1, &dx2)
            );
            assert!(
                max_rel(&dw1, &dw2) < 1e-5,
                "dw k={k}: {}",
                max_rel(&dw1, &dw2)
            );

            // Chunks of one and two samples give the single chunk's result to rounding.
            let xi = x.clone().inner();
            let wi = conv.weight.val().inner();
            let ri = r.inner();
            let (dx_all, dw_all) = same_conv_backward(xi.clone(), wi.clone(), ri.clone(), true, 0);
            for chunk in [1, 2] {
                let (dxc, dwc) =
                    same_conv_backward(xi.clone(), wi.clone(), ri.clone(), true, chunk);
                assert!(max_rel(&dxc, &dx_all) < 1e-6, "dx chunk {chunk}");
                assert!(max_rel(&dwc, &dw_all) < 1e-5, "dw chunk {chunk}");
            }
            let (none, dw_only) = same_conv_backward(xi, wi, ri, false, 0);
            assert_eq!(none.dims(), [1, 1, 1, 1]);
            assert_eq!(
                dw_only.to_data().try_to_vec::<f32>().unwrap(),
                dw_all.to_data().try_to_vec::<f32>().unwrap()
            );
        }
    }

    /// A sparse input of `[n, c, h, w]` (about 5 % non-zero): binary spikes, spikes that
    /// sum two gates ({0, 1, 2}, as DVS STAtten's projection input) or real values.
    fn sparse_input(dims: [usize; 4], kind: usize, device: &Device) -> Tensor<4> {
        let mask = Tensor::<4>::random(dims, Distribution::Bernoulli(0.05), device);
        match kind {
            0 => mask,
            1 => mask.clone() + mask * Tensor::random(dims, Distribution::Bernoulli(0.5), device),
            _ => mask * Tensor::random(dims, Distribution::Normal(0.0, 1.0), device),
        }
    }

    /// Spike-like inputs take the sparse kernels; forward and both gradients equal Burn's
    /// `Conv2d` to rounding, for 1×1 / 3×3 / 5×5 kernels, output widths that fill one block
    /// of channels, several, or part of one.
    #[test]
    fn sparse_inputs_match_burn_conv() {
        let device = Device::flex().autodiff();
        for (k, c, co, h, w, kind) in [
            (3, 6, 3, 7, 6, 0),
            (3, 5, 20, 5, 4, 1),
            (1, 40, 70, 4, 4, 0),
            (1, 40, 70, 4, 4, 2),
            (1, 130, 20, 3, 5, 0),
            (5, 4, 9, 6, 7, 2),
            (3, 3, 130, 3, 3, 0),
        ] {
            let conv = conv2d(c, co, k, false, &device);
            let x = sparse_input([3, c, h, w], kind, &device).require_grad();
            let xs = x.to_data().try_to_vec::<f32>().unwrap();
            let g = Geom { c, co, h, w, k };
            assert!(
                sparse::applies(&xs, g, sparse::Pass::Forward).is_some()
                    && sparse::applies(&xs, g, sparse::Pass::WeightGrad).is_some(),
                "the test input must take the sparse kernels"
            );
            let ours = same_conv(x.clone(), conv.weight.val());
            let burn = conv.forward(x.clone());
            let e = max_rel(&ours, &burn);
            assert!(e < 1e-6, "forward k={k} co={co}: {e}");
            let r = Tensor::<4>::random(ours.dims(), Distribution::Normal(0.0, 1.0), &device);
            let g1 = (ours * r.clone()).sum().backward();
            let g2 = (burn * r).sum().backward();
            let e = max_rel(&x.grad(&g1).unwrap(), &x.grad(&g2).unwrap());
            assert!(e < 1e-5, "dx k={k} co={co}: {e}");
            let e = max_rel(
                &conv.weight.grad(&g1).unwrap(),
                &conv.weight.grad(&g2).unwrap(),
            );
            assert!(e < 1e-5, "dw k={k} co={co}: {e}");
        }
    }

    /// The values of a random `dims` tensor.
    fn random_vec(dims: [usize; 4], dist: Distribution, device: &Device) -> Vec<f32> {
        Tensor::<4>::random(dims, dist, device)
            .to_data()
            .try_to_vec::<f32>()
            .unwrap()
    }

    /// The sparse kernels give the same bits whatever the chunk of samples and the thread
    /// count (each sum has one order).
    #[test]
    fn sparse_kernels_do_not_depend_on_chunks_or_threads() {
        let device = Device::flex();
        let (n, c, co, h, w, k) = (5, 6, 20, 6, 5, 3);
        let g = Geom { c, co, h, w, k };
        let x = sparse_input([n, c, h, w], 1, &device)
            .to_data()
            .try_to_vec::<f32>()
            .unwrap();
        assert!(!sparse::scan(&x).binary, "the test input holds twos");
        let wt = random_vec([co, c, k, k], Distribution::Normal(0.0, 0.1), &device);
        let dy = random_vec([n, co, h, w], Distribution::Normal(0.0, 1.0), &device);
        let run = |threads: usize, chunk: usize| {
            on_threads(threads, || {
                (
                    sparse::forward(&x, &wt, g, n, false, None),
                    sparse::weight_grad(&x, &dy, g, n, chunk, false),
                )
            })
        };
        let (y, dw) = run(1, 0);
        assert!(y.iter().chain(&dw).all(|v| v.is_finite()));
        assert!(dw.iter().any(|v| *v != 0.0) && y.iter().any(|v| *v != 0.0));
        for (threads, chunk) in [(1, 1), (2, 2), (3, 0), (3, 4)] {
            let (y2, dw2) = run(threads, chunk);
            assert_eq!(y2, y, "forward, {threads} threads, chunk {chunk}");
            assert_eq!(dw2, dw, "weight gradient, {threads} threads, chunk {chunk}");
        }
    }

    /// The row-list forward gives the same bits with the kernel offsets outermost and pixel by
    /// pixel, for binary and real-valued sparse inputs, 3×3 and 5×5 kernels, full and partial
    /// blocks of output channels.
    #[test]
    fn forward_orders_give_the_same_bits() {
        let device = Device::flex();
        for (k, c, co, h, w, kind) in [
            (3, 6, 70, 7, 6, 0),
            (3, 20, 40, 9, 9, 2),
            (5, 4, 9, 6, 7, 1),
        ] {
            let g = Geom { c, co, h, w, k };
            let x = sparse_input([3, c, h, w], kind, &device)
                .to_data()
                .try_to_vec::<f32>()
                .unwrap();
            let binary = sparse::scan(&x).binary;
            assert_eq!(binary, kind == 0);
            let wt = random_vec([co, c, k, k], Distribution::Normal(0.0, 0.3), &device);
            let run = |order| sparse::forward(&x, &wt, g, 3, binary, Some(order));
            let (by_offset, by_pixel) = (run(true), run(false));
            assert_eq!(by_offset.len(), 3 * co * h * w);
            assert!(
                by_offset.iter().any(|v| *v != 0.0),
                "the input must reach the output"
            );
            let bits = |v: &[f32]| v.iter().map(|f| f.to_bits()).collect::<Vec<_>>();
            assert_eq!(bits(&by_offset), bits(&by_pixel), "k={k} c={c} co={co}");
        }
    }

    /// The 1×1 forward of spikes (bitmask kernel, taken when the input is binary) gives the same
    /// bits as the row-list kernel (taken for the same input when told it is not binary), at
    /// any thread count; 150 channels span three mask groups, the last one partial, and 70
    /// output channels end in a partial block. The weight gradient of the same layer (still a
    /// row-list kernel up to 10 % non-zeros, else gemm) equals `dY · xᵀ`.
    #[test]
    fn masked_forward_equals_row_lists() {
        let device = Device::flex();
        let (n, c, co, h, w) = (3, 150, 70, 9, 9);
        let g = Geom { c, co, h, w, k: 1 };
        let x = random_vec([n, c, h, w], Distribution::Bernoulli(0.3), &device);
        assert!(sparse::scan(&x).binary);
        let wt = random_vec([co, c, 1, 1], Distribution::Normal(0.0, 0.1), &device);
        let dy = random_vec([n, co, h, w], Distribution::Normal(0.0, 1.0), &device);
        let run = |threads: usize, binary: bool| {
            on_threads(threads, || sparse::forward(&x, &wt, g, n, binary, None))
        };
        let lists = run(1, false);
        assert_eq!(lists.len(), n * co * h * w);
        assert!(lists.iter().all(|v| v.is_finite()) && lists.iter().any(|v| *v != 0.0));
        for threads in [1, 2, 3] {
            assert_eq!(run(threads, true), lists, "{threads} threads");
        }
        // And the forward equals Burn's convolution to rounding, the weight gradient through the
        // operator the product `dY · xᵀ`.
        let ad = Device::flex().autodiff();
        let t4 = |v: &[f32], dims: [usize; 4]| {
            Tensor::<4>::from_data(TensorData::new(v.to_vec(), dims), &ad)
        };
        let mut conv = conv2d(c, co, 1, false, &ad);
        conv.weight = burn::module::Param::from_tensor(t4(&wt, [co, c, 1, 1]).require_grad());
        let e = max_rel(
            &t4(&lists, [n, co, h, w]),
            &conv.forward(t4(&x, [n, c, h, w])),
        );
        assert!(e < 1e-6, "{e}");
        let dyt = t4(&dy, [n, co, h, w]);
        let ours = same_conv(t4(&x, [n, c, h, w]), conv.weight.val());
        let grads = (ours * dyt.clone()).sum().backward();
        let got = conv.weight.grad(&grads).unwrap();
        let x2: Tensor<2> = t4(&x, [n, c, h, w])
            .permute([1, 0, 2, 3])
            .reshape([c, n * h * w]);
        let dy2: Tensor<2> = dyt.permute([1, 0, 2, 3]).reshape([co, n * h * w]);
        let want = dy2.matmul(x2.transpose()).reshape([co, c, 1, 1]);
        let e = max_rel(&got, &want);
        assert!(e < 1e-5, "dw {e}");
    }

    /// Which densities take the sparse kernels; a NaN input (counted as a non-zero) reaches
    /// the outputs of its window, as in the dense path.
    #[test]
    fn sparse_path_choice_and_nan() {
        use sparse::Pass::{Forward, WeightGrad, WeightGradWinograd};
        let g = |k| Geom {
            c: 1,
            co: 1,
            h: 1,
            w: 10,
            k,
        };
        let x = |nnz: usize| (0..10).map(|i| (i < nnz) as u8 as f32).collect::<Vec<_>>();
        // 3×3: forward up to 30 %, weight gradient up to 20 %; 1×1: the forward of spikes up to
        // 40 %, of other values and every weight gradient 10 %.
        let takes = |nnz, k, pass| sparse::applies(&x(nnz), g(k), pass).is_some();
        assert!(takes(3, 3, Forward) && !takes(4, 3, Forward));
        assert!(takes(2, 3, WeightGrad) && !takes(3, 3, WeightGrad));
        // Against Winograd's weight gradient: up to 9 %.
        assert!(takes(0, 3, WeightGradWinograd) && !takes(1, 3, WeightGradWinograd));
        assert!(takes(4, 1, Forward) && !takes(5, 1, Forward));
        assert!(takes(1, 1, WeightGrad) && !takes(2, 1, WeightGrad));
        let twos = |nnz: usize| x(nnz).iter().map(|v| 2.0 * v).collect::<Vec<_>>();
        assert!(sparse::applies(&twos(1), g(1), Forward).is_some());
        assert!(sparse::applies(&twos(2), g(1), Forward).is_none());
        assert!(sparse::applies(&[], g(3), Forward).is_none());
        // One pass tells density and binarity; a 2 or a NaN is not binary.
        let sc = sparse::scan(&x(3));
        assert!(sc.binary && (sc.density - 0.3).abs() < 1e-12);
        assert!(!sparse::scan(&[0.0, 2.0]).binary && !sparse::scan(&[f32::NAN]).binary);
        let device = Device::flex();
        let conv = conv2d(2, 3, 3, false, &device);
        let mut xs = vec![0f32; 2 * 2 * 4 * 4];
        xs[5] = f32::NAN;
        let x = Tensor::<4>::from_data(TensorData::new(xs, [2, 2, 4, 4]), &device);
        let y = same_conv(x, conv.weight.val())
            .to_data()
            .try_to_vec::<f32>()
            .unwrap();
        // Input pixel (1, 1) of sample 0, channel 0: its 3×3 window of outputs in every channel.
        let nan = y.iter().filter(|v| v.is_nan()).count();
        assert_eq!(nan, 3 * 9, "{y:?}");
    }

    /// col2im's one-run-per-offset form gives the same bits as adding each in-image row
    /// segment separately (the plain adjoint of im2col), for kernels 1, 3 and 5, odd and even
    /// planes, two samples of a chunk starting past the first.
    #[test]
    fn col2im_equals_row_by_row_adjoint() {
        for (k, h, w) in [
            (1usize, 3usize, 5usize),
            (3, 8, 8),
            (3, 5, 7),
            (5, 6, 9),
            (3, 1, 4),
        ] {
            let (c, nb, n0, n) = (3usize, 2usize, 1usize, 3usize);
            let g = Geom { c, co: 1, h, w, k };
            let (hw, p) = (g.hw(), k / 2);
            let plen = nb * hw;
            let dcols: Vec<f32> = (0..c * k * k * plen)
                .map(|i| ((i * 7919) % 1009) as f32 / 97.0 - 5.0)
                .collect();
            let mut expect = vec![0f32; n * c * hw];
            for ci in 0..c {
                for s in 0..nb {
                    let plane = ((n0 + s) * c + ci) * hw;
                    for kh in 0..k {
                        for kw in 0..k {
                            let row = &dcols[(ci * k * k + kh * k + kw) * plen + s * hw..];
                            for oh in 0..h {
                                for ow in 0..w {
                                    let (ih, iw) = (oh + kh, ow + kw);
                                    if ih >= p && ih - p < h && iw >= p && iw - p < w {
                                        expect[plane + (ih - p) * w + iw - p] += row[oh * w + ow];
                                    }
                                }
                            }
                        }
                    }
                }
            }
            let mut got = vec![0f32; n * c * hw];
            col2im(&mut dcols.clone(), g, n0, nb, &mut got);
            assert_eq!(got.len(), expect.len());
            let bits = |v: &[f32]| v.iter().map(|f| f.to_bits()).collect::<Vec<_>>();
            assert_eq!(bits(&got), bits(&expect), "k {k}, {h}x{w}");
        }
    }

    /// The first layer's input needs no gradient: the weight gradient still matches Burn's.
    /// The largest `|a − want|` relative to `max |want|`; NaN counts as infinite, and the
    /// lengths must agree.
    fn rel_err(a: &[f32], want: &[f64]) -> f64 {
        assert_eq!(a.len(), want.len(), "lengths differ");
        let scale = want.iter().fold(0f64, |m, v| m.max(v.abs()));
        a.iter()
            .zip(want)
            .map(|(a, b)| (*a as f64 - b).abs() / scale)
            .fold(
                0f64,
                |m, d| if d.is_nan() { f64::INFINITY } else { m.max(d) },
            )
    }

    /// The Winograd weight gradient for input `x` (random) and output gradient `dy` equals a
    /// float64 sum of the definition and the direct product to rounding, in one chunk or
    /// several; its bits do not depend on the thread count.
    fn winograd_weight_grad_check(dy: &[f32], g: Geom, n: usize, device: &Device) {
        let (c, co, h, w) = (g.c, g.co, g.h, g.w);
        let x = random_vec([n, c, h, w], Distribution::Normal(0.0, 1.0), device);
        // dW[o, ci, kh, kw] = Σ dy[s, o, y, x] · x[s, ci, y + kh − 1, x + kw − 1].
        let mut want = vec![0f64; co * c * 9];
        for (i, v) in want.iter_mut().enumerate() {
            let (o, ci, kh, kw) = (i / (c * 9), i / 9 % c, i / 3 % 3, i % 3);
            for s in 0..n {
                for y in 0..h {
                    for xx in 0..w {
                        let (iy, ix) = (y + kh, xx + kw);
                        if iy < 1 || ix < 1 || iy > h || ix > w {
                            continue;
                        }
                        let d = dy[((s * co + o) * h + y) * w + xx] as f64;
                        *v += d * x[((s * c + ci) * h + iy - 1) * w + ix - 1] as f64;
                    }
                }
            }
        }
        let err = |a: &[f32]| rel_err(a, &want);
        let wt = vec![0f32; co * c * 9];
        let (_, direct) = backward_f32(&x, &wt, dy, g, n, false, true, 0);
        let got = winograd::weight_grad(&x, dy, g, n, 0);
        let (e_wino, e_direct) = (err(&got), err(&direct));
        assert!(e_wino < 2e-6, "winograd dW {n}x{c}->{co} {h}x{w}: {e_wino}");
        assert!(
            e_direct < 2e-6,
            "direct dW {n}x{c}->{co} {h}x{w}: {e_direct}"
        );
        for chunk in [1, 2] {
            let e = err(&winograd::weight_grad(&x, dy, g, n, chunk));
            assert!(e < 2e-6, "dW chunk {chunk}: {e}");
        }
        let bits = |v: &[f32]| v.iter().map(|f| f.to_bits()).collect::<Vec<_>>();
        for threads in [1, 2, 3, 17] {
            let again = on_threads(threads, || winograd::weight_grad(&x, dy, g, n, 0));
            assert_eq!(bits(&again), bits(&got), "dW, {threads} threads");
        }
    }

    /// The Winograd input gradient of a 3×3 same convolution equals a float64 sum of the
    /// definition and the direct product to rounding, for even, odd and one-wide planes, in one
    /// chunk of samples or several; its bits do not depend on the thread count (17 threads take
    /// the products one at a time over the pool); a NaN in the output gradient reaches `dx`.
    #[test]
    fn winograd_input_grad_equals_direct() {
        let device = Device::flex();
        for (n, c, co, h, w) in [
            (3, 5, 7, 6, 6),
            (2, 4, 3, 5, 7),
            (2, 3, 4, 1, 1),
            (2, 3, 2, 1, 4),
            (4, 20, 33, 8, 8),
        ] {
            let g = Geom { c, co, h, w, k: 3 };
            let wt = random_vec([co, c, 3, 3], Distribution::Normal(0.0, 0.3), &device);
            let dy = random_vec([n, co, h, w], Distribution::Normal(0.0, 1.0), &device);
            let x = vec![0f32; n * c * h * w];
            // dx[s, ci, y, x] = Σ dy[s, o, y − kh + 1, x − kw + 1] · W[o, ci, kh, kw].
            let mut want = vec![0f64; n * c * h * w];
            for s in 0..n {
                for ci in 0..c {
                    for y in 0..h {
                        for xx in 0..w {
                            let mut sum = 0f64;
                            for o in 0..co {
                                for kh in 0..3 {
                                    for kw in 0..3 {
                                        let (oy, ox) = (y + 1, xx + 1);
                                        if oy < kh || ox < kw || oy - kh >= h || ox - kw >= w {
                                            continue;
                                        }
                                        let d = dy[((s * co + o) * h + oy - kh) * w + ox - kw];
                                        let k = wt[((o * c + ci) * 3 + kh) * 3 + kw];
                                        sum += d as f64 * k as f64;
                                    }
                                }
                            }
                            want[((s * c + ci) * h + y) * w + xx] = sum;
                        }
                    }
                }
            }
            let (direct, _) = backward_f32(&x, &wt, &dy, g, n, true, false, 0);
            let got = winograd::input_grad(&dy, &wt, g, n, 0);
            winograd_weight_grad_check(&dy, g, n, &device);
            let err = |a: &[f32]| rel_err(a, &want);
            let (e_wino, e_direct) = (err(&got), err(&direct));
            assert!(e_wino < 2e-6, "winograd {n}x{c}->{co} {h}x{w}: {e_wino}");
            assert!(e_direct < 2e-6, "direct {n}x{c}->{co} {h}x{w}: {e_direct}");
            let bits = |v: &[f32]| v.iter().map(|f| f.to_bits()).collect::<Vec<_>>();
            for threads in [1, 2, 3, 17] {
                let again = on_threads(threads, || winograd::input_grad(&dy, &wt, g, n, 0));
                assert_eq!(bits(&again), bits(&got), "{threads} threads");
            }
            // Other chunks give gemm other widths, hence other kernels: equal to rounding.
            for chunk in [1, 2] {
                let e = err(&winograd::input_grad(&dy, &wt, g, n, chunk));
                assert!(e < 2e-6, "chunk {chunk}: {e}");
            }
        }
        let g = Geom {
            c: 2,
            co: 3,
            h: 4,
            w: 4,
            k: 3,
        };
        let wt = vec![0.5f32; 3 * 2 * 9];
        let mut dy = vec![0f32; 2 * 3 * 16];
        dy[3 * 16 + 5] = f32::NAN;
        let dx = winograd::input_grad(&dy, &wt, g, 2, 0);
        assert!(
            dx[..2 * 16].iter().all(|v| *v == 0.0),
            "sample 0 is untouched"
        );
        assert!(
            dx[2 * 16..].iter().any(|v| v.is_nan()),
            "the NaN reaches dx"
        );
    }

    #[test]
    fn same_conv_without_input_gradient() {
        let device = Device::flex().autodiff();
        let conv = conv2d(3, 4, 3, false, &device);
        let x = Tensor::<4>::random([2, 3, 5, 5], Distribution::Normal(0.0, 1.0), &device);
        let g1 = same_conv(x.clone(), conv.weight.val()).sum().backward();
        let g2 = conv.forward(x).sum().backward();
        let (a, b) = (
            conv.weight.grad(&g1).unwrap(),
            conv.weight.grad(&g2).unwrap(),
        );
        assert!(max_rel(&a, &b) < 1e-5, "{}", max_rel(&a, &b));
    }

    /// Strided, dilated, grouped or unevenly padded convolutions are not taken.
    #[test]
    fn same_conv_declines_other_convolutions() {
        use burn::nn::conv::Conv2dConfig;
        let device = Device::flex();
        let x = Tensor::<4>::zeros([1, 4, 6, 6], &device);
        let same = |c: Conv2dConfig| same_conv_supported(&c.init(&device), &x);
        let base = || {
            Conv2dConfig::new([4, 4], [3, 3]).with_padding(PaddingConfig2d::Explicit(1, 1, 1, 1))
        };
        assert!(same(base()));
        assert!(!same(base().with_stride([2, 2])));
        assert!(!same(base().with_dilation([2, 2])));
        assert!(!same(base().with_groups(2)));
        assert!(!same(Conv2dConfig::new([4, 4], [3, 3])));
        assert!(!same(Conv2dConfig::new([4, 4], [2, 2])));
    }
}
