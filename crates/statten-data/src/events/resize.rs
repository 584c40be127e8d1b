//! Plane resizes as the reference applies them to event frames.
//!
//! - CIFAR10-DVS: `dvs_utils.Resize(64)` = torchvision `Resize((64, 64))` on a float tensor:
//!   bilinear, `align_corners=False`, **no antialias** (torchvision 0.14 default for tensors).
//! - N-Caltech101: `Resize((64, 64), NEAREST)`, PyTorch's legacy `nearest` (floor of
//!   `dst · in/out`).
//!
//! Both follow PyTorch's CPU kernels, including their f32 arithmetic.

use serde::{Deserialize, Serialize};

/// Interpolation of a resize.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Interp {
    /// Bilinear, `align_corners = False`, no antialias.
    Bilinear,
    /// Nearest (PyTorch `mode="nearest"`).
    Nearest,
}

fn nearest_index(dst: usize, in_size: usize, out_size: usize) -> usize {
    if out_size == in_size {
        dst
    } else if out_size == 2 * in_size {
        dst >> 1
    } else {
        let scale = in_size as f32 / out_size as f32;
        ((dst as f32 * scale).floor() as usize).min(in_size - 1)
    }
}

fn linear_coeffs(dst: usize, in_size: usize, out_size: usize) -> (usize, usize, f32, f32) {
    let scale = in_size as f32 / out_size as f32;
    let src = (scale * (dst as f32 + 0.5) - 0.5).max(0.0);
    let i0 = src as usize;
    let step = if i0 < in_size - 1 { 1 } else { 0 };
    let l1 = src - i0 as f32;
    (i0, i0 + step, 1.0 - l1, l1)
}

/// Resize every `h×w` plane of `data` to `oh×ow`.
pub fn resize_planes(
    data: &[f32],
    h: usize,
    w: usize,
    oh: usize,
    ow: usize,
    interp: Interp,
) -> Vec<f32> {
    let planes = data.len() / (h * w);
    let mut out = vec![0f32; planes * oh * ow];
    if oh == h && ow == w {
        out.copy_from_slice(data);
        return out;
    }
    match interp {
        Interp::Nearest => {
            let ys: Vec<usize> = (0..oh).map(|d| nearest_index(d, h, oh)).collect();
            let xs: Vec<usize> = (0..ow).map(|d| nearest_index(d, w, ow)).collect();
            for p in 0..planes {
                let src = &data[p * h * w..(p + 1) * h * w];
                let dst = &mut out[p * oh * ow..(p + 1) * oh * ow];
                for (oy, &sy) in ys.iter().enumerate() {
                    for (ox, &sx) in xs.iter().enumerate() {
                        dst[oy * ow + ox] = src[sy * w + sx];
                    }
                }
            }
        }
        Interp::Bilinear => {
            let ys: Vec<_> = (0..oh).map(|d| linear_coeffs(d, h, oh)).collect();
            let xs: Vec<_> = (0..ow).map(|d| linear_coeffs(d, w, ow)).collect();
            for p in 0..planes {
                let src = &data[p * h * w..(p + 1) * h * w];
                let dst = &mut out[p * oh * ow..(p + 1) * oh * ow];
                for (oy, &(y0, y1, ly0, ly1)) in ys.iter().enumerate() {
                    for (ox, &(x0, x1, lx0, lx1)) in xs.iter().enumerate() {
                        dst[oy * ow + ox] = ly0 * (lx0 * src[y0 * w + x0] + lx1 * src[y0 * w + x1])
                            + ly1 * (lx0 * src[y1 * w + x0] + lx1 * src[y1 * w + x1]);
                    }
                }
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bilinear_halving_is_the_2x2_mean() {
        // 4×4 → 2×2 with align_corners=False and no antialias averages each 2×2 block.
        let x: Vec<f32> = (0..16).map(|v| v as f32).collect();
        let y = resize_planes(&x, 4, 4, 2, 2, Interp::Bilinear);
        assert_eq!(y, vec![2.5, 4.5, 10.5, 12.5]);
    }

    #[test]
    fn nearest_takes_floor_of_scaled_index() {
        // 180 → 64: scale 2.8125, rows 0, 2, 5, 8, …
        let x: Vec<f32> = (0..180).map(|v| v as f32).collect();
        let y = resize_planes(&x, 180, 1, 64, 1, Interp::Nearest);
        assert_eq!(&y[..4], &[0.0, 2.0, 5.0, 8.0]);
        assert_eq!(y[63], 177.0);
    }
}
