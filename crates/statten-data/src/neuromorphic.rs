//! CIFAR10-DVS and N-Caltech101 as datasets of `[T, 2, H, W]` frames, with an on-disk frame
//! cache.
//!
//! - **CIFAR10-DVS**: `<root>/<class>/cifar10_<class>_<i>.aedat` (the ten figshare zips,
//!   extracted). Classes in sorted order, files in **lexicographically sorted** order (as
//!   SpikingJelly's `DatasetFolder`, so `_10` comes before `_2`); per class the first
//!   `ceil(0.9·n)` files train and the rest test (`split_to_train_test_set(0.9, …)`), or the
//!   TEBN split (`i < 100` test) as an option. Frames: SpikingJelly integration at 128×128, then
//!   the reference's bilinear resize (no antialias) to 64×64.
//! - **N-Caltech101**: `<root>/Caltech101/<class>/image_NNNN.bin` (or `<root>/<class>/…`), 101
//!   folders. Per class the first `int(0.9·n)` files train, in **sorted** order. The reference
//!   takes them in `os.listdir` order, which depends on the file system, so its split
//!   is not reproducible; sorted order is. Frames at 180×240, nearest resize to 64×64, and the
//!   reference's train augmentation (roll / rotation / shear).
//!
//! Frames are cached under `cache_dir/T{T}_{split_by}_{H}x{W}_{interp}[_empty]/<class>/<file>.frames`,
//! each with a header holding the source file's size and modification time: a change of T,
//! split, size or the source file gives a different or stale entry, which is recomputed.

use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::cifar::Split;
use crate::dataset::{sorted_entries, Dataset, Sample};
use crate::error::{DataError, Result};
use crate::events::augment::{augment_frames, EventAugConfig};
use crate::events::frames::{integrate, EmptyWindow, Frames, SplitBy};
use crate::events::resize::{resize_planes, Interp};
use crate::events::EventFormat;
use crate::rng::Rng;

/// CIFAR10-DVS class order.
pub const CIFAR10_DVS_CLASSES: [&str; 10] = [
    "airplane",
    "automobile",
    "bird",
    "cat",
    "deer",
    "dog",
    "frog",
    "horse",
    "ship",
    "truck",
];

/// How events become frames.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FrameConfig {
    /// Number of frames T.
    pub time_steps: usize,
    /// Split rule.
    pub split_by: SplitBy,
    /// Output `(H, W)`; `None` keeps the sensor size.
    pub size: Option<(usize, usize)>,
    /// Resize interpolation.
    pub interp: Interp,
    /// Allow empty `split_by = time` windows (SpikingJelly fails on them).
    #[serde(default)]
    pub allow_empty_windows: bool,
}

impl FrameConfig {
    /// The reference's CIFAR10-DVS setting: `split_by = number`, bilinear to 64×64.
    pub fn cifar10_dvs(t: usize) -> Self {
        Self {
            time_steps: t,
            split_by: SplitBy::Number,
            size: Some((64, 64)),
            interp: Interp::Bilinear,
            allow_empty_windows: false,
        }
    }

    /// The reference's N-Caltech101 setting: `split_by = number`, nearest to 64×64.
    pub fn ncaltech101(t: usize) -> Self {
        Self {
            time_steps: t,
            split_by: SplitBy::Number,
            size: Some((64, 64)),
            interp: Interp::Nearest,
            allow_empty_windows: false,
        }
    }

    fn empty(&self) -> EmptyWindow {
        if self.allow_empty_windows {
            EmptyWindow::Allow
        } else {
            EmptyWindow::Error
        }
    }

    /// Output `(H, W)` for a format.
    pub fn out_hw(&self, format: EventFormat) -> (usize, usize) {
        self.size.unwrap_or(format.sensor_hw())
    }

    fn cache_key(&self, format: EventFormat) -> String {
        let (h, w) = self.out_hw(format);
        let interp = match self.interp {
            Interp::Bilinear => "bilinear",
            Interp::Nearest => "nearest",
        };
        format!(
            "T{}_{}_{h}x{w}_{interp}{}",
            self.time_steps,
            self.split_by,
            if self.allow_empty_windows {
                "_empty"
            } else {
                ""
            }
        )
    }
}

/// Read an event file and turn it into frames: integration at the sensor size, then resize.
pub fn file_frames(format: EventFormat, path: &Path, cfg: &FrameConfig) -> Result<Frames> {
    let ev = format.read(path)?;
    let (sh, sw) = format.sensor_hw();
    let f = integrate(&ev, cfg.split_by, cfg.time_steps, sh, sw, cfg.empty(), path)?;
    let (oh, ow) = cfg.out_hw(format);
    if (oh, ow) == (sh, sw) {
        return Ok(f);
    }
    Ok(Frames {
        t: f.t,
        h: oh,
        w: ow,
        data: resize_planes(&f.data, sh, sw, oh, ow, cfg.interp),
    })
}

