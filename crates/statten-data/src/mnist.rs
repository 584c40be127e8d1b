//! MNIST / Fashion-MNIST in the IDX format (`*-images-idx3-ubyte[.gz]`,
//! `*-labels-idx1-ubyte[.gz]`), as distributed and as installed by the Debian/Ubuntu package
//! `dataset-fashion-mnist` under `/usr/share/datasets/fashion-mnist`.

use std::io::Read;
use std::path::{Path, PathBuf};

use crate::cifar::Split;
use crate::error::{DataError, Result};

/// Where `apt-get install dataset-fashion-mnist` puts the files.
pub const FASHION_MNIST_SYSTEM_DIR: &str = "/usr/share/datasets/fashion-mnist";

/// Fashion-MNIST class names, label order.
pub const FASHION_MNIST_CLASSES: [&str; 10] = [
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
];

/// Grayscale images with labels.
#[derive(Debug, Clone, Default)]
pub struct IdxSet {
    /// Image height.
    pub rows: usize,
    /// Image width.
    pub cols: usize,
    /// Pixels, `rows·cols` bytes per image, concatenated.
    pub pixels: Vec<u8>,
    /// Labels.
    pub labels: Vec<u8>,
}

impl IdxSet {
    /// Number of images.
    pub fn len(&self) -> usize {
        self.labels.len()
    }

    /// Whether empty.
    pub fn is_empty(&self) -> bool {
        self.labels.is_empty()
    }

    /// Image `i`, row-major.
    pub fn image(&self, i: usize) -> &[u8] {
        let n = self.rows * self.cols;
        &self.pixels[i * n..(i + 1) * n]
    }
}

/// Read a whole file, gunzipping it when it starts with the gzip magic.
fn read_maybe_gz(path: &Path) -> Result<Vec<u8>> {
    let raw = std::fs::read(path).map_err(|e| DataError::new(path, format!("cannot read: {e}")))?;
    if raw.starts_with(&[0x1f, 0x8b]) {
        let mut out = Vec::new();
        flate2::read::GzDecoder::new(&raw[..])
            .read_to_end(&mut out)
            .map_err(|e| DataError::new(path, format!("corrupt gzip stream: {e}")))?;
        Ok(out)
    } else {
        Ok(raw)
    }
}

fn be_u32(b: &[u8], at: usize) -> u32 {
    u32::from_be_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

/// Parse an IDX file of unsigned bytes with `ndims` dimensions; returns (dims, data).
pub fn parse_idx(path: &Path, bytes: &[u8], ndims: usize) -> Result<(Vec<usize>, Vec<u8>)> {
    let header = 4 + 4 * ndims;
    if bytes.len() < header {
        return Err(DataError::new(
            path,
            format!("{} B is too short for an IDX header", bytes.len()),
        ));
    }
    let magic = be_u32(bytes, 0);
    let want = 0x0800 | ndims as u32;
    if magic != want {
        return Err(DataError::new(
            path,
            format!("IDX magic 0x{magic:08x}, expected 0x{want:08x} (unsigned bytes, {ndims} dimensions)"),
        ));
    }
    let dims: Vec<usize> = (0..ndims)
        .map(|i| be_u32(bytes, 4 + 4 * i) as usize)
        .collect();
    let n = dims
        .iter()
        .try_fold(1usize, |a, &d| a.checked_mul(d))
        .filter(|n| n.checked_add(header).is_some())
        .ok_or_else(|| {
            DataError::new(
                path,
                format!("header announces {dims:?}, more data than any file holds (corrupt)"),
            )
        })?;
    if bytes.len() != header + n {
        return Err(DataError::new(
            path,
            format!(
                "header announces {dims:?} = {n} B of data, file has {} B (truncated or corrupt)",
                bytes.len() - header
            ),
        ));
    }
    Ok((dims, bytes[header..].to_vec()))
}

fn find(dir: &Path, stem: &str) -> Result<PathBuf> {
    for name in [format!("{stem}.gz"), stem.to_string()] {
        let p = dir.join(&name);
        if p.is_file() {
            return Ok(p);
        }
    }
    // How to get the files is the dataset's download hint, which `DataConfig::build` adds.
    Err(DataError::new(
        dir.join(format!("{stem}.gz")),
        "file not found",
    ))
}

/// Load a split from `dir` (`None`: the system location of `dataset-fashion-mnist`).
pub fn load(dir: Option<&Path>, split: Split) -> Result<IdxSet> {
    let dir = dir.unwrap_or(Path::new(FASHION_MNIST_SYSTEM_DIR));
    let prefix = match split {
        Split::Train => "train",
        Split::Test => "t10k",
    };
    let ip = find(dir, &format!("{prefix}-images-idx3-ubyte"))?;
    let lp = find(dir, &format!("{prefix}-labels-idx1-ubyte"))?;
    let (idims, pixels) = parse_idx(&ip, &read_maybe_gz(&ip)?, 3)?;
    let (ldims, labels) = parse_idx(&lp, &read_maybe_gz(&lp)?, 1)?;
    if idims[0] != ldims[0] {
        return Err(DataError::new(
            &lp,
            format!(
                "{} labels for {} images in {}",
                ldims[0],
                idims[0],
                ip.display()
            ),
        ));
    }
    if idims[1] != 28 || idims[2] != 28 {
        return Err(DataError::new(
            &ip,
            format!(
                "images are {}×{}; (Fashion-)MNIST images and the models for them are 28×28",
                idims[1], idims[2]
            ),
        ));
    }
    if let Some(bad) = labels.iter().find(|&&l| l > 9) {
        return Err(DataError::new(&lp, format!("label {bad} outside 0..10")));
    }
    Ok(IdxSet {
        rows: idims[1],
        cols: idims[2],
        pixels,
        labels,
    })
}

/// Fashion-MNIST train-set mean of `[0, 1]` pixels.
pub const FASHION_MNIST_MEAN: f32 = 0.2860;
/// Fashion-MNIST train-set std.
pub const FASHION_MNIST_STD: f32 = 0.3530;
/// MNIST train-set mean of `[0, 1]` pixels (torchvision's 0.1307).
pub const MNIST_MEAN: f32 = 0.1307;
/// MNIST train-set std (torchvision's 0.3081).
pub const MNIST_STD: f32 = 0.3081;
/// MNIST's classes: the digits.
pub const MNIST_CLASSES: [&str; 10] = ["0", "1", "2", "3", "4", "5", "6", "7", "8", "9"];

impl MnistTransform {
    /// The defaults for digit MNIST: its own mean and std.
    pub fn mnist() -> Self {
        Self {
            mean: MNIST_MEAN,
            std: MNIST_STD,
            ..Self::default()
        }
    }
}

/// Settings of the (Fashion-)MNIST pipeline.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MnistTransform {
    /// Normalisation mean.
    pub mean: f32,
    /// Normalisation std.
    pub std: f32,
    /// Random translation by up to this many pixels (zero padding), train only.
    pub translate: usize,
    /// Horizontal flip probability, train only.
    pub hflip: f64,
}

