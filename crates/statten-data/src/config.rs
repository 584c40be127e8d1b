//! The `[data]` table of a run configuration, and building datasets from it.
//!
//! Defaults depend on the dataset: `[data] dataset = "cifar10"` alone gives the reference CIFAR-10
//! recipe (32×32, identity RandomResizedCrop, flip, `rand-m9-n1-mstd0.4-inc1`, CIFAR mean/std,
//! mixup α 0.5 until epoch 200). Any key given overrides that default; an unknown key is an error
//! naming it and the closest valid key.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::cifar::{
    CifarDataset, CifarKind, Split, CIFAR100_MEAN, CIFAR100_STD, CIFAR10_MEAN, CIFAR10_STD,
};
use crate::dataset::{Dataset, Subset};
use crate::error::{DataError, Result};
use crate::events::augment::EventAugConfig;
use crate::events::frames::SplitBy;
use crate::events::resize::Interp;
use crate::imagenet::{read_class_list, ImageFolder};
use crate::loader::OnError;
use crate::mixup::MixupConfig;
use crate::mnist::{MnistDataset, MnistTransform};
use crate::neuromorphic::{DvsSplit, EventFolderDataset, FrameConfig};
use crate::transforms::{ImageTransform, ImageTransformConfig};

/// The datasets statten reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum DatasetName {
    /// CIFAR-10, binary version.
    Cifar10,
    /// CIFAR-100, binary version.
    Cifar100,
    /// ImageNet-1k folders.
    Imagenet,
    /// CIFAR10-DVS, AEDAT 2.0.
    Cifar10Dvs,
    /// N-Caltech101, 40-bit ATIS.
    Ncaltech101,
    /// Fashion-MNIST, IDX.
    FashionMnist,
    /// MNIST, IDX.
    Mnist,
}

impl DatasetName {
    /// All names as written in configs.
    pub const ALL: [&'static str; 7] = [
        "cifar10",
        "cifar100",
        "imagenet",
        "cifar10-dvs",
        "ncaltech101",
        "fashion-mnist",
        "mnist",
    ];

    /// Whether samples are event frames `[T, 2, H, W]`.
    pub fn is_events(&self) -> bool {
        matches!(self, DatasetName::Cifar10Dvs | DatasetName::Ncaltech101)
    }

    /// Number of classes.
    pub fn num_classes(&self) -> usize {
        match self {
            DatasetName::Cifar100 => 100,
            DatasetName::Imagenet => 1000,
            DatasetName::Ncaltech101 => 101,
            _ => 10,
        }
    }

    /// Where to get it, for error messages.
    pub fn download_hint(&self) -> &'static str {
        match self {
            DatasetName::Cifar10 => "download cifar-10-binary.tar.gz from https://www.cs.toronto.edu/~kriz/cifar.html and extract it (folder cifar-10-batches-bin)",
            DatasetName::Cifar100 => "download cifar-100-binary.tar.gz from https://www.cs.toronto.edu/~kriz/cifar.html and extract it (folder cifar-100-binary)",
            DatasetName::Imagenet => "download ILSVRC2012 from https://image-net.org and arrange train/<wnid>/ and val/<wnid>/ (or a flat val/ with a labels file)",
            DatasetName::Cifar10Dvs => "download the ten class zips of CIFAR10-DVS from https://figshare.com/articles/dataset/CIFAR10-DVS_New/4724671 and extract them into one folder",
            DatasetName::Ncaltech101 => "download Caltech101.zip of N-Caltech101 from https://www.garrickorchard.com/datasets/n-caltech101 and extract it",
            DatasetName::FashionMnist => "install it with `apt-get install dataset-fashion-mnist`, or download the four IDX files from https://github.com/zalandoresearch/fashion-mnist and pass their folder with --data-dir",
            DatasetName::Mnist => "download the four IDX files of MNIST",
        }
    }
}

impl std::str::FromStr for DatasetName {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        toml::Value::String(s.to_string()).try_into().map_err(|_| {
            format!(
                "unknown dataset `{s}` (known: {})",
                DatasetName::ALL.join(", ")
            )
        })
    }
}

