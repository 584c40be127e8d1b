//! `statten parity`: the model against the reference's fixtures.

use std::path::PathBuf;
use std::process::ExitCode;

use statten::device::DeviceName;
use statten::parity::{run_parity, ParityOptions};
use statten_core::conv::{with_algorithm, ConvAlgorithm};
use statten_core::precision::Precision;

use super::{conv_note, listed};

// `statten parity`'s arguments (its help text is the doc comment of `Command::Parity`).
#[derive(clap::Args)]
pub struct ParityArgs {
    /// Fixture directory (config.json, weights.safetensors, tensors.safetensors). Repeat to
    /// check several.
    #[arg(long, required = true)]
    pub fixture: Vec<PathBuf>,
    /// Device: cpu, flex, ndarray or wgpu.
    #[arg(long, default_value = "cpu")]
    pub device: DeviceName,
    /// Relax the SDT stem stage 1-3 gradient tolerance to 0.1 (for convolutions that are not
    /// position-independent; see the fixtures README §6).
    #[arg(long)]
    pub relax_sps_ties: bool,
    /// The CPU convolutions' kernels: exact (default; reference-exact), winograd (faster 3x3
    /// gradients, not reference-exact) or float64 (every sum in float64).
    #[arg(long, value_parser = listed::<ConvAlgorithm>(&ConvAlgorithm::NAMES))]
    pub conv_algorithm: Option<ConvAlgorithm>,
    /// f32 (default): the checks against the reference. f16 or bf16: the fixture's forwards
    /// and gradients with half-precision matrix products against the f32 path (spike
    /// agreement per layer, logits and gradient rel-L2, with the reference's distances beside)
    /// within the stated tolerances of that format.
    #[arg(long, value_parser = listed::<Precision>(&Precision::NAMES), default_value = "f32")]
    pub precision: Precision,
}

/// Checks every fixture; fails when any check of any fixture fails.
pub fn run(a: ParityArgs) -> ExitCode {
    let dev = a.device.device();
    if let Err(e) = statten_train::device::probe_device(&a.device.to_string(), &dev) {
        eprintln!("error: {e}");
        return ExitCode::FAILURE;
    }
    let opts = ParityOptions {
        relax_sps_ties: a.relax_sps_ties,
    };
    let alg = a
        .conv_algorithm
        .unwrap_or_else(statten_core::conv::algorithm::current);
    let ok = with_algorithm(alg, || {
        let mut ok = true;
        for dir in &a.fixture {
            if a.precision.is_half() {
                match statten::parity::run_parity_half(dir, &dev, a.precision) {
                    Ok(report) => {
                        println!(
                            "fixture {} on {} in {} against f32",
                            report.fixture, a.device, a.precision
                        );
                        println!("{report}");
                        println!("  => {}", if report.pass() { "PASS" } else { "FAIL" });
                        ok &= report.pass();
                    }
                    Err(e) => {
                        eprintln!("error: {e}");
                        ok = false;
                    }
                }
                continue;
            }
            match run_parity(dir, &dev, &opts) {
                Ok(report) => {
                    let note = conv_note(&a.device);
                    println!("fixture {} on {}{note}", report.fixture, a.device);
                    for g in &report.groups {
                        println!("  {g}");
                    }
                    println!("  => {}", if report.pass() { "PASS" } else { "FAIL" });
                    ok &= report.pass();
                }
                Err(e) => {
                    eprintln!("error: {e}");
                    ok = false;
                }
            }
        }
        ok
    });
    if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}
