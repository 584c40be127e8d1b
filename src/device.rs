//! Run-time device selection: `cpu` (the faster CPU backend, flex by measurement — see
//! BENCHMARKS.md), `flex`, `ndarray` or `wgpu`.

use burn::tensor::Device;
use std::fmt;
use std::str::FromStr;

/// A device name accepted by `--device`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeviceName {
    /// The faster CPU backend (flex).
    Cpu,
    /// Burn's pure-Rust Flex CPU backend.
    Flex,
    /// Burn's NdArray CPU backend (deprecated upstream, kept for comparison).
    NdArray,
    /// wgpu (Vulkan/Metal/DX12; software Vulkan where no GPU exists).
    Wgpu,
}

impl DeviceName {
    /// All names, for help texts.
    pub const ALL: &'static [&'static str] = &["cpu", "flex", "ndarray", "wgpu"];

    /// Whether the backend has the fused LIF operator (flex and wgpu; not ndarray).
    pub fn has_fused_lif(&self) -> bool {
        !matches!(self, DeviceName::NdArray)
    }

    /// The Burn device (without autodiff), as `statten train` resolves the same name.
    pub fn device(&self) -> Device {
        statten_train::trainer::device_from_name(&self.to_string())
            .expect("every DeviceName is a known device")
    }
}

impl FromStr for DeviceName {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.to_ascii_lowercase().as_str() {
            "cpu" => Ok(Self::Cpu),
            "flex" => Ok(Self::Flex),
            "ndarray" => Ok(Self::NdArray),
            "wgpu" | "gpu" => Ok(Self::Wgpu),
            _ => Err(format!(
                "unknown device `{s}`; expected one of: {}",
                Self::ALL.join(", ")
            )),
        }
    }
}

impl fmt::Display for DeviceName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let s = match self {
            DeviceName::Cpu => "cpu",
            DeviceName::Flex => "flex",
            DeviceName::NdArray => "ndarray",
            DeviceName::Wgpu => "wgpu",
        };
        f.write_str(s)
    }
}
