//! The `statten` binary: parity exit codes and output, model info.

mod common;

use std::path::Path;

use common::statten;

#[test]
fn parity_passes_on_a_shipped_fixture() {
    let dir = common::fixtures_dir().join("sdt_sdsa_static");
    let (ok, text) = statten(&[
        "parity",
        "--fixture",
        dir.to_str().unwrap(),
        "--device",
        "cpu",
    ]);
    assert!(ok, "{text}");
    for group in [
        "spikes_eval",
        "logits_eval",
        "spikes_train",
        "logits_train",
        "loss_train",
        "grads",
        "bn_after",
        "after_step",
        "adamw_alone",
    ] {
        let line = text
            .lines()
            .find(|l| l.trim_start().starts_with(group))
            .unwrap_or_else(|| panic!("no {group} line:\n{text}"));
        assert!(line.contains("PASS"), "{line}");
    }
}

/// Copy a fixture and perturb one recorded tensor: the checker must fail, naming the group.
#[test]
fn parity_fails_on_a_perturbed_fixture() {
    let src = common::fixtures_dir().join("spikformer_ssa_static");
    let dst = std::env::temp_dir().join(format!("statten-perturbed-{}", std::process::id()));
    std::fs::create_dir_all(&dst).unwrap();
    for f in ["config.json", "weights.safetensors"] {
        std::fs::copy(src.join(f), dst.join(f)).unwrap();
    }
    let bytes = std::fs::read(src.join("tensors.safetensors")).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let mut owned: Vec<(String, safetensors::Dtype, Vec<usize>, Vec<u8>)> = Vec::new();
    for (name, view) in st.tensors() {
        let mut data = view.data().to_vec();
        if name == "logits_eval" {
            let v = f32::from_le_bytes(data[0..4].try_into().unwrap()) + 1e-3;
            data[0..4].copy_from_slice(&v.to_le_bytes());
        }
        owned.push((name.to_string(), view.dtype(), view.shape().to_vec(), data));
    }
    let views: Vec<(String, safetensors::tensor::TensorView)> = owned
        .iter()
        .map(|(n, d, s, b)| {
            (
                n.clone(),
                safetensors::tensor::TensorView::new(*d, s.clone(), b).unwrap(),
            )
        })
        .collect();
    safetensors::tensor::serialize_to_file(views, None, &dst.join("tensors.safetensors")).unwrap();
    let (ok, text) = statten(&["parity", "--fixture", dst.to_str().unwrap()]);
    assert!(!ok, "perturbed fixture passed:\n{text}");
    let line = text
        .lines()
        .find(|l| l.trim_start().starts_with("logits_eval"))
        .unwrap();
    assert!(line.contains("FAIL"), "{line}");
    let _ = std::fs::remove_dir_all(&dst);
}

#[test]
fn parity_names_a_missing_fixture() {
    let (ok, text) = statten(&["parity", "--fixture", "/nonexistent/fixture_dir"]);
    assert!(!ok);
    assert!(text.contains("/nonexistent/fixture_dir"), "{text}");
}

#[test]
fn model_info_gives_reference_counts() {
    let (ok, text) = statten(&["model", "info", "--preset", "cifar10-2-512"]);
    assert!(ok, "{text}");
    assert!(text.contains("10233546") && text.contains("8x8"), "{text}");
    let (ok, text) = statten(&["model", "info", "--preset", "nope"]);
    assert!(!ok && text.contains("unknown preset"), "{text}");
    let cfg =
        Path::new(&std::env::var("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR"))
            .join("configs/models/cifar10dvs-2-256-t10.toml");
    let (ok, text) = statten(&["model", "info", "--config", cfg.to_str().unwrap()]);
    assert!(
        ok && text.contains("16x16") && text.contains("2566794"),
        "{text}"
    );
}

