//! 8-bit RGB images and the PIL operations the timm pipeline applies to them.
//!
//! Geometric ops use PIL's conventions (affine maps of pixel centres, bicubic with a = −0.5,
//! constant fill); colour ops follow `PIL.ImageOps` / `PIL.ImageEnhance` formulas.

/// An 8-bit RGB image, HWC row-major.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rgb8 {
    /// Width.
    pub w: usize,
    /// Height.
    pub h: usize,
    /// `h·w·3` bytes.
    pub data: Vec<u8>,
}

/// Resampling filter.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Filter {
    /// Bicubic (a = −0.5, as PIL).
    #[default]
    Bicubic,
    /// Bilinear.
    Bilinear,
    /// Nearest.
    Nearest,
}

impl Rgb8 {
    /// A solid image.
    pub fn filled(w: usize, h: usize, c: [u8; 3]) -> Self {
        let mut data = Vec::with_capacity(w * h * 3);
        for _ in 0..w * h {
            data.extend_from_slice(&c);
        }
        Self { w, h, data }
    }

    /// From CHW planes (CIFAR records).
    pub fn from_chw(chw: &[u8], w: usize, h: usize) -> Self {
        let n = w * h;
        let mut data = vec![0u8; n * 3];
        for i in 0..n {
            for c in 0..3 {
                data[i * 3 + c] = chw[c * n + i];
            }
        }
        Self { w, h, data }
    }

    /// Pixel `(x, y)`.
    pub fn px(&self, x: usize, y: usize) -> [u8; 3] {
        let i = (y * self.w + x) * 3;
        [self.data[i], self.data[i + 1], self.data[i + 2]]
    }

    /// Resize to `w×h` (PIL-style separable filter, antialiased when shrinking).
    pub fn resize(&self, w: usize, h: usize, filter: Filter) -> Rgb8 {
        if (w, h) == (self.w, self.h) {
            return self.clone();
        }
        let img = image::RgbImage::from_raw(self.w as u32, self.h as u32, self.data.clone())
            .expect("buffer size");
        let f = match filter {
            Filter::Bicubic => image::imageops::FilterType::CatmullRom,
            Filter::Bilinear => image::imageops::FilterType::Triangle,
            Filter::Nearest => image::imageops::FilterType::Nearest,
        };
        let out = image::imageops::resize(&img, w as u32, h as u32, f);
        Rgb8 {
            w,
            h,
            data: out.into_raw(),
        }
    }

    /// The `w×h` region at `(x, y)`; must lie inside the image.
    pub fn crop(&self, x: usize, y: usize, w: usize, h: usize) -> Rgb8 {
        let mut data = Vec::with_capacity(w * h * 3);
        for row in y..y + h {
            let s = (row * self.w + x) * 3;
            data.extend_from_slice(&self.data[s..s + w * 3]);
        }
        Rgb8 { w, h, data }
    }

    /// Mirror left–right.
    pub fn hflip(&self) -> Rgb8 {
        let mut data = Vec::with_capacity(self.data.len());
        for row in self.data.chunks_exact(self.w * 3) {
            for px in row.chunks_exact(3).rev() {
                data.extend_from_slice(px);
            }
        }
        Rgb8 {
            w: self.w,
            h: self.h,
            data,
        }
    }

    /// PIL `Image.transform(size, AFFINE, (a, b, c, d, e, f))`: output pixel centre `(x, y)`
    /// samples the input at `(a·x + b·y + c, d·x + e·y + f)`; outside is `fill`.
    pub fn affine(&self, m: [f64; 6], filter: Filter, fill: [u8; 3]) -> Rgb8 {
        let mut data = vec![0u8; self.data.len()];
        for y in 0..self.h {
            for x in 0..self.w {
                let (xc, yc) = (x as f64 + 0.5, y as f64 + 0.5);
                let sx = m[0] * xc + m[1] * yc + m[2];
                let sy = m[3] * xc + m[4] * yc + m[5];
                let px = self.sample(sx, sy, filter, fill);
                data[(y * self.w + x) * 3..(y * self.w + x) * 3 + 3].copy_from_slice(&px);
            }
        }
        Rgb8 {
            w: self.w,
            h: self.h,
            data,
        }
    }

