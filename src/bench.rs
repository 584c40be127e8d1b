//! Benchmark workloads shared by the criterion benches (`benches/core.rs`) and the CLI's
//! `statten bench` mode: LIF forward+backward on `[4, 32, 512, 8, 8]`, one STAtten block
//! forward+backward (T=4, B=8, C=512, 8×8 tokens, chunk 2), the STAtten attention core alone,
//! and one SDT-STAtten CIFAR-10 2-512 training step (forward, loss, backward, AdamW).
//!
//! Each workload is a closure that runs one iteration and reads a scalar back, so that lazy
//! devices (wgpu) have finished when it returns.

use burn::optim::GradientsParams;
use burn::prelude::*;
use burn::tensor::{Distribution, TensorData};
use statten_core::attention::{statten_core, AttentionKind, MsAttentionConfig};
use statten_core::models::{Input, ModelConfig};
use statten_core::neuron::NeuronConfig;
use statten_core::Monitor;
use statten_train::loss::cross_entropy;
use statten_train::optim::{AdamW, AdamWConfig};

/// The PyTorch reference on the 2-core development machine, one thread, CPU milliseconds (from
/// the core issue): LIF fwd+bwd, STAtten block fwd+bwd, attention core alone, full training step
/// at batch 64.
pub const REFERENCE_MS: &[(&str, f64)] = &[
    ("lif_fwd_bwd", 94.0),
    ("statten_block_fwd_bwd", 266.0),
    ("attention_core_fwd_bwd", 17.9),
    ("train_step_b64", 31_300.0),
];

/// One benchmark iteration; returns a scalar read back from the device.
pub type Iteration = Box<dyn FnMut() -> f32>;

fn sync(t: Tensor<1>) -> f32 {
    t.into_scalar::<f32>()
}

/// LIF forward+backward on `[4, 32, 512, 8, 8]` (`batched`: the batched-surrogate formulation;
/// else the per-step one, the default).
pub fn lif(device: &Device, batched: bool) -> Iteration {
    let ad = device.clone().autodiff();
    let neuron = NeuronConfig::default().init("lif", &ad);
    let shape = [4, 32, 512, 8, 8];
    let x0: Tensor<5> = Tensor::random(shape, Distribution::Normal(0.5, 1.0), &ad);
    let w: Tensor<5> = Tensor::random(shape, Distribution::Normal(0.0, 1.0), &ad);
    Box::new(move || {
        let x = x0.clone().detach().require_grad();
        let flat: Tensor<2> = x.clone().reshape([4, -1]);
        let s = if batched {
            neuron.forward_batched(flat)
        } else {
            neuron.forward_per_step(flat)
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
        num_heads: 8,
        kind: AttentionKind::Statten,
        chunk_size: 2,
        time_steps: 4,
        grid_h: 8,
        dvs: false,
        neuron: NeuronConfig::default(),
        attn_v_threshold: 0.5,
        scale: None,
        sdsa_pool_q: true,
    }
    .init("block.0.attn", &ad)
    .expect("valid block");
    let x0: Tensor<5> = Tensor::random([4, 8, 512, 8, 8], Distribution::Normal(0.5, 1.0), &ad);
    Box::new(move || {
        let x = x0.clone().detach().require_grad();
        let y = attn.forward(x.clone(), &mut Monitor::disabled());
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

/// One training step of SDT-STAtten CIFAR-10 2-512 (T=4) at `batch`: forward, label-smoothed
/// cross-entropy, backward, AdamW (lr 3e-4, wd 0.06). Returns the loss.
pub fn train_step(device: &Device, batch: usize) -> Iteration {
    let ad = device.clone().autodiff();
    let cfg = ModelConfig::preset("cifar10-2-512").expect("preset");
    let mut model = Some(cfg.init(&ad).expect("model"));
    let mut opt = AdamW::new(AdamWConfig {
        weight_decay: 0.06,
        ..AdamWConfig::default()
    });
    let x: Tensor<4> = Tensor::random([batch, 3, 32, 32], Distribution::Normal(0.0, 1.0), &ad);
    let labels: Vec<i64> = (0..batch as i64).map(|i| i % 10).collect();
    let y: Tensor<1, Int> = Tensor::from_data(TensorData::new(labels, [batch]), &ad);
    let t = cfg.time_steps;
    Box::new(move || {
        let m = model.take().expect("model");
        let logits = m.forward(Input::Static(x.clone()).encode(t), &mut Monitor::disabled());
        let loss = cross_entropy(logits, y.clone(), 0.1);
        let value = loss.clone().into_scalar::<f32>();
        let grads = GradientsParams::from_grads(loss.backward(), &m);
        model = Some(opt.step(3e-4, m, grads));
        value
    })
}
