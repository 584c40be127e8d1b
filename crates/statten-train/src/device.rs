//! Devices by name: the grammar of `train.device` / `--device` (`cpu`, `flex`, `ndarray`,
//! `wgpu`, `wgpu:N`, `wgpu:integrated:N`, …), a probe that turns a device that cannot run into
//! an error naming it, and the message of a step that failed on a device.

use std::sync::Arc;

use burn::prelude::*;

use crate::error::{Error, Result};

/// The Burn device for a name (`cpu` = flex). `wgpu:N` selects the N-th discrete GPU;
/// `wgpu:integrated:N`, `wgpu:virtual:N` and `wgpu:cpu` (a software adapter such as lavapipe)
/// select the other adapter kinds; `cpu:N` is the CPU again (data-parallel tests on one machine).
pub fn device_from_name(name: &str) -> Result<Device> {
    let lower = name.to_ascii_lowercase();
    let kind = lower.split(':').next().unwrap_or("");
    let feature = match kind {
        "cpu" | "flex" => "flex",
        "wgpu" | "gpu" => "wgpu",
        k => k,
    };
    let built = match feature {
        "flex" => cfg!(feature = "flex"),
        "wgpu" => cfg!(feature = "wgpu"),
        "ndarray" => cfg!(feature = "ndarray"),
        _ => true,
    };
    if !built {
        return Err(Error::Device(format!(
            "device `{name}`: this build has no {feature} backend (enable statten-train's \
             `{feature}` cargo feature)"
        )));
    }
    device_in_build(name, &lower)
}

fn device_in_build(name: &str, lower: &str) -> Result<Device> {
    let bad_index = |idx: &str| Error::Device(format!("device `{name}`: `{idx}` is not an index"));
    if let Some((kind, rest)) = lower.split_once(':') {
        return match kind {
            #[cfg(feature = "flex")]
            "cpu" | "flex" => {
                rest.parse::<usize>().map_err(|_| bad_index(rest))?;
                Ok(Device::flex())
            }
            #[cfg(feature = "ndarray")]
            #[allow(deprecated)]
            "ndarray" => {
                rest.parse::<usize>().map_err(|_| bad_index(rest))?;
                Ok(Device::ndarray())
            }
            #[cfg(feature = "wgpu")]
            "wgpu" | "gpu" => {
                use burn::tensor::DeviceKind as K;
                let kind = match rest.split_once(':') {
                    None if rest == "cpu" => K::Cpu,
                    None => K::DiscreteGpu(rest.parse().map_err(|_| bad_index(rest))?),
                    Some((k, i)) => {
                        let i: usize = i.parse().map_err(|_| bad_index(i))?;
                        match k {
                            "discrete" => K::DiscreteGpu(i),
                            "integrated" => K::IntegratedGpu(i),
                            "virtual" => K::VirtualGpu(i),
                            o => {
                                return Err(Error::Device(format!(
                                    "device `{name}`: unknown adapter kind `{o}` (discrete, \
                                     integrated, virtual, or wgpu:cpu)"
                                )))
                            }
                        }
                    }
                };
                Ok(Device::wgpu(kind))
            }
            o => Err(Error::Device(format!(
                "unknown device `{o}` (cpu, flex, ndarray, wgpu)"
            ))),
        };
    }
    match lower {
        #[cfg(feature = "flex")]
        "cpu" | "flex" => Ok(Device::flex()),
        #[cfg(feature = "ndarray")]
        #[allow(deprecated)]
        "ndarray" => Ok(Device::ndarray()),
        #[cfg(feature = "wgpu")]
        "wgpu" | "gpu" => Ok(Device::wgpu(Default::default())),
        o => Err(Error::Device(format!(
            "train.device: unknown device `{o}` (cpu, flex, ndarray, wgpu)"
        ))),
    }
}

