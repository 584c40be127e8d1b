//! Benchmark workloads shared by the criterion benches (`benches/core.rs`) and the CLI's
//! `statten bench` mode: LIF forward+backward on `[4, 32, 512, 8, 8]` (fused operator or either
//! composite form), one STAtten block forward+backward (T=4, B=8, C=512, 8×8 tokens, chunk 2),
//! the STAtten attention core alone, one SDT-STAtten CIFAR-10 2-512 training step (forward,
//! loss, backward, AdamW), and the training-throughput mode of any preset at any batch
//! (`statten bench --train PRESET --batch B`).
//!
//! Each workload is a closure that runs one iteration and reads a scalar back, so that lazy
//! devices (wgpu) have finished when it returns.
//!
//! Reference figures are not compiled in: they differ by machine (AVX2 against AVX-512 alone gave
//! 2.4× on the quick start), so BENCHMARKS.md reports only ratios measured side by side with
//! `../shared/reference/` on one machine in one sitting.

use burn::optim::GradientsParams;
use burn::prelude::*;
use burn::tensor::{Distribution, TensorData};
use statten_core::attention::{statten_core, MsAttentionConfig};
use statten_core::models::{Input, ModelConfig};
use statten_core::neuron::NeuronConfig;
use statten_core::precision::{with_precision, Precision};
use statten_core::Monitor;
use statten_train::objective::{Objective, Targets};
use statten_train::optim::{AdamW, AdamWConfig};

/// One benchmark iteration; returns a scalar read back from the device, or the device's error
/// (a GPU that cannot allocate a buffer reports it at that read).
pub type Iteration = Box<dyn FnMut() -> Result<f32, String>>;

fn sync(t: Tensor<1>) -> Result<f32, String> {
    t.try_into_scalar::<f32>().map_err(|e| e.to_string())
}

/// Which formulation of the multi-step LIF a benchmark runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LifForm {
    /// The default path: the fused operator (one kernel forward, one backward) where the
    /// backend has it (flex, wgpu), else the per-step composite form (ndarray).
    Fused,
    /// The composite form with the surrogate inside the time loop.
    PerStep,
    /// The composite form with the surrogate applied once to all timesteps.
    Batched,
}

/// LIF forward+backward on `[4, 32, 512, 8, 8]` in the given formulation.
pub fn lif(device: &Device, form: LifForm) -> Iteration {
    let ad = device.clone().autodiff();
    let neuron = NeuronConfig::default().init("lif", &ad);
    let shape = [4, 32, 512, 8, 8];
    let x0: Tensor<5> = Tensor::random(shape, Distribution::Normal(0.5, 1.0), &ad);
    let w: Tensor<5> = Tensor::random(shape, Distribution::Normal(0.0, 1.0), &ad);
    Box::new(move || {
        let x = x0.clone().detach().require_grad();
        let flat: Tensor<2> = x.clone().reshape([4, -1]);
        let s = match form {
            LifForm::Fused => neuron.forward_flat(flat),
            LifForm::PerStep => neuron.forward_per_step(flat),
            LifForm::Batched => neuron.forward_batched(flat),
        };
        let grads = (s.reshape(shape) * w.clone()).sum().backward();
        sync(x.grad(&grads).expect("grad").sum())
    })
}

/// One SDT STAtten attention block (`MS_SSA_Conv`: shortcut LIF, q/k/v conv-BN-LIF, STAtten,
/// attention LIF, projection conv-BN, residual) forward+backward.
pub fn statten_block(device: &Device) -> Iteration {
    let ad = device.clone().autodiff();
    let attn = MsAttentionConfig {
        dim: 512,
        ..Default::default()
    }
    .init("block.0.attn", &ad)
    .expect("valid block");
    let x0: Tensor<5> = Tensor::random([4, 8, 512, 8, 8], Distribution::Normal(0.5, 1.0), &ad);
    Box::new(move || {
        let x = x0.clone().detach().require_grad();
        let y = attn.forward_monitored(x.clone(), &mut Monitor::disabled());
        let grads = y.sum().backward();
        sync(x.grad(&grads).expect("grad").sum())
    })
}

/// The STAtten attention core alone (`q·((kᵀv)·scale)` per block) forward+backward on binary
/// `[4, 8, 8, 64, 64]` q, k, v.
pub fn attention_core(device: &Device) -> Iteration {
    let ad = device.clone().autodiff();
    let mk =
        || -> Tensor<5> { Tensor::random([4, 8, 8, 64, 64], Distribution::Bernoulli(0.1), &ad) };
    let (q0, k0, v0) = (mk(), mk(), mk());
    Box::new(move || {
        let q = q0.clone().detach().require_grad();
        let k = k0.clone().detach().require_grad();
        let v = v0.clone().detach().require_grad();
        let o = statten_core(q.clone(), k, v, 2, 0.125).expect("chunking");
        let grads = o.sum().backward();
        sync(q.grad(&grads).expect("grad").sum())
    })
}

