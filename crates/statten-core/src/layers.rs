//! Building blocks with PyTorch semantics: BatchNorm with PyTorch's running statistics,
//! bias-free 3×3 / 1×1 convolutions initialised as the reference, max pooling with −∞ padding.

use burn::module::{Flag, Module, Param, RunningState};
use burn::nn::conv::{Conv2d, Conv2dConfig};
use burn::nn::{Initializer, Linear, LinearConfig, PaddingConfig2d};
use burn::prelude::*;
use burn::tensor::module::{batch_norm, batch_norm_train};

/// The buffer (non-parameter) fields of [`TorchBatchNorm`], by their `state_dict` names.
pub const BATCHNORM_BUFFERS: [&str; 2] = ["running_mean", "running_var"];

/// BatchNorm over dimension 1 of a `[N, C, ...]` tensor with PyTorch's semantics: normalisation by
/// the biased batch variance, running variance updated with the **unbiased** one
/// (`running ← (1 − m)·running + m·batch`), eps 1e-5 and momentum 0.1 by default.
///
/// Field names equal PyTorch's `state_dict` keys (`weight`, `bias`, `running_mean`,
/// `running_var`). It uses batch statistics when the module is in training mode and its input
/// is on an autodiff device, running statistics otherwise.
#[derive(Module, Debug)]
pub struct TorchBatchNorm {
    /// γ.
    pub weight: Param<Tensor<1>>,
    /// β.
    pub bias: Param<Tensor<1>>,
    /// Running mean.
    pub running_mean: RunningState<Tensor<1>>,
    /// Running (unbiased) variance.
    pub running_var: RunningState<Tensor<1>>,
    /// Training flag (toggled by `Module::train` / `Module::valid`).
    pub training: Param<Flag>,
    /// Momentum of the running statistics.
    pub momentum: f64,
    /// Epsilon added to the variance.
    pub epsilon: f64,
}

impl TorchBatchNorm {
    /// A BatchNorm over `channels` with γ = 1, β = 0, running mean 0, running var 1.
    pub fn new(channels: usize, device: &Device) -> Self {
        Self {
            weight: Param::from_tensor(Tensor::ones([channels], device)),
            bias: Param::from_tensor(Tensor::zeros([channels], device)),
            running_mean: RunningState::new(Tensor::zeros([channels], device)),
            running_var: RunningState::new(Tensor::ones([channels], device)),
            training: Param::from_bool(true),
            momentum: 0.1,
            epsilon: 1e-5,
        }
    }

    /// PyTorch's running-statistics update from a training batch's mean and biased variance
    /// over `n` values per channel.
    fn update_running(&self, mean: Tensor<1>, var: Tensor<1>, n: usize, device: &Device) {
        let unbiased = if n > 1 {
            var.mul_scalar(n as f64 / (n as f64 - 1.0))
        } else {
            var
        };
        let m = self.momentum;
        let running_mean = self.running_mean.value_sync().to_device(device);
        let running_var = self.running_var.value_sync().to_device(device);
        self.running_mean.update(
            running_mean
                .mul_scalar(1.0 - m)
                .add(mean.mul_scalar(m))
                .detach(),
        );
        self.running_var.update(
            running_var
                .mul_scalar(1.0 - m)
                .add(unbiased.mul_scalar(m))
                .detach(),
        );
        // Fold the update in now, so that readers of the module (checkpoints, exports)
        // see the statistics of this forward.
        let _ = self.running_mean.value_sync();
        let _ = self.running_var.value_sync();
    }

