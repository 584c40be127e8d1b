//! Library use: build a model from a preset, run a train-mode forward on a random batch, and
//! read every spiking layer's firing rate from the monitor.
//!
//! ```sh
//! cargo run --release --example firing_rates -- cifar10-2-256 cpu
//! ```

use burn::tensor::Distribution;
use statten::core::burn::prelude::*;
use statten::core::{Input, ModelConfig, Monitor};
use statten::device::DeviceName;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let preset = args.next().unwrap_or_else(|| "cifar10-2-256".into());
    let device: DeviceName = args.next().unwrap_or_else(|| "cpu".into()).parse()?;
    // Train mode (autodiff device): BatchNorm uses batch statistics. In eval mode a fresh model's
    // running statistics (variance 1) silence almost every LIF.
    let device = device.device().autodiff();

    let cfg = ModelConfig::preset(&preset)?;
    let model = cfg.init(&device)?;
    let batch = 2;
    let input = if cfg.dvs {
        let x: Tensor<5> = Tensor::random(
            [
                batch,
                cfg.time_steps,
                cfg.in_channels,
                cfg.img_size,
                cfg.img_size,
            ],
            Distribution::Bernoulli(0.05),
            &device,
        );
        Input::Events(x)
    } else {
        let x: Tensor<4> = Tensor::random(
            [batch, cfg.in_channels, cfg.img_size, cfg.img_size],
            Distribution::Normal(0.0, 1.0),
            &device,
        );
        Input::Static(x)
    };

    let mut monitor = Monitor::enabled();
    let logits = model.forward_monitored(input.encode(cfg.time_steps), &mut monitor);
    println!("{preset}: logits {:?}", logits.dims());
    for s in monitor.stats() {
        println!(
            "{:<34} {:>8.3} %  of {:?}",
            s.name,
            100.0 * s.rate(),
            s.shape
        );
    }
    Ok(())
}