    fn sample(&self, sx: f64, sy: f64, filter: Filter, fill: [u8; 3]) -> [u8; 3] {
        if sx < 0.0 || sy < 0.0 || sx >= self.w as f64 || sy >= self.h as f64 {
            return fill;
        }
        match filter {
            Filter::Nearest => self.px(sx as usize, sy as usize),
            Filter::Bilinear | Filter::Bicubic => {
                let (fx, fy) = (sx - 0.5, sy - 0.5);
                let (x0, y0) = (fx.floor(), fy.floor());
                let (dx, dy) = (fx - x0, fy - y0);
                let (x0, y0) = (x0 as i64, y0 as i64);
                let clampx = |v: i64| v.clamp(0, self.w as i64 - 1) as usize;
                let clampy = |v: i64| v.clamp(0, self.h as i64 - 1) as usize;
                let mut acc = [0f64; 3];
                if filter == Filter::Bilinear {
                    for (j, wy) in [(0, 1.0 - dy), (1, dy)] {
                        for (i, wx) in [(0, 1.0 - dx), (1, dx)] {
                            let p = self.px(clampx(x0 + i), clampy(y0 + j));
                            for c in 0..3 {
                                acc[c] += wx * wy * p[c] as f64;
                            }
                        }
                    }
                } else {
                    let wxs = cubic_weights(dx);
                    let wys = cubic_weights(dy);
                    for (j, wy) in wys.iter().enumerate() {
                        for (i, wx) in wxs.iter().enumerate() {
                            let p = self.px(clampx(x0 - 1 + i as i64), clampy(y0 - 1 + j as i64));
                            for c in 0..3 {
                                acc[c] += wx * wy * p[c] as f64;
                            }
                        }
                    }
                }
                acc.map(|v| v.round().clamp(0.0, 255.0) as u8)
            }
        }
    }

    /// Rotate by `deg` counter-clockwise about the centre (PIL `rotate`, no expand).
    pub fn rotate(&self, deg: f64, filter: Filter, fill: [u8; 3]) -> Rgb8 {
        let a = -deg.to_radians();
        let (cx, cy) = (self.w as f64 / 2.0, self.h as f64 / 2.0);
        let (c, s) = (a.cos(), a.sin());
        let mut m = [c, s, 0.0, -s, c, 0.0];
        m[2] = m[0] * (-cx) + m[1] * (-cy) + cx;
        m[5] = m[3] * (-cx) + m[4] * (-cy) + cy;
        self.affine(m, filter, fill)
    }

    /// Per-pixel map of every channel value.
    pub fn map(&self, f: impl Fn(u8) -> u8) -> Rgb8 {
        let lut: Vec<u8> = (0..=255u8).map(f).collect();
        Rgb8 {
            w: self.w,
            h: self.h,
            data: self.data.iter().map(|&v| lut[v as usize]).collect(),
        }
    }

    /// PIL "L" conversion: `(299 R + 587 G + 114 B) / 1000`.
    pub fn luma(&self) -> Vec<u8> {
        self.data
            .chunks_exact(3)
            .map(|p| {
                ((p[0] as u32 * 299 + p[1] as u32 * 587 + p[2] as u32 * 114 + 500) / 1000) as u8
            })
            .collect()
    }

    /// `PIL.Image.blend(degenerate, self, factor)`: `degenerate + factor·(self − degenerate)`.
    pub fn blend_from(&self, degenerate: &Rgb8, factor: f64) -> Rgb8 {
        let data = self
            .data
            .iter()
            .zip(&degenerate.data)
            .map(|(&a, &d)| {
                (d as f64 + factor * (a as f64 - d as f64))
                    .round()
                    .clamp(0.0, 255.0) as u8
            })
            .collect();
        Rgb8 {
            w: self.w,
            h: self.h,
            data,
        }
    }

    /// `ImageOps.autocontrast` (no cutoff), per channel.
    pub fn autocontrast(&self) -> Rgb8 {
        let mut out = self.clone();
        for c in 0..3 {
            let (mut lo, mut hi) = (255u8, 0u8);
            for p in self.data.chunks_exact(3) {
                lo = lo.min(p[c]);
                hi = hi.max(p[c]);
            }
            if hi <= lo {
                continue;
            }
            let scale = 255.0 / (hi - lo) as f64;
            let offset = -(lo as f64) * scale;
            for p in out.data.chunks_exact_mut(3) {
                p[c] = (p[c] as f64 * scale + offset).round().clamp(0.0, 255.0) as u8;
            }
        }
        out
    }

    /// `ImageOps.equalize`, per channel.
    pub fn equalize(&self) -> Rgb8 {
        let mut out = self.clone();
        for c in 0..3 {
            let mut hist = [0usize; 256];
            for p in self.data.chunks_exact(3) {
                hist[p[c] as usize] += 1;
            }
            let last = hist
                .iter()
                .rposition(|&v| v > 0)
                .map(|i| hist[i])
                .unwrap_or(0);
            let step = (hist.iter().sum::<usize>() - last) / 255;
            if step == 0 {
                continue;
            }
            let mut lut = [0u8; 256];
            let mut n = step / 2;
            for i in 0..256 {
                lut[i] = (n / step).min(255) as u8;
                n += hist[i];
            }
            for p in out.data.chunks_exact_mut(3) {
                p[c] = lut[p[c] as usize];
            }
        }
        out
    }

