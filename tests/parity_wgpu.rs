//! The parity checks on the wgpu backend. Without a GPU this runs on Mesa's software Vulkan
//! (`apt-get install mesa-vulkan-drivers libvulkan1`, `XDG_RUNTIME_DIR=/tmp`); `.ci/run`
//! installs it. Set `STATTEN_SKIP_WGPU=1` to skip on a machine with no Vulkan driver at all.

mod common;

use burn::tensor::Device;
use statten::parity::{run_parity, ParityOptions};

fn wgpu_enabled() -> bool {
    if std::env::var_os("STATTEN_SKIP_WGPU").is_some() {
        eprintln!("STATTEN_SKIP_WGPU is set: wgpu parity skipped");
        return false;
    }
    true
}

fn check(name: &str) {
    if !wgpu_enabled() {
        return;
    }
    let device = Device::wgpu(Default::default());
    let dir = common::fixtures_dir().join(name);
    let report = run_parity(&dir, &device, &ParityOptions::default()).expect("parity run on wgpu");
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
        "{name} on wgpu: failed groups:\n{}",
        failed.join("\n")
    );
}

#[test]
fn wgpu_sdt_statten_static() {
    check("sdt_statten_static");
}

#[test]
fn wgpu_sdt_sdsa_static() {
    check("sdt_sdsa_static");
}

#[test]
fn wgpu_sdt_statten_dvs() {
    check("sdt_statten_dvs");
}

#[test]
fn wgpu_spikformer_ssa_static() {
    check("spikformer_ssa_static");
}