impl Default for MnistTransform {
    fn default() -> Self {
        Self {
            mean: FASHION_MNIST_MEAN,
            std: FASHION_MNIST_STD,
            translate: 0,
            hflip: 0.0,
        }
    }
}

/// An IDX split as a [`crate::Dataset`] of `[1, rows, cols]`.
pub struct MnistDataset {
    /// The images.
    pub set: IdxSet,
    /// The pipeline.
    pub transform: MnistTransform,
    /// Apply the random parts.
    pub train: bool,
    /// Digit MNIST (class names `0`–`9`) rather than Fashion-MNIST.
    pub digits: bool,
}

impl crate::Dataset for MnistDataset {
    fn len(&self) -> usize {
        self.set.len()
    }
    fn sample_shape(&self) -> Vec<usize> {
        vec![1, self.set.rows, self.set.cols]
    }
    fn num_classes(&self) -> usize {
        10
    }
    fn class_names(&self) -> Vec<String> {
        let names: &[&str] = if self.digits {
            &MNIST_CLASSES
        } else {
            &FASHION_MNIST_CLASSES
        };
        names.iter().map(|s| s.to_string()).collect()
    }
    fn label(&self, index: usize) -> usize {
        self.set.labels[index] as usize
    }
    fn get(&self, index: usize, rng: &mut crate::Rng) -> Result<crate::Sample> {
        let (h, w) = (self.set.rows, self.set.cols);
        let img = self.set.image(index);
        let t = &self.transform;
        let (mut dy, mut dx, mut flip) = (0i64, 0i64, false);
        if self.train {
            let r = t.translate as i64;
            if r > 0 {
                dy = rng.randint(-r, r);
                dx = rng.randint(-r, r);
            }
            flip = t.hflip > 0.0 && rng.bernoulli(t.hflip);
        }
        let bg = (0.0 - t.mean) / t.std;
        let mut data = vec![bg; h * w];
        for y in 0..h as i64 {
            let sy = y - dy;
            if sy < 0 || sy >= h as i64 {
                continue;
            }
            for x in 0..w as i64 {
                let mut sx = x - dx;
                if sx < 0 || sx >= w as i64 {
                    continue;
                }
                if flip {
                    sx = w as i64 - 1 - sx;
                }
                let v = img[sy as usize * w + sx as usize] as f32 / 255.0;
                data[y as usize * w + x as usize] = (v - t.mean) / t.std;
            }
        }
        Ok(crate::Sample {
            data,
            label: self.set.labels[index] as usize,
        })
    }
}