    /// [`Self::forward`] of a batch given in parts along dimension 0 (`[N_k, C, H, W]` each, a
    /// layer run in chunks so that no tensor passes the device's largest binding,
    /// [`binding_chunks`]): the same normalisation, with the training statistics over all the
    /// parts (their sums added part by part, so equal to one batch's to rounding). One part is
    /// [`Self::forward`] itself.
    pub fn forward_parts(&self, mut parts: Vec<Tensor<4>>) -> Vec<Tensor<4>> {
        if parts.len() == 1 {
            return vec![self.forward(parts.pop().expect("one part"))];
        }
        let Some(first) = parts.first() else {
            return parts;
        };
        let device = first.device();
        if !(device.is_autodiff() && self.training.is_enabled()) {
            return parts.into_iter().map(|p| self.forward(p)).collect();
        }
        let c = first.dims()[1];
        let n: usize = parts
            .iter()
            .map(|p| p.dims().iter().product::<usize>() / c)
            .sum();
        let channel_sum =
            |t: Tensor<4>| -> Tensor<1> { t.sum_dim(0).sum_dim(2).sum_dim(3).reshape([c]) };
        let sum = parts
            .iter()
            .map(|p| channel_sum(p.clone()))
            .reduce(|a, b| a + b)
            .expect("parts");
        let mean = sum.div_scalar(n as f64);
        let m4 = mean.clone().reshape([1, c, 1, 1]);
        let var = parts
            .iter()
            .map(|p| channel_sum((p.clone() - m4.clone()).powi_scalar(2)))
            .reduce(|a, b| a + b)
            .expect("parts")
            .div_scalar(n as f64);
        let scale = self.weight.val() / var.clone().add_scalar(self.epsilon).sqrt();
        let shift = self.bias.val() - mean.clone() * scale.clone();
        let (scale, shift) = (scale.reshape([1, c, 1, 1]), shift.reshape([1, c, 1, 1]));
        let out = parts
            .into_iter()
            .map(|p| p * scale.clone() + shift.clone())
            .collect();
        self.update_running(mean.detach(), var.detach(), n, &device);
        out
    }

    /// Normalise `x` (`[N, C, ...]`).
    pub fn forward<const D: usize>(&self, x: Tensor<D>) -> Tensor<D> {
        let device = x.device();
        if device.is_autodiff() && self.training.is_enabled() {
            let dims = x.dims();
            let n = dims.iter().product::<usize>() / dims[1];
            let (output, mean, var) = if crate::norm::fused_batch_norm_supported(&x) {
                // Flex: one operator with its own backward, statistics summed in f64.
                crate::norm::fused_batch_norm(x, self.weight.val(), self.bias.val(), self.epsilon)
            } else if is_cpu(&device) {
                // CPU backends reduce in f32 with sequential sums, which err by ~1e-5 over the
                // N·H·W elements of a channel: enough to flip membranes 4e-6 from threshold.
                two_level_batch_norm(x, self.weight.val(), self.bias.val(), self.epsilon)
            } else {
                // GPU: the fused op carries the backward pass; its forward value is replaced by a
                // normalisation with statistics accumulated by blocked summation
                // (`channel_stats`).
                let fused =
                    batch_norm_train(x.clone(), self.weight.val(), self.bias.val(), self.epsilon);
                let (mean, var) = channel_stats(x.clone());
                let exact = batch_norm(
                    x.detach(),
                    self.weight.val().detach(),
                    self.bias.val().detach(),
                    mean.clone(),
                    var.clone(),
                    self.epsilon,
                );
                (
                    fused.output.clone() + (exact - fused.output).detach(),
                    mean,
                    var,
                )
            };
            self.update_running(mean, var, n, &device);
            output
        } else {
            batch_norm(
                x,
                self.weight.val(),
                self.bias.val(),
                self.running_mean.value().to_device(&device),
                self.running_var.value().to_device(&device),
                self.epsilon,
            )
        }
    }
}

