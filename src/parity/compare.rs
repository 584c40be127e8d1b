//! Comparing our tensors with the reference's: distances that never let a NaN, an infinity
//! or a length mismatch pass as agreement, and moving tensors and gradients between Burn and
//! the fixture's f64 buffers.

use burn::module::ParamId;
use burn::optim::GradientsParams;
use burn::prelude::*;
use burn::tensor::TensorData;
use statten_core::checkpoint::NamedTensor;

use crate::fixture::FixTensor;

/// Largest |a − b|; NaN when either side holds a NaN (a NaN must never look like agreement),
/// infinite when the lengths differ.
pub(super) fn max_abs(a: &[f64], b: &[f64]) -> f64 {
    if a.len() != b.len() {
        return f64::INFINITY;
    }
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, |m, d| {
            if m.is_nan() || d.is_nan() {
                f64::NAN
            } else {
                m.max(d)
            }
        })
}

/// Why two tensors cannot be compared value by value: different lengths, or a NaN/Inf on
/// either side. `None` when both are finite and of one length.
pub(super) fn unfit(ours: &[f64], reference: &[f64]) -> Option<String> {
    if ours.len() != reference.len() {
        return Some(format!(
            "{} values vs the reference's {}",
            ours.len(),
            reference.len()
        ));
    }
    for (side, v) in [("ours", ours), ("the reference's", reference)] {
        if let Some(i) = v.iter().position(|x| !x.is_finite()) {
            return Some(format!("{side} value {i} is {}", v[i]));
        }
    }
    None
}

/// `x <= tol`, false for NaN.
pub(super) fn within(x: f64, tol: f64) -> bool {
    x <= tol
}

pub(super) fn rel_l2(a: &[f64], reference: &[f64]) -> f64 {
    if a.len() != reference.len() {
        return f64::INFINITY;
    }
    let num: f64 = a
        .iter()
        .zip(reference)
        .map(|(x, y)| (x - y) * (x - y))
        .sum::<f64>()
        .sqrt();
    let den: f64 = reference.iter().map(|y| y * y).sum::<f64>().sqrt();
    if den == 0.0 {
        num
    } else {
        num / den
    }
}

pub(super) fn to_f64<const D: usize>(t: Tensor<D>) -> Vec<f64> {
    t.into_data()
        .convert::<f32>()
        .try_to_vec::<f32>()
        .expect("f32 data")
        .into_iter()
        .map(|v| v as f64)
        .collect()
}

pub(super) fn tensor_from<const D: usize>(t: &FixTensor, device: &Device) -> Tensor<D> {
    let v: Vec<f32> = t.values.iter().map(|&x| x as f32).collect();
    Tensor::from_data(TensorData::new(v, t.shape.clone()), device)
}

/// Transpose a 2-D `[a, b]` row-major buffer.
pub(super) fn transpose2(v: &[f64], a: usize, b: usize) -> Vec<f64> {
    let mut out = vec![0.0; v.len()];
    for i in 0..a {
        for j in 0..b {
            out[j * a + i] = v[i * b + j];
        }
    }
    out
}

pub(super) fn grad_of(grads: &GradientsParams, nt: &NamedTensor) -> Option<Vec<f64>> {
    let id = ParamId::from(nt.param_id?);
    let g = match nt.shape.len() {
        1 => grads.get::<1>(id).map(to_f64),
        2 => grads.get::<2>(id).map(to_f64),
        3 => grads.get::<3>(id).map(to_f64),
        4 => grads.get::<4>(id).map(to_f64),
        _ => None,
    }?;
    // Burn Linear weights are [in, out]; the reference's are [out, in] (as in `nt`).
    Some(if nt.shape.len() == 2 {
        transpose2(&g, nt.shape[1], nt.shape[0])
    } else {
        g
    })
}

pub(super) fn register_grad(
    grads: &mut GradientsParams,
    nt: &NamedTensor,
    g: &FixTensor,
    device: &Device,
) {
    let id = ParamId::from(nt.param_id.expect("parameter"));
    match nt.shape.len() {
        1 => grads.register::<1>(id, tensor_from(g, device)),
        2 => {
            let t: Tensor<2> = tensor_from(g, device);
            grads.register::<2>(id, t.transpose())
        }
        3 => grads.register::<3>(id, tensor_from(g, device)),
        4 => grads.register::<4>(id, tensor_from(g, device)),
        _ => {}
    }
}

pub(super) fn is_sps_stage_123(key: &str) -> bool {
    [
        "proj_conv.",
        "proj_conv1.",
        "proj_conv2.",
        "proj_bn.",
        "proj_bn1.",
        "proj_bn2.",
    ]
    .iter()
    .any(|p| key.starts_with(&format!("patch_embed.{p}")))
}