/// Which CIFAR10-DVS split convention.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DvsSplit {
    /// Per class, first `ceil(0.9·n)` in sorted order train (SpikingJelly, the reference).
    #[default]
    Ratio,
    /// TEBN: files `i = 0..99` test, the rest train.
    Tebn,
}

/// A folder of event recordings, one sub-folder per class.
pub struct EventFolderDataset {
    format: EventFormat,
    classes: Vec<String>,
    samples: Vec<(PathBuf, usize)>,
    frames: FrameConfig,
    cache_dir: Option<PathBuf>,
    aug: EventAugConfig,
}

fn class_files(root: &Path, ext: &str) -> Result<Vec<(String, Vec<PathBuf>)>> {
    if !root.is_dir() {
        return Err(DataError::new(root, "dataset folder not found"));
    }
    let mut out = Vec::new();
    let mut zips = 0;
    for p in sorted_entries(root)? {
        let hidden = p
            .file_name()
            .is_some_and(|n| n.to_string_lossy().starts_with('.'));
        if p.is_dir() && !hidden {
            let files: Vec<PathBuf> = sorted_entries(&p)?
                .into_iter()
                .filter(|f| {
                    f.is_file() && f.extension().is_some_and(|e| e.eq_ignore_ascii_case(ext))
                })
                .collect();
            if files.is_empty() {
                return Err(DataError::new(
                    &p,
                    format!("class folder holds no .{ext} files"),
                ));
            }
            out.push((p.file_name().unwrap().to_string_lossy().into_owned(), files));
        } else if p.extension().is_some_and(|e| e == "zip") {
            zips += 1;
        }
    }
    if out.is_empty() {
        let hint = if zips > 0 {
            " (found .zip files: extract them first)"
        } else {
            ""
        };
        return Err(DataError::new(
            root,
            format!("no class folders with .{ext} files{hint}"),
        ));
    }
    Ok(out)
}

impl EventFolderDataset {
    /// CIFAR10-DVS at `root` (the folder holding `airplane/ … truck/`).
    pub fn cifar10_dvs(
        root: &Path,
        split: Split,
        split_rule: DvsSplit,
        frames: FrameConfig,
        cache_dir: Option<PathBuf>,
    ) -> Result<Self> {
        let classes = class_files(root, "aedat")?;
        let names: Vec<String> = classes.iter().map(|c| c.0.clone()).collect();
        if names != CIFAR10_DVS_CLASSES {
            return Err(DataError::new(
                root,
                format!("expected the 10 class folders {CIFAR10_DVS_CLASSES:?}, found {names:?}"),
            ));
        }
        let mut samples = Vec::new();
        for (label, (_, files)) in classes.into_iter().enumerate() {
            let n = files.len();
            let pos = (n * 9).div_ceil(10); // ceil(0.9·n) in exact arithmetic
            for (k, f) in files.into_iter().enumerate() {
                let is_train = match split_rule {
                    DvsSplit::Ratio => k < pos,
                    DvsSplit::Tebn => {
                        let i = file_index(&f).ok_or_else(|| {
                            DataError::new(&f, "TEBN split needs names ending in _<index>.aedat")
                        })?;
                        i >= 100
                    }
                };
                if is_train == (split == Split::Train) {
                    samples.push((f, label));
                }
            }
        }
        Ok(Self {
            format: EventFormat::Aedat2,
            classes: names,
            samples,
            frames,
            cache_dir,
            aug: EventAugConfig::default(),
        })
    }

    /// N-Caltech101 at `root` (holding `Caltech101/` or the 101 class folders).
    pub fn ncaltech101(
        root: &Path,
        split: Split,
        frames: FrameConfig,
        cache_dir: Option<PathBuf>,
        aug: EventAugConfig,
    ) -> Result<Self> {
        let dir = if root.join("Caltech101").is_dir() {
            root.join("Caltech101")
        } else {
            root.to_path_buf()
        };
        let classes = class_files(&dir, "bin")?;
        let names: Vec<String> = classes.iter().map(|c| c.0.clone()).collect();
        let mut samples = Vec::new();
        for (label, (_, files)) in classes.into_iter().enumerate() {
            let pos = files.len() * 9 / 10; // int(0.9·n), as the reference
            for (k, f) in files.into_iter().enumerate() {
                if (k < pos) == (split == Split::Train) {
                    samples.push((f, label));
                }
            }
        }
        let aug = if split == Split::Train {
            aug
        } else {
            EventAugConfig::default()
        };
        Ok(Self {
            format: EventFormat::Ncaltech,
            classes: names,
            samples,
            frames,
            cache_dir,
            aug,
        })
    }