/// Training-mode BatchNorm as composite ops laid out `[C, N, S]` (S = spatial positions), so
/// that every per-channel sum, forward and backward, is a sum over S followed by a sum over N:
/// the statistics through `sum_dim` twice, the γ/β/mean/rstd gradients through broadcasts made
/// in two steps (`[C,1,1]` → `[C,N,1]` → `[C,N,S]`), whose backward reduces one axis at a time.
fn two_level_batch_norm<const D: usize>(
    x: Tensor<D>,
    gamma: Tensor<1>,
    beta: Tensor<1>,
    eps: f64,
) -> (Tensor<D>, Tensor<1>, Tensor<1>) {
    let dims = x.dims();
    let (n0, c) = (dims[0], dims[1]);
    let s: usize = dims[2..].iter().product();
    let total = (n0 * s) as f64;
    let xc: Tensor<3> = x.reshape([n0, c, s]).swap_dims(0, 1); // [C, N, S]
    let per = |t: Tensor<3>| -> Tensor<3> {
        // [C, N, S] -> [C, 1, 1], summing S first, then N.
        t.sum_dim(2).sum_dim(1).div_scalar(total)
    };
    let spread = |t: Tensor<3>| -> Tensor<3> { t.expand([c, n0, 1]) };
    let mean = per(xc.clone());
    let xm = xc - spread(mean.clone());
    let var = per(xm.clone().square());
    let rstd = var.clone().add_scalar(eps).sqrt().recip();
    let xhat = xm * spread(rstd);
    let y = xhat * spread(gamma.reshape([c, 1, 1])) + spread(beta.reshape([c, 1, 1]));
    let y: Tensor<D> = y.swap_dims(0, 1).reshape(dims);
    (y, mean.detach().reshape([c]), var.detach().reshape([c]))
}

/// Whether `device` is one of the CPU backends (flex, ndarray), autodiff or not.
pub fn is_cpu(device: &Device) -> bool {
    #[cfg(feature = "flex")]
    if *device == Device::flex() {
        return true;
    }
    #[cfg(feature = "ndarray")]
    #[allow(deprecated)]
    if *device == Device::ndarray() {
        return true;
    }
    let _ = device;
    false
}

/// Per-channel mean and biased variance of `x` (`[N, C, ...]`), detached, by two-level summation
/// (see [`blocked_stats`]).
pub fn channel_stats<const D: usize>(x: Tensor<D>) -> (Tensor<1>, Tensor<1>) {
    let x = x.detach();
    let dims = x.dims();
    let c = dims[1];
    let n = dims.iter().product::<usize>() / c;
    blocked_stats(x.swap_dims(0, 1).reshape([c, n]))
}

/// Per-row mean and biased variance of a `[C, n]` tensor by two-level summation (blocks of
/// about `√n`), which errs by ~√n·ε instead of the ~n·ε of a running f32 sum.
pub fn blocked_stats(flat: Tensor<2>) -> (Tensor<1>, Tensor<1>) {
    let [c, n] = flat.dims();
    let blocked_mean = |t: Tensor<2>| -> Tensor<2> {
        let b = (n as f64).sqrt().ceil() as usize;
        if b <= 1 || !n.is_multiple_of(b) {
            return t.mean_dim(1);
        }
        t.reshape([c, n / b, b])
            .sum_dim(2)
            .sum_dim(1)
            .reshape([c, 1])
            .div_scalar(n as f64)
    };
    let mean = blocked_mean(flat.clone());
    let var = blocked_mean((flat - mean.clone()).square());
    (mean.reshape([c]), var.reshape([c]))
}

/// A `k×k` convolution, stride 1, padding `k/2`, initialised as the SDT reference
/// (weights N(0, 0.02²) — timm's `trunc_normal_(std=.02)` truncates at ±2, i.e. never — bias 0).
pub fn conv2d(cin: usize, cout: usize, k: usize, bias: bool, device: &Device) -> Conv2d {
    let p = k / 2;
    let conv = Conv2dConfig::new([cin, cout], [k, k])
        .with_padding(PaddingConfig2d::Explicit(p, p, p, p))
        .with_bias(bias)
        .with_initializer(Initializer::Normal {
            mean: 0.0,
            std: 0.02,
        })
        .init(device);
    zero_conv_bias(conv)
}

fn zero_conv_bias(mut conv: Conv2d) -> Conv2d {
    if let Some(b) = conv.bias.take() {
        let dims = b.dims();
        let device = b.device();
        conv.bias = Some(Param::from_tensor(Tensor::zeros(dims, &device)));
    }
    conv
}

