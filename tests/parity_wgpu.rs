//! The parity checks on the wgpu backend. Without a GPU this runs on Mesa's software Vulkan
//! (`apt-get install mesa-vulkan-drivers libvulkan1`, `XDG_RUNTIME_DIR=/tmp`); `.ci/run`
//! installs it. Built with `STATTEN_SKIP_WGPU=1` (no Vulkan driver at all), these tests are
//! ignored: cargo reports them as such, not as passed.

mod common;

use burn::tensor::Device;

fn check(name: &str) {
    common::check_parity(name, Device::wgpu(Default::default()));
}

#[test]
#[cfg_attr(statten_skip_wgpu, ignore = "STATTEN_SKIP_WGPU is set")]
fn wgpu_sdt_statten_static() {
    check("sdt_statten_static");
}

#[test]
#[cfg_attr(statten_skip_wgpu, ignore = "STATTEN_SKIP_WGPU is set")]
fn wgpu_sdt_sdsa_static() {
    check("sdt_sdsa_static");
}

#[test]
#[cfg_attr(statten_skip_wgpu, ignore = "STATTEN_SKIP_WGPU is set")]
fn wgpu_sdt_statten_dvs() {
    check("sdt_statten_dvs");
}

#[test]
#[cfg_attr(statten_skip_wgpu, ignore = "STATTEN_SKIP_WGPU is set")]
fn wgpu_spikformer_ssa_static() {
    check("spikformer_ssa_static");
}

/// f16 on wgpu (where the adapter has the type: lavapipe does): within the stated tolerances.
#[test]
#[cfg_attr(statten_skip_wgpu, ignore = "STATTEN_SKIP_WGPU is set")]
fn wgpu_sdt_statten_static_in_f16() {
    common::check_parity_half(
        "sdt_statten_static",
        Device::wgpu(Default::default()),
        statten_core::precision::Precision::F16,
    );
}
