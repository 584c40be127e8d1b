//! Core benchmarks (criterion): LIF forward+backward, the STAtten attention core, one STAtten
//! block forward+backward, and one SDT-STAtten CIFAR 2-512 training step at batch 8, on each
//! backend. The workloads live in `statten::bench` (shared with `statten bench`).
//!
//! Devices: `STATTEN_BENCH_DEVICES=flex,ndarray,wgpu` (default `flex,ndarray`; the fused LIF
//! only where the backend has it: flex, wgpu). Threads of the CPU backends follow
//! `RAYON_NUM_THREADS` (BENCHMARKS.md measures 1 and 2 beside the reference at the same count).

use burn::tensor::Device;
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};
use statten::bench;

fn devices() -> Vec<(String, Device)> {
    let list = std::env::var("STATTEN_BENCH_DEVICES").unwrap_or_else(|_| "flex,ndarray".into());
    list.split(',')
        .filter(|s| !s.is_empty())
        .map(|name| {
            let d: statten::device::DeviceName = name.parse().expect("device name");
            (name.to_string(), d.device())
        })
        .collect()
}

fn run(c: &mut Criterion, group: &str, make: &dyn Fn(&Device) -> bench::Iteration) {
    let mut g = c.benchmark_group(group);
    g.sample_size(10);
    for (name, dev) in devices() {
        let mut it = make(&dev);
        g.bench_function(BenchmarkId::from_parameter(&name), |b| {
            b.iter(|| it().unwrap_or_else(|e| panic!("{group} on {name}: {e}")))
        });
    }
    g.finish();
}

fn lif(c: &mut Criterion) {
    run(c, "lif_fwd_bwd/fused", &|d| {
        bench::lif(d, bench::LifForm::Fused)
    });
    run(c, "lif_fwd_bwd/per_step", &|d| {
        bench::lif(d, bench::LifForm::PerStep)
    });
    run(c, "lif_fwd_bwd/batched", &|d| {
        bench::lif(d, bench::LifForm::Batched)
    });
}

fn core_only(c: &mut Criterion) {
    run(c, "attention_core_fwd_bwd", &bench::attention_core);
}

fn block(c: &mut Criterion) {
    run(c, "statten_block_fwd_bwd", &bench::statten_block);
}

fn train_step(c: &mut Criterion) {
    run(c, "train_step_cifar10_2_512_b8", &|d| {
        bench::train_step(d, 8)
    });
}

criterion_group!(benches, lif, core_only, block, train_step);
criterion_main!(benches);