/// The `[data]` table. It serialises the settings its dataset uses (a Fashion-MNIST config
/// has no image-pipeline or event-frame keys); [`DataConfig::from_table`] fills the others from
/// the dataset's defaults.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DataConfig {
    /// Which dataset.
    pub dataset: DatasetName,
    /// Its folder (`--data-dir` overrides). Fashion-MNIST defaults to the system package folder.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub root: Option<PathBuf>,
    /// Static images: the image pipeline.
    pub transform: ImageTransformConfig,
    /// Fashion-MNIST / MNIST pipeline.
    pub mnist: MnistTransform,
    /// Mixup / CutMix.
    pub mixup: MixupConfig,
    /// Event datasets: split rule of the frame integration.
    pub split_by: SplitBy,
    /// Event datasets: frame size after resizing.
    pub frame_size: (usize, usize),
    /// Event datasets: resize interpolation.
    pub frame_interp: Interp,
    /// Event datasets: allow empty `split_by = time` windows.
    pub allow_empty_windows: bool,
    /// CIFAR10-DVS split convention.
    pub dvs_split: DvsSplit,
    /// N-Caltech101 train augmentation.
    pub event_aug: EventAugConfig,
    /// Frame cache folder (default `~/.cache/statten/frames`); `""` disables caching.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cache_dir: Option<PathBuf>,
    /// ImageNet: full class list (`synsets.tsv`) giving global indices.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub class_list: Option<PathBuf>,
    /// ImageNet: labels file for a flat val folder.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub val_labels: Option<PathBuf>,
    /// Data worker threads (0 = one per core).
    pub workers: usize,
    /// Undecodable images: fail or skip (counted).
    pub on_error: OnError,
    /// Use only the first N training samples (0 = all).
    pub train_limit: usize,
    /// Use only the first N test samples (0 = all).
    pub test_limit: usize,
}

/// [`DataConfig`] as written: every setting its dataset uses (all of them with `all`).
#[derive(Serialize)]
struct DataOut<'a> {
    dataset: DatasetName,
    #[serde(skip_serializing_if = "Option::is_none")]
    root: Option<&'a PathBuf>,
    #[serde(skip_serializing_if = "Option::is_none")]
    transform: Option<&'a ImageTransformConfig>,
    #[serde(skip_serializing_if = "Option::is_none")]
    mnist: Option<&'a MnistTransform>,
    mixup: &'a MixupConfig,
    #[serde(skip_serializing_if = "Option::is_none")]
    split_by: Option<&'a SplitBy>,
    #[serde(skip_serializing_if = "Option::is_none")]
    frame_size: Option<&'a (usize, usize)>,
    #[serde(skip_serializing_if = "Option::is_none")]
    frame_interp: Option<&'a Interp>,
    #[serde(skip_serializing_if = "Option::is_none")]
    allow_empty_windows: Option<&'a bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    dvs_split: Option<&'a DvsSplit>,
    #[serde(skip_serializing_if = "Option::is_none")]
    event_aug: Option<&'a EventAugConfig>,
    #[serde(skip_serializing_if = "Option::is_none")]
    cache_dir: Option<&'a PathBuf>,
    #[serde(skip_serializing_if = "Option::is_none")]
    class_list: Option<&'a PathBuf>,
    #[serde(skip_serializing_if = "Option::is_none")]
    val_labels: Option<&'a PathBuf>,
    workers: usize,
    on_error: OnError,
    train_limit: usize,
    test_limit: usize,
}

impl<'a> DataOut<'a> {
    fn of(d: &'a DataConfig, all: bool) -> Self {
        use DatasetName as D;
        let images = all || matches!(d.dataset, D::Cifar10 | D::Cifar100 | D::Imagenet);
        let digits = all || matches!(d.dataset, D::FashionMnist | D::Mnist);
        let events = all || d.dataset.is_events();
        let dvs = all || d.dataset == D::Cifar10Dvs;
        let caltech = all || d.dataset == D::Ncaltech101;
        Self {
            dataset: d.dataset,
            root: d.root.as_ref(),
            transform: images.then_some(&d.transform),
            mnist: digits.then_some(&d.mnist),
            mixup: &d.mixup,
            split_by: events.then_some(&d.split_by),
            frame_size: events.then_some(&d.frame_size),
            frame_interp: events.then_some(&d.frame_interp),
            allow_empty_windows: events.then_some(&d.allow_empty_windows),
            dvs_split: dvs.then_some(&d.dvs_split),
            event_aug: caltech.then_some(&d.event_aug),
            cache_dir: d.cache_dir.as_ref().filter(|_| events),
            class_list: d.class_list.as_ref(),
            val_labels: d.val_labels.as_ref(),
            workers: d.workers,
            on_error: d.on_error,
            train_limit: d.train_limit,
            test_limit: d.test_limit,
        }
    }
}

