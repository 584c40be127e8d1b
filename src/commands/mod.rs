//! The subcommands of the `statten` binary, one file each; `main.rs` parses and dispatches.

pub mod bench;
pub mod configs;
pub mod data;
pub mod eval;
pub mod model;
pub mod parity;
pub mod plot;
pub mod train;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::builder::{PossibleValuesParser, TypedValueParser};
use clap::ValueEnum;
use statten::device::DeviceName;
use statten_data::cifar::Split;
use statten_train::config::RunConfig;

/// The exit status of a command's result, its error printed.
pub fn exit(r: Result<(), String>) -> ExitCode {
    match r {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

/// A dataset split.
#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum SplitArg {
    /// The training split.
    Train,
    /// The test (validation) split.
    #[value(alias = "val")]
    Test,
}

impl From<SplitArg> for Split {
    fn from(s: SplitArg) -> Self {
        match s {
            SplitArg::Train => Split::Train,
            SplitArg::Test => Split::Test,
        }
    }
}

/// A value parser that lists `values` in `--help` and parses the chosen one with `FromStr`.
pub fn listed<T>(values: &'static [&'static str]) -> impl TypedValueParser<Value = T>
where
    T: std::str::FromStr + Clone + Send + Sync + 'static,
    T::Err: std::fmt::Debug,
{
    PossibleValuesParser::new(values).map(|s| s.parse::<T>().expect("a listed value parses"))
}

pub fn apply_cli_overrides(
    cfg: &mut RunConfig,
    device: Option<DeviceName>,
    data_dir: Option<PathBuf>,
) {
    if let Some(d) = device {
        cfg.train.device = d.to_string();
    }
    if let Some(r) = data_dir {
        cfg.data.root = Some(r);
    }
}

/// `, conv ALGORITHM` on flex, where the CPU convolution kernels run (the algorithm this
/// thread's convolutions use); nothing on other devices, whose convolutions have one path.
pub fn conv_note(device: &DeviceName) -> String {
    if device.is_flex() {
        format!(", conv {}", statten_core::conv::algorithm::current())
    } else {
        String::new()
    }
}