/// `conv.forward(x)`, through [`crate::conv::same_conv`] where it applies (f32 on flex, stride
/// 1, padding `k/2`): the same output — bit for bit for a dense input, to rounding for spikes,
/// which take sparse kernels — with a backward made of large matrix products (or sparse
/// gathers) instead of Burn's swapped-axes convolution (see [`crate::conv`]). On GPUs a `k×k`
/// convolution runs as [`crate::conv::gemm_conv`] (im2col and one matrix product).
pub fn conv_forward(conv: &Conv2d, x: Tensor<4>) -> Tensor<4> {
    let y = if crate::conv::same_conv_supported(conv, &x) {
        crate::conv::same_conv(x, conv.weight.val())
    } else if let Some(max_cols) = crate::conv::gemm_conv_plan(conv, &x) {
        crate::conv::gemm_conv(x, conv.weight.val(), max_cols)
    } else {
        return conv.forward(x);
    };
    match &conv.bias {
        Some(b) => {
            let co = b.dims()[0];
            y + b.val().reshape([1, co, 1, 1])
        }
        None => y,
    }
}

/// A 1×1, stride-1, unpadded convolution. On flex it runs as [`conv_forward`] (whose kernels
/// take the spikes these layers see over their non-zeros only); elsewhere as one 2-D matmul over
/// all `N·H·W` positions (`[N·H·W, C] · Wᵀ`), which on a GPU beats the convolution kernel. The
/// parameters stay those of the `Conv2d` (reference key names and layout).
pub fn pointwise_conv(conv: &Conv2d, x: Tensor<4>) -> Tensor<4> {
    let [n, c, h, w] = x.dims();
    let [co, ci, kh, kw] = conv.weight.dims();
    debug_assert!(
        ci == c && kh == 1 && kw == 1,
        "pointwise_conv needs a 1x1 convolution"
    );
    if crate::conv::same_conv_supported(conv, &x) {
        return conv_forward(conv, x);
    }
    let weight: Tensor<2> = conv.weight.val().reshape([co, ci]);
    let tokens: Tensor<2> = x.permute([0, 2, 3, 1]).reshape([n * h * w, c]);
    let mut y = crate::precision::matmul(tokens, weight.transpose());
    if let Some(b) = &conv.bias {
        y = y + b.val().reshape([1, co]);
    }
    y.reshape([n, h, w, co]).permute([0, 3, 1, 2])
}

/// A 3×3 convolution with PyTorch's default initialisation (Spikformer's SPS convolutions).
pub fn conv2d_torch_default(
    cin: usize,
    cout: usize,
    k: usize,
    bias: bool,
    device: &Device,
) -> Conv2d {
    let p = k / 2;
    Conv2dConfig::new([cin, cout], [k, k])
        .with_padding(PaddingConfig2d::Explicit(p, p, p, p))
        .with_bias(bias)
        .init(device)
}

/// A Linear layer initialised with trunc-normal(0.02) weights and zero bias (Spikformer's init).
pub fn linear_trunc_normal(din: usize, dout: usize, device: &Device) -> Linear {
    let mut lin = LinearConfig::new(din, dout)
        .with_initializer(Initializer::Normal {
            mean: 0.0,
            std: 0.02,
        })
        .init(device);
    if let Some(b) = lin.bias.take() {
        lin.bias = Some(Param::from_tensor(Tensor::zeros([dout], device)));
        drop(b);
    }
    lin
}

/// A Linear layer with PyTorch's default initialisation (the SDT head).
pub fn linear_torch_default(din: usize, dout: usize, device: &Device) -> Linear {
    LinearConfig::new(din, dout)
        .with_initializer(Initializer::KaimingUniform {
            gain: 1.0 / 3.0f64.sqrt(),
            fan_out_only: false,
        })
        .init(device)
}

/// `MaxPool2d(kernel 3, stride 2, padding 1)` (padding acts as −∞, PyTorch semantics); through
/// [`crate::pool::max_pool3`] (an operator on flex, Burn's pool elsewhere).
pub fn max_pool_3s2(x: Tensor<4>) -> Tensor<4> {
    crate::pool::max_pool3(x, 2)
}

/// 3×3 max filter, stride 1, padding 1 (the DVS `MaxPool3d((1,3,3), 1, (0,1,1))`); through
/// [`crate::pool::max_pool3`] (an operator on flex, Burn's pool elsewhere).
pub fn max_filter_3x3(x: Tensor<4>) -> Tensor<4> {
    crate::pool::max_pool3(x, 1)
}

