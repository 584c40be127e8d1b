//! ImageNet-style image folders (datasets.md §1.3).
//!
//! - `root/train/<wnid>/*.JPEG`, `root/val/<wnid>/*.JPEG`: class folders.
//! - A flat `root/val/*.JPEG` plus a labels file (`file  index  wnid` per line, the format of
//!   `val_ground_truth.tsv`).
//! - Class index = rank of the wnid in the **full sorted class list** when one is given
//!   (`synsets.tsv`: `index  wnid  names`, or one wnid per line), so a subset of folders keeps
//!   the global indices; otherwise the rank among the folders present (torchvision
//!   `ImageFolder`). Files are sorted within each class.
//! - Decoding with `image` (JPEG incl. grayscale and CMYK via zune-jpeg, PNG; the format is
//!   guessed from the content, so a PNG named `.JPEG` decodes), converted to RGB.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use crate::cifar::Split;
use crate::dataset::{sorted_entries, Dataset, Sample};
use crate::error::{DataError, Result};
use crate::image_ops::Rgb8;
use crate::rng::Rng;
use crate::transforms::ImageTransform;

/// File extensions taken as images (torchvision `IMG_EXTENSIONS`, case-insensitive).
pub const IMG_EXTENSIONS: [&str; 9] = [
    "jpg", "jpeg", "png", "ppm", "bmp", "pgm", "tif", "tiff", "webp",
];

fn is_image(p: &Path) -> bool {
    p.is_file()
        && p.extension()
            .and_then(|e| e.to_str())
            .is_some_and(|e| IMG_EXTENSIONS.iter().any(|x| x.eq_ignore_ascii_case(e)))
}

/// Read a class list: `synsets.tsv` lines `index<TAB>wnid<TAB>names`, or one name per line.
/// `#` lines are comments. The order of the file is the index order.
pub fn read_class_list(path: &Path) -> Result<Vec<String>> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| DataError::new(path, format!("cannot read class list: {e}")))?;
    let mut out = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let line = line.trim_end();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let fields: Vec<&str> = line.split('\t').collect();
        let name = if fields.len() >= 2 && fields[0].trim().parse::<usize>().is_ok() {
            if fields[0].trim().parse::<usize>().unwrap() != out.len() {
                return Err(DataError::new(
                    path,
                    format!("line {}: index {} out of order", n + 1, fields[0]),
                ));
            }
            fields[1].trim()
        } else {
            fields[0].trim()
        };
        out.push(name.to_string());
    }
    if out.is_empty() {
        return Err(DataError::new(path, "class list is empty"));
    }
    Ok(out)
}

/// Read a flat-val labels file: `file<TAB>index[<TAB>wnid]` per line → file name → index.
pub fn read_val_labels(path: &Path) -> Result<HashMap<String, usize>> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| DataError::new(path, format!("cannot read labels file: {e}")))?;
    let mut m = HashMap::new();
    for (n, line) in text.lines().enumerate() {
        if line.trim().is_empty() || line.starts_with('#') {
            continue;
        }
        let mut f = line.split_whitespace();
        let (Some(file), Some(idx)) = (f.next(), f.next()) else {
            return Err(DataError::new(
                path,
                format!("line {}: expected `file index [wnid]`", n + 1),
            ));
        };
        let idx: usize = idx.parse().map_err(|_| {
            DataError::new(
                path,
                format!("line {}: `{idx}` is not a class index", n + 1),
            )
        })?;
        m.insert(file.to_string(), idx);
    }
    Ok(m)
}

/// Decode an image file to RGB (grayscale, CMYK and RGBA are converted).
pub fn decode_image(path: &Path) -> Result<Rgb8> {
    let reader = image::ImageReader::open(path)
        .map_err(|e| DataError::new(path, format!("cannot open image: {e}")))?
        .with_guessed_format()
        .map_err(|e| DataError::new(path, format!("cannot read image: {e}")))?;
    let img = reader
        .decode()
        .map_err(|e| DataError::new(path, format!("cannot decode image: {e}")))?;
    let rgb = img.to_rgb8();
    Ok(Rgb8 {
        w: rgb.width() as usize,
        h: rgb.height() as usize,
        data: rgb.into_raw(),
    })
}

/// An image-folder split.
pub struct ImageFolder {
    samples: Vec<(PathBuf, usize)>,
    classes: Vec<String>,
    transform: Option<ImageTransform>,
}

