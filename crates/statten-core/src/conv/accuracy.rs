//! The accuracy invariant of [`super::algorithm`], as code: float64 sums of a same convolution's
//! definition with the sum of the terms' magnitudes, the per-element check, and the input
//! patterns that probe it (spikes that never fire at some kernel offsets, gradients that are
//! zero in whole channels or rows). The kernel tests of this crate and the device tests of the
//! `statten` package use it; so can anyone adding a kernel.

/// The f32 unit roundoff, `2⁻²⁴`.
pub const UNIT_ROUNDOFF: f64 = 1.0 / (1u64 << 24) as f64;

/// `γ_n = n·u / (1 − n·u)`: the bound on the relative error of a sum of `n` products, in any
/// order, with or without fused multiply-adds, relative to the sum of the terms' magnitudes.
pub fn gamma(n: usize) -> f64 {
    let nu = n as f64 * UNIT_ROUNDOFF;
    assert!(nu < 0.5, "{n} terms: too many for the bound");
    nu / (1.0 - nu)
}

/// Exact sums (float64) of the terms of each output element, and the sums of their
/// magnitudes; `terms` is the number of terms per element (zeros from padding included).
#[derive(Debug, Clone)]
pub struct Sums {
    /// `Σ terms` per element.
    pub sum: Vec<f64>,
    /// `Σ |terms|` per element.
    pub abs: Vec<f64>,
    /// Terms per element.
    pub terms: usize,
}

/// The shape of a stride-1, zero-padded `k×k` convolution (`k` odd, padding `k/2`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Shape {
    /// Samples.
    pub n: usize,
    /// Input channels.
    pub c: usize,
    /// Output channels.
    pub co: usize,
    /// Height.
    pub h: usize,
    /// Width.
    pub w: usize,
    /// Kernel size.
    pub k: usize,
}

impl Shape {
    fn x_at(&self, s: usize, ci: usize, ih: isize, iw: isize) -> Option<usize> {
        let inside = ih >= 0 && iw >= 0 && (ih as usize) < self.h && (iw as usize) < self.w;
        inside.then(|| ((s * self.c + ci) * self.h + ih as usize) * self.w + iw as usize)
    }
    fn w_at(&self, o: usize, ci: usize, kh: usize, kw: usize) -> usize {
        ((o * self.c + ci) * self.k + kh) * self.k + kw
    }
    fn y_at(&self, s: usize, o: usize, oh: usize, ow: usize) -> usize {
        ((s * self.co + o) * self.h + oh) * self.w + ow
    }
    /// The float64 sums over every term of the convolution: each (output, input, weight)
    /// index triple inside the image, `pick(y, x, w)` giving the element the term adds to
    /// and the term.
    fn sums(
        &self,
        len: usize,
        terms: usize,
        pick: impl Fn(usize, usize, usize) -> (usize, f64),
    ) -> Sums {
        let (mut sum, mut abs) = (vec![0f64; len], vec![0f64; len]);
        let p = (self.k / 2) as isize;
        for s in 0..self.n {
            for (oh, ow) in (0..self.h).flat_map(|oh| (0..self.w).map(move |ow| (oh, ow))) {
                for (kh, kw) in (0..self.k).flat_map(|kh| (0..self.k).map(move |kw| (kh, kw))) {
                    let (ih, iw) = (oh as isize + kh as isize - p, ow as isize + kw as isize - p);
                    for ci in 0..self.c {
                        let Some(xi) = self.x_at(s, ci, ih, iw) else {
                            continue;
                        };
                        for o in 0..self.co {
                            let (at, t) =
                                pick(self.y_at(s, o, oh, ow), xi, self.w_at(o, ci, kh, kw));
                            sum[at] += t;
                            abs[at] += t.abs();
                        }
                    }
                }
            }
        }
        Sums { sum, abs, terms }
    }
}

/// `y [N, Co, H, W] = conv(x, weight)`: `C·k·k` terms per element.
pub fn forward(x: &[f32], weight: &[f32], sh: Shape) -> Sums {
    let len = sh.n * sh.co * sh.h * sh.w;
    sh.sums(len, sh.c * sh.k * sh.k, |y, xi, w| {
        (y, weight[w] as f64 * x[xi] as f64)
    })
}

/// `dx [N, C, H, W]` from `grad = dL/dy`: `Co·k·k` terms per element.
pub fn input_grad(weight: &[f32], grad: &[f32], sh: Shape) -> Sums {
    let len = sh.n * sh.c * sh.h * sh.w;
    sh.sums(len, sh.co * sh.k * sh.k, |y, xi, w| {
        (xi, weight[w] as f64 * grad[y] as f64)
    })
}

