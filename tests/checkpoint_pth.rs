//! Loading reference checkpoints from PyTorch `.pth` files (plain, nested under `state_dict`,
//! and float16) gives the same model as loading the safetensors weights.

mod common;

use std::process::Command;

use burn::tensor::Device;
use statten::fixture::Fixture;
use statten_core::checkpoint::{load_reference, named_tensors};

fn make_pth(src: &std::path::Path, dst: &std::path::Path, extra: &[&str]) {
    let script = std::path::Path::new(
        &std::env::var("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR"),
    )
    .join("tests/tools/safetensors_to_pth.py");
    let status = Command::new("python3")
        .arg(&script)
        .arg(src)
        .arg(dst)
        .args(extra)
        .status()
        .expect("python3 is needed to write the test .pth files");
    assert!(status.success());
}

#[test]
fn pth_checkpoints_load_like_safetensors() {
    let fixture = common::fixtures_dir().join("sdt_statten_static");
    let fx = Fixture::load(&fixture).unwrap();
    let cfg = fx.model_config().unwrap();
    let dev = Device::flex();
    let mut want = cfg.init(&dev).unwrap();
    load_reference(&mut want, &fx.weights_path()).unwrap();
    let want = named_tensors(&want);
    let dir = std::env::temp_dir().join(format!("statten-pth-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    for (name, extra, tol) in [
        ("plain.pth", vec![], 0.0f32),
        ("nested.pth", vec!["--nested"], 0.0),
        ("half.pth", vec!["half"], 1e-3),
    ] {
        let path = dir.join(name);
        make_pth(&fx.weights_path(), &path, &extra);
        let mut m = cfg.init(&dev).unwrap();
        let report = load_reference(&mut m, &path).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert!(report.applied > 0);
        let got = named_tensors(&m);
        assert_eq!(got.len(), want.len());
        for (a, b) in got.iter().zip(&want) {
            assert_eq!(a.name, b.name);
            assert_eq!(a.values.len(), b.values.len(), "{name}: {} length", a.name);
            for (x, y) in a.values.iter().zip(&b.values) {
                assert!(
                    (x - y).abs() <= tol * (1.0 + y.abs()),
                    "{name}: {} {x} vs {y}",
                    a.name
                );
            }
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
}