impl Serialize for DataConfig {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        DataOut::of(self, false).serialize(s)
    }
}

impl DataConfig {
    /// The reference recipe's defaults for `dataset`.
    pub fn defaults(dataset: DatasetName) -> Self {
        let mut transform = ImageTransformConfig::default();
        let mut mixup = MixupConfig::default();
        let mut split_by = SplitBy::Number;
        let mut frame_interp = Interp::Bilinear;
        let mut event_aug = EventAugConfig::default();
        match dataset {
            DatasetName::Cifar10 | DatasetName::Cifar100 => {
                let (m, s) = if dataset == DatasetName::Cifar10 {
                    (CIFAR10_MEAN, CIFAR10_STD)
                } else {
                    (CIFAR100_MEAN, CIFAR100_STD)
                };
                transform = ImageTransformConfig {
                    size: 32,
                    scale: (1.0, 1.0),
                    ratio: (1.0, 1.0),
                    hflip: 0.5,
                    auto_augment: "rand-m9-n1-mstd0.4-inc1".into(),
                    crop_pct: 1.0,
                    mean: m.to_vec(),
                    std: s.to_vec(),
                    ..Default::default()
                };
                mixup = MixupConfig {
                    mixup_alpha: 0.5,
                    off_epoch: 200,
                    ..Default::default()
                };
            }
            DatasetName::Imagenet => {
                transform = ImageTransformConfig {
                    size: 224,
                    scale: (0.08, 1.0),
                    auto_augment: "rand-m7-mstd0.5-inc1".into(),
                    crop_pct: 0.95,
                    ..Default::default()
                };
                mixup = MixupConfig {
                    mixup_alpha: 0.2,
                    cutmix_alpha: 1.0,
                    ..Default::default()
                };
            }
            DatasetName::Ncaltech101 => {
                frame_interp = Interp::Nearest;
                event_aug.enabled = true;
            }
            DatasetName::Cifar10Dvs => {}
            DatasetName::FashionMnist | DatasetName::Mnist => {
                split_by = SplitBy::Number;
            }
        }
        Self {
            dataset,
            root: None,
            transform,
            mnist: if dataset == DatasetName::Mnist {
                MnistTransform::mnist()
            } else {
                MnistTransform::default()
            },
            mixup,
            split_by,
            frame_size: (64, 64),
            frame_interp,
            allow_empty_windows: false,
            dvs_split: DvsSplit::Ratio,
            event_aug,
            cache_dir: None,
            class_list: None,
            val_labels: None,
            workers: 0,
            on_error: OnError::Fail,
            train_limit: 0,
            test_limit: 0,
        }
    }

    /// Parse a `[data]` table: the dataset's defaults, overridden by the keys given.
    pub fn from_table(table: &toml::Table) -> std::result::Result<Self, String> {
        let name = match table.get("dataset") {
            Some(toml::Value::String(s)) => s
                .parse::<DatasetName>()
                .map_err(|e| format!("data.dataset: {e}"))?,
            Some(_) => return Err("data.dataset: must be a string".into()),
            None => {
                return Err(format!(
                    "data.dataset: missing (one of {})",
                    DatasetName::ALL.join(", ")
                ))
            }
        };
        let defaults = Self::defaults(name);
        let base =
            toml::Table::try_from(DataOut::of(&defaults, true)).map_err(|e| e.to_string())?;
        let merged = merge_checked(base, table, "data")?;
        toml::Value::Table(merged)
            .try_into()
            .map_err(|e: toml::de::Error| format!("data: {}", e.message()))
    }

    /// The frame settings for `time_steps`.
    pub fn frame_config(&self, time_steps: usize) -> FrameConfig {
        FrameConfig {
            time_steps,
            split_by: self.split_by,
            size: Some(self.frame_size),
            interp: self.frame_interp,
            allow_empty_windows: self.allow_empty_windows,
        }
    }

