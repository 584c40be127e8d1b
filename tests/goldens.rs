//! The standalone golden files: the LIF neuron alone and the STAtten attention alone.
#![allow(deprecated)] // Device::ndarray is deprecated upstream; it is still one of our CPU backends.

mod common;

use burn::prelude::*;
use burn::tensor::TensorData;
use serde_json::Value;
use statten_core::attention::{max_filter_5d, statten_core, statten_kv};
use statten_core::monitor::Monitor;
use statten_core::neuron::{NeuronConfig, Surrogate};

fn load(name: &str) -> Value {
    let p = common::fixtures_dir().join(name);
    serde_json::from_str(&std::fs::read_to_string(&p).expect("read golden")).expect("json")
}

fn flat(v: &Value) -> Vec<f32> {
    match v {
        Value::Array(a) => a.iter().flat_map(flat).collect(),
        Value::Number(n) => vec![n.as_f64().unwrap() as f32],
        Value::Bool(b) => vec![*b as u8 as f32],
        _ => panic!("unexpected json value {v}"),
    }
}

fn to_vec<const D: usize>(t: Tensor<D>) -> Vec<f32> {
    t.into_data().try_to_vec::<f32>().unwrap()
}

fn devices() -> Vec<Device> {
    vec![Device::flex(), Device::ndarray()]
}

/// `got` equals `want` within `tol` everywhere: same length, no NaN/Inf on either side.
fn assert_close(got: &[f32], want: &[f32], tol: f32, what: &str) {
    assert_eq!(
        got.len(),
        want.len(),
        "{what}: length {} vs {}",
        got.len(),
        want.len()
    );
    for (i, (a, b)) in got.iter().zip(want).enumerate() {
        assert!(
            a.is_finite() && b.is_finite() && (a - b).abs() <= tol,
            "{what}[{i}]: {a} vs {b}"
        );
    }
}

#[test]
fn lif_golden_cases() {
    let g = load("lif_golden.json");
    let cases = g["cases"].as_array().unwrap();
    assert_eq!(cases.len(), 6);
    for dev in devices() {
        let ad = dev.clone().autodiff();
        for case in cases {
            let name = case["name"].as_str().unwrap();
            let p = &case["params"];
            // The settings the golden file was made with, read rather than assumed.
            assert_eq!(p["v_reset"].as_f64(), Some(0.0), "{name}: v_reset");
            assert_eq!(p["v_init"].as_f64(), Some(0.0), "{name}: v_init");
            assert_eq!(
                p["surrogate"].as_str(),
                Some("Sigmoid"),
                "{name}: surrogate"
            );
            assert_eq!(p["dtype"].as_str(), Some("float32"), "{name}: dtype");
            assert_eq!(case["loss"].as_str(), Some("sum(spikes * loss_weights)"));
            let shape: Vec<usize> = case["shape"]
                .as_array()
                .unwrap()
                .iter()
                .map(|v| v.as_u64().unwrap() as usize)
                .collect();
            let cfg = NeuronConfig {
                tau: p["tau"].as_f64().unwrap(),
                v_threshold: p["v_threshold"].as_f64().unwrap(),
                decay_input: p["decay_input"].as_bool().unwrap(),
                detach_reset: p["detach_reset"].as_bool().unwrap(),
                surrogate: Surrogate::Sigmoid {
                    alpha: p["surrogate_alpha"].as_f64().unwrap(),
                },
                ..NeuronConfig::default()
            };
            let lif = cfg.init("lif", &ad);
            let input = flat(&case["input"]);
            let x: Tensor<2> =
                Tensor::from_data(TensorData::new(input.clone(), shape.clone()), &ad)
                    .require_grad();
            let weights = flat(&case["loss_weights"]);
            let w: Tensor<2> =
                Tensor::from_data(TensorData::new(weights.clone(), shape.clone()), &ad);
            let s = lif.forward_monitored(x.clone(), &mut Monitor::disabled());
            let spikes = to_vec(s.clone());
            let want_spikes = flat(&case["spikes"]);
            assert_eq!(spikes, want_spikes, "{name}: spikes");
            // The membrane: charged before firing, and after the reset (SpikingJelly's v_seq).
            let plain: Tensor<2> = Tensor::from_data(TensorData::new(input, shape.clone()), &dev);
            let trace = cfg.init("lif", &dev).membrane_trace(plain);
            assert_close(
                &to_vec(trace.h_charged),
                &flat(&case["h_charged"]),
                1e-6,
                &format!("{name}: h_charged"),
            );
            assert_close(
                &to_vec(trace.v_after_reset),
                &flat(&case["v_seq_after_reset"]),
                1e-6,
                &format!("{name}: v_seq_after_reset"),
            );
            assert_eq!(to_vec(trace.spikes), want_spikes, "{name}: traced spikes");
            // The loss, against the golden spikes and weights summed in f64.
            let loss = (s * w).sum();
            let want_loss: f64 = want_spikes
                .iter()
                .zip(&weights)
                .map(|(&a, &b)| a as f64 * b as f64)
                .sum();
            let got_loss = loss.clone().into_scalar::<f64>();
            assert!(
                (got_loss - want_loss).abs() <= 1e-5 * want_loss.abs().max(1.0),
                "{name}: loss {got_loss} vs {want_loss}"
            );
            let grads = loss.backward();
            let gx = to_vec(x.grad(&grads).expect("input grad"));
            assert_close(
                &gx,
                &flat(&case["grad_input"]),
                1e-5,
                &format!("{name}: grad_input"),
            );
        }
    }
}