/// `dW [Co, C, k, k]` from the input and `grad = dL/dy`: `N·H·W` terms per element.
pub fn weight_grad(x: &[f32], grad: &[f32], sh: Shape) -> Sums {
    let len = sh.co * sh.c * sh.k * sh.k;
    sh.sums(len, sh.n * sh.h * sh.w, |y, xi, w| {
        (w, grad[y] as f64 * x[xi] as f64)
    })
}

/// `y [M, N] = a [M, K] · b [K, N]` (row-major): `K` terms per element.
pub fn matmul(a: &[f32], b: &[f32], m: usize, k: usize, n: usize) -> Sums {
    let (mut sum, mut abs) = (vec![0f64; m * n], vec![0f64; m * n]);
    for i in 0..m {
        for j in 0..n {
            for l in 0..k {
                let t = a[i * k + l] as f64 * b[l * n + j] as f64;
                sum[i * n + j] += t;
                abs[i * n + j] += t.abs();
            }
        }
    }
    Sums { sum, abs, terms: k }
}

/// The first element of `got` that breaks the invariant, described (`what` names the kernel),
/// or `None`. A length mismatch, NaN or infinity breaks it too.
pub fn violation(what: &str, got: &[f32], want: &Sums) -> Option<String> {
    if got.len() != want.sum.len() {
        return Some(format!(
            "{what}: {} elements, the definition has {}",
            got.len(),
            want.sum.len()
        ));
    }
    let g = gamma(want.terms);
    let mut bad = 0usize;
    let mut first = None;
    for (i, ((&v, &s), &a)) in got.iter().zip(&want.sum).zip(&want.abs).enumerate() {
        let err = (v as f64 - s).abs();
        if !(v.is_finite() && err <= g * a) {
            bad += 1;
            first.get_or_insert(format!(
                "element {i}: {v:e} where the float64 sum is {s:e}, error {err:.3e} > γ_{n}·Σ|terms| = {b:.3e}{zero}",
                n = want.terms,
                b = g * a,
                zero = if a == 0.0 { " (every term is zero)" } else { "" },
            ));
        }
    }
    first.map(|f| {
        format!(
            "{what}: {bad} of {} elements break the invariant; {f}",
            got.len()
        )
    })
}

/// The largest `|got − sum|` relative to the largest `|sum|` (NaN and a length mismatch count
/// as infinite): the tile-scale error of a kernel that breaks the invariant.
pub fn rel_to_scale(got: &[f32], want: &Sums) -> f64 {
    if got.len() != want.sum.len() {
        return f64::INFINITY;
    }
    let scale = want
        .sum
        .iter()
        .fold(0f64, |m, v| m.max(v.abs()))
        .max(f64::MIN_POSITIVE);
    got.iter()
        .zip(&want.sum)
        .map(|(v, s)| (*v as f64 - s).abs() / scale)
        .fold(
            0f64,
            |m, d| if d.is_nan() { f64::INFINITY } else { m.max(d) },
        )
}

/// `f` run on a pool of `threads` threads (the property tests check the kernels at 1–3).
pub fn on_threads<T: Send>(threads: usize, f: impl FnOnce() -> T + Send) -> T {
    rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .build()
        .expect("a thread pool")
        .install(f)
}

/// A small deterministic generator (splitmix64) for the invariant's random shapes and inputs.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    /// A generator from `seed`.
    pub fn new(seed: u64) -> Self {
        Self(seed)
    }
    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    /// Uniform in `[0, 1)`.
    pub fn uniform(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }
    /// Uniform in `lo..=hi`.
    pub fn range(&mut self, lo: usize, hi: usize) -> usize {
        lo + (self.next_u64() % (hi - lo + 1) as u64) as usize
    }
    /// A standard normal draw (Box–Muller).
    pub fn normal(&mut self) -> f32 {
        let u = self.uniform().max(1e-300);
        ((-2.0 * u.ln()).sqrt() * (std::f64::consts::TAU * self.uniform()).cos()) as f32
    }
}

/// Values of an input or output gradient `[N, channels, H, W]` that probe the invariant.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Pattern {
    /// Standard normal values.
    Normal,
    /// Binary spikes with this probability of a one.
    Spikes(f64),
    /// Spikes of two gates summed ({0, 1, 2}), each with this probability.
    TwoGates(f64),
    /// Spikes (this density) where a third of the channels never fire and another third fire
    /// only in some rows or columns (only the first or last row or column, or one middle
    /// row), so that only some kernel offsets see them.
    Restricted(f64),
    /// Normal values where a third of the channels are zero and another third are zero but in
    /// some rows or columns: output gradients with dead channels and regions.
    RestrictedNormal,
}

