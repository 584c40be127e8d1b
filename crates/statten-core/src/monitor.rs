//! Spike monitors: every spiking layer reports its spike count when a monitor is enabled.

use burn::prelude::*;

/// One spiking layer's output in one forward call.
#[derive(Debug, Clone)]
pub struct SpikeRecord {
    /// Layer name (the reference's module path, e.g. `block.0.attn.q_lif`).
    pub name: String,
    /// Firing threshold of the layer.
    pub v_threshold: f64,
    /// Output shape `[T, B, ...]`.
    pub shape: Vec<usize>,
    /// Number of spikes (sum of the output), detached, on the model's device.
    pub count: Tensor<1>,
    /// The output itself, flattened and detached, when the monitor keeps spikes
    /// ([`Monitor::keeping_spikes`]; for comparing two runs spike by spike).
    pub spikes: Option<Tensor<1>>,
}

impl SpikeRecord {
    /// Number of output elements.
    pub fn numel(&self) -> usize {
        self.shape.iter().product()
    }
}

/// A firing statistic read back to the host.
#[derive(Debug, Clone, PartialEq)]
pub struct FiringStat {
    /// Layer name.
    pub name: String,
    /// Output shape `[T, B, ...]`.
    pub shape: Vec<usize>,
    /// Spikes emitted.
    pub spikes: f64,
    /// Output elements.
    pub elements: usize,
}

impl FiringStat {
    /// Mean spikes per element.
    pub fn rate(&self) -> f64 {
        self.spikes / self.elements.max(1) as f64
    }
}

/// Collects spike counts during a forward pass. A disabled monitor costs nothing.
#[derive(Debug, Default)]
pub struct Monitor {
    enabled: bool,
    keep: bool,
    records: Vec<SpikeRecord>,
}

impl Monitor {
    /// A monitor that records nothing.
    pub fn disabled() -> Self {
        Self::default()
    }

    /// A monitor that records every spiking layer.
    pub fn enabled() -> Self {
        Self {
            enabled: true,
            keep: false,
            records: Vec::new(),
        }
    }

    /// A monitor that records every spiking layer and keeps its output tensor too
    /// ([`SpikeRecord::spikes`]): memory for every spike of the forward.
    pub fn keeping_spikes() -> Self {
        Self {
            keep: true,
            ..Self::enabled()
        }
    }

    /// Whether this monitor records.
    pub fn is_enabled(&self) -> bool {
        self.enabled
    }

    /// Record the spikes of layer `name`.
    pub fn record<const D: usize>(&mut self, name: &str, v_threshold: f64, spikes: &Tensor<D>) {
        if !self.enabled {
            return;
        }
        self.records.push(SpikeRecord {
            name: name.to_string(),
            v_threshold,
            shape: spikes.dims().to_vec(),
            count: spikes.clone().detach().sum(),
            spikes: self.keep.then(|| spikes.clone().detach().reshape([-1])),
        });
    }

    /// Record the spikes of layer `name` given in parts along dimension `axis` (a layer run in
    /// batch chunks, [`crate::layers::binding_chunks`]): one record, as if they were one
    /// tensor. Kept spikes ([`Self::keeping_spikes`]) are the parts' outputs one after another.
    pub fn record_parts<const D: usize>(
        &mut self,
        name: &str,
        v_threshold: f64,
        parts: &[Tensor<D>],
        axis: usize,
    ) {
        if !self.enabled || parts.is_empty() {
            return;
        }
        let mut shape = parts[0].dims().to_vec();
        shape[axis] = parts.iter().map(|p| p.dims()[axis]).sum();
        let counts: Vec<Tensor<1>> = parts.iter().map(|p| p.clone().detach().sum()).collect();
        let spikes = self.keep.then(|| {
            Tensor::cat(
                parts
                    .iter()
                    .map(|p| p.clone().detach().reshape([-1]))
                    .collect(),
                0,
            )
        });
        self.records.push(SpikeRecord {
            name: name.to_string(),
            v_threshold,
            shape,
            count: Tensor::cat(counts, 0).sum(),
            spikes,
        });
    }

    /// The raw records, in execution order.
    pub fn records(&self) -> &[SpikeRecord] {
        &self.records
    }

    /// Read every count back to the host (in execution order).
    pub fn stats(&self) -> Vec<FiringStat> {
        self.records
            .iter()
            .map(|r| FiringStat {
                name: r.name.clone(),
                shape: r.shape.clone(),
                spikes: r.count.clone().into_scalar::<f32>() as f64,
                elements: r.numel(),
            })
            .collect()
    }

    /// The whole model's firing rate: all spikes over all outputs of every spiking layer
    /// recorded (NaN when nothing was recorded). Reads the counts back to the host.
    pub fn firing_rate(&self) -> f64 {
        let stats = self.stats();
        let elements: usize = stats.iter().map(|s| s.elements).sum();
        if elements == 0 {
            return f64::NAN;
        }
        stats.iter().map(|s| s.spikes).sum::<f64>() / elements as f64
    }
}
