//! Mixed precision, as PyTorch's autocast in the reference's `--amp` recipes: the matrix products
//! (convolutions as im2col + matmul, the 1×1 convolutions, the attention products, the Linear
//! layers) take their operands in half precision and hand back f32; everything else — LIF
//! membranes, BatchNorm and its statistics, the loss, the weights the optimizer keeps — stays
//! f32. Spikes are exact in either half format; f16 has the 10-bit mantissa of the TF32 the
//! reference's cuDNN convolutions use, bf16 a 7-bit one with f32's range.
//!
//! The choice is a scope on the calling thread ([`with_precision`]), as the convolution
//! algorithm's ([`crate::conv::with_algorithm`]): the trainer, `statten bench` and `statten
//! parity` wrap a step's forward (and its backward, which Burn runs on the calling thread) in
//! it; the model's code calls [`matmul`] and [`linear`] and never carries the setting. Gradients
//! come back through the casts in f32. The loss scaling f16 needs (its smallest normal number is
//! 6.1e-5) is the trainer's (`statten_train::amp`).

use burn::nn::Linear;
use burn::prelude::*;
use burn::tensor::DType;
use serde::{Deserialize, Serialize};
use std::cell::Cell;

/// The precision of a run's matrix products.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Precision {
    /// Every operation in f32 (the default; reference-exact).
    #[default]
    F32,
    /// Matrix products in f16 with f32 results (PyTorch's `autocast(dtype=float16)`, the
    /// reference's `--amp`); needs dynamic loss scaling for training. **Not reference-exact.**
    F16,
    /// Matrix products in bf16 with f32 results; f32's range, so no loss scaling. **Not
    /// reference-exact.**
    Bf16,
}

impl Precision {
    /// The names the config and the command line take.
    pub const NAMES: [&'static str; 3] = ["f32", "f16", "bf16"];

    /// The precision named `name` (one of [`Self::NAMES`]).
    pub fn from_name(name: &str) -> Result<Self, String> {
        match name {
            "f32" => Ok(Self::F32),
            "f16" => Ok(Self::F16),
            "bf16" => Ok(Self::Bf16),
            other => Err(format!(
                "unknown precision `{other}`; one of {}",
                Self::NAMES.join(", ")
            )),
        }
    }

    /// Its name in configs.
    pub fn name(self) -> &'static str {
        match self {
            Self::F32 => "f32",
            Self::F16 => "f16",
            Self::Bf16 => "bf16",
        }
    }

    /// The data type the matrix products take their operands in.
    pub fn dtype(self) -> DType {
        match self {
            Self::F32 => DType::F32,
            Self::F16 => DType::F16,
            Self::Bf16 => DType::BF16,
        }
    }

    /// Whether the products run in a half format.
    pub fn is_half(self) -> bool {
        self != Self::F32
    }
}

impl std::str::FromStr for Precision {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        Self::from_name(s)
    }
}

impl std::fmt::Display for Precision {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

thread_local! {
    static SCOPED: Cell<Precision> = const { Cell::new(Precision::F32) };
}

/// The precision of the matrix products called on this thread: the innermost
/// [`with_precision`], else f32.
pub fn current() -> Precision {
    SCOPED.with(|s| s.get())
}

/// Runs `f` with the matrix products called on this thread in `precision` (restored afterwards,
/// also when `f` panics). Threads `f` spawns do not inherit it.
pub fn with_precision<T>(precision: Precision, f: impl FnOnce() -> T) -> T {
    struct Restore(Precision);
    impl Drop for Restore {
        fn drop(&mut self) {
            SCOPED.with(|s| s.set(self.0));
        }
    }
    let _restore = Restore(SCOPED.with(|s| s.replace(precision)));
    f()
}

/// `a · b` in the current precision: in f32 as `a.matmul(b)`; in a half format both operands
/// cast to it, the product (accumulated as the backend's half matmul does: in f32 on CubeCL
/// and gemm) cast back to f32.
pub fn matmul<const D: usize>(a: Tensor<D>, b: Tensor<D>) -> Tensor<D> {
    let p = current();
    if !p.is_half() {
        return a.matmul(b);
    }
    let dt = p.dtype();
    a.cast(dt).matmul(b.cast(dt)).cast(DType::F32)
}

/// `lin.forward(x)` with its product in the current precision (the bias added in f32).
pub fn linear<const D: usize>(lin: &Linear, x: Tensor<D>) -> Tensor<D> {
    if !current().is_half() {
        return lin.forward(x);
    }
    let w = lin.weight.val(); // [in, out]
    let [din, dout] = w.dims();
    let shape = x.dims();
    let rows = shape[..D - 1].iter().product::<usize>();
    let y: Tensor<2> = matmul(x.reshape([rows, din]), w);
    let y = match &lin.bias {
        Some(b) => y + b.val().reshape([1, dout]),
        None => y,
    };
    let mut out = shape;
    out[D - 1] = dout;
    y.reshape(out)
}

/// Whether `device` computes matrix products in `precision`: a small product on it, compared
/// with the same in f32 (`Err` with the backend's message when it cannot run it at all).
pub fn check_support(precision: Precision, device: &Device) -> Result<(), String> {
    if !precision.is_half() {
        return Ok(());
    }
    if let Some(false) = crate::gpu::has_float(device, precision.dtype()) {
        let on = crate::gpu::gpu_info(device)
            .map(|i| format!(" ({i})"))
            .unwrap_or_default();
        return Err(format!(
            "the adapter{on} has no {precision} type in its shaders (WGSL has f16 where the \
             adapter offers it and no bf16)"
        ));
    }
    let run = || {
        let a =
            Tensor::<2>::from_data(TensorData::new(vec![1.0f32, 2.0, 3.0, 4.0], [2, 2]), device);
        let b = Tensor::<2>::from_data(
            TensorData::new(vec![0.5f32, -1.0, 2.0, 0.25], [2, 2]),
            device,
        );
        let y = with_precision(precision, || matmul(a, b));
        y.into_data()
            .try_to_vec::<f32>()
            .map_err(|e| format!("{e:?}"))
    };
    let got = std::panic::catch_unwind(std::panic::AssertUnwindSafe(run))
        .map_err(|p| panic_text(&*p))??;
    let want = [4.5f32, -0.5, 9.5, -2.0];
    if got.len() == 4 && got.iter().zip(want).all(|(g, w)| *g == w) {
        Ok(())
    } else {
        Err(format!("a test product gave {got:?}, not {want:?}"))
    }
}

fn panic_text(p: &(dyn std::any::Any + Send)) -> String {
    p.downcast_ref::<String>()
        .cloned()
        .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
        .unwrap_or_else(|| "the backend panicked".into())
}

#[cfg(all(test, feature = "flex"))]
mod tests {
    use super::*;
    use crate::models::{Input, ModelConfig};
    use burn::module::Module;
    use burn::tensor::Distribution;

