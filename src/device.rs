//! Run-time device selection: `cpu` (the faster CPU backend, flex by measurement — see
//! BENCHMARKS.md), `flex`, `ndarray` or `wgpu`, each with an optional index (`wgpu:1`,
//! `wgpu:integrated:0`, `wgpu:cpu`, `cpu:0`): the grammar of `train.device` and
//! `train.devices` (`statten_train::device::device_from_name`), so that `--device` and the
//! config accept the same names.

use burn::tensor::Device;
use std::fmt;
use std::str::FromStr;

/// A device name accepted by `--device`, checked for its syntax when parsed (whether the device
/// exists is checked when it is first used).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceName(String);

impl DeviceName {
    /// The device kinds, for help texts.
    pub const ALL: &'static [&'static str] = &["cpu", "flex", "ndarray", "wgpu"];

    /// The kind: `cpu`, `flex`, `ndarray`, `wgpu` (or `gpu`), lower case.
    fn kind(&self) -> String {
        self.0.split(':').next().unwrap_or("").to_ascii_lowercase()
    }

    /// Whether the backend has the fused LIF operator (flex and wgpu; not ndarray).
    pub fn has_fused_lif(&self) -> bool {
        self.kind() != "ndarray"
    }

    /// Whether it is flex, where the CPU convolution kernels (and their
    /// `statten_core::conv::ConvAlgorithm`) run.
    pub fn is_flex(&self) -> bool {
        matches!(self.kind().as_str(), "cpu" | "flex")
    }

    /// Whether it is a CubeCL device (wgpu), whose kernels CubeCL's log names.
    pub fn is_cube(&self) -> bool {
        matches!(self.kind().as_str(), "wgpu" | "gpu")
    }

    /// The Burn device (without autodiff), as `statten train` resolves the same name.
    pub fn device(&self) -> Device {
        statten_train::device::device_from_name(&self.0).expect("the name was checked when parsed")
    }
}

impl FromStr for DeviceName {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        statten_train::device::device_from_name(s)
            .map(|_| Self(s.to_string()))
            .map_err(|e| e.to_string())
    }
}

impl fmt::Display for DeviceName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(&self.0)
    }
}
