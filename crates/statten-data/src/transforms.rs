//! The reference's image transforms (timm 0.6.12 `transforms_imagenet_train` / `_eval`), seeded.
//!
//! Train: RandomResizedCrop(size, scale, ratio, bicubic) → horizontal flip → RandAugment (timm's
//! string grammar) → to `[3, H, W]` f32 in `[0, 1]` → mean/std normalisation → random erasing.
//! Eval: resize the shorter side to `floor(size / crop_pct)` → centre crop → normalise.
//! Batch-level Mixup/CutMix with label smoothing is in [`crate::mixup`].

use serde::{Deserialize, Serialize};

use crate::image_ops::{Filter, Rgb8};
use crate::rng::Rng;

/// Where an error in a transform setting comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TransformError(pub String);

impl std::fmt::Display for TransformError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}
impl std::error::Error for TransformError {}

/// Image pipeline settings (the `[data.transform]` table of a config).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ImageTransformConfig {
    /// Output size (square).
    pub size: usize,
    /// RandomResizedCrop area range.
    pub scale: (f64, f64),
    /// RandomResizedCrop aspect-ratio range.
    pub ratio: (f64, f64),
    /// Horizontal flip probability.
    pub hflip: f64,
    /// timm RandAugment string, e.g. `rand-m9-n1-mstd0.4-inc1`; empty for none.
    pub auto_augment: String,
    /// Resampling for crops and RandAugment's geometric ops.
    pub interpolation: Filter,
    /// Eval crop fraction: resize to `floor(size / crop_pct)`, centre-crop `size`.
    pub crop_pct: f64,
    /// Per-channel mean (of `[0, 1]` values).
    pub mean: Vec<f32>,
    /// Per-channel std.
    pub std: Vec<f32>,
    /// Random erasing probability (timm `reprob`, mode `pixel`, one box).
    pub random_erasing: f64,
}

impl Default for ImageTransformConfig {
    fn default() -> Self {
        Self {
            size: 224,
            scale: (0.08, 1.0),
            ratio: (0.75, 4.0 / 3.0),
            hflip: 0.5,
            auto_augment: String::new(),
            interpolation: Filter::Bicubic,
            crop_pct: 0.875,
            mean: vec![0.485, 0.456, 0.406],
            std: vec![0.229, 0.224, 0.225],
            random_erasing: 0.0,
        }
    }
}

/// torchvision `RandomResizedCrop.get_params`: `(x, y, w, h)` of the crop.
pub fn rrc_params(
    w: usize,
    h: usize,
    scale: (f64, f64),
    ratio: (f64, f64),
    rng: &mut Rng,
) -> (usize, usize, usize, usize) {
    let area = (w * h) as f64;
    let (lr0, lr1) = (ratio.0.ln(), ratio.1.ln());
    for _ in 0..10 {
        let target = area * rng.uniform_range(scale.0, scale.1);
        let ar = rng.uniform_range(lr0, lr1).exp();
        let cw = (target * ar).sqrt().round() as usize;
        let ch = (target / ar).sqrt().round() as usize;
        if cw > 0 && ch > 0 && cw <= w && ch <= h {
            let y = rng.randint(0, (h - ch) as i64) as usize;
            let x = rng.randint(0, (w - cw) as i64) as usize;
            return (x, y, cw, ch);
        }
    }
    // Fallback: centre crop at the nearest allowed ratio.
    let in_ratio = w as f64 / h as f64;
    let (cw, ch) = if in_ratio < ratio.0 {
        (w, (w as f64 / ratio.0).round() as usize)
    } else if in_ratio > ratio.1 {
        ((h as f64 * ratio.1).round() as usize, h)
    } else {
        (w, h)
    };
    ((w - cw) / 2, (h - ch) / 2, cw, ch)
}

