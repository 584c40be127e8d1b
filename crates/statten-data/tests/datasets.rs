//! Dataset-level behaviour: ImageNet folders with global indices on the real sample images,
//! CIFAR10-DVS and N-Caltech101 folders (splits, frame cache), the threaded loader (seeded
//! order, worker-count independence, skip-and-count), and tensor batches.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use statten_data::cifar::{read_records, CifarDataset, CifarKind, CifarSet};
use statten_data::events::aedat::encode_aedat2;
use statten_data::events::atis::encode_atis_bin;
use statten_data::events::Events;
use statten_data::imagenet::{read_class_list, ImageFolder};
use statten_data::neuromorphic::{DvsSplit, EventFolderDataset, FrameConfig};
use statten_data::transforms::{ImageTransform, ImageTransformConfig};
use statten_data::{Dataset, Loader, LoaderConfig, OnError, Rng, Split};

fn shared_data() -> PathBuf {
    let d =
        PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR"))
            .join("../../../shared/data");
    assert!(d.is_dir(), "shared data folder missing at {}", d.display());
    d
}

fn tmp(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("statten-ds-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn eval_transform(size: usize) -> ImageTransform {
    ImageTransform::new(
        ImageTransformConfig {
            size,
            crop_pct: 0.95,
            ..Default::default()
        },
        false,
    )
    .unwrap()
}

#[test]
fn imagenet_subset_keeps_global_indices() {
    let root = shared_data().join("imagenet");
    let classes = read_class_list(&root.join("synsets.tsv")).unwrap();
    assert_eq!(classes.len(), 1000);
    assert_eq!(
        (classes[0].as_str(), classes[999].as_str()),
        ("n01440764", "n15075141")
    );
    let ds = ImageFolder::from_dir(
        &root.join("val_sample"),
        Some(classes),
        None,
        Some(eval_transform(64)),
    )
    .unwrap();
    assert_eq!(ds.len(), 20);
    assert_eq!(ds.num_classes(), 1000);
    // The file names carry the sorted-wnid index: foolbox_imagenet_NN_<index>.jpg.
    for (i, (path, label)) in ds.samples().iter().enumerate() {
        let want: usize = path
            .file_stem()
            .unwrap()
            .to_str()
            .unwrap()
            .rsplit('_')
            .next()
            .unwrap()
            .parse()
            .unwrap();
        assert_eq!(*label, want, "{}", path.display());
        assert_eq!(ds.label(i), want);
    }
    // Without the class list the 19 local folders would be renumbered 0..18.
    let local = ImageFolder::from_dir(&root.join("val_sample"), None, None, None).unwrap();
    assert_eq!(local.num_classes(), 19);
    // Decoding + eval transform: [3, 64, 64], finite, normalised range.
    let s = ds.get(0, &mut Rng::new(0)).unwrap();
    assert_eq!(s.data.len(), 3 * 64 * 64);
    assert!(s
        .data
        .iter()
        .all(|v| v.is_finite() && *v > -2.2 && *v < 2.7));
    let img = ds.decode(0).unwrap();
    assert!(img.w >= 512 && img.h >= 512);
}

#[test]
fn flat_val_folder_with_labels_file_and_errors() {
    let root = shared_data().join("imagenet");
    let dir = tmp("flatval");
    // Two real JPEGs renamed to val file names, labelled by val_ground_truth.tsv.
    let src: Vec<PathBuf> = ImageFolder::from_dir(&root.join("val_sample"), None, None, None)
        .unwrap()
        .samples()
        .iter()
        .map(|s| s.0.clone())
        .take(2)
        .collect();
    std::fs::copy(&src[0], dir.join("ILSVRC2012_val_00000001.JPEG")).unwrap();
    std::fs::copy(&src[1], dir.join("ILSVRC2012_val_00050000.JPEG")).unwrap();
    let gt = root.join("val_ground_truth.tsv");
    let ds = ImageFolder::from_dir(&dir, None, Some(&gt), None).unwrap();
    let labels: Vec<usize> = (0..ds.len()).map(|i| ds.label(i)).collect();
    assert_eq!(labels, vec![65, 355]);
    // Without a labels file: a clear error naming the folder.
    let e = ImageFolder::from_dir(&dir, None, None, None)
        .err()
        .unwrap()
        .to_string();
    assert!(e.contains("flatval") && e.contains("labels file"), "{e}");
    // An undecodable image: error naming the file, or skipped and counted by the loader.
    std::fs::write(
        dir.join("ILSVRC2012_val_00000002.JPEG"),
        b"not a jpeg at all",
    )
    .unwrap();
    let ds =
        Arc::new(ImageFolder::from_dir(&dir, None, Some(&gt), Some(eval_transform(32))).unwrap());
    let e = ds.get(1, &mut Rng::new(0)).unwrap_err().to_string();
    assert!(
        e.contains("ILSVRC2012_val_00000002.JPEG") && e.contains("decode"),
        "{e}"
    );
    let cfg = LoaderConfig {
        batch_size: 3,
        shuffle: false,
        workers: 2,
        on_error: OnError::Skip,
        ..Default::default()
    };
    let loader = Loader::new(ds.clone(), cfg.clone());
    let batches: Vec<_> = loader.epoch(0).collect::<Result<_, _>>().unwrap();
    assert_eq!(batches[0].len(), 2);
    assert_eq!(loader.skipped(), 1);
    let loader = Loader::new(
        ds,
        LoaderConfig {
            on_error: OnError::Fail,
            ..cfg
        },
    );
    let r: Result<Vec<_>, _> = loader.epoch(0).collect();
    assert!(r
        .unwrap_err()
        .to_string()
        .contains("ILSVRC2012_val_00000002.JPEG"));
    // Missing folder.
    let e = ImageFolder::open(
        Path::new("/nonexistent/imagenet"),
        Split::Train,
        None,
        None,
        None,
    )
    .err()
    .unwrap()
    .to_string();
    assert!(e.contains("/nonexistent/imagenet"), "{e}");
}

#[test]
fn grayscale_and_png_named_jpeg_decode_to_rgb() {
    let dir = tmp("decode");
    let cls = dir.join("n01440764");
    std::fs::create_dir_all(&cls).unwrap();
    let gray = image::GrayImage::from_fn(40, 30, |x, y| image::Luma([(x * 5 + y) as u8]));
    gray.save_with_format(cls.join("gray.JPEG"), image::ImageFormat::Jpeg)
        .unwrap();
    let rgb = image::RgbImage::from_fn(20, 20, |x, _| image::Rgb([x as u8 * 10, 0, 255]));
    // A PNG with a .JPEG name (ImageNet train has one).
    rgb.save_with_format(cls.join("png_inside.JPEG"), image::ImageFormat::Png)
        .unwrap();
    let ds = ImageFolder::from_dir(&dir, None, None, Some(eval_transform(16))).unwrap();
    assert_eq!(ds.len(), 2);
    let g = ds.decode(0).unwrap();
    assert_eq!((g.w, g.h), (40, 30));
    let p = ds.decode(1).unwrap();
    assert_eq!(p.px(3, 0), [30, 0, 255]);
    for i in 0..2 {
        assert_eq!(ds.get(i, &mut Rng::new(1)).unwrap().data.len(), 3 * 16 * 16);
    }
}

/// Write a fake CIFAR10-DVS tree: `n` recordings per class with `k` events each.
fn write_dvs_tree(root: &Path, n: usize, k: usize) {
    for (c, name) in statten_data::neuromorphic::CIFAR10_DVS_CLASSES
        .iter()
        .enumerate()
    {
        let d = root.join(name);
        std::fs::create_dir_all(&d).unwrap();
        for i in 0..n {
            let mut ev = Events::default();
            for e in 0..k {
                ev.push(
                    (e * 7) as u64,
                    ((e + c) % 128) as u16,
                    ((e * 3 + i) % 128) as u16,
                    (e % 2) as u8,
                );
            }
            std::fs::write(
                d.join(format!("cifar10_{name}_{i}.aedat")),
                encode_aedat2(&ev),
            )
            .unwrap();
        }
    }
}

#[test]
fn cifar10_dvs_split_in_lexical_order_and_frame_cache() {
    let root = tmp("dvs");
    write_dvs_tree(&root, 12, 40);
    let cache = root.with_extension("cache");
    let _ = std::fs::remove_dir_all(&cache);
    let cfg = FrameConfig::cifar10_dvs(4);
    let train = EventFolderDataset::cifar10_dvs(
        &root,
        Split::Train,
        DvsSplit::Ratio,
        cfg,
        Some(cache.clone()),
    )
    .unwrap();
    let test = EventFolderDataset::cifar10_dvs(
        &root,
        Split::Test,
        DvsSplit::Ratio,
        cfg,
        Some(cache.clone()),
    )
    .unwrap();
    // ceil(0.9·12) = 11 train per class; lexical order: 0,1,10,11,2,…,9 → test is `_9`.
    assert_eq!((train.len(), test.len()), (110, 10));
    let names: Vec<String> = (0..test.len())
        .map(|i| {
            test.samples()[i]
                .0
                .file_name()
                .unwrap()
                .to_string_lossy()
                .into_owned()
        })
        .collect();
    assert_eq!(names[0], "cifar10_airplane_9.aedat");
    assert_eq!(test.label(9), 9);
    assert_eq!(train.sample_shape(), vec![4, 2, 64, 64]);
    // Frames: 40 events at 128×128 → bilinear halving keeps the total mass (40 / 4).
    let f = train.frames(0).unwrap();
    assert!((f.data.iter().sum::<f32>() - 10.0).abs() < 1e-4);
    // Cached once per (T, split, size): the file exists and is reused.
    let key = cache.join("T4_number_64x64_bilinear/airplane/cifar10_airplane_0.aedat.frames");
    assert!(key.is_file(), "{} missing", key.display());
    assert_eq!(train.frames(0).unwrap(), f);
    // A changed source file invalidates its entry.
    let src = train.samples()[0].0.clone();
    let mut ev = Events::default();
    ev.push(0, 1, 1, 1);
    ev.push(5, 2, 2, 0);
    std::fs::write(&src, encode_aedat2(&ev)).unwrap();
    let f2 = train.frames(0).unwrap();
    assert!(
        (f2.data.iter().sum::<f32>() - 0.5).abs() < 1e-6,
        "stale cache used"
    );
    // A different T uses a different cache folder.
    let t8 = EventFolderDataset::cifar10_dvs(
        &root,
        Split::Train,
        DvsSplit::Ratio,
        FrameConfig::cifar10_dvs(8),
        Some(cache.clone()),
    )
    .unwrap();
    t8.frames(1).unwrap();
    assert!(cache.join("T8_number_64x64_bilinear").is_dir());
    // TEBN split: i < 100 are test, so all 12 files per class are test here.
    let tebn =
        EventFolderDataset::cifar10_dvs(&root, Split::Test, DvsSplit::Tebn, cfg, None).unwrap();
    assert_eq!(tebn.len(), 120);
}

#[test]
fn cifar10_dvs_folder_errors() {
    let root = tmp("dvsbad");
    let e = EventFolderDataset::cifar10_dvs(
        &root.join("missing"),
        Split::Train,
        DvsSplit::Ratio,
        FrameConfig::cifar10_dvs(4),
        None,
    )
    .err()
    .unwrap()
    .to_string();
    assert!(e.contains("missing") && e.contains("not found"), "{e}");
    std::fs::write(root.join("airplane.zip"), b"PK").unwrap();
    let e = EventFolderDataset::cifar10_dvs(
        &root,
        Split::Train,
        DvsSplit::Ratio,
        FrameConfig::cifar10_dvs(4),
        None,
    )
    .err()
    .unwrap()
    .to_string();
    assert!(e.contains("extract"), "{e}");
}

#[test]
fn ncaltech101_sorted_split_nearest_resize_and_augmentation() {
    let root = tmp("ncal");
    let base = root.join("Caltech101");
    for (c, name) in ["BACKGROUND_Google", "Faces_easy", "accordion"]
        .iter()
        .enumerate()
    {
        let d = base.join(name);
        std::fs::create_dir_all(&d).unwrap();
        for i in 1..=10 + c {
            let mut ev = Events::default();
            for e in 0..50u64 {
                ev.push(
                    e * 10,
                    ((e * 7 + i as u64) % 240) as u16,
                    ((e * 3) % 180) as u16,
                    (e % 2) as u8,
                );
            }
            std::fs::write(d.join(format!("image_{i:04}.bin")), encode_atis_bin(&ev)).unwrap();
        }
    }
    let aug = statten_data::events::augment::EventAugConfig {
        enabled: true,
        ..Default::default()
    };
    let cfg = FrameConfig::ncaltech101(4);
    let train = EventFolderDataset::ncaltech101(&root, Split::Train, cfg, None, aug).unwrap();
    let test = EventFolderDataset::ncaltech101(&root, Split::Test, cfg, None, aug).unwrap();
    // int(0.9·n): 10 → 9, 11 → 9, 12 → 10.
    assert_eq!((train.len(), test.len()), (28, 5));
    assert_eq!(
        train.class_names(),
        vec!["BACKGROUND_Google", "Faces_easy", "accordion"]
    );
    assert!(test.samples()[0]
        .0
        .ends_with("BACKGROUND_Google/image_0010.bin"));
    assert_eq!(train.sample_shape(), vec![4, 2, 64, 64]);
    // Test samples are not augmented: same frames for any rng.
    let a = test.get(0, &mut Rng::new(1)).unwrap();
    let b = test.get(0, &mut Rng::new(2)).unwrap();
    assert_eq!(a, b);
    // Train samples are, deterministically per rng.
    let x = train.get(0, &mut Rng::new(5)).unwrap();
    let y = train.get(0, &mut Rng::new(5)).unwrap();
    assert_eq!(x, y);
    let differs = (0..10).any(|s| {
        train.get(0, &mut Rng::new(s)).unwrap() != train.get(0, &mut Rng::new(s + 100)).unwrap()
    });
    assert!(differs, "augmentation never changed anything");
}

fn cifar_dataset(train: bool) -> CifarDataset {
    let mut set = CifarSet::default();
    read_records(
        &shared_data().join("cifar/cifar10_test_batch_first20.bin"),
        CifarKind::Cifar10,
        &mut set,
    )
    .unwrap();
    // The reference CIFAR-10 recipe's pipeline, as `[data] dataset = "cifar10"` gives it.
    let cfg =
        statten_data::config::DataConfig::defaults(statten_data::config::DatasetName::Cifar10)
            .transform;
    CifarDataset {
        set,
        transform: ImageTransform::new(cfg, train).unwrap(),
        num_classes: 10,
    }
}

#[test]
fn loader_order_is_seeded_and_independent_of_workers() {
    let ds: Arc<dyn Dataset> = Arc::new(cifar_dataset(true));
    let run = |workers: usize, seed: u64, epoch: usize| {
        let l = Loader::new(
            ds.clone(),
            LoaderConfig {
                batch_size: 6,
                seed,
                workers,
                ..Default::default()
            },
        );
        l.epoch(epoch).collect::<Result<Vec<_>, _>>().unwrap()
    };
    let a = run(1, 42, 0);
    let b = run(3, 42, 0);
    assert_eq!(a, b, "same seed, different worker counts");
    assert_eq!(a.len(), 4);
    assert_eq!(
        a.iter().map(|b| b.len()).collect::<Vec<_>>(),
        vec![6, 6, 6, 2]
    );
    let mut seen: Vec<usize> = a.iter().flat_map(|b| b.indices.clone()).collect();
    seen.sort();
    assert_eq!(
        seen,
        (0..20).collect::<Vec<_>>(),
        "every sample once per epoch"
    );
    assert_ne!(run(2, 42, 1)[0].indices, a[0].indices, "epochs reshuffle");
    assert_ne!(run(2, 7, 0)[0].indices, a[0].indices, "seeds differ");
    // drop_last.
    let l = Loader::new(
        ds.clone(),
        LoaderConfig {
            batch_size: 6,
            drop_last: true,
            ..Default::default()
        },
    );
    assert_eq!(l.epoch(0).count(), 3);
    // Tensors on a device.
    let dev = burn::tensor::Device::flex();
    let x = a[0].inputs::<4>(&dev);
    assert_eq!(x.dims(), [6, 3, 32, 32]);
    let y = a[0].targets(&dev);
    assert_eq!(y.dims(), [6]);
    let labels: Vec<i64> = y.into_data().iter::<i64>().collect();
    assert_eq!(
        labels,
        a[0].labels.iter().map(|&l| l as i64).collect::<Vec<_>>()
    );
}

#[test]
fn cifar_eval_pipeline_is_plain_normalisation() {
    let ds = cifar_dataset(false);
    let s = ds.get(0, &mut Rng::new(0)).unwrap();
    assert_eq!(s.label, 3);
    // Pixel (0,0) red = 158 → (158/255 − 0.4914)/0.2470.
    let want = (158.0 / 255.0 - 0.4914) / 0.2470;
    assert!((s.data[0] - want).abs() < 1e-5, "{} vs {want}", s.data[0]);
    // Train pipeline keeps shape and stays finite.
    let tr = cifar_dataset(true);
    for i in 0..20 {
        let s = tr.get(i, &mut Rng::new(i as u64)).unwrap();
        assert_eq!(s.data.len(), 3072);
        assert!(s.data.iter().all(|v| v.is_finite()));
    }
}

/// A minimal baseline JPEG of a flat 8×8 image with 4 components and an Adobe APP14 marker
/// (transform 0 = CMYK), as ImageNet's few CMYK files are. Quantisation 1, DC-only blocks.
fn flat_cmyk_jpeg(cmyk: [u8; 4]) -> Vec<u8> {
    let mut out = vec![0xFF, 0xD8];
    // APP14 "Adobe", version 100, flags 0, transform 0.
    out.extend_from_slice(&[
        0xFF, 0xEE, 0x00, 0x0E, b'A', b'd', b'o', b'b', b'e', 0x00, 0x64, 0, 0, 0, 0, 0,
    ]);
    // DQT: table 0, all ones.
    out.extend_from_slice(&[0xFF, 0xDB, 0x00, 0x43, 0x00]);
    out.extend_from_slice(&[1u8; 64]);
    // SOF0: 8 bit, 8×8, 4 components 1×1, table 0.
    out.extend_from_slice(&[0xFF, 0xC0, 0x00, 8 + 12, 8, 0, 8, 0, 8, 4]);
    for id in 1..=4u8 {
        out.extend_from_slice(&[id, 0x11, 0]);
    }
    // DHT DC 0: categories 0..11, all 4-bit codes (canonical: symbol i ↔ code i).
    out.extend_from_slice(&[0xFF, 0xC4, 0x00, 3 + 16 + 12, 0x00]);
    let mut bits = [0u8; 16];
    bits[3] = 12;
    out.extend_from_slice(&bits);
    out.extend(0u8..12);
    // DHT AC 0: only EOB, 2-bit code 00.
    out.extend_from_slice(&[0xFF, 0xC4, 0x00, 3 + 16 + 1, 0x10]);
    let mut bits = [0u8; 16];
    bits[1] = 1;
    out.extend_from_slice(&bits);
    out.push(0x00);
    // SOS: 4 components, tables 0/0, spectral 0..63.
    out.extend_from_slice(&[0xFF, 0xDA, 0x00, 6 + 8, 4]);
    for id in 1..=4u8 {
        out.extend_from_slice(&[id, 0x00]);
    }
    out.extend_from_slice(&[0, 63, 0]);
    // Entropy-coded MCU: per component DC = 8·(s − 128), then EOB.
    let mut acc: u128 = 0;
    let mut n = 0u32;
    let push = |acc: &mut u128, n: &mut u32, v: u128, len: u32| {
        *acc = (*acc << len) | (v & ((1 << len) - 1));
        *n += len;
    };
    for &s in &cmyk {
        let dc = 8 * (s as i64 - 128);
        let cat = if dc == 0 {
            0
        } else {
            64 - (dc.unsigned_abs()).leading_zeros()
        };
        push(&mut acc, &mut n, cat as u128, 4);
        if cat > 0 {
            let v = if dc > 0 {
                dc as u128
            } else {
                (dc + (1 << cat) - 1) as u128
            };
            push(&mut acc, &mut n, v, cat);
        }
        push(&mut acc, &mut n, 0, 2);
    }
    let pad = (8 - n % 8) % 8;
    push(&mut acc, &mut n, (1 << pad) - 1, pad);
    for i in (0..n / 8).rev() {
        let b = (acc >> (8 * i)) as u8;
        out.push(b);
        if b == 0xFF {
            out.push(0x00);
        }
    }
    out.extend_from_slice(&[0xFF, 0xD9]);
    out
}

#[test]
fn cmyk_jpeg_decodes_to_rgb() {
    let dir = tmp("cmyk");
    let a = dir.join("n01440764_cmyk_a.JPEG");
    let b = dir.join("n01440764_cmyk_b.JPEG");
    std::fs::write(&a, flat_cmyk_jpeg([255, 255, 255, 255])).unwrap();
    std::fs::write(&b, flat_cmyk_jpeg([255, 40, 40, 255])).unwrap();
    let ia = statten_data::imagenet::decode_image(&a).unwrap_or_else(|e| panic!("{e}"));
    let ib = statten_data::imagenet::decode_image(&b).unwrap();
    assert_eq!((ia.w, ia.h, ia.data.len()), (8, 8, 8 * 8 * 3));
    // Flat input → flat RGB output; different inks → different colours.
    assert!(ia.data.chunks(3).all(|p| p == &ia.data[..3]));
    assert!(ib.data.chunks(3).all(|p| p == &ib.data[..3]));
    assert_ne!(ia.px(0, 0), ib.px(0, 0));
    // The second colour differs between channels (a real colour, not grey): the conversion is
    // CMYK → RGB, not a luminance fallback.
    let p = ib.px(0, 0);
    assert!(p[0] != p[1] || p[1] != p[2], "{p:?}");
}

#[test]
fn an_epoch_resumed_at_a_batch_gives_the_same_remaining_batches() {
    let ds: Arc<dyn statten_data::Dataset> = Arc::new(cifar_dataset(true));
    let loader = Loader::new(
        ds,
        LoaderConfig {
            batch_size: 3,
            shuffle: true,
            seed: 7,
            workers: 2,
            ..Default::default()
        },
    );
    let all: Vec<_> = loader.epoch(1).collect::<Result<_, _>>().unwrap();
    assert_eq!(all.len(), 7);
    let rest: Vec<_> = loader.epoch_from(1, 4).collect::<Result<_, _>>().unwrap();
    assert_eq!(rest.len(), 3);
    for (a, b) in all[4..].iter().zip(&rest) {
        assert_eq!(a.indices, b.indices);
        assert_eq!(a.labels, b.labels);
        assert_eq!(a.data, b.data, "augmentation differs after a resume");
    }
    assert_eq!(loader.epoch_from(1, 7).count(), 0);
    assert_eq!(loader.epoch_from(1, 99).count(), 0);
}

#[test]
fn every_indexed_image_extension_decodes() {
    // torchvision's IMG_EXTENSIONS are indexed, so each must decode (not fail mid-epoch).
    let dir = tmp("formats");
    std::fs::create_dir_all(&dir).unwrap();
    let img = image::RgbImage::from_fn(5, 4, |x, y| image::Rgb([x as u8 * 40, y as u8 * 60, 7]));
    for ext in ["jpg", "png", "ppm", "bmp", "tif", "tiff", "webp"] {
        let p = dir.join(format!("a.{ext}"));
        img.save(&p).unwrap_or_else(|e| panic!("{ext}: {e}"));
        let d = statten_data::imagenet::decode_image(&p).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!((d.w, d.h), (5, 4), "{ext}");
    }
    let gray = image::GrayImage::from_fn(3, 3, |x, _| image::Luma([x as u8 * 80]));
    let p = dir.join("g.pgm");
    gray.save(&p).unwrap();
    let d = statten_data::imagenet::decode_image(&p).unwrap();
    assert_eq!((d.w, d.h), (3, 3));
}