#[test]
fn lif_exact_threshold_fires() {
    // spec §7 unit tests: x = 2 with v_th = 1 gives H = 1.0 at t = 0 and fires every step;
    // x = 1 never fires (H = 0.5, 0.75, ...).
    let dev = Device::flex();
    let lif = NeuronConfig::default().init("lif", &dev);
    let x: Tensor<2> = Tensor::from_floats([[2.0, 1.0], [2.0, 1.0], [2.0, 1.0], [2.0, 1.0]], &dev);
    let s = to_vec(lif.forward_monitored(x, &mut Monitor::disabled()));
    assert_eq!(s, vec![1.0, 0.0, 1.0, 0.0, 1.0, 0.0, 1.0, 0.0]);
}

#[test]
fn surrogate_derivative_values() {
    let s = Surrogate::default();
    assert!((s.derivative(0.0) - 1.0).abs() < 1e-12);
    let e = 4.0 * (1.0 / (1.0 + (-4.0f64).exp())) * (1.0 - 1.0 / (1.0 + (-4.0f64).exp()));
    assert!((s.derivative(1.0) - e).abs() < 1e-12 && (e - 0.0707).abs() < 1e-3);
}

/// `[T,B,C,H,W]` binary tensor → `[T,B,h,N,d]` (the reference's head split).
fn heads(x: Tensor<5>, h: usize) -> Tensor<5> {
    let [t, b, c, hh, ww] = x.dims();
    let n = hh * ww;
    x.reshape([t, b, c, n])
        .swap_dims(2, 3)
        .reshape([t, b, n, h, c / h])
        .swap_dims(2, 3)
}

