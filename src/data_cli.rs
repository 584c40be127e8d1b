//! `statten data inspect` and `statten data frames`.

use std::path::Path;

use statten_data::cifar::Split;
use statten_data::config::{describe, DataConfig, DatasetName};
use statten_data::events::frames::{integrate, EmptyWindow, SplitBy};
use statten_data::events::resize::{resize_planes, Interp};
use statten_data::events::EventFormat;

/// Print counts per class, the sample shape and value statistics of a few samples.
pub fn inspect(
    dataset: DatasetName,
    root: &Path,
    split: Split,
    samples: usize,
    time_steps: usize,
) -> Result<String, String> {
    let mut cfg = DataConfig::defaults(dataset);
    cfg.root = Some(root.to_path_buf());
    // Inspection shows the eval pipeline; the frame cache is not written.
    cfg.cache_dir = Some("".into());
    let ds = cfg.build(split, time_steps).map_err(|e| e.to_string())?;
    let mut out = format!("dataset         {dataset:?} ({split:?} split)\n");
    out += &describe(&*ds, samples, root).map_err(|e| e.to_string())?;
    Ok(out)
}

/// Options of `statten data frames`.
#[derive(Debug, Clone)]
pub struct FramesOptions {
    /// Input format.
    pub format: EventFormat,
    /// Number of frames.
    pub time_steps: usize,
    /// Split rule.
    pub split_by: SplitBy,
    /// Optional resize `(H, W)`.
    pub resize: Option<(usize, usize)>,
    /// Resize interpolation.
    pub interp: Interp,
    /// Allow empty time windows.
    pub allow_empty_windows: bool,
}

/// Integrate one recording into `[T, 2, H, W]` f32 frames and write them as tensor `frames` of a
/// safetensors file. Returns a one-line summary.
pub fn frames(input: &Path, out: &Path, o: &FramesOptions) -> Result<String, String> {
    let ev = o.format.read(input).map_err(|e| e.to_string())?;
    let (h, w) = o.format.sensor_hw();
    let empty = if o.allow_empty_windows {
        EmptyWindow::Allow
    } else {
        EmptyWindow::Error
    };
    let f =
        integrate(&ev, o.split_by, o.time_steps, h, w, empty, input).map_err(|e| e.to_string())?;
    let (oh, ow, data) = match o.resize {
        Some((oh, ow)) => (oh, ow, resize_planes(&f.data, h, w, oh, ow, o.interp)),
        None => (h, w, f.data),
    };
    let bytes: Vec<u8> = data.iter().flat_map(|v| v.to_le_bytes()).collect();
    let shape = vec![o.time_steps, 2, oh, ow];
    let view = safetensors::tensor::TensorView::new(safetensors::Dtype::F32, shape.clone(), &bytes)
        .map_err(|e| format!("internal: {e}"))?;
    let mut meta = std::collections::HashMap::new();
    meta.insert("source".to_string(), input.display().to_string());
    meta.insert("split_by".to_string(), o.split_by.to_string());
    meta.insert("events".to_string(), ev.len().to_string());
    let buf = safetensors::tensor::serialize([("frames", view)], Some(meta))
        .map_err(|e| format!("internal: {e}"))?;
    std::fs::write(out, buf).map_err(|e| format!("{}: cannot write: {e}", out.display()))?;
    let total: f64 = data.iter().map(|&v| v as f64).sum();
    Ok(format!(
        "{}: {} events → frames {:?} (sum {total}) written to {}",
        input.display(),
        ev.len(),
        shape,
        out.display()
    ))
}
