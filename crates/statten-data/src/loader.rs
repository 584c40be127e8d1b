//! Batching with worker threads and prefetch, seeded shuffling, and conversion to Burn tensors.
//!
//! Batch `b` of an epoch is built by worker `b % workers`; each worker sends its batches through
//! its own bounded channel (`prefetch` deep), and the iterator reads them back in order. Sample
//! `i` of epoch `e` is transformed with `Rng::derive([seed, e, i])`, and the order of epoch `e`
//! is a permutation drawn from `Rng::derive([seed, e])`: the same seed gives the same batches,
//! whatever the number of workers.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::{sync_channel, Receiver};
use std::sync::Arc;
use std::thread::JoinHandle;

use burn::tensor::{Device, Int, Tensor, TensorData};

use crate::dataset::Dataset;
use crate::error::{DataError, Result};
use crate::rng::Rng;

/// What to do when a sample cannot be decoded (e.g. a corrupt JPEG).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OnError {
    /// Stop with the error, which names the file.
    #[default]
    Fail,
    /// Leave the sample out of its batch and count it ([`Loader::skipped`]).
    Skip,
}

/// Loader settings.
#[derive(Debug, Clone)]
pub struct LoaderConfig {
    /// Samples per batch.
    pub batch_size: usize,
    /// Shuffle each epoch (by seed).
    pub shuffle: bool,
    /// Seed of the order and of every sample's augmentation.
    pub seed: u64,
    /// Worker threads (at least 1).
    pub workers: usize,
    /// Batches each worker may build ahead.
    pub prefetch: usize,
    /// Drop a last incomplete batch (needed for batch-level mixup, which wants even sizes).
    pub drop_last: bool,
    /// Undecodable samples.
    pub on_error: OnError,
}

impl Default for LoaderConfig {
    fn default() -> Self {
        Self {
            batch_size: 64,
            shuffle: true,
            seed: 42,
            workers: std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(1),
            prefetch: 2,
            drop_last: false,
            on_error: OnError::Fail,
        }
    }
}

/// A batch on the host.
#[derive(Debug, Clone, PartialEq)]
pub struct HostBatch {
    /// `[B, …sample_shape]` values.
    pub data: Vec<f32>,
    /// Shape `[B, …]`.
    pub shape: Vec<usize>,
    /// Class indices.
    pub labels: Vec<usize>,
    /// Dataset indices of the samples.
    pub indices: Vec<usize>,
}

impl HostBatch {
    /// Number of samples.
    pub fn len(&self) -> usize {
        self.labels.len()
    }

    /// Whether empty.
    pub fn is_empty(&self) -> bool {
        self.labels.is_empty()
    }

    /// The inputs as a tensor of rank `D` on `device` (`D` = 4 for `[B, C, H, W]`,
    /// 5 for `[B, T, 2, H, W]`).
    pub fn inputs<const D: usize>(&self, device: &Device) -> Tensor<D> {
        assert_eq!(
            self.shape.len(),
            D,
            "batch rank {} != {D}",
            self.shape.len()
        );
        Tensor::from_data(
            TensorData::new(self.data.clone(), self.shape.clone()),
            device,
        )
    }

    /// The labels as an int tensor `[B]`.
    pub fn targets(&self, device: &Device) -> Tensor<1, Int> {
        let v: Vec<i64> = self.labels.iter().map(|&l| l as i64).collect();
        Tensor::from_data(TensorData::new(v, [self.labels.len()]), device)
    }
}

/// Batches a [`Dataset`] on worker threads.
pub struct Loader {
    dataset: Arc<dyn Dataset>,
    cfg: LoaderConfig,
    skipped: Arc<AtomicUsize>,
}

impl Loader {
    /// A loader over `dataset`.
    pub fn new(dataset: Arc<dyn Dataset>, cfg: LoaderConfig) -> Self {
        assert!(cfg.batch_size > 0, "batch_size must be positive");
        Self {
            dataset,
            cfg,
            skipped: Arc::new(AtomicUsize::new(0)),
        }
    }

    /// The dataset.
    pub fn dataset(&self) -> &Arc<dyn Dataset> {
        &self.dataset
    }

    /// The settings.
    pub fn config(&self) -> &LoaderConfig {
        &self.cfg
    }

    /// Samples skipped so far under [`OnError::Skip`].
    pub fn skipped(&self) -> usize {
        self.skipped.load(Ordering::Relaxed)
    }

    /// The sample order of `epoch`.
    pub fn order(&self, epoch: usize) -> Vec<usize> {
        let mut idx: Vec<usize> = (0..self.dataset.len()).collect();
        if self.cfg.shuffle {
            Rng::derive(&[self.cfg.seed, epoch as u64, 0x5EED]).shuffle(&mut idx);
        }
        idx
    }

