//! Parity with the PyTorch reference on every shipped fixture, on the CPU backends.
#![allow(deprecated)] // Device::ndarray is deprecated upstream; it is still one of our CPU backends.

mod common;

use burn::tensor::Device;
use statten::parity::{run_parity, ParityOptions};

fn check(name: &str, device: Device) {
    let dir = common::fixtures_dir().join(name);
    let report = run_parity(&dir, &device, &ParityOptions::default()).expect("parity run");
    for g in &report.groups {
        println!("{g}");
    }
    let failed: Vec<String> = report
        .groups
        .iter()
        .filter(|g| !g.pass)
        .map(|g| g.to_string())
        .collect();
    assert!(
        failed.is_empty(),
        "{name}: failed groups:\n{}",
        failed.join("\n")
    );
    // Every group must have compared something.
    assert!(report.groups.iter().all(|g| g.compared > 0));
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

#[test]
fn every_shipped_fixture_is_covered() {
    let names: Vec<String> = common::fixture_dirs()
        .iter()
        .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
        .collect();
    assert!(
        names.len() >= 4,
        "expected the four shipped fixtures, found {names:?}"
    );
    for n in &names {
        assert!(
            [
                "sdt_statten_static",
                "sdt_sdsa_static",
                "sdt_statten_dvs",
                "spikformer_ssa_static"
            ]
            .contains(&n.as_str()),
            "fixture {n} has no parity test: add one"
        );
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