#[test]
fn statten_attention_golden_variants() {
    let g = load("statten_attention_golden.json");
    let sh = &g["shapes"];
    let u = |k: &str| sh[k].as_u64().unwrap() as usize;
    let (t, b, h, hh, ww, c, cs) = (
        u("T"),
        u("B"),
        u("heads"),
        u("H"),
        u("W"),
        u("C"),
        u("chunk_size"),
    );
    for dev in devices() {
        let ad = dev.clone().autodiff();
        let inp = |k: &str| -> Tensor<5> {
            Tensor::from_data(
                TensorData::new(flat(&g["inputs"][k]), vec![t, b, c, hh, ww]),
                &ad,
            )
            .require_grad()
        };
        let w_loss: Tensor<4> = Tensor::from_data(
            TensorData::new(flat(&g["inputs"]["w_loss_TBCN"]), vec![t, b, c, hh * ww]),
            &ad,
        );
        for var in g["variants"].as_array().unwrap() {
            let name = var["variant"].as_str().unwrap();
            let scale = var["scaling_factor"].as_f64().unwrap();
            let pool = name == "dvs_full";
            let (q0, k0, v0) = (inp("q_TBCHW"), inp("k_TBCHW"), inp("v_TBCHW"));
            // DVS: the 3×3 max pool first; its output is compared with the reference's and
            // then made the gradient's leaf, as the golden file stores the gradient after the
            // pool (through the pool, ties between binary inputs make it implementation-defined).
            let (q0, k0, v0) = if pool {
                let pooled = |x: Tensor<5>, key: &str| {
                    let p = max_filter_5d(x);
                    assert_eq!(
                        to_vec(p.clone()),
                        flat(&var["pooled_qkv_TBCHW"][key]),
                        "{name}: pooled {key}"
                    );
                    p.detach().require_grad()
                };
                (pooled(q0, "q"), pooled(k0, "k"), pooled(v0, "v"))
            } else {
                (q0, k0, v0)
            };
            let (q, k, v) = (
                heads(q0.clone(), h),
                heads(k0.clone(), h),
                heads(v0.clone(), h),
            );
            if pool {
                for (key, x) in [("q", &q), ("k", &k), ("v", &v)] {
                    assert_eq!(
                        to_vec(x.clone()),
                        flat(&var["pooled_qkv_heads_TBhNd"][key]),
                        "{name}: pooled {key} by heads"
                    );
                }
            }
            let kv = statten_kv(k.clone(), v.clone(), cs, scale).unwrap();
            assert_eq!(
                to_vec(kv),
                flat(&var["kv_per_chunk_scaled"]["values"]),
                "{name}: kv"
            );
            let o = statten_core(q, k, v, cs, scale).unwrap();
            let pre: Tensor<4> = o.swap_dims(3, 4).reshape([t, b, c, hh * ww]);
            assert_eq!(
                to_vec(pre.clone()),
                flat(&var["pre_attn_lif_TBCN"]),
                "{name}: pre-LIF output"
            );
            let lp = &var["attn_lif_params"];
            assert_eq!(lp["tau"].as_f64(), Some(2.0), "{name}: attn LIF tau");
            assert_eq!(
                lp["v_reset"].as_f64(),
                Some(0.0),
                "{name}: attn LIF v_reset"
            );
            let lif = NeuronConfig::default()
                .with_threshold(lp["v_threshold"].as_f64().unwrap())
                .init("attn_lif", &ad);
            let spikes = lif.forward_monitored(pre.clone(), &mut Monitor::disabled());
            assert_eq!(
                to_vec(spikes),
                flat(&var["attn_lif_spikes_TBCN"]),
                "{name}: spikes"
            );
            let grads = (pre * w_loss.clone()).sum().backward();
            let group = if pool {
                "grad_wrt_pooled_qkv_TBCHW"
            } else {
                "grad_qkv_TBCHW"
            };
            for (key, x) in [("q", &q0), ("k", &k0), ("v", &v0)] {
                let got = to_vec(x.grad(&grads).unwrap());
                let want = flat(&var[group][key]);
                assert_close(&got, &want, 1e-5, &format!("{name}: {group} {key}"));
            }
        }
    }
}