    /// Number of batches per epoch.
    pub fn num_batches(&self) -> usize {
        let n = self.dataset.len();
        if self.cfg.drop_last {
            n / self.cfg.batch_size
        } else {
            n.div_ceil(self.cfg.batch_size)
        }
    }

    /// Build one batch from dataset indices, on the calling thread.
    pub fn build_batch(&self, epoch: usize, indices: &[usize]) -> Result<HostBatch> {
        build(&*self.dataset, &self.cfg, &self.skipped, epoch, indices)
    }

    /// The batches of `epoch`, built ahead on worker threads.
    pub fn epoch(&self, epoch: usize) -> EpochIter {
        self.epoch_from(epoch, 0)
    }

    /// The batches of `epoch` from batch `first` on (a run resumed mid-epoch): the same batches
    /// [`Loader::epoch`] gives after its first `first`, without building those.
    pub fn epoch_from(&self, epoch: usize, first: usize) -> EpochIter {
        let order = self.order(epoch);
        let nb = self.num_batches();
        let chunks: Arc<Vec<Vec<usize>>> = Arc::new(
            (first.min(nb)..nb)
                .map(|b| {
                    let s = b * self.cfg.batch_size;
                    order[s..(s + self.cfg.batch_size).min(order.len())].to_vec()
                })
                .collect(),
        );
        let nb = chunks.len();
        let workers = self.cfg.workers.max(1).min(nb.max(1));
        let mut receivers = Vec::with_capacity(workers);
        let mut handles = Vec::with_capacity(workers);
        for w in 0..workers {
            let (tx, rx) = sync_channel(self.cfg.prefetch.max(1));
            let ds = Arc::clone(&self.dataset);
            let cfg = self.cfg.clone();
            let skipped = Arc::clone(&self.skipped);
            let chunks = Arc::clone(&chunks);
            handles.push(std::thread::spawn(move || {
                let mut b = w;
                while b < chunks.len() {
                    let r = build(&*ds, &cfg, &skipped, epoch, &chunks[b]);
                    let stop = r.is_err();
                    if tx.send(r).is_err() || stop {
                        return;
                    }
                    b += workers;
                }
            }));
            receivers.push(rx);
        }
        EpochIter {
            receivers,
            handles,
            next: 0,
            total: nb,
            failed: false,
        }
    }
}

fn build(
    ds: &dyn Dataset,
    cfg: &LoaderConfig,
    skipped: &AtomicUsize,
    epoch: usize,
    indices: &[usize],
) -> Result<HostBatch> {
    let shape = ds.sample_shape();
    let per: usize = shape.iter().product();
    let mut data = Vec::with_capacity(per * indices.len());
    let mut labels = Vec::with_capacity(indices.len());
    let mut kept = Vec::with_capacity(indices.len());
    for &i in indices {
        let mut rng = Rng::derive(&[cfg.seed, epoch as u64, i as u64]);
        match ds.get(i, &mut rng) {
            Ok(s) => {
                if s.data.len() != per {
                    return Err(DataError::new(
                        "<dataset>",
                        format!(
                            "sample {i} has {} values, expected {per} ({shape:?})",
                            s.data.len()
                        ),
                    ));
                }
                data.extend_from_slice(&s.data);
                labels.push(s.label);
                kept.push(i);
            }
            Err(e) => match cfg.on_error {
                OnError::Fail => return Err(e),
                OnError::Skip => {
                    skipped.fetch_add(1, Ordering::Relaxed);
                }
            },
        }
    }
    let mut full = vec![labels.len()];
    full.extend(shape);
    Ok(HostBatch {
        data,
        shape: full,
        labels,
        indices: kept,
    })
}

/// Batches of one epoch, in order.
pub struct EpochIter {
    receivers: Vec<Receiver<Result<HostBatch>>>,
    handles: Vec<JoinHandle<()>>,
    next: usize,
    total: usize,
    failed: bool,
}

impl EpochIter {
    /// Number of batches in the epoch.
    pub fn total(&self) -> usize {
        self.total
    }
}

impl Iterator for EpochIter {
    type Item = Result<HostBatch>;
    fn next(&mut self) -> Option<Self::Item> {
        if self.failed || self.next >= self.total {
            return None;
        }
        let w = self.next % self.receivers.len();
        self.next += 1;
        match self.receivers[w].recv() {
            Ok(r) => {
                if r.is_err() {
                    self.failed = true;
                }
                Some(r)
            }
            Err(_) => {
                self.failed = true;
                Some(Err(DataError::new(
                    "<loader>",
                    "a data worker thread stopped unexpectedly",
                )))
            }
        }
    }
}

impl Drop for EpochIter {
    fn drop(&mut self) {
        // Dropping the receivers makes pending sends fail, so the workers exit.
        self.receivers.clear();
        for h in self.handles.drain(..) {
            let _ = h.join();
        }
    }
}
