//! The 3×3 max pool on the CPU (see [`crate::pool`] for the operator): the per-plane kernels
//! and the `MaxPool3Ops` implementation for `Flex`.

use crate::pool::MaxPool3Ops;

/// Output extent of a 3-wide window with padding 1 over `n` inputs (`n ≥ 1`).
fn out_len(n: usize, stride: usize) -> usize {
    (n - 1) / stride + 1
}

// ---------------------------------------------------------------------------------------------
// The flex kernels: one rayon task per plane.

/// `(y, winners)` of `planes` planes `[h, w]`.
fn forward_f32(
    x: &[f32],
    planes: usize,
    h: usize,
    w: usize,
    stride: usize,
) -> (Vec<f32>, Vec<i32>) {
    use rayon::prelude::*;
    let (oh, ow) = (out_len(h, stride), out_len(w, stride));
    let geo = Interior::new(h, w, stride);
    let mut y = vec![0f32; planes * oh * ow];
    let mut winners = vec![0i32; planes * oh * ow];
    y.par_chunks_mut(oh * ow)
        .zip(winners.par_chunks_mut(oh * ow))
        .enumerate()
        .for_each(|(p, (yp, ip))| {
            let plane = &x[p * h * w..][..h * w];
            crate::kernels::cpu::best_isa(
                #[inline(always)]
                || pool_plane(plane, &geo, yp, ip),
            )
        });
    (y, winners)
}

/// Input rows (columns) `lo..hi` of output row (column) `o`: `o·s − 1 ..= o·s + 1`, clipped.
#[inline(always)]
fn span(o: usize, stride: usize, n: usize) -> (usize, usize) {
    ((o * stride).saturating_sub(1), (o * stride + 2).min(n))
}

/// Output indices `lo..hi` whose window `o·s − 1 ..= o·s + 1` lies inside `0..n`.
fn inside(n: usize, stride: usize) -> (usize, usize) {
    let on = out_len(n, stride);
    let lo = 1.min(on);
    let hi = if n >= 2 {
        ((n - 2) / stride + 1).min(on).max(lo)
    } else {
        lo
    };
    (lo, hi)
}

/// The outputs whose whole window lies inside the plane, and for each (row-major) the input
/// index of its window's top-left corner: candidate `(kh, kw)` is at `corner + kh·w + kw`.
struct Interior {
    h: usize,
    w: usize,
    stride: usize,
    rows: (usize, usize),
    cols: (usize, usize),
    corner: Vec<usize>,
}

impl Interior {
    fn new(h: usize, w: usize, stride: usize) -> Self {
        let (rows, cols) = (inside(h, stride), inside(w, stride));
        let mut corner = Vec::with_capacity((rows.1 - rows.0) * (cols.1 - cols.0));
        for r in rows.0..rows.1 {
            for c in cols.0..cols.1 {
                corner.push((r * stride - 1) * w + c * stride - 1);
            }
        }
        Self {
            h,
            w,
            stride,
            rows,
            cols,
            corner,
        }
    }
}

/// Burn's (and PyTorch's) rule for the next candidate `v` of a window: it replaces the current
/// winner when greater, or when NaN (so NaN always wins, the last NaN of the window).
#[inline(always)]
fn replaces(v: f32, best: f32) -> bool {
    v > best || v.is_nan()
}

