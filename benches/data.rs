//! Data-pipeline benchmarks (criterion), per core: decode + augment of the real ImageNet sample
//! JPEGs (`../shared/data/imagenet/val_sample`, 512×512 and 1024×683) with the ImageNet train
//! pipeline (RandomResizedCrop 224 bicubic, flip, `rand-m7-mstd0.5-inc1`) and the eval pipeline
//! (resize 235, centre crop 224), CIFAR-10 train pipeline, and SpikingJelly frame integration of
//! the real N-MNIST recording. Throughput is reported as elements (images) per second.

use std::path::PathBuf;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use statten_data::cifar::{read_records, CifarKind, CifarSet};
use statten_data::events::frames::{integrate, EmptyWindow, SplitBy};
use statten_data::image_ops::Rgb8;
use statten_data::imagenet::{decode_image, ImageFolder};
use statten_data::transforms::{ImageTransform, ImageTransformConfig};
use statten_data::Rng;

fn shared() -> PathBuf {
    PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR"))
        .join("../shared/data")
}

fn imagenet(c: &mut Criterion) {
    let folder =
        ImageFolder::from_dir(&shared().join("imagenet/val_sample"), None, None, None).unwrap();
    let files: Vec<PathBuf> = folder.samples().iter().map(|s| s.0.clone()).collect();
    let train = ImageTransform::new(
        ImageTransformConfig {
            size: 224,
            auto_augment: "rand-m7-mstd0.5-inc1".into(),
            scale: (0.08, 1.0),
            ..Default::default()
        },
        true,
    )
    .unwrap();
    let eval = ImageTransform::new(
        ImageTransformConfig {
            size: 224,
            crop_pct: 0.95,
            ..Default::default()
        },
        false,
    )
    .unwrap();
    let decoded: Vec<Rgb8> = files.iter().map(|f| decode_image(f).unwrap()).collect();
    let mut g = c.benchmark_group("imagenet_sample_20_images");
    g.sample_size(10);
    g.throughput(Throughput::Elements(files.len() as u64));
    g.bench_function("decode_only", |b| {
        b.iter(|| {
            files
                .iter()
                .map(|f| decode_image(f).unwrap().w)
                .sum::<usize>()
        })
    });
    let mut rng = Rng::new(0);
    g.bench_function("decode_train_pipeline", |b| {
        b.iter(|| {
            files
                .iter()
                .map(|f| train.apply(&decode_image(f).unwrap(), &mut rng).len())
                .sum::<usize>()
        })
    });
    g.bench_function("decode_eval_pipeline", |b| {
        b.iter(|| {
            files
                .iter()
                .map(|f| eval.apply(&decode_image(f).unwrap(), &mut rng).len())
                .sum::<usize>()
        })
    });
    g.bench_function("train_pipeline_only", |b| {
        b.iter(|| {
            decoded
                .iter()
                .map(|im| train.apply(im, &mut rng).len())
                .sum::<usize>()
        })
    });
    g.finish();
}

fn cifar(c: &mut Criterion) {
    let mut set = CifarSet::default();
    read_records(
        &shared().join("cifar/cifar10_test_batch_first20.bin"),
        CifarKind::Cifar10,
        &mut set,
    )
    .unwrap();
    // The reference CIFAR-10 recipe's pipeline, as `[data] dataset = "cifar10"` gives it.
    let cfg =
        statten_data::config::DataConfig::defaults(statten_data::config::DatasetName::Cifar10)
            .transform;
    let tr = ImageTransform::new(cfg, true).unwrap();
    let mut g = c.benchmark_group("cifar10_20_images");
    g.throughput(Throughput::Elements(20));
    let mut rng = Rng::new(0);
    g.bench_function("train_pipeline", |b| {
        b.iter(|| {
            (0..20)
                .map(|i| {
                    tr.apply(&Rgb8::from_chw(set.image(i), 32, 32), &mut rng)
                        .len()
                })
                .sum::<usize>()
        })
    });
    g.finish();
}

fn events(c: &mut Criterion) {
    let p = shared().join("events/nmnist_sample.bin");
    let ev = statten_data::events::atis::read_atis_bin(&p).unwrap();
    let mut g = c.benchmark_group("nmnist_4325_events");
    g.throughput(Throughput::Elements(1));
    g.bench_function("number_T16", |b| {
        b.iter(|| {
            integrate(&ev, SplitBy::Number, 16, 34, 34, EmptyWindow::Error, &p)
                .unwrap()
                .t
        })
    });
    g.bench_function("time_T16", |b| {
        b.iter(|| {
            integrate(&ev, SplitBy::Time, 16, 34, 34, EmptyWindow::Error, &p)
                .unwrap()
                .t
        })
    });
    g.finish();
}

criterion_group!(benches, imagenet, cifar, events);
criterion_main!(benches);