/// Check that `device` can run: a wgpu device without an adapter (no GPU and no software
/// Vulkan, or an adapter index that does not exist) panics deep inside the runtime on first
/// use; this turns that into an error naming the device.
pub fn probe_device(name: &str, device: &Device) -> Result<()> {
    if !name.to_ascii_lowercase().starts_with("wgpu")
        && !name.to_ascii_lowercase().starts_with("gpu")
    {
        return Ok(());
    }
    let d = device.clone();
    // The runtime's own threads may fail first (no such adapter) and the probe then sees only
    // a closed channel: every panic during the probe is recorded, and the first that is not a
    // channel's is the cause.
    let seen = Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
    let hook = std::panic::take_hook();
    let record = seen.clone();
    std::panic::set_hook(Box::new(move |info| {
        let msg = panic_message(info.payload());
        if let Ok(mut v) = record.lock() {
            v.push(msg);
        }
    }));
    let owned = name.to_string();
    let r = std::panic::catch_unwind(move || {
        // Before any kernel runs: a SPIR-V build on a software adapter would crash in one.
        spirv_on_software(&owned, &d)?;
        let t: Tensor<1> = Tensor::ones([4], &d);
        Ok(t.sum().into_scalar::<f32>())
    });
    std::panic::set_hook(hook);
    match r {
        Ok(Ok(4.0)) => Ok(()),
        Ok(Ok(v)) => Err(Error::Device(format!(
            "device `{name}`: a test sum gave {v}, not 4"
        ))),
        Ok(Err(e)) => Err(e),
        Err(p) => {
            let own = panic_message(&*p);
            let seen = seen.lock().map(|v| v.clone()).unwrap_or_default();
            let why = root_cause(&seen).unwrap_or(own);
            Err(Error::Device(format!(
                "device `{name}` is not available: {why}. Is there a GPU (or Mesa's lavapipe for \
                 software Vulkan) and the Vulkan loader? wgpu:N counts discrete GPUs; use \
                 wgpu:integrated:N, wgpu:virtual:N or wgpu:cpu for other adapters"
            )))
        }
    }
}

/// The environment variable that lets a build with the `vulkan` feature run its SPIR-V kernels
/// on a software adapter anyway (`1`), e.g. on a newer Mesa than the one measured.
pub const SPIRV_SOFTWARE_ENV: &str = "STATTEN_SPIRV_ON_SOFTWARE";

/// A build with the `vulkan` feature compiles to SPIR-V on Vulkan adapters; Mesa 22.3's lavapipe
/// (Debian 12's software Vulkan) crashes the process (a segfault inside the driver) compiling
/// CubeCL's SPIR-V matmul and reduction kernels, which no error handling can catch. The check
/// reads the adapter's properties only, before any kernel runs. Such a device is refused
/// with an error saying so, unless [`SPIRV_SOFTWARE_ENV`] is `1`.
fn spirv_on_software(name: &str, device: &Device) -> Result<()> {
    let Some(info) = statten_core::gpu::gpu_info(device) else {
        return Ok(());
    };
    if info.spirv()
        && info.software
        && std::env::var(SPIRV_SOFTWARE_ENV).map_or(true, |v| v.trim() != "1")
    {
        return Err(Error::Device(format!(
            "device `{name}` is {info}: this statten was built with the `vulkan` feature, whose \
             SPIR-V kernels crash Mesa 22.3's software Vulkan (segfaults in the driver compiling \
             its matmul and reduction kernels). \
             Use a build without `--features vulkan` for software adapters, or set \
             {SPIRV_SOFTWARE_ENV}=1 to try this driver anyway"
        )));
    }
    Ok(())
}

/// A panic's message (its `String` or `&str` payload).
pub(crate) fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    payload
        .downcast_ref::<String>()
        .cloned()
        .or_else(|| payload.downcast_ref::<&str>().map(|s| s.to_string()))
        .unwrap_or_else(|| "the thread panicked".into())
}

/// The first of `messages` (panics, in order) that is not a closed channel's: the cause, where
/// a device's worker thread failed and the caller saw only its channel close.
fn root_cause(messages: &[String]) -> Option<String> {
    let channel = |m: &String| {
        ["RecvError", "SendError", "channel closed", "disconnected"]
            .iter()
            .any(|c| m.contains(c))
    };
    messages
        .iter()
        .find(|m| !channel(m))
        .or(messages.first())
        .cloned()
}

/// The usual cause of a step that fails on a device, for its error message.
pub const DEVICE_FAILURE_CAUSE: &str = "a tensor larger than the device's largest buffer (wgpu \
    binds at most 2 GiB, whatever the GPU's memory) or more memory than the device has is the \
    usual cause";

/// The message of a step that failed on `device`, with the usual cause.
pub(crate) fn device_failure(device: &Device, what: &str) -> String {
    format!(
        "a step failed on {device:?}: {what}\n{DEVICE_FAILURE_CAUSE}: lower train.batch_size \
         (or set train.micro_batch to split each batch) or, in evaluation, \
         train.eval_batch_size"
    )
}