/// One RandAugment op of timm's "increasing" set (or the plain set's equivalents).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RaOp {
    /// `ImageOps.autocontrast`.
    AutoContrast,
    /// `ImageOps.equalize`.
    Equalize,
    /// `ImageOps.invert`.
    Invert,
    /// Rotation up to ±30°.
    Rotate,
    /// Posterize to `4 − int(4·m/10)` bits (increasing).
    PosterizeIncreasing,
    /// Solarize above `256 − int(256·m/10)` (increasing).
    SolarizeIncreasing,
    /// Add `int(110·m/10)` below 128.
    SolarizeAdd,
    /// Saturation `1 ± 0.9·m/10`.
    ColorIncreasing,
    /// Contrast `1 ± 0.9·m/10`.
    ContrastIncreasing,
    /// Brightness `1 ± 0.9·m/10`.
    BrightnessIncreasing,
    /// Sharpness `1 ± 0.9·m/10`.
    SharpnessIncreasing,
    /// Shear-x up to ±0.3.
    ShearX,
    /// Shear-y up to ±0.3.
    ShearY,
    /// Translate-x up to ±45 % of the width.
    TranslateXRel,
    /// Translate-y up to ±45 % of the height.
    TranslateYRel,
    /// Posterize to `int(4·m/10)` bits (plain set).
    Posterize,
    /// Solarize above `256·m/10` (plain set).
    Solarize,
    /// Saturation `0.1 + 1.8·m/10` (plain set).
    Color,
    /// Contrast (plain set).
    Contrast,
    /// Brightness (plain set).
    Brightness,
    /// Sharpness (plain set).
    Sharpness,
}

/// timm `_RAND_INCREASING_TRANSFORMS`.
pub const RAND_INCREASING: [RaOp; 15] = [
    RaOp::AutoContrast,
    RaOp::Equalize,
    RaOp::Invert,
    RaOp::Rotate,
    RaOp::PosterizeIncreasing,
    RaOp::SolarizeIncreasing,
    RaOp::SolarizeAdd,
    RaOp::ColorIncreasing,
    RaOp::ContrastIncreasing,
    RaOp::BrightnessIncreasing,
    RaOp::SharpnessIncreasing,
    RaOp::ShearX,
    RaOp::ShearY,
    RaOp::TranslateXRel,
    RaOp::TranslateYRel,
];

/// timm `_RAND_TRANSFORMS` (the default set, `inc0`).
pub const RAND_PLAIN: [RaOp; 15] = [
    RaOp::AutoContrast,
    RaOp::Equalize,
    RaOp::Invert,
    RaOp::Rotate,
    RaOp::Posterize,
    RaOp::Solarize,
    RaOp::SolarizeAdd,
    RaOp::Color,
    RaOp::Contrast,
    RaOp::Brightness,
    RaOp::Sharpness,
    RaOp::ShearX,
    RaOp::ShearY,
    RaOp::TranslateXRel,
    RaOp::TranslateYRel,
];

/// timm RandAugment: `n` ops drawn uniformly **with replacement**, each applied with
/// probability 0.5 at magnitude `m` (0–10, Gaussian noise of std `mstd`, clipped to [0, 10]).
#[derive(Debug, Clone, PartialEq)]
pub struct RandAugment {
    /// Magnitude on the 0–10 scale.
    pub magnitude: f64,
    /// Ops per image (timm default 2).
    pub num_ops: usize,
    /// Std of the magnitude noise.
    pub magnitude_std: f64,
    /// Upper bound of the noisy magnitude.
    pub magnitude_max: f64,
    /// The op set.
    pub ops: Vec<RaOp>,
    /// Fill colour of geometric ops (the mean, ×255, rounded).
    pub fill: [u8; 3],
    /// Resampling of geometric ops.
    pub filter: Filter,
}