/// Into how many parts along its batch axis a layer whose output takes `out_bytes` must run on
/// `device` so that no part passes the device's largest buffer (wgpu binds at most 2 GiB
/// whatever the GPU's memory; Mesa's software Vulkan 128 MiB): 1 where it fits or the device
/// has no such limit, never more than `batch`. [`with_binding_limit`] sets the limit for tests.
pub fn binding_chunks(device: &Device, out_bytes: u64, batch: usize) -> usize {
    let limit = BINDING_LIMIT
        .with(|l| l.get())
        .or_else(|| crate::conv::max_buffer_bytes(device));
    match limit {
        Some(limit) if limit > 0 && out_bytes > limit => {
            (out_bytes.div_ceil(limit) as usize).clamp(1, batch.max(1))
        }
        _ => 1,
    }
}

thread_local! {
    static BINDING_LIMIT: std::cell::Cell<Option<u64>> = const { std::cell::Cell::new(None) };
}

/// Runs `f` with [`binding_chunks`] taking `bytes` as the largest buffer on every device (on
/// this thread): the chunked paths can then be checked against the whole ones on the CPU.
pub fn with_binding_limit<T>(bytes: u64, f: impl FnOnce() -> T) -> T {
    struct Restore(Option<u64>);
    impl Drop for Restore {
        fn drop(&mut self) {
            BINDING_LIMIT.with(|l| l.set(self.0));
        }
    }
    let _restore = Restore(BINDING_LIMIT.with(|l| l.replace(Some(bytes))));
    f()
}

/// Apply a `[N, C, H, W]` op to a `[T, B, C, H, W]` tensor by merging T and B.
pub fn merged<F>(x: Tensor<5>, f: F) -> Tensor<5>
where
    F: FnOnce(Tensor<4>) -> Tensor<4>,
{
    let [t, b, c, h, w] = x.dims();
    let y = f(x.reshape([t * b, c, h, w]));
    let [_, c2, h2, w2] = y.dims();
    y.reshape([t, b, c2, h2, w2])
}

/// A parameter that exists in the reference `state_dict` but is never used in its forward pass
/// (`talking_heads.weight`, Spikformer's `norm1`/`norm2`). Kept so that checkpoints round-trip
/// and parameter counts equal the reference's; it never receives a gradient.
#[derive(Module, Debug)]
pub struct UnusedWeight<const D: usize> {
    /// The weight.
    pub weight: Param<Tensor<D>>,
}

/// An unused LayerNorm (`weight`, `bias`), see [`UnusedWeight`].
#[derive(Module, Debug)]
pub struct UnusedNorm {
    /// γ.
    pub weight: Param<Tensor<1>>,
    /// β.
    pub bias: Param<Tensor<1>>,
}

