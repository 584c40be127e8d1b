//! The plain-Rust CPU kernels, for Burn's `flex` backend: the multi-step LIF, the same
//! convolution (`conv/`: im2col + gemm, the sparse row lists, Winograd, float64), BatchNorm and
//! the 3×3 max pool; and what they share: one instruction-set dispatch ([`best_isa`]), a
//! pointer that crosses threads, contiguous f32 views of flex tensors.

pub(crate) mod batch_norm;
pub(crate) mod conv;
pub(crate) mod lif;
pub(crate) mod max_pool;
pub(crate) mod simd;

pub(crate) use simd::best_isa;

/// A raw pointer that may cross threads; each task writes a disjoint set of indices.
#[derive(Clone, Copy)]
pub(crate) struct SendPtr(pub(crate) *mut f32);
// SAFETY: the pointer is only dereferenced through `slice`, whose callers give each thread a disjoint range.
unsafe impl Send for SendPtr {}
// SAFETY: as for `Send`: shared references only hand out disjoint ranges.
unsafe impl Sync for SendPtr {}

impl SendPtr {
    /// The `len` elements from `offset`.
    ///
    /// # Safety
    /// In bounds, and no other live slice overlaps them.
    #[inline(always)]
    pub(crate) unsafe fn slice<'a>(self, offset: usize, len: usize) -> &'a mut [f32] {
        // SAFETY: in bounds and not overlapping another live slice (this function's contract).
        unsafe { std::slice::from_raw_parts_mut(self.0.add(offset), len) }
    }
}

/// The f32 elements of a flex tensor in row-major order, borrowed when it is contiguous.
/// `what` names the kernel in the panic for another dtype.
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
