//! What a CubeCL (wgpu) device is: its adapter's name, the compiler its kernels go through
//! (`wgpu<wgsl>`, or `wgpu<spirv>` in a build with the `vulkan` feature on a Vulkan adapter that
//! has the features CubeCL's SPIR-V compiler needs) and whether it is a software rasterizer
//! (Mesa's lavapipe) rather than a card.

use burn::prelude::*;

/// A CubeCL device's identity.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GpuInfo {
    /// The adapter as it names itself (`NVIDIA H100 80GB HBM3`, `llvmpipe (LLVM 15.0.6, 256 bits)`).
    pub adapter: String,
    /// The runtime and its compiler: `wgpu<wgsl>`, `wgpu<spirv>`, `wgpu<msl>`.
    pub runtime: &'static str,
    /// No card behind it: a software rasterizer.
    pub software: bool,
}

impl GpuInfo {
    /// Whether its kernels are compiled to SPIR-V.
    pub fn spirv(&self) -> bool {
        self.runtime.contains("spirv")
    }
}

impl std::fmt::Display for GpuInfo {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} ({}", self.adapter, self.runtime)?;
        if self.software {
            f.write_str(", software")?;
        }
        f.write_str(")")
    }
}

/// `f` of a CubeCL device's properties and runtime name (opening the device); `None` for other
/// backends. The one place that asks whether a device is a CubeCL one and reaches its client.
#[cfg(feature = "wgpu")]
pub(crate) fn with_cube<T>(
    device: &Device,
    f: impl FnOnce(&cubecl::ir::DeviceProperties, &'static str) -> T,
) -> Option<T> {
    match device.clone().without_autodiff().as_dispatch() {
        burn::backend::DispatchDevice::Cube(d) => {
            let client = d.client();
            Some(f(client.properties(), client.name()))
        }
        _ => None,
    }
}

/// Whether the CubeCL device `device` has the float type `dtype` (f16 or bf16) in its kernels'
/// language (WGSL has f16 where the adapter offers `shader-f16`, no bf16); `None` for other
/// backends. Opens the device.
pub fn has_float(device: &Device, dtype: burn::tensor::DType) -> Option<bool> {
    #[cfg(feature = "wgpu")]
    {
        use cubecl::ir::{ElemType, FloatKind};
        let kind = match dtype {
            burn::tensor::DType::F16 => FloatKind::F16,
            burn::tensor::DType::BF16 => FloatKind::BF16,
            burn::tensor::DType::F64 => FloatKind::F64,
            _ => FloatKind::F32,
        };
        with_cube(device, |props, _| {
            props.supports_type(ElemType::Float(kind))
        })
    }
    #[cfg(not(feature = "wgpu"))]
    {
        let _ = (device, dtype);
        None
    }
}

/// `device`'s identity when it is a CubeCL device (opening it), `None` for other backends.
pub fn gpu_info(device: &Device) -> Option<GpuInfo> {
    #[cfg(feature = "wgpu")]
    {
        with_cube(device, |props, runtime| GpuInfo {
            adapter: props.identity.name.clone(),
            runtime,
            software: props.identity.physical.is_none(),
        })
    }
    #[cfg(not(feature = "wgpu"))]
    {
        let _ = device;
        None
    }
}