#[test]
fn statten_chunk_one_is_per_timestep_and_full_chunk_shares_one_map() {
    let dev = Device::flex();
    let dist = burn::tensor::Distribution::Bernoulli(0.4);
    let q: Tensor<5> = Tensor::random([4, 2, 2, 6, 3], dist, &dev);
    let k: Tensor<5> = Tensor::random([4, 2, 2, 6, 3], dist, &dev);
    let v: Tensor<5> = Tensor::random([4, 2, 2, 6, 3], dist, &dev);
    // chunk 1: out[t] = scale * q[t] (k[t]^T v[t])
    let o = statten_core(q.clone(), k.clone(), v.clone(), 1, 0.5).unwrap();
    let manual = q
        .clone()
        .matmul(k.clone().swap_dims(3, 4).matmul(v.clone()))
        .mul_scalar(0.5);
    assert_eq!(to_vec(o), to_vec(manual));
    // chunk T: every step uses the sum over all steps
    let o = statten_core(q.clone(), k.clone(), v.clone(), 4, 0.25).unwrap();
    let kv_all: Tensor<5> = k.clone().swap_dims(3, 4).matmul(v.clone()).sum_dim(0);
    let manual = q
        .clone()
        .matmul(kv_all.expand([4, 2, 2, 3, 3]))
        .mul_scalar(0.25);
    assert_eq!(to_vec(o), to_vec(manual));
    // permuting timesteps inside a block does not change the block's map
    let perm = |x: Tensor<5>| Tensor::cat(vec![x.clone().narrow(0, 1, 1), x.narrow(0, 0, 1)], 0);
    let a = statten_kv(k.clone().narrow(0, 0, 2), v.clone().narrow(0, 0, 2), 2, 1.0).unwrap();
    let b = statten_kv(perm(k.narrow(0, 0, 2)), perm(v.narrow(0, 0, 2)), 2, 1.0).unwrap();
    assert_eq!(to_vec(a), to_vec(b));
}

#[test]
fn statten_rejects_indivisible_time_steps() {
    let dev = Device::flex();
    let x: Tensor<5> = Tensor::zeros([6, 1, 1, 4, 2], &dev);
    let err = statten_core(x.clone(), x.clone(), x, 4, 1.0).unwrap_err();
    let msg = err.to_string();
    assert!(
        msg.contains("chunk_size") && msg.contains("6") && msg.contains("4"),
        "{msg}"
    );
}

#[test]
fn batched_and_per_step_lif_agree_in_values_and_gradients() {
    use statten_core::neuron::{NeuronKind, Reset};
    let ad = Device::flex().autodiff();
    let configs = [
        NeuronConfig::default(),
        NeuronConfig {
            reset: Reset::Soft,
            ..NeuronConfig::default()
        },
        NeuronConfig {
            kind: NeuronKind::Plif,
            ..NeuronConfig::default()
        },
        NeuronConfig {
            kind: NeuronKind::If,
            surrogate: Surrogate::Atan { alpha: 2.0 },
            ..NeuronConfig::default()
        },
        NeuronConfig {
            decay_input: false,
            surrogate: Surrogate::PiecewiseQuadratic { alpha: 1.0 },
            ..NeuronConfig::default()
        },
    ];
    for cfg in configs {
        let lif = cfg.init("lif", &ad);
        let x0: Tensor<2> =
            Tensor::random([6, 50], burn::tensor::Distribution::Normal(0.8, 0.8), &ad);
        let w: Tensor<2> =
            Tensor::random([6, 50], burn::tensor::Distribution::Normal(0.0, 1.0), &ad);
        let run = |f: &dyn Fn(Tensor<2>) -> Tensor<2>| {
            let x = x0.clone().detach().require_grad();
            let s = f(x.clone());
            let g = (s.clone() * w.clone()).sum().backward();
            (to_vec(s), to_vec(x.grad(&g).unwrap()))
        };
        let (sa, ga) = run(&|x| lif.forward_batched(x));
        let (sb, gb) = run(&|x| lif.forward_per_step(x));
        assert_eq!(sa, sb, "{cfg:?}: spikes");
        assert!(sa.contains(&1.0) && sa.contains(&0.0));
        for (a, b) in ga.iter().zip(&gb) {
            assert!(
                (a - b).abs() <= 1e-6 * (1.0 + b.abs()),
                "{cfg:?}: grad {a} vs {b}"
            );
        }
    }
}
