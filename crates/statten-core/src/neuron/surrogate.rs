//! Surrogate gradients, in one place: the configuration ([`Surrogate`]), the host-side
//! derivative and the composite form's primitive, the kernels' kind ([`SurrogateKind`]), and
//! the derivative as the CPU kernel (`cpu`, feature `flex`) and the CubeCL kernel (`cube`,
//! feature `wgpu`) evaluate it. Adding a surrogate is one variant in each of these, here.

use burn::prelude::*;
use burn::tensor::activation::sigmoid;
use serde::{Deserialize, Serialize};

/// The surrogate gradient used in place of the Heaviside derivative.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum Surrogate {
    /// `α·σ(αu)·(1 − σ(αu))` (spikingjelly `Sigmoid`, default α = 4). Peak 1 at u = 0 for α = 4.
    Sigmoid {
        /// Steepness α.
        alpha: f64,
    },
    /// `(α/2) / (1 + (π/2·α·u)²)` (spikingjelly `ATan`, default α = 2).
    Atan {
        /// Steepness α.
        alpha: f64,
    },
    /// `α − α²·|u|` for `|u| < 1/α`, else 0 (spikingjelly `PiecewiseQuadratic`, default α = 1).
    PiecewiseQuadratic {
        /// Width parameter α.
        alpha: f64,
    },
}

impl Default for Surrogate {
    fn default() -> Self {
        Surrogate::Sigmoid { alpha: 4.0 }
    }
}

impl Surrogate {
    /// The surrogate derivative at `u` (host-side, for tests and reports).
    pub fn derivative(&self, u: f64) -> f64 {
        match *self {
            Surrogate::Sigmoid { alpha } => {
                let s = 1.0 / (1.0 + (-alpha * u).exp());
                alpha * s * (1.0 - s)
            }
            Surrogate::Atan { alpha } => {
                let z = std::f64::consts::FRAC_PI_2 * alpha * u;
                alpha / 2.0 / (1.0 + z * z)
            }
            Surrogate::PiecewiseQuadratic { alpha } => {
                if u.abs() < 1.0 / alpha {
                    alpha - alpha * alpha * u.abs()
                } else {
                    0.0
                }
            }
        }
    }

    /// A smooth primitive `g(u)` whose derivative is the surrogate. Only its gradient is used.
    pub(super) fn primitive<const D: usize>(&self, u: Tensor<D>) -> Tensor<D> {
        match *self {
            Surrogate::Sigmoid { alpha } => sigmoid(u.mul_scalar(alpha)),
            Surrogate::Atan { alpha } => u
                .mul_scalar(std::f64::consts::FRAC_PI_2 * alpha)
                .atan()
                .div_scalar(std::f64::consts::PI),
            Surrogate::PiecewiseQuadratic { alpha } => {
                let y = u.clamp(-1.0 / alpha, 1.0 / alpha);
                y.clone()
                    .abs()
                    .mul(y.clone())
                    .mul_scalar(-alpha * alpha / 2.0)
                    .add(y.mul_scalar(alpha))
            }
        }
    }
}

impl Surrogate {
    /// The kernels' form: the kind and α in f32.
    pub fn kernel_form(&self) -> (SurrogateKind, f32) {
        match *self {
            Surrogate::Sigmoid { alpha } => (SurrogateKind::Sigmoid, alpha as f32),
            Surrogate::Atan { alpha } => (SurrogateKind::Atan, alpha as f32),
            Surrogate::PiecewiseQuadratic { alpha } => {
                (SurrogateKind::PiecewiseQuadratic, alpha as f32)
            }
        }
    }
}

/// The surrogate derivative, as the kernels evaluate it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum SurrogateKind {
    /// `α·σ(αu)·(1 − σ(αu))`.
    Sigmoid,
    /// `(α/2) / (1 + (π/2·α·u)²)`.
    Atan,
    /// `α − α²·|u|` for `|u| < 1/α`, else 0.
    PiecewiseQuadratic,
}

impl SurrogateKind {
    /// The CubeCL kernel's comptime code of this kind (the CPU kernel matches on the kind).
    #[cfg(feature = "wgpu")]
    pub(crate) fn code(self) -> u32 {
        match self {
            SurrogateKind::Sigmoid => 0,
            SurrogateKind::Atan => 1,
            SurrogateKind::PiecewiseQuadratic => 2,
        }
    }
}

/// The derivative in the CPU kernel's f32 arithmetic (vectorisable: no library call).
#[cfg(feature = "flex")]
pub(crate) mod cpu {
    /// `e^x` to about one ulp without a library call, so that loops over it vectorise (Cody–Waite
    /// range reduction and Cephes' `expf` polynomial; inputs clamped to the finite range).
    #[inline(always)]
    pub(crate) fn exp_f32(x: f32) -> f32 {
        const LOG2E: f32 = std::f32::consts::LOG2_E;
        const LN2_HI: f32 = 0.693_359_4;
        const LN2_LO: f32 = -2.121_944_4e-4;
        const ROUND: f32 = 12_582_912.0; // 1.5·2²³: adding and subtracting it rounds to an integer
        let x = x.clamp(-87.0, 88.0);
        let n = (x * LOG2E + ROUND) - ROUND;
        let r = x - n * LN2_HI - n * LN2_LO;
        let mut p = 1.987_569_1e-4_f32;
        p = p * r + 1.398_199_9e-3;
        p = p * r + 8.333_452e-3;
        p = p * r + 4.166_579_6e-2;
        p = p * r + 1.666_666_5e-1;
        p = p * r + 0.5; // Cephes' 5.0000001201e-1, which rounds to 0.5 in f32
        let y = p * r * r + r + 1.0;
        y * f32::from_bits(((n as i32 + 127) as u32) << 23)
    }

    /// The surrogate derivative at `u` ([`SurrogateKind::code`] `SG`), in the composite form's
    /// f32 operations.
    #[inline(always)]
    pub(crate) fn derivative<const SG: u32>(alpha: f32, u: f32) -> f32 {
        match SG {
            0 => {
                let s = 1.0 / (1.0 + exp_f32(-alpha * u));
                alpha * s * (1.0 - s)
            }
            1 => {
                let z = std::f32::consts::FRAC_PI_2 * alpha * u;
                alpha / 2.0 / (1.0 + z * z)
            }
            _ => {
                let a = u.abs();
                if a < 1.0 / alpha {
                    alpha - alpha * alpha * a
                } else {
                    0.0
                }
            }
        }
    }
}

/// The derivative as a CubeCL function (one GPU thread per neuron).
#[cfg(feature = "wgpu")]
pub(crate) mod cube {
    use cubecl::prelude::*;

    #[cube]
    pub(crate) fn derivative(#[comptime] kind: u32, alpha: f32, u: f32) -> f32 {
        let mut g = 0.0f32;
        if kind == 0 {
            let s = 1.0 / (1.0 + f32::exp(-alpha * u));
            g = alpha * s * (1.0 - s);
        } else if kind == 1 {
            let z = 1.570_796_4 * alpha * u;
            g = alpha / 2.0 / (1.0 + z * z);
        } else if f32::abs(u) < 1.0 / alpha {
            g = alpha - alpha * alpha * f32::abs(u);
        }
        g
    }
}
