//! Multi-step spiking neurons (LIF, PLIF, IF) with surrogate gradients.
//!
//! Every neuron takes a `[T, ...]` tensor whose dimension 0 is time, starts from a zero membrane
//! at every call and returns the spikes with the input's shape. The state lives only inside one
//! forward call, so there is nothing to reset between batches and no way to mix the time and
//! batch axes. The equations follow spikingjelly 0.0.0.0.12 `MultiStepLIFNode` exactly:
//!
//! - charge (decay_input, v_reset = 0): `h = v + (x − v) / tau`
//! - fire: `s = Θ(h − v_th)` with `Θ(0) = 1` (a membrane exactly at the threshold fires)
//! - hard reset: `v = h · (1 − s)`; soft reset: `v = h − s · v_th`
//! - backward: the surrogate derivative replaces `Θ'`; with `detach_reset` the spike in the
//!   reset carries no gradient.

use burn::module::{Module, Param};
use burn::prelude::*;
use burn::tensor::activation::sigmoid;
use serde::{Deserialize, Serialize};

use crate::monitor::Monitor;

pub mod fused;
pub mod surrogate;
use fused::{fused_lif, fused_supported, Charge, LifSpec};
pub use surrogate::Surrogate;

/// How the membrane is reset after a spike.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum Reset {
    /// `v = v_reset` (0) after a spike (spikingjelly with `v_reset = 0.0`; the reference).
    #[default]
    Hard,
    /// `v = h − v_th` after a spike (spikingjelly with `v_reset = None`).
    Soft,
}

/// Which neuron model a spiking layer uses.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum NeuronKind {
    /// Leaky integrate-and-fire with a fixed `tau`.
    #[default]
    Lif,
    /// Parametric LIF: `1/tau = sigmoid(w)` is learned, initialised at `tau`.
    Plif,
    /// Integrate-and-fire: no leak, `h = v + x`.
    If,
}

/// Settings shared by every spiking layer of a model.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct NeuronConfig {
    /// Neuron model.
    pub kind: NeuronKind,
    /// Membrane time constant (initial value for PLIF).
    pub tau: f64,
    /// Threshold of ordinary layers (attention LIFs use their own, see the attention config).
    pub v_threshold: f64,
    /// Hard (to 0) or soft reset.
    pub reset: Reset,
    /// `h = v + (x − v)/tau` when true, `h = v − v/tau + x` when false.
    pub decay_input: bool,
    /// The spike in the reset carries no gradient.
    pub detach_reset: bool,
    /// Surrogate gradient.
    pub surrogate: Surrogate,
}

impl Default for NeuronConfig {
    fn default() -> Self {
        Self {
            kind: NeuronKind::Lif,
            tau: 2.0,
            v_threshold: 1.0,
            reset: Reset::Hard,
            decay_input: true,
            detach_reset: true,
            surrogate: Surrogate::default(),
        }
    }
}

impl NeuronConfig {
    /// The same settings with another threshold.
    pub fn with_threshold(mut self, v_threshold: f64) -> Self {
        self.v_threshold = v_threshold;
        self
    }

    /// Build a multi-step neuron layer named `name` (the name appears in firing-rate reports).
    pub fn init(&self, name: impl Into<String>, device: &Device) -> MultiStepNeuron {
        let w = match self.kind {
            // spikingjelly ParametricLIFNode: w = -ln(init_tau - 1), 1/tau = sigmoid(w).
            NeuronKind::Plif => Some(Param::from_tensor(Tensor::<1>::from_floats(
                [-(self.tau - 1.0).ln() as f32],
                device,
            ))),
            _ => None,
        };
        MultiStepNeuron {
            w,
            kind: self.kind,
            tau: self.tau,
            v_threshold: self.v_threshold,
            soft_reset: self.reset == Reset::Soft,
            decay_input: self.decay_input,
            detach_reset: self.detach_reset,
            surrogate: self.surrogate,
            fused: true,
            name: name.into(),
        }
    }
}

/// The membrane of a multi-step neuron over time ([`MultiStepNeuron::membrane_trace`]), each
/// `[T, M]`.
#[derive(Debug, Clone)]
pub struct MembraneTrace {
    /// The charged membrane `h[t]`, before firing.
    pub h_charged: Tensor<2>,
    /// The spikes `s[t]`.
    pub spikes: Tensor<2>,
    /// The membrane after the reset, `v[t]` (SpikingJelly's `v_seq`).
    pub v_after_reset: Tensor<2>,
}

