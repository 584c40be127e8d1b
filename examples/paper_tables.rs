//! Reproduce the paper's tables: for each configuration whose data is present, train it with
//! `statten train` semantics (or evaluate a finished run) and print our top-1 beside the paper's.
//! Without the data it says what to download and where to put it.
//!
//! ```text
//! cargo run --release --example paper_tables                 # list status of every row
//! cargo run --release --example paper_tables -- --run cifar10-2-512   # train that row
//! ```
//!
//! Rows (SDT + STAtten; spec §5): CIFAR-10 2-512 96.03, CIFAR-100 2-512 79.85, ImageNet 8-768
//! 78.11, CIFAR10-DVS 81.1, N-Caltech101 83.15; SDSA baselines from the upstream tables (§5.2).

use std::path::{Path, PathBuf};

use statten::train::config::RunConfig;
use statten::train::train::{train, RunOptions};

/// (config, paper top-1, source).
const ROWS: &[(&str, f64, &str)] = &[
    ("cifar10-2-512", 96.03, "STAtten paper, SDT + STAtten"),
    ("cifar100-2-512", 79.85, "STAtten paper, SDT + STAtten"),
    ("imagenet-8-768", 78.11, "STAtten paper, SDT + STAtten"),
    ("cifar10dvs-2-256-t10", 81.1, "STAtten paper, SDT + STAtten"),
    (
        "ncaltech101-2-256-t16",
        83.15,
        "STAtten paper, SDT + STAtten",
    ),
    ("cifar10-2-512-sdsa", 95.6, "SDT baseline (STEP table)"),
    ("cifar100-2-512-sdsa", 78.4, "SDT baseline (STEP table)"),
    ("imagenet-8-768-sdsa", 77.07, "SDT baseline (SDT README)"),
    (
        "cifar10dvs-2-256-t16-sdsa",
        80.0,
        "SDT baseline (STEP table)",
    ),
    (
        "spikformer-cifar10-4-384",
        95.41,
        "Spikformer baseline (STEP table)",
    ),
];

fn best_of(run: &Path) -> Option<f64> {
    let csv = std::fs::read_to_string(run.join("summary.csv")).ok()?;
    csv.lines()
        .skip(1)
        .filter_map(|l| l.split(',').nth(4)?.parse::<f64>().ok())
        .filter(|v| v.is_finite())
        .fold(None, |a: Option<f64>, v| Some(a.map_or(v, |a| a.max(v))))
}

fn main() -> Result<(), String> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let run_name = args
        .iter()
        .position(|a| a == "--run")
        .and_then(|i| args.get(i + 1))
        .cloned();
    let configs = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("configs");
    println!("{:<28} {:>8} {:>8}  status", "config", "paper", "ours");
    for (name, paper, source) in ROWS {
        let cfg = RunConfig::load(&configs.join(format!("{name}.toml")), &[])?;
        let root = cfg.data.resolved_root().map_err(|e| e.to_string())?;
        let run_dir = PathBuf::from("runs").join(name);
        let ours = best_of(&run_dir);
        let status = if !root.exists() {
            format!(
                "no data at {} — {}",
                root.display(),
                cfg.data.dataset.download_hint()
            )
        } else if ours.is_some() {
            format!("from {} ({source})", run_dir.join("summary.csv").display())
        } else {
            format!("data present; run with --run {name} ({source})")
        };
        let ours_s = ours
            .map(|v| format!("{v:.2}"))
            .unwrap_or_else(|| "-".into());
        println!("{name:<28} {paper:>8.2} {ours_s:>8}  {status}");
        if run_name.as_deref() == Some(name) {
            if !root.exists() {
                return Err(format!("{name}: data missing at {}", root.display()));
            }
            let resume = run_dir.join("checkpoints/last.safetensors");
            let opts = RunOptions {
                output: run_dir.clone(),
                resume: resume.is_file().then_some(resume),
                progress: true,
                verbose: true,
                ..Default::default()
            };
            let s = train(&cfg, &opts)?;
            println!(
                "{name}: best top-1 {:.2} % (paper {paper:.2} %)",
                s.best_top1
            );
        }
    }
    Ok(())
}