    /// The dataset folder: `root`, or the system folder for Fashion-MNIST.
    pub fn resolved_root(&self) -> Result<PathBuf> {
        match (&self.root, self.dataset) {
            (Some(r), _) if r.is_file() => Err(DataError::new(
                r,
                format!(
                    "a file, not a folder: point --data-dir (data.root) at the folder that holds \
                     the {:?} files",
                    self.dataset
                ),
            )),
            (Some(r), _) => Ok(r.clone()),
            (None, DatasetName::FashionMnist) => {
                Ok(PathBuf::from(crate::mnist::FASHION_MNIST_SYSTEM_DIR))
            }
            (None, d) => Err(DataError::new(
                "data.root",
                format!(
                    "no data folder given for {d:?}: set data.root or pass --data-dir; {}",
                    d.download_hint()
                ),
            )),
        }
    }

    fn cache(&self) -> Option<PathBuf> {
        match &self.cache_dir {
            Some(p) if p.as_os_str().is_empty() => None,
            Some(p) => Some(p.clone()),
            None => {
                std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache/statten/frames"))
            }
        }
    }

    /// Build a split. `train` selects the random train pipeline; `time_steps` is T for event
    /// frames.
    pub fn build(&self, split: Split, time_steps: usize) -> Result<Arc<dyn Dataset>> {
        self.build_with(split, time_steps, split == Split::Train)
    }

    /// `split` with the evaluation pipeline (no augmentation, whichever the split), e.g. to
    /// measure accuracy on the training set.
    pub fn build_eval(&self, split: Split, time_steps: usize) -> Result<Arc<dyn Dataset>> {
        self.build_with(split, time_steps, false)
    }

    fn build_with(
        &self,
        split: Split,
        time_steps: usize,
        augment: bool,
    ) -> Result<Arc<dyn Dataset>> {
        let root = self.resolved_root()?;
        let train = augment;
        let not_found = |e: DataError| self.with_download_hint(e);
        let tr = |cfg: &ImageTransformConfig| {
            ImageTransform::new(cfg.clone(), train)
                .map_err(|e| DataError::new("data.transform", e.0))
        };
        let ds: Arc<dyn Dataset> = match self.dataset {
            DatasetName::Cifar10 | DatasetName::Cifar100 => {
                let kind = if self.dataset == DatasetName::Cifar10 {
                    CifarKind::Cifar10
                } else {
                    CifarKind::Cifar100
                };
                let set = crate::cifar::load(&root, kind, split).map_err(not_found)?;
                Arc::new(CifarDataset {
                    set,
                    transform: tr(&self.transform)?,
                    num_classes: self.dataset.num_classes(),
                })
            }
            DatasetName::FashionMnist | DatasetName::Mnist => {
                let set = crate::mnist::load(Some(&root), split).map_err(not_found)?;
                Arc::new(MnistDataset {
                    set,
                    transform: self.mnist.clone(),
                    train,
                    digits: self.dataset == DatasetName::Mnist,
                })
            }
            DatasetName::Imagenet => {
                let classes = match &self.class_list {
                    Some(p) => Some(read_class_list(p)?),
                    None => None,
                };
                Arc::new(
                    ImageFolder::open(
                        &root,
                        split,
                        classes,
                        self.val_labels.as_deref(),
                        Some(tr(&self.transform)?),
                    )
                    .map_err(not_found)?,
                )
            }
            DatasetName::Cifar10Dvs => Arc::new(
                EventFolderDataset::cifar10_dvs(
                    &root,
                    split,
                    self.dvs_split,
                    self.frame_config(time_steps),
                    self.cache(),
                )
                .map_err(not_found)?,
            ),
            DatasetName::Ncaltech101 => Arc::new(
                EventFolderDataset::ncaltech101(
                    &root,
                    split,
                    self.frame_config(time_steps),
                    self.cache(),
                    if augment {
                        self.event_aug
                    } else {
                        Default::default()
                    },
                )
                .map_err(not_found)?,
            ),
        };
        Ok(self.limited(split, ds))
    }

    /// A "not found" error with the dataset's download hint added.
    fn with_download_hint(&self, e: DataError) -> DataError {
        if e.message.contains("not found") {
            let message = format!("{} — {}", e.message, self.dataset.download_hint());
            DataError::new(&e.path, message)
        } else {
            e
        }
    }

