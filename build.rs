//! `STATTEN_SKIP_WGPU=1` at build time marks the wgpu tests `#[ignore]`d, so that a machine
//! without any Vulkan driver reports them as ignored (skipped), never as passed.

fn main() {
    println!("cargo::rerun-if-env-changed=STATTEN_SKIP_WGPU");
    println!("cargo::rustc-check-cfg=cfg(statten_skip_wgpu)");
    if std::env::var_os("STATTEN_SKIP_WGPU").is_some_and(|v| !v.is_empty() && v != "0") {
        println!("cargo::rustc-cfg=statten_skip_wgpu");
    }
}