impl RandAugment {
    /// Parse timm's grammar: `rand` then `-`-separated `m<float>`, `n<int>`, `mstd<float>`,
    /// `mmax<float>`, `inc<0|1>`. Unknown parts are errors.
    pub fn parse(s: &str, mean: &[f32], filter: Filter) -> Result<Self, TransformError> {
        let mut parts = s.split('-');
        if parts.next() != Some("rand") {
            return Err(TransformError(format!(
                "auto_augment `{s}`: only RandAugment strings starting with `rand` are supported"
            )));
        }
        let mut ra = RandAugment {
            magnitude: 10.0,
            num_ops: 2,
            magnitude_std: 0.0,
            magnitude_max: 10.0,
            ops: RAND_PLAIN.to_vec(),
            fill: [124, 116, 104],
            filter,
        };
        if mean.len() == 3 {
            ra.fill = [0, 1, 2].map(|i| (mean[i] as f64 * 255.0).min(255.0).round() as u8);
        }
        let bad = |p: &str| TransformError(format!("auto_augment `{s}`: cannot read `{p}`"));
        for p in parts {
            let (key, val) = match p.find(|c: char| c.is_ascii_digit() || c == '.') {
                Some(i) => p.split_at(i),
                None => return Err(bad(p)),
            };
            let v: f64 = val.parse().map_err(|_| bad(p))?;
            match key {
                "m" => ra.magnitude = v,
                "n" => ra.num_ops = v as usize,
                "mstd" => ra.magnitude_std = v,
                "mmax" => ra.magnitude_max = v,
                "inc" => {
                    ra.ops = if v != 0.0 {
                        RAND_INCREASING.to_vec()
                    } else {
                        RAND_PLAIN.to_vec()
                    }
                }
                _ => {
                    return Err(TransformError(format!(
                        "auto_augment `{s}`: unknown part `{p}` (known: m, n, mstd, mmax, inc)"
                    )))
                }
            }
        }
        Ok(ra)
    }

    /// Apply to an image.
    pub fn apply(&self, img: &Rgb8, rng: &mut Rng) -> Rgb8 {
        let mut img = img.clone();
        let chosen: Vec<RaOp> = (0..self.num_ops)
            .map(|_| self.ops[rng.below(self.ops.len())])
            .collect();
        for op in chosen {
            if rng.uniform() > 0.5 {
                continue;
            }
            let mut m = self.magnitude;
            if self.magnitude_std.is_infinite() {
                m = rng.uniform_range(0.0, m);
            } else if self.magnitude_std > 0.0 {
                m += self.magnitude_std * rng.normal();
            }
            let m = m.clamp(0.0, self.magnitude_max);
            img = self.apply_op(op, &img, m, rng);
        }
        img
    }

    fn apply_op(&self, op: RaOp, img: &Rgb8, m: f64, rng: &mut Rng) -> Rgb8 {
        let lvl = m / 10.0;
        let mut neg = |v: f64| if rng.uniform() > 0.5 { -v } else { v };
        let (f, fill) = (self.filter, self.fill);
        match op {
            RaOp::AutoContrast => img.autocontrast(),
            RaOp::Equalize => img.equalize(),
            RaOp::Invert => img.map(|v| 255 - v),
            RaOp::Rotate => img.rotate(neg(lvl * 30.0), f, fill),
            RaOp::PosterizeIncreasing => posterize(img, 4 - (lvl * 4.0) as i32),
            RaOp::Posterize => posterize(img, (lvl * 4.0) as i32),
            RaOp::SolarizeIncreasing => solarize(img, 256 - (lvl * 256.0) as i32),
            RaOp::Solarize => solarize(img, (lvl * 256.0) as i32),
            RaOp::SolarizeAdd => {
                let add = (lvl * 110.0) as i32;
                img.map(|v| {
                    if v < 128 {
                        (v as i32 + add).min(255) as u8
                    } else {
                        v
                    }
                })
            }
            RaOp::ColorIncreasing => img.color(1.0 + neg(lvl * 0.9)),
            RaOp::ContrastIncreasing => img.contrast(1.0 + neg(lvl * 0.9)),
            RaOp::BrightnessIncreasing => img.brightness(1.0 + neg(lvl * 0.9)),
            RaOp::SharpnessIncreasing => img.sharpness(1.0 + neg(lvl * 0.9)),
            RaOp::Color => img.color(lvl * 1.8 + 0.1),
            RaOp::Contrast => img.contrast(lvl * 1.8 + 0.1),
            RaOp::Brightness => img.brightness(lvl * 1.8 + 0.1),
            RaOp::Sharpness => img.sharpness(lvl * 1.8 + 0.1),
            RaOp::ShearX => img.affine([1.0, neg(lvl * 0.3), 0.0, 0.0, 1.0, 0.0], f, fill),
            RaOp::ShearY => img.affine([1.0, 0.0, 0.0, neg(lvl * 0.3), 1.0, 0.0], f, fill),
            RaOp::TranslateXRel => {
                let px = neg(lvl * 0.45) * img.w as f64;
                img.affine([1.0, 0.0, px, 0.0, 1.0, 0.0], f, fill)
            }
            RaOp::TranslateYRel => {
                let px = neg(lvl * 0.45) * img.h as f64;
                img.affine([1.0, 0.0, 0.0, 0.0, 1.0, px], f, fill)
            }
        }
    }
}