    /// The first `train_limit` / `test_limit` samples of `ds` (0: all of them).
    fn limited(&self, split: Split, ds: Arc<dyn Dataset>) -> Arc<dyn Dataset> {
        let limit = if split == Split::Train {
            self.train_limit
        } else {
            self.test_limit
        };
        if limit > 0 && limit < ds.len() {
            return Arc::new(Subset {
                inner: ds,
                indices: (0..limit).collect(),
            });
        }
        ds
    }
}

/// Edit distance with adjacent transpositions (optimal string alignment), for "did you mean"
/// hints: `modle` is one edit from `model`.
pub fn edit_distance(a: &str, b: &str) -> usize {
    let a: Vec<char> = a.chars().collect();
    let b: Vec<char> = b.chars().collect();
    let mut d = vec![vec![0usize; b.len() + 1]; a.len() + 1];
    for (i, row) in d.iter_mut().enumerate() {
        row[0] = i;
    }
    for (j, v) in d[0].iter_mut().enumerate() {
        *v = j;
    }
    for i in 1..=a.len() {
        for j in 1..=b.len() {
            let cost = (a[i - 1] != b[j - 1]) as usize;
            let mut v = (d[i - 1][j] + 1)
                .min(d[i][j - 1] + 1)
                .min(d[i - 1][j - 1] + cost);
            if i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1] {
                v = v.min(d[i - 2][j - 2] + 1);
            }
            d[i][j] = v;
        }
    }
    d[a.len()][b.len()]
}

/// The valid key closest to `key`, when it is close: at most one edit (a transposition counts
/// one) per three characters of the longer of the two, rounded up, so that a typo gets a
/// suggestion and an unrelated word none.
pub fn closest<'a>(key: &str, valid: impl IntoIterator<Item = &'a str>) -> Option<&'a str> {
    valid
        .into_iter()
        .map(|v| (edit_distance(key, v), v))
        .filter(|(d, v)| *d <= key.chars().count().max(v.chars().count()).div_ceil(3))
        .min_by_key(|(d, _)| *d)
        .map(|(_, v)| v)
}

/// Merge `over` onto `base` recursively; a key of `over` that `base` lacks is an error naming
/// its full path and the closest valid key. Keys whose default is absent (optional paths) are
/// listed in `base` only when set, so they are accepted through `OPTIONAL_KEYS`.
pub fn merge_checked(
    mut base: toml::Table,
    over: &toml::Table,
    path: &str,
) -> std::result::Result<toml::Table, String> {
    const OPTIONAL_KEYS: [&str; 5] = ["root", "cache_dir", "class_list", "val_labels", "preset"];
    for (k, v) in over {
        match (base.get_mut(k), v) {
            (Some(toml::Value::Table(dst)), toml::Value::Table(src)) => {
                let merged = merge_checked(dst.clone(), src, &format!("{path}.{k}"))?;
                *dst = merged;
            }
            (Some(dst), v) => {
                if let Some(want) = mistyped(dst, v) {
                    return Err(format!("{path}.{k} = {v}: expected {want}"));
                }
                *dst = v.clone()
            }
            (None, v) if OPTIONAL_KEYS.contains(&k.as_str()) => {
                base.insert(k.clone(), v.clone());
            }
            (None, _) => {
                let valid: Vec<&str> = base
                    .keys()
                    .map(|s| s.as_str())
                    .chain(OPTIONAL_KEYS)
                    .collect();
                let hint = closest(k, valid.iter().copied())
                    .map(|c| format!(" (did you mean `{path}.{c}`?)"))
                    .unwrap_or_default();
                return Err(format!("unknown key `{path}.{k}`{hint}"));
            }
        }
    }
    Ok(base)
}

/// What `default`'s kind of value is, when `given` is of another kind (an integer where a
/// number is expected is fine), for an error naming the key.
fn mistyped(default: &toml::Value, given: &toml::Value) -> Option<&'static str> {
    use toml::Value as V;
    let want = match default {
        V::String(_) => "a string",
        V::Integer(_) => "an integer",
        V::Float(_) => "a number",
        V::Boolean(_) => "true or false",
        V::Array(_) => "a list",
        V::Table(_) => "a table",
        V::Datetime(_) => return None,
    };
    let same = std::mem::discriminant(default) == std::mem::discriminant(given)
        || matches!((default, given), (V::Float(_), V::Integer(_)));
    (!same).then_some(want)
}