/// One plane: `y [oh, ow]` and the winners. The window is scanned row by row. The outputs whose
/// window lies inside the plane go together, one candidate `(kh, kw)` at a time for all of them
/// (gathered into a contiguous block, then branch-free selects, which vectorise); the edge
/// outputs one at a time.
#[inline(always)]
fn pool_plane(plane: &[f32], g: &Interior, yp: &mut [f32], ip: &mut [i32]) {
    let (h, w, stride) = (g.h, g.w, g.stride);
    let (oh, ow) = (out_len(h, stride), out_len(w, stride));
    let ((r0, r1), (c0, c1)) = (g.rows, g.cols);
    // Edge outputs: the window scan as written.
    for r in 0..oh {
        let edge_row = r < r0 || r >= r1;
        let (r_lo, r_hi) = span(r, stride, h);
        for c in 0..ow {
            if !edge_row && c >= c0 && c < c1 {
                continue;
            }
            let (c_lo, c_hi) = span(c, stride, w);
            let first = r_lo * w + c_lo;
            let (mut b, mut a) = (plane[first], first);
            for ih in r_lo..r_hi {
                for iw in c_lo..c_hi {
                    let i = ih * w + iw;
                    if i != first && replaces(plane[i], b) {
                        b = plane[i];
                        a = i;
                    }
                }
            }
            yp[r * ow + c] = b;
            ip[r * ow + c] = a as i32;
        }
    }
    let n = g.corner.len();
    if n == 0 {
        return;
    }
    let (mut best, mut at, mut cand) = (vec![0f32; n], vec![0i32; n], vec![0f32; n]);
    for kh in 0..3 {
        for kw in 0..3 {
            let d = kh * w + kw;
            for (v, &k) in cand.iter_mut().zip(&g.corner) {
                *v = plane[k + d];
            }
            if d == 0 {
                best.copy_from_slice(&cand);
                for (a, &k) in at.iter_mut().zip(&g.corner) {
                    *a = k as i32;
                }
                continue;
            }
            for ((b, a), (&v, &k)) in best
                .iter_mut()
                .zip(at.iter_mut())
                .zip(cand.iter().zip(&g.corner))
            {
                let take = replaces(v, *b);
                *b = if take { v } else { *b };
                *a = if take { (k + d) as i32 } else { *a };
            }
        }
    }
    let nc = c1 - c0;
    for r in r0..r1 {
        let j = (r - r0) * nc;
        yp[r * ow + c0..r * ow + c1].copy_from_slice(&best[j..j + nc]);
        ip[r * ow + c0..r * ow + c1].copy_from_slice(&at[j..j + nc]);
    }
}

/// `dx` of `planes` planes `[h, w]` from `grad` (`[planes, OH·OW]`) and the winners.
fn backward_f32(grad: &[f32], winners: &[i32], planes: usize, h: usize, w: usize) -> Vec<f32> {
    use rayon::prelude::*;
    assert_eq!(
        grad.len(),
        winners.len(),
        "max pool: gradient and winners differ in length"
    );
    let per = grad.len() / planes.max(1);
    let mut dx = vec![0f32; planes * h * w];
    dx.par_chunks_mut(h * w).enumerate().for_each(|(p, out)| {
        let (g, idx) = (&grad[p * per..][..per], &winners[p * per..][..per]);
        for (&gv, &i) in g.iter().zip(idx) {
            out[i as usize] += gv;
        }
    });
    dx
}

mod flex_impl {
    use super::*;
    use burn::backend::Flex;
    use burn::tensor::TensorData;
    use burn_flex::FlexTensor;

    fn dims4(t: &FlexTensor) -> [usize; 4] {
        let s = t.layout().shape();
        assert_eq!(s.num_dims(), 4, "the 3×3 max pool takes 4-D tensors");
        [s[0], s[1], s[2], s[3]]
    }

    impl MaxPool3Ops for Flex {
        fn max_pool3_with_indices(x: FlexTensor, stride: usize) -> (FlexTensor, FlexTensor) {
            let [n, c, h, w] = dims4(&x);
            assert!(
                h > 0 && w > 0 && stride > 0,
                "max pool: empty plane or stride 0"
            );
            let xs = crate::kernels::cpu::contiguous_f32(&x, "the 3×3 max pool");
            let (y, winners) = forward_f32(&xs, n * c, h, w, stride);
            let shape = vec![n, c, out_len(h, stride), out_len(w, stride)];
            (
                FlexTensor::from_data(TensorData::new(y, shape.clone())),
                FlexTensor::from_data(TensorData::new(winners, shape)),
            )
        }