/// A multi-step spiking layer over a `[T, ...]` input.
#[derive(Module, Debug)]
pub struct MultiStepNeuron {
    /// PLIF only: `1/tau = sigmoid(w)`.
    pub w: Option<Param<Tensor<1>>>,
    #[module(skip)]
    kind: NeuronKind,
    tau: f64,
    v_threshold: f64,
    soft_reset: bool,
    decay_input: bool,
    detach_reset: bool,
    #[module(skip)]
    surrogate: Surrogate,
    /// Use the fused operator where the backend has it (flex, CubeCL/wgpu).
    fused: bool,
    #[module(skip)]
    name: String,
}

impl MultiStepNeuron {
    /// Layer name used in monitors (the reference's module path).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Firing threshold.
    pub fn v_threshold(&self) -> f64 {
        self.v_threshold
    }

    /// Run the neuron over dimension 0 of `x` and return the spikes (same shape).
    ///
    /// Records nothing: [`Self::forward_monitored`] also records the firing statistics.
    pub fn forward<const D: usize>(&self, x: Tensor<D>) -> Tensor<D> {
        self.forward_monitored(x, &mut Monitor::disabled())
    }

    /// As [`Self::forward`], recording each spiking layer's firing statistics in the monitor.
    pub fn forward_monitored<const D: usize>(
        &self,
        x: Tensor<D>,
        monitor: &mut Monitor,
    ) -> Tensor<D> {
        let dims = x.dims();
        let spikes = self.forward_flat(x.reshape([dims[0] as i64, -1]));
        let out: Tensor<D> = spikes.reshape(dims);
        monitor.record(&self.name, self.v_threshold, &out);
        out
    }

    /// The neuron dynamics on a `[T, M]` tensor: the fused operator ([`Self::forward_fused`])
    /// where the backend has it, else [`Self::forward_per_step`], the faster of the two
    /// composite formulations by measurement (BENCHMARKS.md).
    pub fn forward_flat(&self, x: Tensor<2>) -> Tensor<2> {
        if self.fused && fused_supported(&x) {
            self.forward_fused(x)
        } else {
            self.forward_per_step(x)
        }
    }

    /// Use the fused operator where the backend has it (the default), or always the composite
    /// form (`false`; for comparisons and tests).
    pub fn set_fused(&mut self, fused: bool) {
        self.fused = fused;
    }

    /// The fused operator's settings for this layer.
    pub fn lif_spec(&self) -> LifSpec {
        let charge = match (self.kind, self.decay_input) {
            (NeuronKind::Lif, true) => Charge::LifDecayInput,
            (NeuronKind::Lif, false) => Charge::Lif,
            (NeuronKind::If, _) => Charge::If,
            (NeuronKind::Plif, true) => Charge::PlifDecayInput,
            (NeuronKind::Plif, false) => Charge::Plif,
        };
        let (surrogate, alpha) = self.surrogate.kernel_form();
        LifSpec {
            charge,
            tau: self.tau as f32,
            v_threshold: self.v_threshold as f32,
            soft_reset: self.soft_reset,
            detach_reset: self.detach_reset,
            surrogate,
            alpha,
        }
    }

    /// The fused multi-step operator (one kernel forward, one backward): same spikes as
    /// [`Self::forward_per_step`], bit for bit, and the same gradients up to rounding. Panics
    /// on a backend without the kernels (see [`fused::fused_supported`]).
    pub fn forward_fused(&self, x: Tensor<2>) -> Tensor<2> {
        let k = match &self.w {
            Some(w) => sigmoid(w.val()),
            None => Tensor::<1>::ones([1], &x.device()),
        };
        fused_lif(x, k, self.lif_spec())
    }

    /// Alternative formulation: the time loop records only the membrane recursion (charge and
    /// reset, with the reset spike detached) and the Heaviside/surrogate pair is applied once to
    /// all timesteps. Same values and gradients as [`Self::forward_per_step`] with about half
    /// the autodiff graph, but the concatenations cost more than the graph nodes they save
    /// (BENCHMARKS.md: 119 ms against 89 ms for LIF fwd+bwd on `[4, 32, 512, 8, 8]`).
    pub fn forward_batched(&self, x: Tensor<2>) -> Tensor<2> {
        let tracked = x.is_tracked() || self.w.as_ref().is_some_and(|w| w.val().is_tracked());
        if !self.detach_reset && tracked {
            // The reset spike carries a gradient: the surrogate must be inside the loop.
            return self.forward_per_step(x);
        }
        let [t_steps, _] = x.dims();
        let decay = self.w.as_ref().map(|w| sigmoid(w.val()).unsqueeze::<2>());
        let mut v: Option<Tensor<2>> = None;
        let mut hs = Vec::with_capacity(t_steps);
        let mut fired_all = Vec::with_capacity(t_steps);
        for x_t in x.chunk(t_steps, 0) {
            let h = self.charge(v, x_t, decay.clone());
            let fired = h.clone().detach().greater_equal_elem(self.v_threshold);
            v = Some(if self.soft_reset {
                h.clone() - fired.clone().float().mul_scalar(self.v_threshold)
            } else {
                // Hard reset to 0: v = (1 − s)·h, written as one masked fill.
                h.clone().mask_fill(fired.clone(), 0.0)
            });
            if tracked {
                hs.push(h);
            }
            fired_all.push(fired);
        }
        let fired = Tensor::cat(fired_all, 0).float();
        if !tracked {
            return fired;
        }
        let u = Tensor::cat(hs, 0).sub_scalar(self.v_threshold);
        let g = self.surrogate.primitive(u);
        fired + (g.clone() - g.detach())
    }

