//! The parity checks on the wgpu backend. Without a GPU this runs on Mesa's software Vulkan
//! (`apt-get install mesa-vulkan-drivers libvulkan1`, `XDG_RUNTIME_DIR=/tmp`); `.ci/run`
//! installs it. Set `STATTEN_SKIP_WGPU=1` to skip on a machine with no Vulkan driver at all.

mod common;

use burn::tensor::Device;

fn wgpu_enabled() -> bool {
    if std::env::var_os("STATTEN_SKIP_WGPU").is_some() {
        eprintln!("STATTEN_SKIP_WGPU is set: wgpu parity skipped");
        return false;
    }
    true
}

fn check(name: &str) {
    if wgpu_enabled() {
        common::check_parity(name, Device::wgpu(Default::default()));
    }
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