    /// The files and labels of this split.
    pub fn samples(&self) -> &[(PathBuf, usize)] {
        &self.samples
    }

    /// The frame settings.
    pub fn frame_config(&self) -> &FrameConfig {
        &self.frames
    }

    fn cache_path(&self, src: &Path, label: usize) -> Option<PathBuf> {
        let dir = self.cache_dir.as_ref()?;
        let name = src.file_name()?.to_string_lossy().into_owned() + ".frames";
        Some(
            dir.join(self.frames.cache_key(self.format))
                .join(&self.classes[label])
                .join(name),
        )
    }

    /// Frames of sample `index`, from the cache when it is valid.
    pub fn frames(&self, index: usize) -> Result<Frames> {
        let (src, label) = &self.samples[index];
        let Some(cp) = self.cache_path(src, *label) else {
            return file_frames(self.format, src, &self.frames);
        };
        let stamp = source_stamp(src)?;
        let (h, w) = self.frames.out_hw(self.format);
        if let Some(f) = read_cache(&cp, stamp, self.frames.time_steps, h, w) {
            return Ok(f);
        }
        let f = file_frames(self.format, src, &self.frames)?;
        write_cache(&cp, stamp, &f)?;
        Ok(f)
    }
}

fn file_index(p: &Path) -> Option<usize> {
    p.file_stem()?.to_str()?.rsplit('_').next()?.parse().ok()
}

const CACHE_MAGIC: &[u8; 8] = b"STFRAME1";

fn source_stamp(src: &Path) -> Result<(u64, u64)> {
    let m = std::fs::metadata(src).map_err(|e| DataError::new(src, format!("cannot read: {e}")))?;
    let mtime = m
        .modified()
        .ok()
        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0);
    Ok((m.len(), mtime))
}

fn read_cache(path: &Path, stamp: (u64, u64), t: usize, h: usize, w: usize) -> Option<Frames> {
    let b = std::fs::read(path).ok()?;
    let head = 8 + 8 + 8 + 12;
    if b.len() < head || &b[..8] != CACHE_MAGIC {
        return None;
    }
    let u64_at = |i: usize| u64::from_le_bytes(b[i..i + 8].try_into().unwrap());
    let u32_at = |i: usize| u32::from_le_bytes(b[i..i + 4].try_into().unwrap()) as usize;
    if (u64_at(8), u64_at(16)) != stamp || (u32_at(24), u32_at(28), u32_at(32)) != (t, h, w) {
        return None;
    }
    let n = t * 2 * h * w;
    if b.len() != head + 4 * n {
        return None;
    }
    let data = b[head..]
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
        .collect();
    Some(Frames { t, h, w, data })
}

fn write_cache(path: &Path, stamp: (u64, u64), f: &Frames) -> Result<()> {
    let dir = path.parent().unwrap();
    std::fs::create_dir_all(dir)
        .map_err(|e| DataError::new(dir, format!("cannot create cache folder: {e}")))?;
    let mut b = Vec::with_capacity(36 + f.data.len() * 4);
    b.extend_from_slice(CACHE_MAGIC);
    b.extend_from_slice(&stamp.0.to_le_bytes());
    b.extend_from_slice(&stamp.1.to_le_bytes());
    for v in [f.t, f.h, f.w] {
        b.extend_from_slice(&(v as u32).to_le_bytes());
    }
    b.extend_from_slice(&f.to_le_bytes());
    // Temporary file + rename: a concurrent reader or a kill never sees half a file.
    let tmp = path.with_extension(format!("tmp{}", std::process::id()));
    let write = || -> std::io::Result<()> {
        let mut file = std::fs::File::create(&tmp)?;
        file.write_all(&b)?;
        std::fs::rename(&tmp, path)
    };
    write().map_err(|e| DataError::new(path, format!("cannot write frame cache: {e}")))
}

impl Dataset for EventFolderDataset {
    fn len(&self) -> usize {
        self.samples.len()
    }
    fn sample_shape(&self) -> Vec<usize> {
        let (h, w) = self.frames.out_hw(self.format);
        vec![self.frames.time_steps, 2, h, w]
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
        let mut f = self.frames(index)?;
        augment_frames(&mut f.data, f.h, f.w, &self.aug, rng);
        Ok(Sample {
            data: f.data,
            label: self.samples[index].1,
        })
    }
}
