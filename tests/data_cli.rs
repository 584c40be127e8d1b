//! `statten data frames` and `statten data inspect` on the real samples in `../shared/data`.

mod common;

use common::statten;

#[test]
fn frames_writes_spikingjelly_frames_as_safetensors() {
    let input = common::shared_dir().join("data/events/nmnist_sample.bin");
    let out =
        std::env::temp_dir().join(format!("statten-frames-{}.safetensors", std::process::id()));
    let (ok, text) = statten(&[
        "data",
        "frames",
        "--format",
        "ncaltech",
        "--input",
        input.to_str().unwrap(),
        "--time-steps",
        "4",
        "--split-by",
        "time",
        "--out",
        out.to_str().unwrap(),
    ]);
    assert!(ok, "{text}");
    let bytes = std::fs::read(&out).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let t = st.tensor("frames").unwrap();
    // No resize by default: the N-Caltech101 sensor size.
    assert_eq!(t.shape(), &[4, 2, 180, 240]);
    let v: Vec<f32> = t
        .data()
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
        .collect();
    // Golden per-frame (off, on) counts of split_by=time, T=4 (tools/golden_frames_nmnist_sample.txt).
    let plane = 180 * 240;
    let counts: Vec<(f32, f32)> = v
        .chunks(2 * plane)
        .map(|f| (f[..plane].iter().sum(), f[plane..].iter().sum()))
        .collect();
    assert_eq!(
        counts,
        vec![
            (645.0, 650.0),
            (465.0, 445.0),
            (293.0, 308.0),
            (777.0, 742.0)
        ]
    );
    // With --resize the shape follows.
    let (ok, text) = statten(&[
        "data",
        "frames",
        "--format",
        "ncaltech",
        "--input",
        input.to_str().unwrap(),
        "--time-steps",
        "10",
        "--resize",
        "64",
        "64",
        "--interp",
        "nearest",
        "--out",
        out.to_str().unwrap(),
    ]);
    assert!(ok, "{text}");
    let bytes = std::fs::read(&out).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    assert_eq!(st.tensor("frames").unwrap().shape(), &[10, 2, 64, 64]);
    // A truncated file is an error naming it.
    let bad = std::env::temp_dir().join(format!("statten-bad-{}.bin", std::process::id()));
    std::fs::write(&bad, [0u8; 7]).unwrap();
    let (ok, text) = statten(&[
        "data",
        "frames",
        "--format",
        "ncaltech",
        "--input",
        bad.to_str().unwrap(),
        "--time-steps",
        "4",
        "--out",
        out.to_str().unwrap(),
    ]);
    assert!(
        !ok && text.contains(bad.to_str().unwrap()) && text.contains("multiple of the 5-byte"),
        "{text}"
    );
}

#[test]
fn inspect_imagenet_sample_and_missing_root() {
    let root = common::shared_dir().join("data/imagenet/val_sample");
    let (ok, text) = statten(&[
        "data",
        "inspect",
        "--dataset",
        "imagenet",
        "--root",
        root.to_str().unwrap(),
        "--split",
        "test",
        "--samples",
        "2",
    ]);
    assert!(ok, "{text}");
    assert!(text.contains("samples         20"), "{text}");
    assert!(text.contains("sample shape    [3, 224, 224]"), "{text}");
    assert!(text.contains("sample 1"), "{text}");
    let (ok, text) = statten(&[
        "data",
        "inspect",
        "--dataset",
        "cifar10",
        "--root",
        "/nonexistent/cifar",
    ]);
    assert!(
        !ok && text.contains("/nonexistent/cifar") && text.contains("cifar-10-binary.tar.gz"),
        "{text}"
    );
}

#[test]
fn inspect_fashion_mnist_counts_per_class() {
    let (ok, text) = statten(&[
        "data",
        "inspect",
        "--dataset",
        "fashion-mnist",
        "--split",
        "test",
        "--samples",
        "1",
    ]);
    assert!(ok, "{text}");
    assert!(text.contains("samples         10000"), "{text}");
    assert!(
        text.contains("Ankle boot") && text.contains("1000"),
        "{text}"
    );
}
