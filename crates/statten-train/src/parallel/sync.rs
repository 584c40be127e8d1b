//! Keeping the ranks of a multi-process run in step: the model's float tensors as one flat
//! buffer (broadcast from rank 0 at the start, and its running statistics before each
//! evaluation), and the sum of a step's gradients, loss and hits over the ranks.

use burn::module::{Module, ModuleVisitor, Param, ParamId};
use burn::optim::GradientsParams;
use burn::prelude::*;
use statten_core::models::StattenModel;

use super::collective::Collective;
use crate::objective::StepGrads;

/// Every float tensor of `model` (parameters and running statistics), in visit order.
fn flat_floats(model: &StattenModel, buffers_only: bool) -> Vec<f32> {
    struct Collect(Vec<f32>, bool);
    impl ModuleVisitor for Collect {
        fn visit_float<const D: usize>(&mut self, p: &Param<Tensor<D>>) {
            let t = p.val();
            if !self.1 || !t.is_require_grad() {
                self.0.extend(t.into_data().convert::<f32>().iter::<f32>());
            }
        }
    }
    let mut c = Collect(Vec::new(), buffers_only);
    model.visit(&mut c);
    c.0
}

/// Puts values from [`flat_floats`] back, keeping each tensor's device and gradient setting.
struct LoadFlat<'a>(&'a [f32], usize, bool);

impl burn::module::ModuleMapper for LoadFlat<'_> {
    fn map_float<const D: usize>(&mut self, p: Param<Tensor<D>>) -> Param<Tensor<D>> {
        let (flat, at, buffers_only) = (self.0, &mut self.1, self.2);
        p.map(|t| {
            if buffers_only && t.is_require_grad() {
                return t;
            }
            let dims = t.dims();
            let n: usize = dims.iter().product();
            let data = TensorData::new(flat[*at..*at + n].to_vec(), dims);
            *at += n;
            let fresh: Tensor<D> = Tensor::from_data(data, &t.device());
            if t.is_require_grad() {
                fresh.require_grad()
            } else {
                fresh
            }
        })
    }
}

/// Rank 0's parameters and running statistics on every rank.
pub(crate) fn broadcast_floats(w: &dyn Collective, model: StattenModel) -> StattenModel {
    let mut flat = flat_floats(&model, false);
    w.broadcast_f32(&mut flat);
    model.map(&mut LoadFlat(&flat, 0, false))
}

/// Rank 0's running statistics (the tensors without gradient) on every rank.
pub(crate) fn broadcast_buffers(w: &dyn Collective, model: StattenModel) -> StattenModel {
    let mut flat = flat_floats(&model, true);
    w.broadcast_f32(&mut flat);
    model.map(&mut LoadFlat(&flat, 0, true))
}

/// The trainable parameters of `model` in visit order: id, shape and device.
fn trainable(model: &StattenModel) -> Vec<(ParamId, Vec<usize>, Device)> {
    struct Params(Vec<(ParamId, Vec<usize>, Device)>);
    impl ModuleVisitor for Params {
        fn visit_float<const D: usize>(&mut self, p: &Param<Tensor<D>>) {
            let t = p.val();
            if t.is_require_grad() {
                self.0.push((p.id, t.dims().to_vec(), t.device()));
            }
        }
    }
    let mut ps = Params(Vec::new());
    model.visit(&mut ps);
    ps.0
}

/// Removes the gradient of `id` (rank `d`) from `g` as f32 values, noting its device.
fn take_grad(
    g: &mut GradientsParams,
    id: ParamId,
    d: usize,
    dev: &mut Option<Device>,
) -> Option<Vec<f32>> {
    fn rm<const D: usize>(
        g: &mut GradientsParams,
        id: ParamId,
        dev: &mut Option<Device>,
    ) -> Option<Vec<f32>> {
        g.remove::<D>(id).map(|t| {
            dev.get_or_insert_with(|| t.device());
            t.into_data().convert::<f32>().iter::<f32>().collect()
        })
    }
    match d {
        1 => rm::<1>(g, id, dev),
        2 => rm::<2>(g, id, dev),
        3 => rm::<3>(g, id, dev),
        4 => rm::<4>(g, id, dev),
        5 => rm::<5>(g, id, dev),
        _ => None,
    }
}

/// Registers `values` (shape `dims`) as the gradient of `id` on `device`.
fn put_grad(
    out: &mut GradientsParams,
    id: ParamId,
    dims: &[usize],
    values: &[f32],
    device: &Device,
) {
    let data = TensorData::new(values.to_vec(), dims.to_vec());
    match dims.len() {
        1 => out.register::<1>(id, Tensor::from_data(data, device)),
        2 => out.register::<2>(id, Tensor::from_data(data, device)),
        3 => out.register::<3>(id, Tensor::from_data(data, device)),
        4 => out.register::<4>(id, Tensor::from_data(data, device)),
        5 => out.register::<5>(id, Tensor::from_data(data, device)),
        _ => {}
    }
}

/// Sum a step over ranks: the gradients in one flat f32 buffer (zeros where a rank has none;
/// each share's loss was already weighted by its part of the global batch, so the sum is the
/// global mean's gradient), and in one f64 buffer the loss, the top-1 hits, the stop requests
/// and which parameters have a gradient on any rank. Returns the summed step and whether any
/// rank asked to stop.
pub(crate) fn all_reduce_step(
    w: &dyn Collective,
    model: &StattenModel,
    mut step: StepGrads,
    stop: bool,
) -> (StepGrads, bool) {
    let params = trainable(model);
    let mut flat: Vec<f32> = Vec::new();
    let mut small = vec![step.loss, step.correct as f64, stop as u8 as f64];
    // The device the gradients live on (as `GradientsParams::from_grads` made them).
    let mut grad_device: Option<Device> = None;
    for (id, dims, _) in &params {
        let n: usize = dims.iter().product();
        let g = take_grad(&mut step.grads, *id, dims.len(), &mut grad_device);
        small.push(g.is_some() as u8 as f64);
        match g {
            Some(v) => flat.extend(v),
            None => flat.extend(std::iter::repeat_n(0.0, n)),
        }
    }
    w.all_reduce_sum_f32(&mut flat);
    w.all_reduce_sum_f64(&mut small);
    let mut out = GradientsParams::new();
    let fallback = params.first().map(|p| p.2.clone().inner());
    let mut at = 0;
    for (k, (id, dims, _)) in params.iter().enumerate() {
        let n: usize = dims.iter().product();
        if small[3 + k] > 0.0 {
            let device = grad_device
                .clone()
                .or_else(|| fallback.clone())
                .expect("a parameter");
            put_grad(&mut out, *id, dims, &flat[at..at + n], &device);
        }
        at += n;
    }
    let summed = StepGrads {
        loss: small[0],
        correct: small[1] as usize,
        grads: out,
    };
    (summed, small[2] > 0.0)
}

/// Rank 0's `text` on every rank.
pub fn broadcast_string(w: &dyn Collective, text: &str) -> String {
    let mut len = [text.len() as u64];
    w.broadcast_u64(&mut len);
    let mut words: Vec<u64> = text
        .as_bytes()
        .chunks(8)
        .map(|c| {
            let mut b = [0u8; 8];
            b[..c.len()].copy_from_slice(c);
            u64::from_le_bytes(b)
        })
        .collect();
    words.resize((len[0] as usize).div_ceil(8), 0);
    w.broadcast_u64(&mut words);
    let bytes: Vec<u8> = words
        .iter()
        .flat_map(|v| v.to_le_bytes())
        .take(len[0] as usize)
        .collect();
    String::from_utf8_lossy(&bytes).into_owned()
}
