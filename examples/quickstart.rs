//! Library use of statten: build a model from a preset, train a few steps on Fashion-MNIST with
//! the reference's optimizer and loss, and evaluate it.
//!
//! ```text
//! sudo apt-get install dataset-fashion-mnist
//! cargo run --release --example quickstart
//! ```
//!
//! For full runs use the CLI (`statten train --config configs/quickstart.toml`), which adds the
//! schedule, checkpoints, metrics and progress bars on top of exactly these pieces.

use std::sync::Arc;

use burn::optim::GradientsParams;
use burn::prelude::*;
use statten::core::models::{Input, ModelConfig};
use statten::core::monitor::Monitor;
use statten::data::loader::{Loader, LoaderConfig};
use statten::data::mnist::{self, MnistDataset, MnistTransform};
use statten::data::{Dataset, Split, Subset};
use statten::train::loss::cross_entropy;
use statten::train::metrics::top1_top5;
use statten::train::optim::{Optimizer, OptimizerConfig};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    // 1. A small SDT + STAtten for 28×28 grayscale images, starting from a reference preset.
    let mut cfg = ModelConfig::preset("cifar10-2-256")?;
    cfg.depth = 1;
    cfg.embed_dim = 64;
    cfg.num_heads = 4;
    cfg.time_steps = 2;
    cfg.chunk_size = 2;
    cfg.in_channels = 1;
    cfg.img_size = 28;
    cfg.validate()?;
    let device = Device::flex().autodiff();
    device.seed(42);
    let mut model = cfg.init(&device)?;

    // 2. Data: the system Fashion-MNIST (first 2,000 training images, 1,000 test images).
    let train_set = mnist::load(None, Split::Train)?;
    let test_set = mnist::load(None, Split::Test)?;
    let train: Arc<dyn Dataset> = Arc::new(Subset {
        inner: MnistDataset {
            set: train_set,
            transform: MnistTransform::default(),
            train: true,
            digits: false,
        },
        indices: (0..2000).collect(),
    });
    let test: Arc<dyn Dataset> = Arc::new(Subset {
        inner: MnistDataset {
            set: test_set,
            transform: MnistTransform::default(),
            train: false,
            digits: false,
        },
        indices: (0..1000).collect(),
    });
    let loader = Loader::new(
        train,
        LoaderConfig {
            batch_size: 50,
            ..Default::default()
        },
    );

    // 3. Two epochs of AdamW with timm's no-decay group and label-smoothing CE.
    let mut opt = Optimizer::new(&OptimizerConfig {
        lr: 2e-3,
        weight_decay: 1e-2,
        ..Default::default()
    });
    for epoch in 0..2 {
        for batch in loader.epoch(epoch) {
            let b = batch?;
            let x = Input::Static(b.inputs::<4>(&device)).encode(cfg.time_steps);
            let logits = model.forward_monitored(x, &mut Monitor::disabled());
            let loss = cross_entropy(logits, b.targets(&device), 0.1);
            let grads = GradientsParams::from_grads(loss.backward(), &model);
            model = opt.step(2e-3, model, grads);
        }
        println!("epoch {epoch} done");
    }

    // 4. Evaluate with running BatchNorm statistics (no autodiff), with firing rates.
    let eval_model = model.valid();
    let eval = Loader::new(
        test,
        LoaderConfig {
            batch_size: 100,
            shuffle: false,
            ..Default::default()
        },
    );
    let (mut correct, mut n) = (0, 0);
    let mut mon = Monitor::enabled();
    for batch in eval.epoch(0) {
        let b = batch?;
        let x = Input::Static(b.inputs::<4>(&Device::flex())).encode(cfg.time_steps);
        let logits = eval_model.forward_monitored(x, &mut mon);
        correct += top1_top5(logits, &b.labels).0;
        n += b.len();
    }
    println!(
        "test top-1 on {n} images: {:.2} %",
        100.0 * correct as f64 / n as f64
    );
    for s in mon.stats().iter().take(5) {
        println!("  firing rate {:<32} {:.4}", s.name, s.rate());
    }
    Ok(())
}
