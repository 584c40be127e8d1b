//! The compute kernels behind the operators of the layers (`conv`, `norm`, `pool`,
//! `neuron::fused`): plain-Rust CPU kernels for `flex` ([`cpu`], with the `flex` feature) and CubeCL kernels for GPUs ([`cube`],
//! with the `wgpu` feature). Nothing here knows a model: a kernel takes slices or device
//! tensors and a spec, and the operator that calls it (with its autodiff backward) lives beside
//! the module that uses it.
//!
//! Which backend a tensor is on is decided here, once ([`on_flex`], [`on_cube`]).

#[cfg(feature = "flex")]
pub(crate) mod cpu;
#[cfg(feature = "wgpu")]
pub(crate) mod cube;

/// A dispatch kind with any autodiff wrappers taken off.
fn inner_kind(kind: &burn::backend::DispatchTensorKind) -> &burn::backend::DispatchTensorKind {
    match kind {
        burn::backend::DispatchTensorKind::Autodiff(inner) => inner_kind(inner),
        other => other,
    }
}

/// Whether a dispatch kind is flex, directly or under autodiff.
pub(crate) fn on_flex(kind: &burn::backend::DispatchTensorKind) -> bool {
    match inner_kind(kind) {
        #[cfg(feature = "flex")]
        burn::backend::DispatchTensorKind::Flex(_) => true,
        _ => false,
    }
}

/// Whether a dispatch kind is a CubeCL device (wgpu), directly or under autodiff.
pub(crate) fn on_cube(kind: &burn::backend::DispatchTensorKind) -> bool {
    match inner_kind(kind) {
        #[cfg(feature = "wgpu")]
        burn::backend::DispatchTensorKind::Cube(_) => true,
        _ => false,
    }
}

/// Largest `|a − b|` relative to `max |b|`; NaN anywhere counts as infinite, lengths must agree.
#[cfg(test)]
pub(crate) fn max_rel<const D: usize>(a: &burn::Tensor<D>, b: &burn::Tensor<D>) -> f32 {
    let a = a.to_data().try_to_vec::<f32>().unwrap();
    let b = b.to_data().try_to_vec::<f32>().unwrap();
    assert_eq!(a.len(), b.len(), "lengths differ");
    let scale = b.iter().fold(0f32, |m, v| m.max(v.abs())).max(1e-12);
    a.iter()
        .zip(&b)
        .map(|(x, y)| (x - y).abs() / scale)
        .fold(
            0f32,
            |m, d| if d.is_nan() { f32::INFINITY } else { m.max(d) },
        )
}
