//! CIFAR-10 and CIFAR-100, binary version (datasets.md §1.1–1.2).
//!
//! CIFAR-10: `cifar-10-batches-bin/{data_batch_1..5,test_batch}.bin`, records of
//! `<label><3072 pixels>` (3073 B), class names in `batches.meta.txt`.
//! CIFAR-100: `cifar-100-binary/{train,test}.bin`, records of `<coarse><fine><3072 pixels>`
//! (3074 B), names in `fine_label_names.txt` / `coarse_label_names.txt`.
//! Pixels are CHW u8: 1024 red, 1024 green, 1024 blue, each plane row-major.

use std::path::{Path, PathBuf};

use crate::error::{DataError, Result};

/// Which CIFAR.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CifarKind {
    /// 10 classes.
    Cifar10,
    /// 100 fine classes (20 coarse).
    Cifar100,
}

impl CifarKind {
    /// Bytes per record.
    pub fn record_len(&self) -> usize {
        match self {
            CifarKind::Cifar10 => 3073,
            CifarKind::Cifar100 => 3074,
        }
    }
}

/// Train or test split.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Split {
    /// Training split.
    Train,
    /// Test split.
    Test,
}

/// Decoded CIFAR records.
#[derive(Debug, Clone, Default)]
pub struct CifarSet {
    /// Fine labels (CIFAR-10: the label), one per image.
    pub labels: Vec<u8>,
    /// CIFAR-100 coarse labels (empty for CIFAR-10).
    pub coarse_labels: Vec<u8>,
    /// Images, CHW u8, 3072 bytes each, concatenated.
    pub pixels: Vec<u8>,
    /// Class names (fine), when the meta file is present.
    pub class_names: Vec<String>,
}

impl CifarSet {
    /// Number of images.
    pub fn len(&self) -> usize {
        self.labels.len()
    }

    /// Whether there are no images.
    pub fn is_empty(&self) -> bool {
        self.labels.is_empty()
    }

    /// Image `i` as CHW bytes.
    pub fn image(&self, i: usize) -> &[u8] {
        &self.pixels[i * 3072..(i + 1) * 3072]
    }
}

/// Decode one binary file's records, appending to `set`.
pub fn read_records(path: &Path, kind: CifarKind, set: &mut CifarSet) -> Result<()> {
    let bytes =
        std::fs::read(path).map_err(|e| DataError::new(path, format!("cannot read: {e}")))?;
    let rl = kind.record_len();
    if bytes.is_empty() {
        return Err(DataError::new(path, "file is empty"));
    }
    if bytes.len() % rl != 0 {
        return Err(DataError::new(
            path,
            format!(
                "size {} B is not a multiple of the {rl}-byte record of the {} binary version \
                 (truncated or not a CIFAR binary file)",
                bytes.len(),
                if kind == CifarKind::Cifar10 {
                    "CIFAR-10"
                } else {
                    "CIFAR-100"
                }
            ),
        ));
    }
    let max_label = if kind == CifarKind::Cifar10 { 10 } else { 100 };
    for (i, rec) in bytes.chunks_exact(rl).enumerate() {
        let (labels, pix) = rec.split_at(rl - 3072);
        let fine = *labels.last().expect("label byte");
        if fine >= max_label {
            return Err(DataError::new(
                path,
                format!("record {i} has label {fine}, outside 0..{max_label}: not a {kind:?} file"),
            ));
        }
        if kind == CifarKind::Cifar100 {
            set.coarse_labels.push(labels[0]);
        }
        set.labels.push(fine);
        set.pixels.extend_from_slice(pix);
    }
    Ok(())
}

fn names(path: &Path) -> Vec<String> {
    std::fs::read_to_string(path)
        .map(|t| {
            t.lines()
                .map(str::trim)
                .filter(|l| !l.is_empty())
                .map(String::from)
                .collect()
        })
        .unwrap_or_default()
}