impl ImageFolder {
    /// Index `root/<split>` (`train` or `val`). `class_list` fixes global indices;
    /// `val_labels` labels a flat val folder.
    pub fn open(
        root: &Path,
        split: Split,
        class_list: Option<Vec<String>>,
        val_labels: Option<&Path>,
        transform: Option<ImageTransform>,
    ) -> Result<Self> {
        let dir = root.join(match split {
            Split::Train => "train",
            Split::Test => "val",
        });
        let dir = if dir.is_dir() {
            dir
        } else {
            root.to_path_buf()
        };
        Self::from_dir(&dir, class_list, val_labels, transform)
    }

    /// Index one folder (class sub-folders, or flat with `val_labels`).
    pub fn from_dir(
        dir: &Path,
        class_list: Option<Vec<String>>,
        val_labels: Option<&Path>,
        transform: Option<ImageTransform>,
    ) -> Result<Self> {
        if !dir.is_dir() {
            return Err(DataError::new(dir, "dataset folder not found"));
        }
        let entries = sorted_entries(dir)?;
        let class_dirs: Vec<&PathBuf> = entries.iter().filter(|p| p.is_dir()).collect();
        let flat: Vec<&PathBuf> = entries.iter().filter(|p| is_image(p)).collect();
        let mut samples = Vec::new();
        let classes;
        if !class_dirs.is_empty() {
            let names: Vec<String> = class_dirs
                .iter()
                .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
                .collect();
            classes = class_list.unwrap_or_else(|| names.clone());
            let index: HashMap<&str, usize> = classes
                .iter()
                .enumerate()
                .map(|(i, c)| (c.as_str(), i))
                .collect();
            for (p, name) in class_dirs.iter().zip(&names) {
                let Some(&label) = index.get(name.as_str()) else {
                    return Err(DataError::new(
                        p,
                        format!("class folder `{name}` is not in the class list"),
                    ));
                };
                for f in sorted_entries(p)? {
                    if is_image(&f) {
                        samples.push((f, label));
                    }
                }
            }
        } else if !flat.is_empty() {
            let Some(lp) = val_labels else {
                return Err(DataError::new(
                    dir,
                    "flat folder of images without class sub-folders: give a labels file \
                     (`file index wnid` lines, e.g. val_ground_truth.tsv)",
                ));
            };
            let labels = read_val_labels(lp)?;
            classes = match class_list {
                Some(c) => c,
                None => {
                    let k = labels.values().max().map(|m| m + 1).unwrap_or(0);
                    (0..k).map(|i| i.to_string()).collect()
                }
            };
            for f in flat {
                let name = f.file_name().unwrap().to_string_lossy().into_owned();
                let Some(&label) = labels.get(&name) else {
                    return Err(DataError::new(
                        f,
                        format!("no label for `{name}` in {}", lp.display()),
                    ));
                };
                if label >= classes.len() {
                    return Err(DataError::new(
                        lp,
                        format!(
                            "label {label} of `{name}` outside the {} classes",
                            classes.len()
                        ),
                    ));
                }
                samples.push((f.clone(), label));
            }
        } else {
            return Err(DataError::new(dir, "no class folders and no images found"));
        }
        if samples.is_empty() {
            return Err(DataError::new(dir, "no images found in the class folders"));
        }
        Ok(Self {
            samples,
            classes,
            transform,
        })
    }

    /// Files and labels.
    pub fn samples(&self) -> &[(PathBuf, usize)] {
        &self.samples
    }

    /// Decode sample `index` without transforming it.
    pub fn decode(&self, index: usize) -> Result<Rgb8> {
        decode_image(&self.samples[index].0)
    }
}

impl Dataset for ImageFolder {
    fn len(&self) -> usize {
        self.samples.len()
    }
    fn sample_shape(&self) -> Vec<usize> {
        match &self.transform {
            Some(t) => vec![3, t.cfg.size, t.cfg.size],
            None => vec![0],
        }
    }
    fn num_classes(&self) -> usize {
        self.classes.len()
    }
    fn class_names(&self) -> Vec<String> {
        self.classes.clone()
    }
    fn label(&self, index: usize) -> usize {
        self.samples[index].1
    }
    fn get(&self, index: usize, rng: &mut Rng) -> Result<Sample> {
        let t = self.transform.as_ref().ok_or_else(|| {
            DataError::new(
                &self.samples[index].0,
                "image folder opened without a transform",
            )
        })?;
        let img = self.decode(index)?;
        Ok(Sample {
            data: t.apply(&img, rng),
            label: self.samples[index].1,
        })
    }
}
