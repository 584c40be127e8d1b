//! Pieces shared by the plain-Rust CPU kernels (fused LIF, same convolution, BatchNorm).

/// A raw pointer that may cross threads; each task writes a disjoint set of indices.
#[derive(Clone, Copy)]
pub(crate) struct SendPtr(pub(crate) *mut f32);
unsafe impl Send for SendPtr {}
unsafe impl Sync for SendPtr {}

impl SendPtr {
    /// The `len` elements from `offset`.
    ///
    /// # Safety
    /// In bounds, and no other live slice overlaps them.
    #[inline(always)]
    pub(crate) unsafe fn slice<'a>(self, offset: usize, len: usize) -> &'a mut [f32] {
        unsafe { std::slice::from_raw_parts_mut(self.0.add(offset), len) }
    }
}

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

/// The f32 elements of a flex tensor in row-major order, borrowed when it is contiguous.
/// `what` names the kernel in the panic for another dtype.
#[cfg(feature = "flex")]
pub(crate) fn contiguous_f32<'a>(
    t: &'a burn_flex::FlexTensor,
    what: &str,
) -> std::borrow::Cow<'a, [f32]> {
    assert_eq!(
        t.dtype(),
        burn::tensor::DType::F32,
        "{what} runs on f32 tensors"
    );
    match t.as_slice::<f32>() {
        Some(s) => std::borrow::Cow::Borrowed(s),
        None => std::borrow::Cow::Owned(t.to_contiguous().as_slice::<f32>().unwrap().to_vec()),
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
