//! Energy estimate of spiking inference, as the paper computes it:
//! `E = E_MAC · MACs(first real-valued conv) + E_AC · SOPs`, with `SOPs = firing rate × MACs` of
//! the spike-driven layers (MACs already summed over T) and E_MAC = 4.6 pJ, E_AC = 0.9 pJ (45 nm). The firing rate is the mean over all
//! spiking layers weighted by their element counts, measured on the eval set; the STAtten
//! attention term (KᵀV per chunk and Q·(KᵀV)) is part of the spike-driven MACs.

use serde::{Deserialize, Serialize};
use statten_core::models::ModelConfig;
use statten_core::monitor::FiringStat;

/// Energy of one MAC (pJ).
pub const E_MAC_PJ: f64 = 4.6;
/// Energy of one accumulate (pJ).
pub const E_AC_PJ: f64 = 0.9;

/// One layer's firing.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct LayerRate {
    /// Reference layer name.
    pub name: String,
    /// Spikes per element.
    pub rate: f64,
    /// Elements per image (all T).
    pub elements_per_image: f64,
}

/// The report written to `energy.json`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct EnergyReport {
    /// Epoch of the eval.
    pub epoch: usize,
    /// Per-layer firing rates.
    pub layers: Vec<LayerRate>,
    /// Element-weighted mean firing rate.
    pub mean_rate: f64,
    /// Dense MACs of the first conv per image.
    pub first_conv_macs: f64,
    /// Spike-driven MACs per image (before the firing rate).
    pub spike_macs: f64,
    /// Synaptic operations per image.
    pub sops: f64,
    /// Energy per image in mJ.
    pub energy_mj: f64,
}

/// Accumulates firing statistics over eval batches.
#[derive(Debug, Clone, Default)]
pub struct RateAccumulator {
    names: Vec<String>,
    spikes: Vec<f64>,
    elements: Vec<f64>,
    images: usize,
}

impl RateAccumulator {
    /// Sum the statistics over ranks (a rank without batches holds none and takes the sums;
    /// the layer names are those of the ranks that have them).
    pub fn all_reduce(&mut self, w: &dyn crate::parallel::Collective) {
        let mut len = [self.names.len() as f64, !self.names.is_empty() as u8 as f64];
        w.all_reduce_sum_f64(&mut len);
        let l = if len[1] > 0.0 {
            (len[0] / len[1]) as usize
        } else {
            0
        };
        let mut flat = vec![0.0; 1 + 2 * l];
        if self.names.len() == l {
            flat[0] = self.images as f64;
            flat[1..1 + l].copy_from_slice(&self.spikes);
            flat[1 + l..].copy_from_slice(&self.elements);
        }
        w.all_reduce_sum_f64(&mut flat);
        self.images = flat[0] as usize;
        self.spikes = flat[1..1 + l].to_vec();
        self.elements = flat[1 + l..].to_vec();
        if self.names.len() != l {
            self.names = (0..l).map(|i| format!("layer {i}")).collect();
        }
    }

    /// Add one batch of `images` images.
    pub fn add(&mut self, stats: &[FiringStat], images: usize) {
        if self.names.is_empty() {
            self.names = stats.iter().map(|s| s.name.clone()).collect();
            self.spikes = vec![0.0; stats.len()];
            self.elements = vec![0.0; stats.len()];
        }
        for (i, s) in stats.iter().enumerate().take(self.names.len()) {
            self.spikes[i] += s.spikes;
            self.elements[i] += s.elements as f64;
        }
        self.images += images;
    }

    /// The report for `cfg`.
    pub fn report(&self, cfg: &ModelConfig, epoch: usize) -> EnergyReport {
        let layers: Vec<LayerRate> = self
            .names
            .iter()
            .enumerate()
            .map(|(i, n)| LayerRate {
                name: n.clone(),
                rate: if self.elements[i] > 0.0 {
                    self.spikes[i] / self.elements[i]
                } else {
                    0.0
                },
                elements_per_image: self.elements[i] / self.images.max(1) as f64,
            })
            .collect();
        let total_el: f64 = self.elements.iter().sum();
        let mean_rate = if total_el > 0.0 {
            self.spikes.iter().sum::<f64>() / total_el
        } else {
            0.0
        };
        let macs = cfg.macs();
        let sops = mean_rate * macs.other as f64;
        let energy_pj = E_MAC_PJ * macs.first_conv as f64 + E_AC_PJ * sops;
        EnergyReport {
            epoch,
            layers,
            mean_rate,
            first_conv_macs: macs.first_conv as f64,
            spike_macs: macs.other as f64,
            sops,
            energy_mj: energy_pj * 1e-9,
        }
    }
}

impl EnergyReport {
    /// The one-line figure: energy per image, first-conv MACs, SOPs, mean firing rate.
    pub fn summary_line(&self) -> String {
        format!(
            "energy/image {:.4} mJ  (first conv {:.1} M MACs, {:.1} M SOPs, mean firing rate {:.4})",
            self.energy_mj,
            self.first_conv_macs / 1e6,
            self.sops / 1e6,
            self.mean_rate
        )
    }

    /// The one-line figure and the firing rate of every spiking layer.
    pub fn table(&self) -> String {
        let mut s = self.summary_line();
        s.push('\n');
        for l in &self.layers {
            s += &format!("  {:<40} {:.4}\n", l.name, l.rate);
        }
        s
    }
}
