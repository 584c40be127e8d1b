//! Parity with the PyTorch reference on every shipped fixture, on the CPU backends.
#![allow(deprecated)] // Device::ndarray is deprecated upstream; it is still one of our CPU backends.

mod common;

use burn::tensor::Device;

fn check(name: &str, device: Device) {
    common::check_parity(name, device);
}

#[test]
fn flex_sdt_statten_static() {
    check("sdt_statten_static", Device::flex());
}

#[test]
fn flex_sdt_sdsa_static() {
    check("sdt_sdsa_static", Device::flex());
}

#[test]
fn flex_sdt_statten_dvs() {
    check("sdt_statten_dvs", Device::flex());
}

#[test]
fn flex_spikformer_ssa_static() {
    check("spikformer_ssa_static", Device::flex());
}

#[test]
fn ndarray_sdt_statten_static() {
    check("sdt_statten_static", Device::ndarray());
}

#[test]
fn ndarray_spikformer_ssa_static() {
    check("spikformer_ssa_static", Device::ndarray());
}

const SHIPPED: [&str; 4] = [
    "sdt_statten_static",
    "sdt_sdsa_static",
    "sdt_statten_dvs",
    "spikformer_ssa_static",
];

/// Any other fixture directory placed beside the shipped ones (same format, other shapes,
/// depths, T/chunk sizes, pooling patterns, seeds) must pass too.
#[test]
fn every_other_fixture_in_shared_passes_on_flex() {
    let dirs = common::fixture_dirs();
    let names: Vec<String> = dirs
        .iter()
        .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
        .collect();
    for s in SHIPPED {
        assert!(
            names.iter().any(|n| n == s),
            "shipped fixture {s} missing from {names:?}"
        );
    }
    for (dir, name) in dirs.iter().zip(&names) {
        if SHIPPED.contains(&name.as_str()) {
            continue;
        }
        check(name, Device::flex());
        println!("{} passed", dir.display());
    }
}

#[test]
fn ndarray_sdt_statten_dvs() {
    check("sdt_statten_dvs", Device::ndarray());
}

#[test]
fn ndarray_sdt_sdsa_static() {
    check("sdt_sdsa_static", Device::ndarray());
}

/// Half precision (`statten parity --precision`) on every shipped fixture, f16 and bf16, on the
/// CPU: within the stated tolerances against f32 and the rounding control.
#[test]
fn flex_half_precision_within_the_stated_tolerances() {
    use statten_core::precision::Precision;
    for p in [Precision::F16, Precision::Bf16] {
        for name in [
            "sdt_statten_static",
            "sdt_sdsa_static",
            "sdt_statten_dvs",
            "spikformer_ssa_static",
        ] {
            common::check_parity_half(name, Device::flex(), p);
        }
    }
}