    /// The surrogate inside the time loop, one step at a time (the default).
    pub fn forward_per_step(&self, x: Tensor<2>) -> Tensor<2> {
        let [t_steps, _] = x.dims();
        let tracked = x.is_tracked() || self.w.as_ref().is_some_and(|w| w.val().is_tracked());
        let decay = self.w.as_ref().map(|w| sigmoid(w.val()).unsqueeze::<2>());
        let mut v: Option<Tensor<2>> = None;
        let mut out = Vec::with_capacity(t_steps);
        for x_t in x.chunk(t_steps, 0) {
            let h = self.charge(v, x_t, decay.clone());
            let u = h.clone().sub_scalar(self.v_threshold);
            let fired = u.clone().greater_equal_elem(0.0).float();
            let s = if tracked {
                let g = self.surrogate.primitive(u);
                fired.clone() + (g.clone() - g.detach())
            } else {
                fired.clone()
            };
            let s_reset = if self.detach_reset || !tracked {
                fired
            } else {
                s.clone()
            };
            v = Some(self.reset(h, s_reset));
            out.push(s);
        }
        Tensor::cat(out, 0)
    }

    /// The membrane over time on a `[T, M]` input, as SpikingJelly records it: the charged
    /// membrane `h[t]` (before firing), the spikes, and `v[t]` after the reset (its `v_seq`).
    /// Values only (no gradient); the same recursion as [`Self::forward_per_step`].
    pub fn membrane_trace(&self, x: Tensor<2>) -> MembraneTrace {
        let x = x.detach();
        let [t_steps, _] = x.dims();
        let decay = self
            .w
            .as_ref()
            .map(|w| sigmoid(w.val().detach()).unsqueeze::<2>());
        let mut v: Option<Tensor<2>> = None;
        let (mut hs, mut ss, mut vs) = (vec![], vec![], vec![]);
        for x_t in x.chunk(t_steps, 0) {
            let h = self.charge(v, x_t, decay.clone());
            let fired = h
                .clone()
                .sub_scalar(self.v_threshold)
                .greater_equal_elem(0.0)
                .float();
            let after = self.reset(h.clone(), fired.clone());
            hs.push(h);
            ss.push(fired);
            vs.push(after.clone());
            v = Some(after);
        }
        MembraneTrace {
            h_charged: Tensor::cat(hs, 0),
            spikes: Tensor::cat(ss, 0),
            v_after_reset: Tensor::cat(vs, 0),
        }
    }

    fn reset(&self, h: Tensor<2>, s: Tensor<2>) -> Tensor<2> {
        if self.soft_reset {
            h - s.mul_scalar(self.v_threshold)
        } else {
            // spikingjelly: v = (1 - s) * h + s * v_reset with v_reset = 0.
            h * (s.neg().add_scalar(1.0))
        }
    }

    fn charge(&self, v: Option<Tensor<2>>, x: Tensor<2>, decay: Option<Tensor<2>>) -> Tensor<2> {
        match (self.kind, v) {
            (NeuronKind::If, None) => x,
            (NeuronKind::If, Some(v)) => v + x,
            (NeuronKind::Lif, v) => {
                match (self.decay_input, v) {
                    // v = 0: x / tau (identical to v + (x - v)/tau in floating point).
                    (true, None) => x.div_scalar(self.tau),
                    (true, Some(v)) => v.clone() + (x - v).div_scalar(self.tau),
                    (false, None) => x,
                    (false, Some(v)) => v.clone() - v.div_scalar(self.tau) + x,
                }
            }
            (NeuronKind::Plif, v) => {
                let k = decay.expect("PLIF has a decay parameter");
                match (self.decay_input, v) {
                    (true, None) => x * k,
                    (true, Some(v)) => v.clone() + (x - v) * k,
                    (false, None) => x,
                    (false, Some(v)) => v.clone() - v * k + x,
                }
            }
        }
    }
}
