//! The data of a run: the train and test datasets (labels checked against the model), their
//! loaders, and the batches an epoch takes.

use std::sync::Arc;

use statten_data::cifar::Split;
use statten_data::loader::{Loader, LoaderConfig};
use statten_data::Dataset;

use crate::config::RunConfig;
use crate::error::{Error, Result};

/// A train and a test dataset.
pub type TrainTest = (Arc<dyn Dataset>, Arc<dyn Dataset>);

/// Build the train and test datasets of a config, checking their labels against
/// `model.num_classes`.
pub fn datasets(cfg: &RunConfig) -> Result<TrainTest> {
    let t = cfg.model.time_steps;
    let train = cfg.data.build(Split::Train, t)?;
    check_classes(&*train, "train", cfg)?;
    let test = cfg.data.build(Split::Test, t)?;
    check_classes(&*test, "test", cfg)?;
    Ok((train, test))
}

/// Every label must be a class of the model: a dataset folder with more class folders, a labels
/// file with larger indices, or an N-Caltech101 root with other than 101 classes is an error
/// before training, not an index panic (or a silently shifted class) inside it.
pub(crate) fn check_classes(ds: &dyn Dataset, split: &str, cfg: &RunConfig) -> Result<()> {
    let k = cfg.model.num_classes;
    let root = cfg
        .data
        .resolved_root()
        .map(|p| p.display().to_string())
        .unwrap_or_else(|_| "the data folder".into());
    let n = ds.num_classes();
    let exact = cfg.data.dataset == statten_data::config::DatasetName::Ncaltech101;
    if n > k || (exact && n != k) {
        return Err(Error::Data(format!(
            "{root}: the {split} set has {n} classes but model.num_classes = {k} ({:?} has {k})",
            cfg.data.dataset
        )));
    }
    if let Some((i, l)) = (0..ds.len())
        .map(|i| (i, ds.label(i)))
        .find(|&(_, l)| l >= k)
    {
        return Err(Error::Data(format!(
            "{root}: {split} sample {i} has label {l}, not below model.num_classes = {k}"
        )));
    }
    Ok(())
}

pub(crate) fn workers(cfg: &RunConfig) -> usize {
    if cfg.data.workers > 0 {
        cfg.data.workers
    } else {
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1)
    }
}

/// The training loader: shuffled by `(seed, epoch)`, the last incomplete batch dropped while
/// mixup is on (it pairs samples).
pub(crate) fn train_loader(cfg: &RunConfig, ds: Arc<dyn Dataset>) -> Loader {
    Loader::new(
        ds,
        LoaderConfig {
            batch_size: cfg.train.batch_size,
            shuffle: true,
            seed: cfg.train.seed,
            workers: workers(cfg),
            prefetch: 2,
            drop_last: cfg.mixup().active(),
            on_error: cfg.data.on_error,
        },
    )
}

/// The evaluation loader: in order, every sample, `train.eval_batch_size` at a time.
pub(crate) fn test_loader(cfg: &RunConfig, ds: Arc<dyn Dataset>) -> Loader {
    Loader::new(
        ds,
        LoaderConfig {
            batch_size: cfg.train.eval_batch(),
            shuffle: false,
            seed: cfg.train.seed,
            workers: workers(cfg),
            prefetch: 2,
            drop_last: false,
            on_error: cfg.data.on_error,
        },
    )
}

/// Batches per epoch: the loader's, or `train.max_batches` when fewer.
pub(crate) fn nb_of(cfg: &RunConfig, loader: &Loader) -> usize {
    match cfg.train.max_batches {
        0 => loader.num_batches(),
        m => m.min(loader.num_batches()),
    }
}

/// The batches of one epoch of `split` of `ds` as a run takes them (training: after the
/// drop-last rule and `train.max_batches`; test: every sample), for reports such as
/// `statten train --dry-run`.
pub fn batches_per_epoch(cfg: &RunConfig, split: Split, ds: Arc<dyn Dataset>) -> usize {
    match split {
        Split::Train => nb_of(cfg, &train_loader(cfg, ds)),
        Split::Test => test_loader(cfg, ds).num_batches(),
    }
}
