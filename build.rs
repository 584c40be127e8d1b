//! Two build-time jobs:
//! - `STATTEN_SKIP_WGPU=1` marks the wgpu tests `#[ignore]`d, so that a machine without any
//!   Vulkan driver reports them as ignored (skipped), never as passed.
//! - The recipes in `configs/*.toml` are compiled into the binary (`statten::recipes`), so that
//!   `--config cifar10-2-512` works after `cargo install`, wherever it runs.

use std::path::Path;

fn main() {
    println!("cargo::rerun-if-env-changed=STATTEN_SKIP_WGPU");
    println!("cargo::rustc-check-cfg=cfg(statten_skip_wgpu)");
    if std::env::var_os("STATTEN_SKIP_WGPU").is_some_and(|v| !v.is_empty() && v != "0") {
        println!("cargo::rustc-cfg=statten_skip_wgpu");
    }

    // At run time, not `env!`: a build script compiled for one checkout is reused by another
    // that shares the target directory.
    let manifest = std::env::var_os("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR");
    let dir = Path::new(&manifest).join("configs");
    println!("cargo::rerun-if-changed={}", dir.display());
    let mut names: Vec<(String, std::path::PathBuf)> = std::fs::read_dir(&dir)
        .expect("configs/ beside Cargo.toml")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.is_file() && p.extension().is_some_and(|e| e == "toml"))
        .map(|p| (p.file_stem().unwrap().to_string_lossy().into_owned(), p))
        .collect();
    names.sort();
    let mut code = String::from(
        "/// The shipped recipes: (name, TOML text), sorted by name.\n\
         pub const RECIPES: &[(&str, &str)] = &[\n",
    );
    for (name, path) in &names {
        println!("cargo::rerun-if-changed={}", path.display());
        code.push_str(&format!(
            "    ({name:?}, include_str!({:?})),\n",
            path.display().to_string()
        ));
    }
    code.push_str("];\n");
    let out = Path::new(&std::env::var("OUT_DIR").unwrap()).join("recipes.rs");
    std::fs::write(out, code).expect("write recipes.rs");
}
