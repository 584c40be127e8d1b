//! Which kernels the CPU convolutions may use: the reference-exact default, or an opt-in that
//! trades exactness for speed.
//!
//! **The accuracy invariant.** Every output element of a convolution or matrix kernel that is
//! *reference-exact* differs from the float64 sum of the same products by at most
//! `γ_n · Σ|terms|`, with `γ_n = n·u / (1 − n·u)`, `n` the number of terms and `u = 2⁻²⁴` the
//! f32 unit roundoff (the textbook bound of a sum of products in any order, with or without
//! fused multiply-adds: the constant `c` of `c·n·u·Σ|terms|` is 1 up to the `1/(1 − n·u)`
//! factor). It implies exact zeros wherever every term is zero — an input channel that never
//! fires at some kernel offset, an output channel whose gradient is zero — which is what the
//! reference's sums give too, and what AdamW needs: its first step divides a gradient by
//! `|g| + 1e-8`, so a rounding residue of 1e-9 where the reference has an exact zero becomes an
//! update of a tenth of the learning rate on a weight the reference does not move.
//!
//! Direct sums of products meet it (gemm, the sparse row-list and bitmask kernels, col2im, the
//! GPU im2col + matmul, Burn's convolutions). Winograd's minimal filtering does not: it computes
//! each output from transformed tiles that cancel only up to rounding, so an element whose terms
//! are all zero comes out as a residue of the size of its tile's other elements' rounding. It is
//! therefore an opt-in ([`ConvAlgorithm::Winograd`]), and the tests in `conv::invariant` check
//! the defaults against the bound on random shapes and inputs at 1–3 threads.

use serde::{Deserialize, Serialize};
use std::cell::Cell;

/// How the CPU (flex) convolutions compute. Other devices have one path each (Burn's
/// convolution on ndarray, im2col + matmul on wgpu), reference-exact, whatever this says.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ConvAlgorithm {
    /// Reference-exact (the default): every output is a sum of the same products as the
    /// reference's, within the accuracy invariant of this module. Dense products (gemm),
    /// the sparse kernels over the non-zeros of spikes, the 1×1 bitmask kernel.
    #[default]
    Exact,
    /// **Not reference-exact.** The input gradient of every 3×3 layer with at least 16
    /// channels on each side, and its weight gradient where the input is not sparse, by
    /// Winograd's F(2×2, 3×3): 2.25× fewer multiply-adds, equal to the direct sums to about
    /// 2e-6 of each gradient's largest magnitude, but an element whose terms are all zero
    /// comes out as rounding residue instead of an exact zero (BENCHMARKS.md gives the measured
    /// error and speed).
    Winograd,
    /// Every sum of every same convolution (forward and both gradients) in float64, rounded
    /// once to f32: the most accurate result an f32 model can hold, for checks; several times
    /// slower than `exact`.
    Float64,
}

impl ConvAlgorithm {
    /// The names the config and the command line take.
    pub const NAMES: [&'static str; 3] = ["exact", "winograd", "float64"];

    /// The algorithm named `name` (one of [`Self::NAMES`]).
    pub fn from_name(name: &str) -> Result<Self, String> {
        match name {
            "exact" => Ok(Self::Exact),
            "winograd" => Ok(Self::Winograd),
            "float64" => Ok(Self::Float64),
            other => Err(format!(
                "unknown convolution algorithm `{other}`; one of {}",
                Self::NAMES.join(", ")
            )),
        }
    }

    /// Its name in configs.
    pub fn name(self) -> &'static str {
        match self {
            Self::Exact => "exact",
            Self::Winograd => "winograd",
            Self::Float64 => "float64",
        }
    }

    /// Whether it keeps the accuracy invariant (the module docs).
    pub fn reference_exact(self) -> bool {
        self != Self::Winograd
    }
}

impl std::str::FromStr for ConvAlgorithm {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        Self::from_name(s)
    }
}

impl std::fmt::Display for ConvAlgorithm {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

thread_local! {
    static SCOPED: Cell<Option<ConvAlgorithm>> = const { Cell::new(None) };
}

/// The environment variable that sets the process's default algorithm (for measuring one
/// binary both ways); `train.conv_algorithm` and `--conv-algorithm` take precedence.
pub const ENV: &str = "STATTEN_CONV_ALGORITHM";

/// The algorithm [`ENV`] asks for: `Ok(None)` when it is unset or empty, an error naming the
/// variable when its value is not one of [`ConvAlgorithm::NAMES`].
pub fn from_env() -> Result<Option<ConvAlgorithm>, String> {
    match std::env::var(ENV) {
        Ok(v) if !v.trim().is_empty() => ConvAlgorithm::from_name(v.trim())
            .map(Some)
            .map_err(|e| format!("{ENV}={v}: {e}")),
        _ => Ok(None),
    }
}

/// The process default: [`ENV`] where it names an algorithm, else [`ConvAlgorithm::Exact`].
/// An unknown value is reported once on stderr and ignored (the command-line tool refuses it
/// before it gets here).
fn process_default() -> ConvAlgorithm {
    static DEFAULT: std::sync::OnceLock<ConvAlgorithm> = std::sync::OnceLock::new();
    *DEFAULT.get_or_init(|| match from_env() {
        Ok(a) => a.unwrap_or_default(),
        Err(e) => {
            eprintln!("warning: {e}; using `exact`");
            ConvAlgorithm::Exact
        }
    })
}

/// The algorithm the convolutions called on this thread use: the innermost
/// [`with_algorithm`], else the process default (see [`ENV`]).
pub fn current() -> ConvAlgorithm {
    SCOPED.with(|s| s.get()).unwrap_or_else(process_default)
}

/// Runs `f` with the convolutions called on this thread using `algorithm` (restored afterwards,
/// also when `f` panics). Burn runs a backward pass on the thread that calls it, so wrapping a
/// training step's forward and backward covers all its convolutions; threads `f` spawns do not
/// inherit the choice.
pub fn with_algorithm<T>(algorithm: ConvAlgorithm, f: impl FnOnce() -> T) -> T {
    struct Restore(Option<ConvAlgorithm>);
    impl Drop for Restore {
        fn drop(&mut self) {
            SCOPED.with(|s| s.set(self.0));
        }
    }
    let _restore = Restore(SCOPED.with(|s| s.replace(Some(algorithm))));
    f()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_scopes_nest() {
        for name in ConvAlgorithm::NAMES {
            assert_eq!(ConvAlgorithm::from_name(name).unwrap().name(), name);
        }
        let e = ConvAlgorithm::from_name("fast").unwrap_err();
        assert!(e.contains("fast") && e.contains("winograd"), "{e}");
        assert!(!ConvAlgorithm::Winograd.reference_exact());
        assert!(ConvAlgorithm::default().reference_exact());
        let outer = current();
        let inner = with_algorithm(ConvAlgorithm::Winograd, || {
            with_algorithm(ConvAlgorithm::Float64, current)
        });
        assert_eq!(inner, ConvAlgorithm::Float64);
        assert_eq!(current(), outer, "restored after the scopes");
        let caught = std::panic::catch_unwind(|| {
            with_algorithm(ConvAlgorithm::Winograd, || panic!("inside"))
        });
        assert!(caught.is_err());
        assert_eq!(current(), outer, "restored after a panic");
        // Another thread does not see this thread's scope.
        with_algorithm(ConvAlgorithm::Float64, || {
            let there = std::thread::spawn(current).join().unwrap();
            assert_eq!(there, outer);
        });
    }
}