/// The training-step workloads' optimizer: AdamW over every parameter with weight decay 0.06,
/// as the reference's harness (`../shared/reference/bench_torch.py`), at lr 3e-4. The loss is
/// the recipe default's for the model ([`Objective::of_model`]).
const BENCH_LR: f64 = 3e-4;
/// See [`BENCH_LR`].
const BENCH_WEIGHT_DECAY: f64 = 0.06;

/// One training step of SDT-STAtten CIFAR-10 2-512 (T=4) at `batch`: forward, label-smoothed
/// cross-entropy, backward, AdamW (lr 3e-4, wd 0.06). Returns the loss.
pub fn train_step(device: &Device, batch: usize) -> Iteration {
    let cfg = ModelConfig::preset("cifar10-2-512").expect("preset");
    train_step_for(device, &cfg, batch)
}

/// One training step of any model at `batch` on synthetic data of the model's input shape
/// (normal images, or Bernoulli event counts for DVS models): forward, loss (TET for TET models,
/// label-smoothed cross-entropy otherwise), backward, AdamW (lr 3e-4, wd 0.06). Returns the loss.
pub fn train_step_for(device: &Device, cfg: &ModelConfig, batch: usize) -> Iteration {
    train_step_with_rate(device, cfg, batch, Precision::F32).0
}

/// [`train_step_for`], and the mean firing rate of the spiking layers in the first step
/// (spikes ÷ outputs over all of them; NaN before it): the density of the spikes the
/// convolutions take, which the CPU's sparse convolution kernels turn into speed. Only the first
/// step records it, so the later (timed) steps do no monitoring work.
pub fn train_step_with_rate(
    device: &Device,
    cfg: &ModelConfig,
    batch: usize,
    precision: Precision,
) -> (Iteration, std::rc::Rc<std::cell::Cell<f64>>) {
    let rate = std::rc::Rc::new(std::cell::Cell::new(f64::NAN));
    let rate_out = rate.clone();
    let ad = device.clone().autodiff();
    let mut model = Some(cfg.init(&ad).expect("model"));
    let mut opt = AdamW::new(AdamWConfig {
        weight_decay: BENCH_WEIGHT_DECAY,
        ..AdamWConfig::default()
    });
    let (c, s, t) = (cfg.in_channels, cfg.img_size, cfg.time_steps);
    let input = if cfg.dvs {
        Input::Events(Tensor::random(
            [batch, t, c, s, s],
            Distribution::Bernoulli(0.2),
            &ad,
        ))
    } else {
        Input::Static(Tensor::random(
            [batch, c, s, s],
            Distribution::Normal(0.0, 1.0),
            &ad,
        ))
    };
    let classes = cfg.num_classes as i64;
    let labels: Vec<i64> = (0..batch as i64).map(|i| i % classes).collect();
    let y: Tensor<1, Int> = Tensor::from_data(TensorData::new(labels, [batch]), &ad);
    let objective = Objective::of_model(cfg);
    // f16 steps as the trainer takes them: the loss scaled before the backward, the gradients
    // unscaled and checked (one read), the optimizer skipped on inf/NaN.
    let mut scaler = (precision == Precision::F16).then(statten_train::amp::LossScale::default);
    let step = Box::new(move || {
        let m = model.take().expect("model");
        let x = match &input {
            Input::Static(x) => Input::Static(x.clone()),
            Input::Events(x) => Input::Events(x.clone()),
        };
        let first = rate.get().is_nan();
        let mut monitor = if first {
            Monitor::enabled()
        } else {
            Monitor::disabled()
        };
        let (loss, _) = with_precision(precision, || {
            objective.forward_loss(&m, x, Targets::Hard(y.clone()), &mut monitor)
        });
        // A failure of this step's forward, or of the previous step's backward and update
        // (kernels run lazily), surfaces at this read.
        let value = match loss.clone().try_into_scalar::<f32>() {
            Ok(v) => v,
            Err(e) => {
                model = Some(m);
                return Err(e.to_string());
            }
        };
        if first {
            rate.set(monitor.firing_rate());
        }
        let grads = match &mut scaler {
            Some(s) => {
                let scaled = loss.mul_scalar(s.scale);
                let g = GradientsParams::from_grads(
                    with_precision(precision, || scaled.backward()),
                    &m,
                );
                match s.unscale(&m, g) {
                    Some(g) => g,
                    None => {
                        model = Some(m);
                        return Ok(value);
                    }
                }
            }
            None => GradientsParams::from_grads(with_precision(precision, || loss.backward()), &m),
        };
        model = Some(opt.step(BENCH_LR, m, grads));
        Ok(value)
    });
    (step, rate_out)
}

/// Peak resident memory of this process in bytes (Linux `VmHWM`), if known.
pub fn peak_rss_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

/// Bytes the device's memory pool holds (GPU backends; `None` on CPU). The pool keeps the pages
/// it has used for reuse, so after the timed steps this is the step's peak footprint.
pub fn device_reserved_bytes(device: &Device) -> Option<u64> {
    device.memory_pool_usage().map(|u| u.bytes_reserved)
}