    fn values<const D: usize>(t: Tensor<D>) -> Vec<f32> {
        t.into_data().try_to_vec::<f32>().expect("f32")
    }

    #[test]
    fn names_round_trip_and_scopes_nest() {
        for name in Precision::NAMES {
            assert_eq!(Precision::from_name(name).unwrap().name(), name);
        }
        assert!(Precision::from_name("fp8").unwrap_err().contains("bf16"));
        assert_eq!(current(), Precision::F32);
        let inner = with_precision(Precision::F16, || with_precision(Precision::Bf16, current));
        assert_eq!(inner, Precision::Bf16);
        assert_eq!(current(), Precision::F32);
        let caught = std::panic::catch_unwind(|| with_precision(Precision::F16, || panic!("x")));
        assert!(caught.is_err());
        assert_eq!(current(), Precision::F32, "restored after a panic");
    }

    #[test]
    fn half_products_of_spikes_are_exact_and_come_back_f32() {
        let device = Device::flex();
        let a = Tensor::<2>::random([8, 64], Distribution::Bernoulli(0.3), &device);
        let b = Tensor::<2>::random([64, 5], Distribution::Bernoulli(0.3), &device);
        let want = values(a.clone().matmul(b.clone()));
        for p in [Precision::F16, Precision::Bf16] {
            let y = with_precision(p, || matmul(a.clone(), b.clone()));
            assert_eq!(y.dtype(), DType::F32, "{p}");
            assert_eq!(values(y), want, "{p}: counts up to 64 are exact");
        }
        check_support(Precision::F16, &device).expect("flex computes f16");
        check_support(Precision::Bf16, &device).expect("flex computes bf16");
    }