fn posterize(img: &Rgb8, bits: i32) -> Rgb8 {
    if bits >= 8 {
        return img.clone();
    }
    let mask = !((1u32 << (8 - bits.max(0))) - 1) as u8;
    img.map(|v| v & mask)
}

fn solarize(img: &Rgb8, thresh: i32) -> Rgb8 {
    img.map(|v| if v as i32 >= thresh { 255 - v } else { v })
}

/// A built image pipeline.
#[derive(Debug, Clone)]
pub struct ImageTransform {
    /// Settings.
    pub cfg: ImageTransformConfig,
    /// Whether this is the train pipeline (random) or eval (deterministic).
    pub train: bool,
    ra: Option<RandAugment>,
}

impl ImageTransform {
    /// Build; checks the RandAugment string and the mean/std lengths.
    pub fn new(cfg: ImageTransformConfig, train: bool) -> Result<Self, TransformError> {
        if cfg.mean.len() != cfg.std.len() || cfg.mean.is_empty() {
            return Err(TransformError(format!(
                "transform: mean ({}) and std ({}) need the same, non-zero length",
                cfg.mean.len(),
                cfg.std.len()
            )));
        }
        if cfg.mean.len() != 3 {
            return Err(TransformError(format!(
                "transform.mean/std have {} entries; the images have 3 channels (RGB)",
                cfg.mean.len()
            )));
        }
        if let Some(s) = cfg.std.iter().find(|s| !(**s > 0.0 && s.is_finite())) {
            return Err(TransformError(format!(
                "transform.std holds {s}; every entry must be a positive number"
            )));
        }
        if cfg.size == 0 {
            return Err(TransformError("transform.size must be positive".into()));
        }
        for (key, (lo, hi)) in [("scale", cfg.scale), ("ratio", cfg.ratio)] {
            if !(lo > 0.0 && lo <= hi && hi.is_finite()) {
                return Err(TransformError(format!(
                    "transform.{key} = [{lo}, {hi}] must be two positive numbers, low ≤ high"
                )));
            }
        }
        if cfg.scale.1 > 1.0 {
            return Err(TransformError(format!(
                "transform.scale = [{}, {}]: areas are fractions of the image, at most 1",
                cfg.scale.0, cfg.scale.1
            )));
        }
        for (key, p) in [("hflip", cfg.hflip), ("random_erasing", cfg.random_erasing)] {
            if !(0.0..=1.0).contains(&p) {
                return Err(TransformError(format!(
                    "transform.{key} = {p} is a probability, in [0, 1]"
                )));
            }
        }
        if !(cfg.crop_pct > 0.0 && cfg.crop_pct <= 1.0) {
            return Err(TransformError(format!(
                "transform.crop_pct = {} must be in (0, 1]",
                cfg.crop_pct
            )));
        }
        let ra = if train && !cfg.auto_augment.is_empty() {
            Some(RandAugment::parse(
                &cfg.auto_augment,
                &cfg.mean,
                cfg.interpolation,
            )?)
        } else {
            None
        };
        Ok(Self { cfg, train, ra })
    }