impl UnusedNorm {
    /// γ = 1, β = 0 over `c` channels.
    pub fn new(c: usize, device: &Device) -> Self {
        Self {
            weight: Param::from_tensor(Tensor::ones([c], device)),
            bias: Param::from_tensor(Tensor::zeros([c], device)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batchnorm_running_var_is_unbiased_and_normalisation_biased() {
        let dev = Device::flex().autodiff();
        let bn = TorchBatchNorm::new(1, &dev);
        // One channel, values 2 and 6: mean 4, biased var 4, unbiased var 8.
        let x: Tensor<2> = Tensor::from_floats([[2.0], [6.0]], &dev);
        let y = bn.forward(x).into_data().try_to_vec::<f32>().unwrap();
        let expect = 2.0 / (4.0f32 + 1e-5).sqrt();
        assert!(
            (y[0] + expect).abs() < 1e-6 && (y[1] - expect).abs() < 1e-6,
            "{y:?}"
        );
        let rm = bn.running_mean.value().into_scalar::<f32>();
        let rv = bn.running_var.value().into_scalar::<f32>();
        assert!((rm - 0.4).abs() < 1e-7, "{rm}");
        assert!((rv - (0.9 + 0.1 * 8.0)).abs() < 1e-6, "{rv}");
    }

    #[test]
    fn cpu_backends_are_recognised() {
        assert!(is_cpu(&Device::flex()));
        assert!(is_cpu(&Device::flex().autodiff()));
    }

    #[test]
    fn two_level_batch_norm_matches_the_fused_op() {
        let dev = Device::flex().autodiff();
        let x: Tensor<4> = Tensor::random(
            [4, 3, 5, 5],
            burn::tensor::Distribution::Normal(1.0, 2.0),
            &dev,
        )
        .require_grad();
        let g: Tensor<1> = Tensor::from_floats([1.0, 0.5, 2.0], &dev).require_grad();
        let b: Tensor<1> = Tensor::from_floats([0.0, 0.1, -0.2], &dev).require_grad();
        let w: Tensor<4> = Tensor::random(
            [4, 3, 5, 5],
            burn::tensor::Distribution::Normal(0.0, 1.0),
            &dev,
        );
        let (y1, m1, v1) = two_level_batch_norm(x.clone(), g.clone(), b.clone(), 1e-5);
        let fused = batch_norm_train(x.clone(), g.clone(), b.clone(), 1e-5);
        let close = |a: Tensor<1>, c: Tensor<1>| {
            let (a, c) = (
                a.into_data().try_to_vec::<f32>().unwrap(),
                c.into_data().try_to_vec::<f32>().unwrap(),
            );
            a.iter().zip(&c).all(|(p, q)| (p - q).abs() < 1e-4)
        };
        assert!(close(m1, fused.mean.detach()) && close(v1, fused.variance.detach()));
        let g1 = (y1.clone() * w.clone()).sum().backward();
        let g2 = (fused.output.clone() * w).sum().backward();
        assert!(close(y1.reshape([-1]), fused.output.reshape([-1])));
        assert!(close(
            x.grad(&g1).unwrap().reshape([-1]),
            x.grad(&g2).unwrap().reshape([-1])
        ));
        assert!(close(g.grad(&g1).unwrap(), g.grad(&g2).unwrap()));
        assert!(close(b.grad(&g1).unwrap(), b.grad(&g2).unwrap()));
    }

    #[test]
    fn channel_stats_match_a_float64_reference() {
        let dev = Device::flex();
        // N(3, 0.5) from a fixed generator (xorshift + Box-Muller): Burn's generator is shared by
        // the tests running beside this one, and a 1e-6 bound on f32 sums of values near 3 is
        // met by most draws, not by every one.
        let mut state = 0x9E37_79B9_7F4A_7C15u64;
        let mut uniform = || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            ((state >> 11) as f64 + 0.5) / (1u64 << 53) as f64
        };
        let v: Vec<f32> = (0..4 * 3 * 16 * 16)
            .map(|_| {
                let (u1, u2) = (uniform(), uniform());
                let z = (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos();
                (3.0 + 0.5 * z) as f32
            })
            .collect();
        let x: Tensor<4> = Tensor::from_data(TensorData::new(v.clone(), [4, 3, 16, 16]), &dev);
        let flat: Tensor<2> = x.clone().swap_dims(0, 1).reshape([3, 1024]);
        let (bm, bvar) = blocked_stats(flat);
        let (bm, bvar) = (
            bm.into_data().try_to_vec::<f32>().unwrap(),
            bvar.into_data().try_to_vec::<f32>().unwrap(),
        );
        let (m, var) = channel_stats(x);
        let (m, var) = (
            m.into_data().try_to_vec::<f32>().unwrap(),
            var.into_data().try_to_vec::<f32>().unwrap(),
        );
        for c in 0..3 {
            let vals: Vec<f64> = (0..4)
                .flat_map(|n| (0..256).map(move |i| (n, i)))
                .map(|(n, i)| v[n * 768 + c * 256 + i] as f64)
                .collect();
            let mean = vals.iter().sum::<f64>() / vals.len() as f64;
            let var64 = vals.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / vals.len() as f64;
            assert!((m[c] as f64 - mean).abs() < 1e-6 && (var[c] as f64 - var64).abs() < 1e-6);
            assert!((bm[c] as f64 - mean).abs() < 1e-5 && (bvar[c] as f64 - var64).abs() < 1e-5);
        }
    }
}
