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

/// Runs `f` compiled for AVX2 where the CPU has it, else as is. The crate is built for baseline
/// x86-64 (SSE2) so that one binary runs everywhere; the plain-Rust loops of the CPU kernels
/// (BatchNorm's sums, im2col/col2im, scans) get twice the vector width this way. Same
/// arithmetic either way: Rust never fuses a multiply and an add on its own, and vectorising
/// does not reorder a sum that is written in a fixed order.
///
/// Mark the closure `#[inline(always)]` and keep the work in `#[inline(always)]` functions:
/// only what is inlined into the AVX2 function is compiled for AVX2, and a closure in another
/// codegen unit is not inlined otherwise.
#[inline(always)]
pub(crate) fn best_isa<R>(f: impl FnOnce() -> R) -> R {
    #[cfg(target_arch = "x86_64")]
    {
        #[target_feature(enable = "avx2")]
        unsafe fn avx2<R>(f: impl FnOnce() -> R) -> R {
            f()
        }
        if std::arch::is_x86_feature_detected!("avx2") {
            // SAFETY: the CPU has AVX2.
            return unsafe { avx2(f) };
        }
    }
    f()
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
