//! The sample-level dataset interface that the [`crate::loader::Loader`] batches.

use crate::error::Result;
use crate::rng::Rng;

/// One decoded, transformed sample.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    /// Values in row-major order of [`Dataset::sample_shape`] (`[C, H, W]` or `[T, 2, H, W]`).
    pub data: Vec<f32>,
    /// Class index.
    pub label: usize,
}

/// A dataset whose samples can be read independently (and so on worker threads).
///
/// `get` receives a generator derived from `(seed, epoch, index)`: all of its random
/// augmentation must come from it, so results do not depend on thread scheduling.
pub trait Dataset: Send + Sync {
    /// Number of samples.
    fn len(&self) -> usize;
    /// Whether empty.
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// Shape of one sample.
    fn sample_shape(&self) -> Vec<usize>;
    /// Number of classes.
    fn num_classes(&self) -> usize;
    /// Class names, when known.
    fn class_names(&self) -> Vec<String> {
        (0..self.num_classes()).map(|i| i.to_string()).collect()
    }
    /// Class index of sample `index` without decoding it.
    fn label(&self, index: usize) -> usize;
    /// Decode and transform sample `index`.
    fn get(&self, index: usize, rng: &mut Rng) -> Result<Sample>;
}

/// The entries of `dir` sorted by file name in byte order (Python's `sorted()`, as
/// torchvision's and SpikingJelly's folder datasets use).
pub fn sorted_entries(dir: &std::path::Path) -> Result<Vec<std::path::PathBuf>> {
    let rd = std::fs::read_dir(dir)
        .map_err(|e| crate::DataError::new(dir, format!("cannot list folder: {e}")))?;
    let mut v: Vec<std::path::PathBuf> = rd.filter_map(|e| e.ok().map(|e| e.path())).collect();
    v.sort_by(|a, b| a.file_name().cmp(&b.file_name()));
    Ok(v)
}

/// Per-class counts of a dataset, from [`Dataset::label`].
pub fn class_counts(ds: &dyn Dataset) -> Vec<usize> {
    let mut c = vec![0usize; ds.num_classes()];
    for i in 0..ds.len() {
        let l = ds.label(i);
        if l < c.len() {
            c[l] += 1;
        }
    }
    c
}

/// A subset of another dataset, by indices (e.g. the first few hundred images of a split).
pub struct Subset<D> {
    /// The underlying dataset.
    pub inner: D,
    /// Indices into `inner`.
    pub indices: Vec<usize>,
}

impl<D: Dataset> Dataset for Subset<D> {
    fn len(&self) -> usize {
        self.indices.len()
    }
    fn sample_shape(&self) -> Vec<usize> {
        self.inner.sample_shape()
    }
    fn num_classes(&self) -> usize {
        self.inner.num_classes()
    }
    fn class_names(&self) -> Vec<String> {
        self.inner.class_names()
    }
    fn label(&self, index: usize) -> usize {
        self.inner.label(self.indices[index])
    }
    fn get(&self, index: usize, rng: &mut Rng) -> Result<Sample> {
        self.inner.get(self.indices[index], rng)
    }
}

impl<D: Dataset + ?Sized> Dataset for std::sync::Arc<D> {
    fn len(&self) -> usize {
        (**self).len()
    }
    fn sample_shape(&self) -> Vec<usize> {
        (**self).sample_shape()
    }
    fn num_classes(&self) -> usize {
        (**self).num_classes()
    }
    fn class_names(&self) -> Vec<String> {
        (**self).class_names()
    }
    fn label(&self, index: usize) -> usize {
        (**self).label(index)
    }
    fn get(&self, index: usize, rng: &mut Rng) -> Result<Sample> {
        (**self).get(index, rng)
    }
}
