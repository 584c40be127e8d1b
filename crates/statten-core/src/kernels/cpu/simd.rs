//! The CPU kernels' instruction sets, in one place. Two ways, for two kinds of code:
//!
//! - [`best_isa`]: plain loops compiled a second time for AVX2 and chosen at run time (the LIF,
//!   BatchNorm, im2col/col2im, Winograd's transforms: LLVM vectorises them);
//! - [`Simd`] with [`with_best_simd!`]: kernels written in explicit vectors (the sparse
//!   convolutions), run with AVX-512F, AVX2 or scalar lanes, the widest the CPU has.
//!
//! Neither forms a fused multiply-add, so every choice rounds alike.

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

/// The vector operations the kernels are written in (`W` lanes). Additions and products are
/// separate (no fused multiply-add), so every implementation rounds alike.
pub(crate) trait Simd {
    type V: Copy;
    const W: usize;
    unsafe fn zero() -> Self::V;
    unsafe fn splat(v: f32) -> Self::V;
    unsafe fn load(p: *const f32) -> Self::V;
    unsafe fn store(p: *mut f32, v: Self::V);
    unsafe fn add(a: Self::V, b: Self::V) -> Self::V;
    unsafe fn mul(a: Self::V, b: Self::V) -> Self::V;
}

/// One lane at a time (CPUs without AVX2).
pub(crate) struct Scalar;

impl Simd for Scalar {
    type V = f32;
    const W: usize = 1;
    #[inline(always)]
    unsafe fn zero() -> f32 {
        0.0
    }
    #[inline(always)]
    unsafe fn splat(v: f32) -> f32 {
        v
    }
    #[inline(always)]
    unsafe fn load(p: *const f32) -> f32 {
        // SAFETY: the caller provides a readable float at `p` (`Simd::load`'s contract).
        unsafe { *p }
    }
    #[inline(always)]
    unsafe fn store(p: *mut f32, v: f32) {
        // SAFETY: the caller provides a writable float at `p` (`Simd::store`'s contract).
        unsafe { *p = v }
    }
    #[inline(always)]
    unsafe fn add(a: f32, b: f32) -> f32 {
        a + b
    }
    #[inline(always)]
    unsafe fn mul(a: f32, b: f32) -> f32 {
        a * b
    }
}

#[cfg(target_arch = "x86_64")]
pub(crate) mod x86 {
    use super::Simd;
    use std::arch::x86_64::*;

    /// Eight lanes.
    pub(crate) struct Avx2;
    /// Sixteen lanes.
    pub(crate) struct Avx512;

    /// `Simd` for one x86 vector type: its lanes, the target feature and its intrinsics.
    macro_rules! x86_simd {
        ($isa:ident, $v:ty, $w:expr, $feat:literal,
         $zero:ident, $splat:ident, $load:ident, $store:ident, $add:ident, $mul:ident) => {
            impl Simd for $isa {
                type V = $v;
                const W: usize = $w;
                #[inline]
                #[target_feature(enable = $feat)]
                unsafe fn zero() -> $v {
                    $zero()
                }
                #[inline]
                #[target_feature(enable = $feat)]
                unsafe fn splat(v: f32) -> $v {
                    $splat(v)
                }
                #[inline]
                #[target_feature(enable = $feat)]
                unsafe fn load(p: *const f32) -> $v {
                    // SAFETY: the caller provides `W` readable floats at `p`; this function runs only where the caller checked the CPU for the feature.
                    unsafe { $load(p) }
                }
                #[inline]
                #[target_feature(enable = $feat)]
                unsafe fn store(p: *mut f32, v: $v) {
                    // SAFETY: the caller provides `W` writable floats at `p`; this function runs only where the caller checked the CPU for the feature.
                    unsafe { $store(p, v) }
                }
                #[inline]
                #[target_feature(enable = $feat)]
                unsafe fn add(a: $v, b: $v) -> $v {
                    $add(a, b)
                }
                #[inline]
                #[target_feature(enable = $feat)]
                unsafe fn mul(a: $v, b: $v) -> $v {
                    $mul(a, b)
                }
            }
        };
    }

    x86_simd!(
        Avx2,
        __m256,
        8,
        "avx2",
        _mm256_setzero_ps,
        _mm256_set1_ps,
        _mm256_loadu_ps,
        _mm256_storeu_ps,
        _mm256_add_ps,
        _mm256_mul_ps
    );
    x86_simd!(
        Avx512,
        __m512,
        16,
        "avx512f",
        _mm512_setzero_ps,
        _mm512_set1_ps,
        _mm512_loadu_ps,
        _mm512_storeu_ps,
        _mm512_add_ps,
        _mm512_mul_ps
    );
}

