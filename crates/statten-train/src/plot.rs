//! A small PNG of the learning curves, redrawn each epoch (`curves.png`): left panel losses
//! (train blue, eval orange), right panel accuracy in % (train top-1 blue, eval top-1 orange,
//! eval top-5 green); horizontal grid lines every 10 % of each panel's range. Drawn directly
//! with `image`, without a plotting dependency; the numbers are in `summary.csv`.

use std::path::Path;

use image::{Rgb, RgbImage};

use crate::checkpoint::EpochRecord;

const W: u32 = 900;
const H: u32 = 360;
const BLUE: Rgb<u8> = Rgb([31, 119, 180]);
const ORANGE: Rgb<u8> = Rgb([255, 127, 14]);
const GREEN: Rgb<u8> = Rgb([44, 160, 44]);

fn line(img: &mut RgbImage, (x0, y0): (f64, f64), (x1, y1): (f64, f64), c: Rgb<u8>) {
    let n = ((x1 - x0).abs().max((y1 - y0).abs()).ceil() as usize).max(1);
    for i in 0..=n {
        let t = i as f64 / n as f64;
        let (x, y) = (x0 + t * (x1 - x0), y0 + t * (y1 - y0));
        for (dx, dy) in [(0, 0), (1, 0), (0, 1)] {
            let (px, py) = (x as i64 + dx, y as i64 + dy);
            if px >= 0 && py >= 0 && (px as u32) < img.width() && (py as u32) < img.height() {
                img.put_pixel(px as u32, py as u32, c);
            }
        }
    }
}

/// A curve: (epoch, value) points and its colour.
type Series = (Vec<(f64, f64)>, Rgb<u8>);

fn panel(img: &mut RgbImage, x0: f64, series: &[Series], epochs: f64) {
    let (pw, ph, top) = (W as f64 / 2.0 - 60.0, H as f64 - 60.0, 30.0);
    let left = x0 + 40.0;
    let vals: Vec<f64> = series
        .iter()
        .flat_map(|s| s.0.iter().map(|p| p.1))
        .filter(|v| v.is_finite())
        .collect();
    if vals.is_empty() {
        return;
    }
    let (mut lo, mut hi) = vals
        .iter()
        .fold((f64::MAX, f64::MIN), |(a, b), &v| (a.min(v), b.max(v)));
    if hi - lo < 1e-9 {
        lo -= 0.5;
        hi += 0.5;
    }
    let grey = Rgb([225, 225, 225]);
    for i in 0..=10 {
        let y = top + ph * i as f64 / 10.0;
        line(img, (left, y), (left + pw, y), grey);
    }
    let black = Rgb([0, 0, 0]);
    line(img, (left, top), (left, top + ph), black);
    line(img, (left, top + ph), (left + pw, top + ph), black);
    let map = |(e, v): (f64, f64)| {
        (
            left + pw * e / epochs.max(1.0),
            top + ph * (1.0 - (v - lo) / (hi - lo)),
        )
    };
    for (pts, c) in series {
        let pts: Vec<_> = pts.iter().filter(|p| p.1.is_finite()).copied().collect();
        for w in pts.windows(2) {
            line(img, map(w[0]), map(w[1]), *c);
        }
        if pts.len() == 1 {
            let (x, y) = map(pts[0]);
            line(img, (x - 2.0, y), (x + 2.0, y), *c);
        }
    }
}

/// Draw `history` into `path` (PNG). `epochs` is the planned run length (x axis).
pub fn draw_curves(history: &[EpochRecord], epochs: usize, path: &Path) -> Result<(), String> {
    let mut img = RgbImage::from_pixel(W, H, Rgb([255, 255, 255]));
    let e = |r: &EpochRecord| r.epoch as f64 + 1.0;
    let s = |f: fn(&EpochRecord) -> f64| history.iter().map(|r| (e(r), f(r))).collect::<Vec<_>>();
    panel(
        &mut img,
        0.0,
        &[(s(|r| r.train_loss), BLUE), (s(|r| r.eval_loss), ORANGE)],
        epochs as f64,
    );
    panel(
        &mut img,
        W as f64 / 2.0,
        &[
            (s(|r| r.train_top1), BLUE),
            (s(|r| r.eval_top1), ORANGE),
            (s(|r| r.eval_top5), GREEN),
        ],
        epochs as f64,
    );
    let tmp = path.with_extension("png.tmp");
    img.save_with_format(&tmp, image::ImageFormat::Png)
        .map_err(|e| format!("{}: {e}", path.display()))?;
    std::fs::rename(&tmp, path).map_err(|e| format!("{}: {e}", path.display()))
}