#[test]
fn bench_mode_runs_a_workload_and_prints_its_time() {
    let (ok, text) = statten(&["bench", "--only", "core", "--iters", "1", "--warmup", "0"]);
    assert!(ok, "{text}");
    let row = text
        .lines()
        .find(|l| l.starts_with("attention_core_fwd_bwd"))
        .unwrap_or_else(|| panic!("{text}"));
    let ms: f64 = row.split_whitespace().nth(2).unwrap().parse().unwrap();
    assert!(ms.is_finite() && ms > 0.0, "{row}");
}

#[test]
fn bench_rejects_unknown_workloads_and_empty_batches() {
    let (ok, text) = statten(&["bench", "--only", "lfi"]);
    assert!(!ok && text.contains("lfi"), "{text}");
    let (ok, text) = statten(&["bench", "--batch", "0"]);
    assert!(!ok && text.contains("batch"), "{text}");
    let (ok, text) = statten(&["bench", "--train", "no-such-preset"]);
    assert!(!ok && text.contains("no-such-preset"), "{text}");
}

#[test]
fn bench_train_reports_throughput_and_memory() {
    let (ok, text) = statten(&[
        "bench",
        "--train",
        "cifar10-2-256",
        "--batch",
        "2",
        "--iters",
        "1",
        "--warmup",
        "0",
    ]);
    assert!(ok, "{text}");
    let line = text
        .lines()
        .find(|l| l.starts_with("train cifar10-2-256 T=4 batch 2 f32 on cpu"))
        .unwrap_or_else(|| panic!("{text}"));
    let ips: f64 = line
        .split(", ")
        .find(|p| p.ends_with("images/s"))
        .and_then(|p| p.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("{line}"));
    assert!(ips > 0.0 && ips.is_finite(), "{line}");
    assert!(line.contains("peak RSS"), "{line}");
    let rate: f64 = line
        .rsplit("mean firing rate ")
        .next()
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("{line}"));
    assert!((0.0..=1.0).contains(&rate), "{line}");
}

/// Kernel launches per step of the tiny SDT + STAtten below (1-32, T = 2, 16×16, batch 2) on
/// wgpu, as measured when `--profile` was written (701). The guard allows 8 % more; lower it
/// when a change removes launches.
const TINY_STEP_LAUNCH_CEILING: f64 = 760.0;

#[test]
#[cfg_attr(statten_skip_wgpu, ignore = "STATTEN_SKIP_WGPU is set")]
fn the_kernel_profile_counts_a_steps_launches_and_guards_them() {
    let (ok, text) = statten(&[
        "bench",
        "--train",
        "cifar10-2-256",
        "--set",
        "model.depth=1",
        "--set",
        "model.embed_dim=32",
        "--set",
        "model.num_heads=4",
        "--set",
        "model.time_steps=2",
        "--set",
        "model.chunk_size=2",
        "--set",
        "model.img_size=16",
        "--batch",
        "2",
        "--device",
        "wgpu",
        "--profile",
        "--iters",
        "1",
    ]);
    assert!(ok, "{text}");
    let launches: f64 = text
        .lines()
        .find_map(|l| l.strip_prefix("kernel launches per step: "))
        .and_then(|l| l.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no launch count in: {text}"));
    println!("{text}");
    assert!(launches > 100.0, "{text}");
    assert!(
        launches <= TINY_STEP_LAUNCH_CEILING,
        "{launches} kernel launches per step, more than the {TINY_STEP_LAUNCH_CEILING} guarded: \
         {text}"
    );
    for kind in [
        "matmul",
        "fused element-wise",
        "statten (LIF)",
        "copy/layout",
    ] {
        assert!(
            text.contains(&format!("  {kind} ")),
            "no {kind} row: {text}"
        );
    }
    // The profile reads CubeCL's log: another device is an error naming the one it needs.
    let (ok, text) = statten(&[
        "bench",
        "--train",
        "cifar10-2-256",
        "--device",
        "cpu",
        "--profile",
    ]);
    assert!(!ok && text.contains("--device wgpu"), "{text}");
}