impl Pattern {
    /// The patterns a property test walks through.
    pub const ALL: [Pattern; 8] = [
        Pattern::Normal,
        Pattern::Spikes(0.03),
        Pattern::Spikes(0.15),
        Pattern::Spikes(0.35),
        Pattern::Spikes(0.6),
        Pattern::TwoGates(0.1),
        Pattern::Restricted(0.3),
        Pattern::RestrictedNormal,
    ];

    /// `n·channels·h·w` values of this pattern.
    pub fn fill(self, rng: &mut Rng, n: usize, channels: usize, h: usize, w: usize) -> Vec<f32> {
        let mut v = vec![0f32; n * channels * h * w];
        // Per channel: 0 = everywhere, 1 = never, 2 = only where `keep(row, col)`.
        let restricted = matches!(self, Pattern::Restricted(_) | Pattern::RestrictedNormal);
        let modes: Vec<(usize, usize)> = (0..channels)
            .map(|_| {
                if restricted {
                    (rng.range(0, 2), rng.range(0, 4))
                } else {
                    (0, 0)
                }
            })
            .collect();
        for s in 0..n {
            for (ch, &(mode, region)) in modes.iter().enumerate() {
                for y in 0..h {
                    for x in 0..w {
                        let keep = match (mode, region) {
                            (0, _) => true,
                            (1, _) => false,
                            (_, 0) => y == 0,
                            (_, 1) => y + 1 == h,
                            (_, 2) => x == 0,
                            (_, 3) => x + 1 == w,
                            _ => y == h / 2,
                        };
                        let val = match self {
                            Pattern::Normal | Pattern::RestrictedNormal => rng.normal(),
                            Pattern::Spikes(d) | Pattern::Restricted(d) => {
                                (rng.uniform() < d) as u8 as f32
                            }
                            Pattern::TwoGates(d) => {
                                (rng.uniform() < d) as u8 as f32 + (rng.uniform() < d) as u8 as f32
                            }
                        };
                        if keep {
                            v[((s * channels + ch) * h + y) * w + x] = val;
                        }
                    }
                }
            }
        }
        v
    }
}

/// A random shape for a property test: `k` from `kernels`, 1–3 samples, 1–`max_c` channels on
/// each side, 1–`max_hw` rows and columns.
pub fn random_shape(rng: &mut Rng, kernels: &[usize], max_c: usize, max_hw: usize) -> Shape {
    Shape {
        n: rng.range(1, 3),
        c: rng.range(1, max_c),
        co: rng.range(1, max_c),
        h: rng.range(1, max_hw),
        w: rng.range(1, max_hw),
        k: kernels[rng.range(0, kernels.len() - 1)],
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The check accepts what is within the bound and names what is not: an exact zero whose
    /// terms are all zero must stay zero.
    #[test]
    fn the_check_names_violations() {
        let sh = Shape {
            n: 1,
            c: 1,
            co: 1,
            h: 1,
            w: 3,
            k: 3,
        };
        // x = [1, 0, 0]: dW's right column (kw = 2) sees only x[ow + 1]: 0 and 0 and padding.
        let dw = weight_grad(&[1.0, 0.0, 0.0], &[1.0, 1.0, 1.0], sh);
        assert_eq!(dw.terms, 3);
        assert_eq!(dw.sum[3..6], [1.0, 1.0, 0.0]);
        let exact: Vec<f32> = dw.sum.iter().map(|v| *v as f32).collect();
        assert_eq!(violation("dW", &exact, &dw), None);
        let mut residue = exact.clone();
        residue[5] = 1e-9;
        let e = violation("dW", &residue, &dw).unwrap();
        assert!(
            e.contains("element 5") && e.contains("every term is zero"),
            "{e}"
        );
        assert!(violation("dW", &exact[1..], &dw)
            .unwrap()
            .contains("elements"));
        let mut nan = exact;
        nan[4] = f32::NAN;
        assert!(violation("dW", &nan, &dw).is_some());
        // The patterns keep their promises: restricted channels are zero outside their region.
        let mut rng = Rng::new(7);
        let v = Pattern::Restricted(1.0).fill(&mut rng, 1, 12, 4, 4);
        let dead = (0..12)
            .filter(|c| v[c * 16..][..16].iter().all(|x| *x == 0.0))
            .count();
        let full = (0..12)
            .filter(|c| v[c * 16..][..16].iter().all(|x| *x == 1.0))
            .count();
        assert!(
            dead > 0 && full > 0 && dead + full < 12,
            "{dead} dead, {full} full"
        );
    }
}