/// A short description of a dataset folder for `statten data inspect`.
pub fn describe(ds: &dyn Dataset, samples: usize, root: &Path) -> Result<String> {
    use std::fmt::Write;
    let mut s = String::new();
    let counts = crate::dataset::class_counts(ds);
    let names = ds.class_names();
    let _ = writeln!(s, "root            {}", root.display());
    let _ = writeln!(s, "samples         {}", ds.len());
    let _ = writeln!(
        s,
        "classes         {} ({} present)",
        ds.num_classes(),
        counts.iter().filter(|&&c| c > 0).count()
    );
    let _ = writeln!(s, "sample shape    {:?}", ds.sample_shape());
    let shown: Vec<(usize, &usize)> = counts.iter().enumerate().filter(|(_, &c)| c > 0).collect();
    for (i, c) in shown.iter().take(30) {
        let _ = writeln!(
            s,
            "  class {:>4} {:<24} {:>7}",
            i,
            names.get(*i).map(|s| s.as_str()).unwrap_or(""),
            c
        );
    }
    if shown.len() > 30 {
        let _ = writeln!(s, "  … {} more classes", shown.len() - 30);
    }
    let mut rng = crate::Rng::new(0);
    for i in 0..samples.min(ds.len()) {
        let x = ds.get(i, &mut rng)?;
        let n = x.data.len() as f64;
        let mean = x.data.iter().map(|&v| v as f64).sum::<f64>() / n;
        let var = x
            .data
            .iter()
            .map(|&v| (v as f64 - mean).powi(2))
            .sum::<f64>()
            / n;
        let (lo, hi) = x
            .data
            .iter()
            .fold((f32::MAX, f32::MIN), |(a, b), &v| (a.min(v), b.max(v)));
        let nz = x.data.iter().filter(|&&v| v != 0.0).count() as f64 / n;
        let _ = writeln!(
            s,
            "sample {i:<4} label {:<4} min {lo:>9.4} max {hi:>9.4} mean {mean:>9.4} std {:>9.4} nonzero {:.3}",
            x.label,
            var.sqrt(),
            nz
        );
    }
    Ok(s)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dataset_defaults_and_overrides() {
        let t: toml::Table =
            toml::from_str("dataset = 'cifar10'\n[transform]\nhflip = 0.0").unwrap();
        let c = DataConfig::from_table(&t).unwrap();
        assert_eq!(c.transform.size, 32);
        assert_eq!(c.transform.hflip, 0.0);
        assert_eq!(c.transform.auto_augment, "rand-m9-n1-mstd0.4-inc1");
        assert_eq!(c.mixup.mixup_alpha, 0.5);
    }

    #[test]
    fn unknown_keys_name_the_closest_valid_one() {
        let t: toml::Table =
            toml::from_str("dataset = 'cifar10'\n[transform]\nhflp = 0.0").unwrap();
        let e = DataConfig::from_table(&t).unwrap_err();
        assert!(
            e.contains("data.transform.hflp") && e.contains("data.transform.hflip"),
            "{e}"
        );
        let t: toml::Table = toml::from_str("dataset = 'cifar11'").unwrap();
        assert!(DataConfig::from_table(&t).unwrap_err().contains("cifar11"));
        // An unrelated key gets no suggestion.
        let t: toml::Table =
            toml::from_str("dataset = 'cifar10'\n[transform]\nqqqqqqqqqq = 0.0").unwrap();
        let e = DataConfig::from_table(&t).unwrap_err();
        assert!(
            e.contains("qqqqqqqqqq") && !e.contains("did you mean"),
            "{e}"
        );
    }

    #[test]
    fn suggestions_only_for_close_keys() {
        let keys = ["hflip", "epochs", "weight_decay", "lr"];
        assert_eq!(closest("hflp", keys), Some("hflip"));
        assert_eq!(closest("epoch", keys), Some("epochs"));
        assert_eq!(closest("wieght_decay", keys), Some("weight_decay"));
        assert_eq!(closest("ab", keys), None);
        assert_eq!(closest("lrr", keys), Some("lr"));
        assert_eq!(closest("modle", ["model", "data"]), Some("model"));
        assert_eq!(closest("learning_rate", keys), None);
    }
}
