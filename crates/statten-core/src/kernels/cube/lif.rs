//! The multi-step LIF as CubeCL kernels (one thread per neuron) and the `FusedLifOps`
//! implementation for `Cube` and for `Fusion` (as wgpu runs).

use burn::backend::ops::FloatTensorOps;
use burn::tensor::Shape;

use crate::neuron::fused::{FusedLifOps, LifSpec};
use burn::tensor::DType;
use burn_cubecl::kernel::into_contiguous;
use burn_cubecl::ops::numeric::empty_device_dtype;
use burn_cubecl::tensor::CubeTensor;
use burn_cubecl::CubeBackend;
use cubecl::prelude::Tensor as KTensor;
use cubecl::prelude::*;
use cubecl::{calculate_cube_count_elemwise, CubeDim};

#[cube]
fn k_charge(#[comptime] c: u32, first: bool, v: f32, x: f32, tau: f32, k: f32) -> f32 {
    let mut h = x;
    if c == 0 {
        if first {
            h = x / tau;
        } else {
            h = v + (x - v) / tau;
        }
    } else if c == 1 {
        if !first {
            h = (v - v / tau) + x;
        }
    } else if c == 2 {
        if !first {
            h = v + x;
        }
    } else if c == 3 {
        if first {
            h = x * k;
        } else {
            h = v + (x - v) * k;
        }
    } else if !first {
        h = (v - v * k) + x;
    }
    h
}

#[cube]
fn k_fire(h: f32, vth: f32) -> f32 {
    let mut s = 0.0f32;
    if h - vth >= 0.0 {
        s = 1.0;
    }
    s
}

#[cube]
fn k_reset(h: f32, s: f32, vth: f32, #[comptime] soft: bool) -> f32 {
    let mut v = h * (-s + 1.0);
    if soft {
        v = h - s * vth;
    }
    v
}

#[cube(launch)]
#[allow(clippy::too_many_arguments)]
fn lif_forward_kernel(
    x: &KTensor<f32>,
    k: &KTensor<f32>,
    spikes: &mut KTensor<f32>,
    h_out: &mut KTensor<f32>,
    t_steps: u32,
    m: u32,
    tau: f32,
    vth: f32,
    #[comptime] charge: u32,
    #[comptime] soft: bool,
    #[comptime] save: bool,
) {
    let n = ABSOLUTE_POS;
    let m = m as usize;
    if n >= m {
        terminate!();
    }
    let kv = k[0];
    let mut v = 0.0f32;
    let t_steps = t_steps as usize;
    for t in 0..t_steps {
        let i = t * m + n;
        let h = k_charge(charge, t == 0, v, x[i], tau, kv);
        let s = k_fire(h, vth);
        spikes[i] = s;
        if save {
            h_out[i] = h;
        }
        v = k_reset(h, s, vth, soft);
    }
}

#[cube(launch)]
#[allow(clippy::too_many_arguments)]
fn lif_backward_kernel(
    grad: &KTensor<f32>,
    h: &KTensor<f32>,
    x: &KTensor<f32>,
    k: &KTensor<f32>,
    grad_x: &mut KTensor<f32>,
    grad_k: &mut KTensor<f32>,
    t_steps: u32,
    m: u32,
    tau: f32,
    vth: f32,
    alpha: f32,
    #[comptime] charge: u32,
    #[comptime] soft: bool,
    #[comptime] detach: bool,
    #[comptime] sg_kind: u32,
) {
    let n = ABSOLUTE_POS;
    let m = m as usize;
    if n >= m {
        terminate!();
    }
    let kv = k[0];
    let mut gv = 0.0f32;
    let mut gk = 0.0f32;
    let t_steps = t_steps as usize;
    for r in 0..t_steps {
        let t = t_steps - 1 - r;
        let i = t * m + n;
        let ht = h[i];
        let s = k_fire(ht, vth);
        let sg = crate::neuron::surrogate::cube::derivative(sg_kind, alpha, ht - vth);
        let mut gs = grad[i];
        if !detach {
            if soft {
                gs += gv * (-vth);
            } else {
                gs += gv * (-ht);
            }
        }
        let mut keep = -s + 1.0;
        if soft {
            keep = 1.0;
        }
        let gh = gv * keep + sg * gs;
        let mut v_prev = 0.0f32;
        if t > 0 {
            let hp = h[i - m];
            v_prev = k_reset(hp, k_fire(hp, vth), vth, soft);
        }
        let mut gx = gh;
        let mut gvp = gh;
        if charge == 0 {
            gx = gh / tau;
            gvp = gh - gx;
        } else if charge == 1 {
            gvp = gh - gh / tau;
        } else if charge == 3 {
            gx = gh * kv;
            gvp = gh - gx;
            gk += gh * (x[i] - v_prev);
        } else if charge == 4 {
            gvp = gh - gh * kv;
            if t > 0 {
                gk += -gh * v_prev;
            }
        }
        grad_x[i] = gx;
        gv = gvp;
    }
    if charge >= 3 {
        grad_k[n] = gk;
    }
}