    /// Every parameter's gradient, concatenated in the module's order (each checked to be f32).
    struct AllGrads<'a> {
        grads: &'a burn::tensor::Gradients,
        values: Vec<f32>,
        tensors: usize,
    }
    impl burn::module::ModuleVisitor for AllGrads<'_> {
        fn visit_float<const D: usize>(&mut self, p: &burn::module::Param<Tensor<D>>) {
            if let Some(g) = p.val().grad(self.grads) {
                assert_eq!(g.dtype(), DType::F32, "an f32 gradient");
                self.values.extend(values(g));
                self.tensors += 1;
            }
        }
    }

    /// A small SDT + STAtten and a Spikformer forward and backward in each half format. Spiking
    /// models are chaotic (an input noise of 1e-3 moves these logits by tens of %, in f32), so
    /// the model-level check is on what rounding cannot scatter: the first spiking layer's
    /// spike count, the mean firing rate, finite f32 gradients for every parameter. The
    /// operators themselves are held to the format's rounding in `half_operators_*`.
    #[test]
    fn a_model_step_in_half_precision_keeps_its_spikes_and_f32_gradients() {
        let device = Device::flex().autodiff();
        for preset in ["cifar10-2-256", "spikformer-cifar10-4-384"] {
            let mut cfg = ModelConfig::preset(preset).unwrap();
            cfg.depth = 1;
            cfg.embed_dim = 32;
            cfg.num_heads = 4;
            cfg.img_size = 16;
            cfg.time_steps = 2;
            cfg.chunk_size = 2;
            cfg.validate().unwrap();
            let model = cfg.init(&device).unwrap();
            let img = Tensor::<4>::random([4, 3, 16, 16], Distribution::Normal(0.0, 1.0), &device);
            let run = |p: Precision| {
                with_precision(p, || {
                    let x = Input::Static(img.clone()).encode(cfg.time_steps);
                    let mut monitor = crate::Monitor::enabled();
                    let logits = model.forward_monitored(x, &mut monitor);
                    let grads = logits.clone().sum().backward();
                    let mut all = AllGrads {
                        grads: &grads,
                        values: Vec::new(),
                        tensors: 0,
                    };
                    model.visit(&mut all);
                    let stats = monitor.stats();
                    let (n, v) = (all.tensors, all.values);
                    (
                        values(logits.inner()),
                        (n, v),
                        stats[0].spikes,
                        monitor.firing_rate(),
                    )
                })
            };
            let (l32, g32, first32, rate32) = run(Precision::F32);
            for (p, first_tol) in [(Precision::F16, 0.01), (Precision::Bf16, 0.03)] {
                let (l, g, first, rate) = run(p);
                assert!(
                    l.iter().all(|v| v.is_finite()) && l.len() == l32.len(),
                    "{preset} {p}"
                );
                assert!(g32.0 > 10, "{preset}: {} gradients", g32.0);
                assert_eq!(g.0, g32.0, "{preset} {p}: every parameter has a gradient");
                assert_eq!(g.1.len(), g32.1.len());
                assert!(
                    g.1.iter().all(|v| v.is_finite()),
                    "{preset} {p}: finite gradients"
                );
                let d_first = (first - first32).abs() / first32.max(1.0);
                let d_rate = (rate - rate32).abs() / rate32;
                assert!(
                    d_first <= first_tol,
                    "{preset} {p}: first layer {first} vs {first32}"
                );
                assert!(
                    d_rate <= 0.1,
                    "{preset} {p}: firing rate {rate} vs {rate32}"
                );
            }
        }
    }

    /// The half-precision operators against f32, forward and the input and weight gradients,
    /// within the format's rounding of a sum of products (relative to the largest magnitude).
    #[test]
    fn half_operators_follow_f32_to_the_formats_rounding() {
        let device = Device::flex().autodiff();
        let check = |what: &str, p: Precision, a: &[f32], b: &[f32], tol: f32| {
            assert_eq!(a.len(), b.len(), "{what}");
            let m = b.iter().fold(0f32, |m, v| m.max(v.abs())).max(1e-12);
            let d = a.iter().zip(b).fold(0f32, |d, (x, y)| {
                let e = (x - y).abs() / m;
                if e.is_nan() {
                    f32::INFINITY
                } else {
                    d.max(e)
                }
            });
            assert!(d <= tol, "{what} {p}: {d:.2e} > {tol:.0e}");
        };
        for (p, tol) in [(Precision::F16, 4e-3), (Precision::Bf16, 3e-2)] {
            for k in [1usize, 3] {
                let conv = crate::layers::conv2d(16, 8, k, true, &device);
                let x = Tensor::<4>::random([2, 16, 8, 8], Distribution::Normal(0.0, 1.0), &device)
                    .require_grad();
                let run = |q: Precision| {
                    with_precision(q, || {
                        let y = crate::layers::conv_forward(&conv, x.clone());
                        let g = (y.clone() * y.clone()).sum().backward();
                        let gx = values(x.grad(&g).unwrap());
                        let gw = values(conv.weight.val().grad(&g).unwrap());
                        (values(y.inner()), gx, gw)
                    })
                };
                let (y32, gx32, gw32) = run(Precision::F32);
                let (y, gx, gw) = run(p);
                check(&format!("conv {k}x{k}"), p, &y, &y32, tol);
                check(&format!("conv {k}x{k} dx"), p, &gx, &gx32, tol);
                check(&format!("conv {k}x{k} dW"), p, &gw, &gw32, tol);
                if k == 1 {
                    let y = with_precision(p, || crate::layers::pointwise_conv(&conv, x.clone()));
                    check("pointwise", p, &values(y.inner()), &y32, tol);
                }
            }
            let lin = crate::layers::linear_trunc_normal(24, 10, &device);
            let x = Tensor::<3>::random([2, 5, 24], Distribution::Normal(0.0, 1.0), &device);
            let y32 = values(lin.forward(x.clone()).inner());
            let y = with_precision(p, || linear(&lin, x.clone()));
            assert_eq!(y.dims(), [2, 5, 10]);
            check("linear", p, &values(y.inner()), &y32, tol);
        }
    }
}