        fn max_pool3_backward(
            grad: FlexTensor,
            winners: FlexTensor,
            h: usize,
            w: usize,
        ) -> FlexTensor {
            let [n, c, oh, ow] = dims4(&grad);
            assert_eq!(dims4(&winners), [n, c, oh, ow], "max pool: winners shape");
            let g = crate::kernels::cpu::contiguous_f32(&grad, "the 3×3 max pool");
            let winners = winners.to_contiguous();
            let idx = winners
                .as_slice::<i32>()
                .expect("max pool: the winners are i32");
            let dx = backward_f32(&g, idx, n * c, h, w);
            FlexTensor::from_data(TensorData::new(dx, vec![n, c, h, w]))
        }

        fn max_pool3(x: FlexTensor, stride: usize) -> FlexTensor {
            Self::max_pool3_with_indices(x, stride).0
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::pool::*;
    use burn::prelude::*;
    use burn::tensor::module::max_pool2d;
    use burn::tensor::ops::MaxPoolOptions;
    use burn::tensor::{Distribution, TensorData};

    fn burn_pool(x: Tensor<4>, stride: usize) -> Tensor<4> {
        max_pool2d(
            x,
            MaxPoolOptions::new([3, 3])
                .with_stride([stride, stride])
                .with_padding([1, 1]),
        )
    }

    fn values(t: Tensor<4>) -> Vec<f32> {
        t.into_data().try_to_vec::<f32>().unwrap()
    }

    /// Output and input gradient bit-equal to Burn's pool, on spikes (ties everywhere: the
    /// first maximum must win), on normal values, with NaNs, for strides 1 and 2 and odd, even
    /// and one-wide planes.
    #[test]
    fn max_pool3_equals_burn() {
        let device = Device::flex().autodiff();
        for (dims, stride) in [
            ([2, 3, 8, 8], 2),
            ([2, 3, 7, 9], 2),
            ([1, 2, 16, 12], 2),
            ([1, 2, 11, 16], 1),
            ([1, 2, 1, 5], 2),
            ([2, 3, 6, 5], 1),
            ([1, 1, 1, 1], 1),
        ] {
            for kind in 0..3 {
                let x = match kind {
                    0 => Tensor::<4>::random(dims, Distribution::Bernoulli(0.3), &device),
                    1 => Tensor::<4>::random(dims, Distribution::Normal(0.0, 1.0), &device),
                    _ => {
                        let mut v = values(Tensor::<4>::random(
                            dims,
                            Distribution::Normal(0.0, 1.0),
                            &device,
                        ));
                        for i in (0..v.len()).step_by(5) {
                            v[i] = f32::NAN;
                        }
                        Tensor::<4>::from_data(TensorData::new(v, dims.to_vec()), &device)
                    }
                };
                let x = x.require_grad();
                assert!(max_pool3_supported(&x));
                let y1 = max_pool3(x.clone(), stride);
                let y2 = burn_pool(x.clone(), stride);
                assert_eq!(y1.dims(), y2.dims(), "{dims:?} stride {stride}");
                let g = Tensor::<4>::random(y1.dims(), Distribution::Normal(0.0, 1.0), &device);
                let gx1 = (y1.clone() * g.clone()).sum().backward();
                let gx2 = (y2.clone() * g).sum().backward();
                let (a, b) = (values(y1), values(y2));
                // NaN == NaN for this comparison: compare bit patterns.
                let bits = |v: &[f32]| v.iter().map(|f| f.to_bits()).collect::<Vec<_>>();
                assert_eq!(
                    bits(&a),
                    bits(&b),
                    "forward {dims:?} stride {stride} kind {kind}"
                );
                let d1 = values(x.grad(&gx1).unwrap());
                let d2 = values(x.grad(&gx2).unwrap());
                assert_eq!(d1.len(), x.dims().iter().product::<usize>());
                assert_eq!(
                    bits(&d1),
                    bits(&d2),
                    "gradient {dims:?} stride {stride} kind {kind}"
                );
            }
        }
    }

    /// Only f32 on flex with no empty dimension takes the kernel.
    #[test]
    fn max_pool3_support() {
        let device = Device::flex();
        assert!(max_pool3_supported(&Tensor::<4>::zeros(
            [1, 1, 2, 2],
            &device
        )));
        assert!(!max_pool3_supported(&Tensor::<4>::zeros(
            [1, 0, 2, 2],
            &device
        )));
    }
}