/// `CB` floats of accumulators in `CB / W` vectors (at most 64 lanes).
pub(crate) struct Acc<S: Simd, const CB: usize> {
    v: [S::V; 64],
}

impl<S: Simd, const CB: usize> Acc<S, CB> {
    /// Vectors per block; a block is whole vectors (checked when compiled).
    const N: usize = {
        assert!(CB.is_multiple_of(S::W) && CB / S::W <= 64);
        CB / S::W
    };

    #[inline(always)]
    pub(crate) unsafe fn zero() -> Self {
        Self {
            // SAFETY: `S`'s instructions are available (this function's contract).
            v: [unsafe { S::zero() }; 64],
        }
    }

    /// From `CB` floats at `p`.
    #[inline(always)]
    pub(crate) unsafe fn load(p: *const f32) -> Self {
        // SAFETY: `S`'s instructions are available (this function's contract).
        let mut v = [unsafe { S::zero() }; 64];
        for (i, x) in v.iter_mut().enumerate().take(Self::N) {
            // SAFETY: `S`'s instructions are available; the caller provides `CB` floats at `p`.
            *x = unsafe { S::load(p.add(i * S::W)) };
        }
        Self { v }
    }

    #[inline(always)]
    pub(crate) unsafe fn store(&self, p: *mut f32) {
        for i in 0..Self::N {
            // SAFETY: `S`'s instructions are available; the caller provides `CB` writable floats at `p`.
            unsafe { S::store(p.add(i * S::W), self.v[i]) };
        }
    }

    /// `self += row` (`BIN`: the input is 1) or `self += x · row`, `row` `CB` floats at `p`.
    #[inline(always)]
    pub(crate) unsafe fn add_row<const BIN: bool>(&mut self, x: f32, p: *const f32) {
        if BIN {
            for i in 0..Self::N {
                // SAFETY: `S`'s instructions are available; the caller provides `CB` floats at `p`.
                self.v[i] = unsafe { S::add(self.v[i], S::load(p.add(i * S::W))) };
            }
        } else {
            // SAFETY: `S`'s instructions are available (this function's contract).
            let x = unsafe { S::splat(x) };
            for i in 0..Self::N {
                // SAFETY: `S`'s instructions are available; the caller provides `CB` floats at `p`.
                self.v[i] = unsafe { S::add(self.v[i], S::mul(x, S::load(p.add(i * S::W)))) };
            }
        }
    }
}

/// Calls `$task::<S, CB, BIN>($args)` with the widest vectors the CPU has.
macro_rules! with_best_simd {
    ($task:ident, $args_ty:ident, $cb:expr, $bin:expr, $args:expr) => {{
        #[cfg(target_arch = "x86_64")]
        {
            #[target_feature(enable = "avx512f")]
            unsafe fn v4<const CB: usize, const BIN: bool>(a: $args_ty<'_>) {
                // SAFETY: AVX-512F is enabled in this function; the arguments are the task's own (its contract holds as for the caller).
                unsafe { $task::<$crate::kernels::cpu::simd::x86::Avx512, CB, BIN>(a) }
            }
            #[target_feature(enable = "avx2")]
            unsafe fn v3<const CB: usize, const BIN: bool>(a: $args_ty<'_>) {
                // SAFETY: AVX2 is enabled in this function; the arguments are the task's own.
                unsafe { $task::<$crate::kernels::cpu::simd::x86::Avx2, CB, BIN>(a) }
            }
            if std::arch::is_x86_feature_detected!("avx512f") {
                // SAFETY: the CPU has AVX-512F.
                unsafe { v4::<$cb, $bin>($args) }
            } else if std::arch::is_x86_feature_detected!("avx2") {
                // SAFETY: the CPU has AVX2.
                unsafe { v3::<$cb, $bin>($args) }
            } else {
                // SAFETY: the scalar form needs no CPU feature; the arguments are the task's own.
                unsafe { $task::<$crate::kernels::cpu::simd::Scalar, $cb, $bin>($args) }
            }
        }
        #[cfg(not(target_arch = "x86_64"))]
        {
            // SAFETY: the scalar form needs no CPU feature; the arguments are the task's own.
            unsafe { $task::<$crate::kernels::cpu::simd::Scalar, $cb, $bin>($args) }
        }
    }};
}

pub(crate) use with_best_simd;