    /// `ImageEnhance.Color`.
    pub fn color(&self, f: f64) -> Rgb8 {
        let l = self.luma();
        let mut d = Vec::with_capacity(self.data.len());
        for v in l {
            d.extend_from_slice(&[v, v, v]);
        }
        self.blend_from(
            &Rgb8 {
                w: self.w,
                h: self.h,
                data: d,
            },
            f,
        )
    }

    /// `ImageEnhance.Contrast` (degenerate = mean luma, rounded).
    pub fn contrast(&self, f: f64) -> Rgb8 {
        let l = self.luma();
        let mean = (l.iter().map(|&v| v as f64).sum::<f64>() / l.len().max(1) as f64 + 0.5) as u8;
        self.blend_from(&Rgb8::filled(self.w, self.h, [mean; 3]), f)
    }

    /// `ImageEnhance.Brightness`.
    pub fn brightness(&self, f: f64) -> Rgb8 {
        self.blend_from(&Rgb8::filled(self.w, self.h, [0; 3]), f)
    }

    /// `ImageEnhance.Sharpness` (degenerate = PIL SMOOTH filter, borders unchanged).
    pub fn sharpness(&self, f: f64) -> Rgb8 {
        let mut d = self.clone();
        if self.w > 2 && self.h > 2 {
            for y in 1..self.h - 1 {
                for x in 1..self.w - 1 {
                    for c in 0..3 {
                        let mut s = 0u32;
                        for dy in 0..3 {
                            for dx in 0..3 {
                                let k = if dx == 1 && dy == 1 { 5 } else { 1 };
                                s += k * self.data[((y + dy - 1) * self.w + x + dx - 1) * 3 + c]
                                    as u32;
                            }
                        }
                        d.data[(y * self.w + x) * 3 + c] = ((s + 6) / 13) as u8;
                    }
                }
            }
        }
        self.blend_from(&d, f)
    }
}

fn cubic_weights(t: f64) -> [f64; 4] {
    let a = -0.5;
    let k = |x: f64| {
        let x = x.abs();
        if x < 1.0 {
            ((a + 2.0) * x - (a + 3.0)) * x * x + 1.0
        } else if x < 2.0 {
            (((x - 5.0) * x + 8.0) * x - 4.0) * a
        } else {
            0.0
        }
    };
    [k(1.0 + t), k(t), k(1.0 - t), k(2.0 - t)]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ramp() -> Rgb8 {
        let data = (0..8 * 8 * 3).map(|i| (i * 3 % 251) as u8).collect();
        Rgb8 { w: 8, h: 8, data }
    }

    #[test]
    fn identity_affine_and_zero_rotation_keep_the_image() {
        let im = ramp();
        for f in [Filter::Nearest, Filter::Bilinear, Filter::Bicubic] {
            assert_eq!(im.affine([1.0, 0.0, 0.0, 0.0, 1.0, 0.0], f, [0; 3]), im);
            assert_eq!(im.rotate(0.0, f, [0; 3]), im);
        }
    }

    #[test]
    fn colour_ops_at_factor_one_are_identity() {
        let im = ramp();
        assert_eq!(im.color(1.0), im);
        assert_eq!(im.contrast(1.0), im);
        assert_eq!(im.brightness(1.0), im);
        assert_eq!(im.sharpness(1.0), im);
        assert_eq!(
            im.brightness(0.0)
                .data
                .iter()
                .map(|&v| v as u32)
                .sum::<u32>(),
            0
        );
    }

    #[test]
    fn autocontrast_stretches_and_equalize_flattens() {
        let im = Rgb8 {
            w: 2,
            h: 1,
            data: vec![10, 10, 10, 20, 20, 20],
        };
        assert_eq!(im.autocontrast().data, vec![0, 0, 0, 255, 255, 255]);
        let eq = ramp().equalize();
        assert_eq!(eq.data.len(), 192);
    }

    #[test]
    fn flip_twice_is_identity_and_chw_conversion() {
        let im = ramp();
        assert_eq!(im.hflip().hflip(), im);
        let chw = [1u8, 2, 3, 4, 5, 6];
        let im = Rgb8::from_chw(&chw, 2, 1);
        assert_eq!(im.data, vec![1, 3, 5, 2, 4, 6]);
    }
}
