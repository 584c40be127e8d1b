//! Event-frame augmentations of the reference (`dvs_utils/dvs_augment.py`, `NCaltech101_aug`):
//! one of {roll by `randint[−r, r]` pixels on H and W, rotation by `U(−deg, deg)`, shear-x by
//! `U(−deg, deg)`} chosen uniformly per sample, the same parameters for all frames; plus an
//! optional horizontal flip. Rotation and shear follow torchvision's tensor `affine`
//! (inverse matrix about the image centre, nearest sampling, fill 0).

use crate::rng::Rng;
use serde::{Deserialize, Serialize};

/// Settings of the N-Caltech101 train augmentation.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct EventAugConfig {
    /// Apply the augmentation at all.
    pub enabled: bool,
    /// Largest roll in pixels (the reference: 3).
    pub roll: i64,
    /// Largest rotation in degrees (the reference: 15).
    pub rotate_deg: f64,
    /// Largest shear in degrees (the reference: 15).
    pub shear_deg: f64,
    /// Probability of a horizontal flip before the chosen op (the reference: 0).
    pub hflip: f64,
}

impl Default for EventAugConfig {
    fn default() -> Self {
        Self {
            enabled: false,
            roll: 3,
            rotate_deg: 15.0,
            shear_deg: 15.0,
            hflip: 0.0,
        }
    }
}

/// Roll each `h×w` plane by `dy` rows and `dx` columns (`torch.roll` semantics).
pub fn roll(data: &mut [f32], h: usize, w: usize, dy: i64, dx: i64) {
    let mut tmp = vec![0f32; h * w];
    for plane in data.chunks_exact_mut(h * w) {
        for y in 0..h {
            let ny = (y as i64 + dy).rem_euclid(h as i64) as usize;
            for x in 0..w {
                let nx = (x as i64 + dx).rem_euclid(w as i64) as usize;
                tmp[ny * w + nx] = plane[y * w + x];
            }
        }
        plane.copy_from_slice(&tmp);
    }
}

/// Mirror each plane left–right.
pub fn hflip(data: &mut [f32], h: usize, w: usize) {
    for plane in data.chunks_exact_mut(h * w) {
        for row in plane.chunks_exact_mut(w) {
            row.reverse();
        }
    }
}

/// torchvision `_get_inverse_affine_matrix` with centre 0 (tensor convention), no translation,
/// scale 1.
fn inverse_affine(angle_deg: f64, shear_x_deg: f64, shear_y_deg: f64) -> [f64; 6] {
    let rot = angle_deg.to_radians();
    let sx = shear_x_deg.to_radians();
    let sy = shear_y_deg.to_radians();
    let a = (rot - sy).cos() / sy.cos();
    let b = -(rot - sy).cos() * sx.tan() / sy.cos() - rot.sin();
    let c = (rot - sy).sin() / sy.cos();
    let d = -(rot - sy).sin() * sx.tan() / sy.cos() + rot.cos();
    [d, -b, 0.0, -c, a, 0.0]
}

/// Warp each plane by an affine map (rotation `angle_deg`, shear `shear_x_deg`) about the centre,
/// nearest sampling (round half to even, as `grid_sample`), zeros outside.
pub fn affine(data: &mut [f32], h: usize, w: usize, angle_deg: f64, shear_x_deg: f64) {
    let m = inverse_affine(angle_deg, shear_x_deg, 0.0);
    let mut map = vec![usize::MAX; h * w];
    for i in 0..h {
        for j in 0..w {
            let x = j as f64 - w as f64 * 0.5 + 0.5;
            let y = i as f64 - h as f64 * 0.5 + 0.5;
            let sx = m[0] * x + m[1] * y + m[2] + w as f64 * 0.5 - 0.5;
            let sy = m[3] * x + m[4] * y + m[5] + h as f64 * 0.5 - 0.5;
            let (rx, ry) = (sx.round_ties_even(), sy.round_ties_even());
            if rx >= 0.0 && ry >= 0.0 && (rx as usize) < w && (ry as usize) < h {
                map[i * w + j] = ry as usize * w + rx as usize;
            }
        }
    }
    let mut tmp = vec![0f32; h * w];
    for plane in data.chunks_exact_mut(h * w) {
        for (o, &s) in tmp.iter_mut().zip(&map) {
            *o = if s == usize::MAX { 0.0 } else { plane[s] };
        }
        plane.copy_from_slice(&tmp);
    }
}

/// Apply the reference's N-Caltech101 train augmentation to `[T, 2, h, w]` frames.
pub fn augment_frames(data: &mut [f32], h: usize, w: usize, cfg: &EventAugConfig, rng: &mut Rng) {
    if !cfg.enabled {
        return;
    }
    if cfg.hflip > 0.0 && rng.bernoulli(cfg.hflip) {
        hflip(data, h, w);
    }
    match rng.below(3) {
        0 => {
            let dy = rng.randint(-cfg.roll, cfg.roll);
            let dx = rng.randint(-cfg.roll, cfg.roll);
            roll(data, h, w, dy, dx);
        }
        1 => {
            let a = rng.uniform_range(-cfg.rotate_deg, cfg.rotate_deg);
            affine(data, h, w, a, 0.0);
        }
        _ => {
            let s = rng.uniform_range(-cfg.shear_deg, cfg.shear_deg);
            affine(data, h, w, 0.0, s);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roll_moves_pixels_cyclically() {
        let mut x: Vec<f32> = (0..6).map(|v| v as f32).collect(); // 2×3
        roll(&mut x, 2, 3, 1, -1);
        assert_eq!(x, vec![4.0, 5.0, 3.0, 1.0, 2.0, 0.0]);
    }

    #[test]
    fn zero_affine_is_identity_and_90_degrees_rotates() {
        let x: Vec<f32> = (0..16).map(|v| v as f32).collect();
        let mut y = x.clone();
        affine(&mut y, 4, 4, 0.0, 0.0);
        assert_eq!(x, y);
        let mut r = x.clone();
        affine(&mut r, 4, 4, 90.0, 0.0);
        // A quarter turn keeps the multiset of values on a square image.
        let mut a = r.clone();
        a.sort_by(f32::total_cmp);
        assert_eq!(a, x);
        assert_ne!(r, x);
    }

    #[test]
    fn augmentation_keeps_shape_and_mass_bounds() {
        let mut rng = Rng::new(3);
        let cfg = EventAugConfig {
            enabled: true,
            hflip: 0.5,
            ..Default::default()
        };
        for _ in 0..20 {
            let mut x = vec![1f32; 2 * 2 * 8 * 8];
            augment_frames(&mut x, 8, 8, &cfg, &mut rng);
            assert_eq!(x.len(), 256);
            let s: f32 = x.iter().sum();
            assert!(s > 100.0 && s <= 256.0, "{s}");
        }
    }
}
