//! Core benchmarks (criterion): LIF forward+backward, one STAtten block forward+backward, the
//! STAtten attention core, and one SDT-STAtten CIFAR 2-512 training step, on each backend.
//!
//! Devices: `STATTEN_BENCH_DEVICES=flex,ndarray,wgpu` (default `flex,ndarray`). Threads of the
//! CPU backends follow `RAYON_NUM_THREADS` (BENCHMARKS.md uses 1 to compare with the reference's
//! one-thread CPU times). Shapes are the issue's: LIF `[4, 32, 512, 8, 8]`; block T=4, B=8,
//! C=512, 8×8 tokens, chunk 2; train step batch 8.

use burn::optim::GradientsParams;
use burn::prelude::*;
use burn::tensor::{Distribution, TensorData};
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};
use statten_core::attention::{statten_core, AttentionKind, MsAttentionConfig};
use statten_core::models::{Input, ModelConfig};
use statten_core::neuron::NeuronConfig;
use statten_core::Monitor;
use statten_train::loss::cross_entropy;
use statten_train::optim::{AdamW, AdamWConfig};

fn devices() -> Vec<(String, Device)> {
    let list = std::env::var("STATTEN_BENCH_DEVICES").unwrap_or_else(|_| "flex,ndarray".into());
    list.split(',')
        .filter(|s| !s.is_empty())
        .map(|name| {
            #[allow(deprecated)]
            let d = match name {
                "flex" => Device::flex(),
                "ndarray" => Device::ndarray(),
                "wgpu" => Device::wgpu(Default::default()),
                other => panic!("unknown bench device {other}"),
            };
            (name.to_string(), d)
        })
        .collect()
}

/// Read a scalar back, which also waits for the device.
fn sync(t: Tensor<1>) -> f32 {
    t.into_scalar::<f32>()
}

fn lif(c: &mut Criterion) {
    let mut g = c.benchmark_group("lif_fwd_bwd");
    g.sample_size(10);
    for (name, dev) in devices() {
        let ad = dev.autodiff();
        let neuron = NeuronConfig::default().init("lif", &ad);
        let x0: Tensor<5> = Tensor::random([4, 32, 512, 8, 8], Distribution::Normal(0.5, 1.0), &ad);
        let w: Tensor<5> = Tensor::random([4, 32, 512, 8, 8], Distribution::Normal(0.0, 1.0), &ad);
        for (variant, batched) in [("batched", true), ("per_step", false)] {
            g.bench_function(BenchmarkId::new(variant, &name), |b| {
                b.iter(|| {
                    let x = x0.clone().detach().require_grad();
                    let flat: Tensor<2> = x.clone().reshape([4, -1]);
                    let s = if batched {
                        neuron.forward_flat(flat)
                    } else {
                        neuron.forward_per_step(flat)
                    };
                    let loss = (s.reshape([4, 32, 512, 8, 8]) * w.clone()).sum();
                    let grads = loss.backward();
                    sync(x.grad(&grads).unwrap().sum())
                })
            });
        }
    }
    g.finish();
}

fn block(c: &mut Criterion) {
    let mut g = c.benchmark_group("statten_block_fwd_bwd");
    g.sample_size(10);
    for (name, dev) in devices() {
        let ad = dev.autodiff();
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
        .unwrap();
        let x0: Tensor<5> = Tensor::random([4, 8, 512, 8, 8], Distribution::Normal(0.5, 1.0), &ad);
        g.bench_function(BenchmarkId::from_parameter(&name), |b| {
            b.iter(|| {
                let x = x0.clone().detach().require_grad();
                let y = attn.forward(x.clone(), &mut Monitor::disabled());
                let grads = y.sum().backward();
                sync(x.grad(&grads).unwrap().sum())
            })
        });
    }
    g.finish();
}

fn core_only(c: &mut Criterion) {
    let mut g = c.benchmark_group("attention_core_fwd_bwd");
    g.sample_size(10);
    for (name, dev) in devices() {
        let ad = dev.autodiff();
        let mk = || -> Tensor<5> {
            Tensor::random([4, 8, 8, 64, 64], Distribution::Bernoulli(0.1), &ad)
        };
        let (q0, k0, v0) = (mk(), mk(), mk());
        g.bench_function(BenchmarkId::from_parameter(&name), |b| {
            b.iter(|| {
                let (q, k, v) = (
                    q0.clone().require_grad(),
                    k0.clone().require_grad(),
                    v0.clone().require_grad(),
                );
                let o = statten_core(q.clone(), k.clone(), v.clone(), 2, 0.125).unwrap();
                let grads = o.sum().backward();
                sync(q.grad(&grads).unwrap().sum())
            })
        });
    }
    g.finish();
}

fn train_step(c: &mut Criterion) {
    let mut g = c.benchmark_group("train_step_cifar10_2_512_b8");
    g.sample_size(10);
    for (name, dev) in devices() {
        let ad = dev.autodiff();
        let cfg = ModelConfig::preset("cifar10-2-512").unwrap();
        let mut model = Some(cfg.init(&ad).unwrap());
        let mut opt = AdamW::new(AdamWConfig {
            weight_decay: 0.06,
            ..AdamWConfig::default()
        });
        let x: Tensor<4> = Tensor::random([8, 3, 32, 32], Distribution::Normal(0.0, 1.0), &ad);
        let y: Tensor<1, Int> =
            Tensor::from_data(TensorData::new((0..8i64).collect::<Vec<_>>(), [8]), &ad);
        g.bench_function(BenchmarkId::from_parameter(&name), |b| {
            b.iter(|| {
                let m = model.take().unwrap();
                let logits = m.forward(
                    Input::Static(x.clone()).encode(cfg.time_steps),
                    &mut Monitor::disabled(),
                );
                let loss = cross_entropy(logits, y.clone(), 0.1);
                let l = loss.clone().into_scalar::<f32>();
                let grads = GradientsParams::from_grads(loss.backward(), &m);
                let m = opt.step(3e-4, m, grads);
                model = Some(m);
                l
            })
        });
    }
    g.finish();
}

criterion_group!(benches, lif, core_only, block, train_step);
criterion_main!(benches);