    /// The geometric and colour part on 8-bit images.
    pub fn augment(&self, img: &Rgb8, rng: &mut Rng) -> Rgb8 {
        let s = self.cfg.size;
        if !self.train {
            let scale = (s as f64 / self.cfg.crop_pct).floor() as usize;
            let (w, h) = if img.w <= img.h {
                (scale, (scale as f64 * img.h as f64 / img.w as f64) as usize)
            } else {
                ((scale as f64 * img.w as f64 / img.h as f64) as usize, scale)
            };
            let r = img.resize(w, h, self.cfg.interpolation);
            let (x, y) = (
                ((w as f64 - s as f64) / 2.0).round() as usize,
                ((h as f64 - s as f64) / 2.0).round() as usize,
            );
            return r.crop(x, y, s.min(w), s.min(h));
        }
        let (x, y, w, h) = rrc_params(img.w, img.h, self.cfg.scale, self.cfg.ratio, rng);
        let mut out = img.crop(x, y, w, h).resize(s, s, self.cfg.interpolation);
        if self.cfg.hflip > 0.0 && rng.uniform() < self.cfg.hflip {
            out = out.hflip();
        }
        if let Some(ra) = &self.ra {
            out = ra.apply(&out, rng);
        }
        out
    }

    /// Full pipeline to normalised `[3, size, size]` values.
    pub fn apply(&self, img: &Rgb8, rng: &mut Rng) -> Vec<f32> {
        let out = self.augment(img, rng);
        let mut v = to_chw_normalized(&out, &self.cfg.mean, &self.cfg.std);
        if self.train && self.cfg.random_erasing > 0.0 {
            random_erasing(&mut v, 3, out.h, out.w, self.cfg.random_erasing, rng);
        }
        v
    }
}

/// HWC u8 → CHW f32 `(v/255 − mean)/std`.
pub fn to_chw_normalized(img: &Rgb8, mean: &[f32], std: &[f32]) -> Vec<f32> {
    let n = img.w * img.h;
    let mut v = vec![0f32; 3 * n];
    for i in 0..n {
        for c in 0..3 {
            v[c * n + i] = (img.data[i * 3 + c] as f32 / 255.0 - mean[c]) / std[c];
        }
    }
    v
}