/// Load a split from the folder that holds the binary files (`cifar-10-batches-bin` or
/// `cifar-100-binary`, or a folder containing one of them).
pub fn load(root: &Path, kind: CifarKind, split: Split) -> Result<CifarSet> {
    if !root.is_dir() {
        return Err(DataError::new(root, "dataset folder not found"));
    }
    let sub = match kind {
        CifarKind::Cifar10 => "cifar-10-batches-bin",
        CifarKind::Cifar100 => "cifar-100-binary",
    };
    let dir = if root.join(sub).is_dir() {
        root.join(sub)
    } else {
        root.to_path_buf()
    };
    let pickle = match kind {
        CifarKind::Cifar10 => ["data_batch_1", "test_batch"],
        CifarKind::Cifar100 => ["train", "test"],
    };
    let files: Vec<PathBuf> = match (kind, split) {
        (CifarKind::Cifar10, Split::Train) => (1..=5)
            .map(|i| dir.join(format!("data_batch_{i}.bin")))
            .collect(),
        (CifarKind::Cifar10, Split::Test) => vec![dir.join("test_batch.bin")],
        (CifarKind::Cifar100, Split::Train) => vec![dir.join("train.bin")],
        (CifarKind::Cifar100, Split::Test) => vec![dir.join("test.bin")],
    };
    let python_layout = pickle.iter().any(|p| dir.join(p).is_file())
        || root
            .join(if kind == CifarKind::Cifar10 {
                "cifar-10-batches-py"
            } else {
                "cifar-100-python"
            })
            .is_dir();
    let mut set = CifarSet::default();
    for f in &files {
        if !f.is_file() {
            let hint = if python_layout {
                format!(
                    " — this looks like the Python (pickle) version; statten reads the binary \
                     version: download {} from https://www.cs.toronto.edu/~kriz/cifar.html",
                    if kind == CifarKind::Cifar10 {
                        "cifar-10-binary.tar.gz"
                    } else {
                        "cifar-100-binary.tar.gz"
                    }
                )
            } else {
                String::new()
            };
            return Err(DataError::new(f, format!("file not found{hint}")));
        }
        read_records(f, kind, &mut set)?;
    }
    set.class_names = match kind {
        CifarKind::Cifar10 => names(&dir.join("batches.meta.txt")),
        CifarKind::Cifar100 => names(&dir.join("fine_label_names.txt")),
    };
    Ok(set)
}

/// CIFAR-10 normalisation mean (the reference recipe).
pub const CIFAR10_MEAN: [f32; 3] = [0.4914, 0.4822, 0.4465];
/// CIFAR-10 normalisation std.
pub const CIFAR10_STD: [f32; 3] = [0.2470, 0.2435, 0.2616];
/// CIFAR-100 normalisation mean.
pub const CIFAR100_MEAN: [f32; 3] = [0.5071, 0.4867, 0.4408];
/// CIFAR-100 normalisation std.
pub const CIFAR100_STD: [f32; 3] = [0.2675, 0.2565, 0.2761];

/// A CIFAR split with its image pipeline, as a [`crate::Dataset`] of `[3, size, size]`.
pub struct CifarDataset {
    /// The records.
    pub set: CifarSet,
    /// The pipeline.
    pub transform: crate::transforms::ImageTransform,
    /// Number of classes.
    pub num_classes: usize,
}

impl crate::Dataset for CifarDataset {
    fn len(&self) -> usize {
        self.set.len()
    }
    fn sample_shape(&self) -> Vec<usize> {
        vec![3, self.transform.cfg.size, self.transform.cfg.size]
    }
    fn num_classes(&self) -> usize {
        self.num_classes
    }
    fn class_names(&self) -> Vec<String> {
        if self.set.class_names.len() == self.num_classes {
            self.set.class_names.clone()
        } else {
            (0..self.num_classes).map(|i| i.to_string()).collect()
        }
    }
    fn label(&self, index: usize) -> usize {
        self.set.labels[index] as usize
    }
    fn get(&self, index: usize, rng: &mut crate::Rng) -> Result<crate::Sample> {
        let img = crate::image_ops::Rgb8::from_chw(self.set.image(index), 32, 32);
        Ok(crate::Sample {
            data: self.transform.apply(&img, rng),
            label: self.set.labels[index] as usize,
        })
    }
}