fn dims2(t: &CubeTensor) -> (usize, usize) {
    let shape = t.meta.shape();
    assert_eq!(shape.num_dims(), 2, "the fused LIF kernel takes [T, M]");
    (shape[0], shape[1])
}

fn check_f32(t: &CubeTensor) {
    assert_eq!(
        t.dtype,
        DType::F32,
        "the fused LIF kernel runs on f32 tensors"
    );
}

fn run_forward(
    x: CubeTensor,
    k: CubeTensor,
    spec: &LifSpec,
    save: bool,
) -> (CubeTensor, CubeTensor) {
    check_f32(&x);
    let x = into_contiguous(x);
    let k = into_contiguous(k);
    let (t_steps, m) = dims2(&x);
    let client = x.client.clone();
    let device = x.device.clone();
    let spikes = empty_device_dtype(
        client.clone(),
        device.clone(),
        x.meta.shape().clone(),
        DType::F32,
    );
    let h_shape = if save {
        x.meta.shape().clone()
    } else {
        Shape::new([1])
    };
    let h = empty_device_dtype(client.clone(), device, h_shape, DType::F32);
    let cube_dim = CubeDim::new(&client, m);
    let cube_count = calculate_cube_count_elemwise(&client, m, cube_dim);
    lif_forward_kernel::launch(
        &client,
        cube_count,
        cube_dim,
        x.into_tensor_arg(),
        k.into_tensor_arg(),
        spikes.clone().into_tensor_arg(),
        h.clone().into_tensor_arg(),
        t_steps as u32,
        m as u32,
        spec.tau,
        spec.v_threshold,
        spec.charge.code(),
        spec.soft_reset,
        save,
    );
    (spikes, h)
}

impl FusedLifOps for CubeBackend {
    fn lif_spikes(x: CubeTensor, k: CubeTensor, spec: LifSpec) -> CubeTensor {
        run_forward(x, k, &spec, false).0
    }

    fn lif_forward(x: CubeTensor, k: CubeTensor, spec: LifSpec) -> (CubeTensor, CubeTensor) {
        run_forward(x, k, &spec, true)
    }

    fn lif_backward(
        grad: CubeTensor,
        h: CubeTensor,
        x: CubeTensor,
        k: CubeTensor,
        spec: LifSpec,
    ) -> (CubeTensor, CubeTensor) {
        check_f32(&grad);
        let grad = into_contiguous(grad);
        let h = into_contiguous(h);
        let x = into_contiguous(x);
        let k = into_contiguous(k);
        let (t_steps, m) = dims2(&h);
        let client = h.client.clone();
        let device = h.device.clone();
        let grad_x = empty_device_dtype(
            client.clone(),
            device.clone(),
            h.meta.shape().clone(),
            DType::F32,
        );
        // LIF/IF have no decay gradient: a defined [1] zero that the kernel leaves alone.
        let grad_k = if spec.charge.is_plif() {
            empty_device_dtype(client.clone(), device, Shape::new([m]), DType::F32)
        } else {
            <CubeBackend as FloatTensorOps<CubeBackend>>::float_zeros(
                Shape::new([1]),
                &device,
                burn::tensor::FloatDType::F32,
            )
        };
        let cube_dim = CubeDim::new(&client, m);
        let cube_count = calculate_cube_count_elemwise(&client, m, cube_dim);
        lif_backward_kernel::launch(
            &client,
            cube_count,
            cube_dim,
            grad.into_tensor_arg(),
            h.into_tensor_arg(),
            x.into_tensor_arg(),
            k.into_tensor_arg(),
            grad_x.clone().into_tensor_arg(),
            grad_k.clone().into_tensor_arg(),
            t_steps as u32,
            m as u32,
            spec.tau,
            spec.v_threshold,
            spec.alpha,
            spec.charge.code(),
            spec.soft_reset,
            spec.detach_reset,
            spec.surrogate.code(),
        );
        (grad_x, grad_k)
    }
}