/// timm `RandomErasing(probability, mode='pixel', max_count=1)` on a normalised CHW image:
/// one box of area `U(0.02, 1/3)` and log-uniform aspect in `(0.3, 1/0.3)`, filled with
/// per-pixel standard normal values; up to 10 attempts.
pub fn random_erasing(v: &mut [f32], c: usize, h: usize, w: usize, p: f64, rng: &mut Rng) {
    if rng.uniform() > p {
        return;
    }
    let area = (h * w) as f64;
    let (l0, l1) = ((0.3f64).ln(), (1.0f64 / 0.3).ln());
    for _ in 0..10 {
        let target = rng.uniform_range(0.02, 1.0 / 3.0) * area;
        let ar = rng.uniform_range(l0, l1).exp();
        let eh = (target * ar).sqrt().round() as usize;
        let ew = (target / ar).sqrt().round() as usize;
        if ew < w && eh < h && ew > 0 && eh > 0 {
            let top = rng.randint(0, (h - eh) as i64) as usize;
            let left = rng.randint(0, (w - ew) as i64) as usize;
            for ch in 0..c {
                for y in top..top + eh {
                    for x in left..left + ew {
                        v[ch * h * w + y * w + x] = rng.normal() as f32;
                    }
                }
            }
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn img(w: usize, h: usize) -> Rgb8 {
        Rgb8 {
            w,
            h,
            data: (0..w * h * 3).map(|i| ((i * 7) % 256) as u8).collect(),
        }
    }

    #[test]
    fn grammar_of_the_reference_strings() {
        let ra = RandAugment::parse(
            "rand-m9-n1-mstd0.4-inc1",
            &[0.4914, 0.4822, 0.4465],
            Filter::Bicubic,
        )
        .unwrap();
        assert_eq!((ra.magnitude, ra.num_ops, ra.magnitude_std), (9.0, 1, 0.4));
        assert_eq!(ra.ops, RAND_INCREASING.to_vec());
        assert_eq!(ra.fill, [125, 123, 114]);
        let ra = RandAugment::parse(
            "rand-m5-mstd0.5-inc1",
            &[0.485, 0.456, 0.406],
            Filter::Bicubic,
        )
        .unwrap();
        assert_eq!(ra.num_ops, 2, "n defaults to 2");
        assert!(RandAugment::parse("rand-m9-x3", &[0.5; 3], Filter::Bicubic).is_err());
        assert!(RandAugment::parse("original-mstd0.5", &[0.5; 3], Filter::Bicubic).is_err());
    }

    #[test]
    fn every_op_keeps_shape() {
        let ra = RandAugment::parse("rand-m9-n1-mstd0.4-inc1", &[0.5; 3], Filter::Bicubic).unwrap();
        let mut rng = Rng::new(0);
        let im = img(12, 10);
        for op in RAND_INCREASING.iter().chain(RAND_PLAIN.iter()) {
            let out = ra.apply_op(*op, &im, 9.0, &mut rng);
            assert_eq!((out.w, out.h, out.data.len()), (12, 10, 360), "{op:?}");
        }
    }

    #[test]
    fn rrc_stays_inside_and_respects_scale() {
        let mut rng = Rng::new(1);
        for _ in 0..200 {
            let (x, y, w, h) = rrc_params(64, 48, (0.08, 1.0), (0.75, 4.0 / 3.0), &mut rng);
            assert!(x + w <= 64 && y + h <= 48 && w > 0 && h > 0);
        }
        // scale (1,1), ratio (1,1) on a square image is the identity crop (the CIFAR recipe).
        assert_eq!(
            rrc_params(32, 32, (1.0, 1.0), (1.0, 1.0), &mut rng),
            (0, 0, 32, 32)
        );
    }

    #[test]
    fn pipelines_give_shapes_and_normalised_statistics() {
        let cfg = ImageTransformConfig {
            size: 32,
            auto_augment: "rand-m9-n1-mstd0.4-inc1".into(),
            random_erasing: 0.25,
            ..Default::default()
        };
        let tr = ImageTransform::new(cfg.clone(), true).unwrap();
        let ev = ImageTransform::new(cfg, false).unwrap();
        let mut rng = Rng::new(2);
        let im = img(50, 40);
        for _ in 0..20 {
            assert_eq!(tr.apply(&im, &mut rng).len(), 3 * 32 * 32);
        }
        let a = ev.apply(&im, &mut Rng::new(5));
        let b = ev.apply(&im, &mut Rng::new(6));
        assert_eq!(a, b, "eval is deterministic");
        // A constant mid-grey image normalises to (0.5 − mean)/std.
        let grey = Rgb8::filled(40, 40, [128; 3]);
        let v = ev.apply(&grey, &mut rng);
        let want = (128.0 / 255.0 - 0.485) / 0.229;
        assert!((v[0] - want).abs() < 1e-5);
    }

    #[test]
    fn same_seed_same_augmentation() {
        let cfg = ImageTransformConfig {
            size: 24,
            auto_augment: "rand-m9-mstd0.5-inc1".into(),
            ..Default::default()
        };
        let tr = ImageTransform::new(cfg, true).unwrap();
        let im = img(30, 30);
        assert_eq!(
            tr.apply(&im, &mut Rng::new(9)),
            tr.apply(&im, &mut Rng::new(9))
        );
    }
}
