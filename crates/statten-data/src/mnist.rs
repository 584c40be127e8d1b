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
    let n: usize = dims.iter().product();
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
    Err(DataError::new(
        dir.join(format!("{stem}.gz")),
        format!(
            "file not found{}",
            if dir == Path::new(FASHION_MNIST_SYSTEM_DIR) {
                " — install Fashion-MNIST with `apt-get install dataset-fashion-mnist`, or pass --data-dir"
            } else {
                ""
            }
        ),
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
