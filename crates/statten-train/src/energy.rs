//! Energy estimate of spiking inference, as the paper computes it:
//! `E = E_MAC · MACs(first real-valued conv) + E_AC · SOPs`, with `SOPs = firing rate × MACs` of
//! the spike-driven layers (MACs already summed over T). The firing rate is the mean over all
//! spiking layers weighted by their element counts, measured on the eval set; the STAtten
//! attention term (KᵀV per chunk and Q·(KᵀV)) is part of the spike-driven MACs.
//!
//! The report also pairs, layer by layer, each synaptic layer's operations with the firing rate
//! of the spikes that are its input ([`OpEnergy`], from
//! [`ModelConfig::synaptic_ops`](statten_core::models::ModelConfig::synaptic_ops)): the
//! per-layer table says which rate multiplies which operation count, and the sum of those
//! products is given beside the paper's mean-rate figure.
//!
//! The operation energies are Horowitz's 45 nm figures at one of three precisions
//! ([`EnergyPrecision`], `energy.precision`): FP32 (E_MAC 4.6 pJ, E_AC 0.9 pJ, the paper's and
//! the default), FP16 (1.5, 0.4) and INT8 (0.23, 0.03). The report gives the chosen one and the
//! totals at all three.

use serde::{Deserialize, Serialize};
use statten_core::models::ModelConfig;
use statten_core::monitor::FiringStat;

/// Energy of one MAC (pJ), FP32 (the paper's figure).
pub const E_MAC_PJ: f64 = 4.6;
/// Energy of one accumulate (pJ), FP32 (the paper's figure).
pub const E_AC_PJ: f64 = 0.9;

/// The arithmetic precision the operation energies are taken at (45 nm, Horowitz 2014).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum EnergyPrecision {
    /// E_MAC 4.6 pJ, E_AC 0.9 pJ (the paper's figures).
    #[default]
    Fp32,
    /// E_MAC 1.5 pJ (1.1 multiply + 0.4 add), E_AC 0.4 pJ.
    Fp16,
    /// E_MAC 0.23 pJ (0.2 multiply + 0.03 add), E_AC 0.03 pJ.
    Int8,
}

impl EnergyPrecision {
    /// Every preset, in the order reports list them.
    pub const ALL: [EnergyPrecision; 3] = [Self::Fp32, Self::Fp16, Self::Int8];
    /// Their names, as `energy.precision` and `--energy-precision` take them.
    pub const NAMES: [&'static str; 3] = ["fp32", "fp16", "int8"];

    /// `(E_MAC, E_AC)` in pJ.
    pub fn energies_pj(self) -> (f64, f64) {
        match self {
            Self::Fp32 => (E_MAC_PJ, E_AC_PJ),
            Self::Fp16 => (1.5, 0.4),
            Self::Int8 => (0.23, 0.03),
        }
    }

    /// The name (`fp32`, `fp16`, `int8`).
    pub fn name(self) -> &'static str {
        Self::NAMES[self as usize]
    }
}

impl std::fmt::Display for EnergyPrecision {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl std::str::FromStr for EnergyPrecision {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        Self::ALL
            .into_iter()
            .find(|p| p.name() == s)
            .ok_or_else(|| format!("`{s}` is not an energy precision (fp32, fp16, int8)"))
    }
}

/// The `[energy]` table of a run config.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct EnergyConfig {
    /// The precision of `energy_mj` (the report lists all three).
    pub precision: EnergyPrecision,
}

/// The energy per image at one precision.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct PrecisionEnergy {
    /// The precision.
    pub precision: EnergyPrecision,
    /// Energy of one MAC (pJ).
    pub e_mac_pj: f64,
    /// Energy of one accumulate (pJ).
    pub e_ac_pj: f64,
    /// Energy per image in mJ.
    pub energy_mj: f64,
}

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

/// One synaptic layer's operations and the firing rate they are paired with.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct OpEnergy {
    /// The layer (`patch_embed.proj_conv1`, `block.0.attn.kv`, `head`, …).
    pub op: String,
    /// The spiking layers whose spikes are its input (their rates are summed); empty for the
    /// first convolution, whose input is the image.
    pub inputs: Vec<String>,
    /// The attention product's other spiking operand, when there is one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub with: Option<String>,
    /// How the input relates to those spikes (`max-pooled`, …), when not plainly.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub note: String,
    /// The input's firing rate (the sum over `inputs`; `None` for the image).
    pub input_rate: Option<f64>,
    /// Multiply-accumulates per image (all time steps).
    pub macs: f64,
    /// Synaptic operations per image: `input_rate × macs` (the MACs for the image's layer).
    pub sops: f64,
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
    /// Energy per image in mJ, at [`Self::precision`].
    pub energy_mj: f64,
    /// The precision of `energy_mj`.
    #[serde(default)]
    pub precision: EnergyPrecision,
    /// The energy per image at every precision (FP32, FP16, INT8).
    #[serde(default)]
    pub by_precision: Vec<PrecisionEnergy>,
    /// Every synaptic layer with the firing rate of its input, in forward order.
    #[serde(default)]
    pub operations: Vec<OpEnergy>,
    /// The sum of the spike-driven layers' `sops` (each layer at its own input's rate), beside
    /// the paper's `sops` (the mean rate × all spike-driven MACs).
    #[serde(default)]
    pub sops_per_layer: f64,
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

    /// The report for `cfg` at FP32 (the paper's figures).
    pub fn report(&self, cfg: &ModelConfig, epoch: usize) -> EnergyReport {
        self.report_at(cfg, epoch, EnergyPrecision::Fp32)
    }

    /// The report for `cfg`, `energy_mj` at `precision`.
    pub fn report_at(
        &self,
        cfg: &ModelConfig,
        epoch: usize,
        precision: EnergyPrecision,
    ) -> EnergyReport {
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
        let rate_of = |name: &str| layers.iter().find(|l| l.name == name).map(|l| l.rate);
        let operations: Vec<OpEnergy> = cfg
            .synaptic_ops()
            .into_iter()
            .map(|o| {
                let input_rate = (!o.inputs.is_empty()).then(|| {
                    o.inputs
                        .iter()
                        .map(|i| rate_of(i).unwrap_or(f64::NAN))
                        .sum::<f64>()
                });
                let macs = o.macs as f64;
                OpEnergy {
                    sops: input_rate.map_or(macs, |r| r * macs),
                    op: o.name,
                    inputs: o.inputs,
                    with: o.with,
                    note: o.note.to_string(),
                    input_rate,
                    macs,
                }
            })
            .collect();
        let sops_per_layer = operations
            .iter()
            .filter(|o| o.input_rate.is_some())
            .map(|o| o.sops)
            .sum();
        let at = |p: EnergyPrecision| {
            let (e_mac_pj, e_ac_pj) = p.energies_pj();
            let energy_pj = e_mac_pj * macs.first_conv as f64 + e_ac_pj * sops;
            PrecisionEnergy {
                precision: p,
                e_mac_pj,
                e_ac_pj,
                energy_mj: energy_pj * 1e-9,
            }
        };
        EnergyReport {
            epoch,
            layers,
            mean_rate,
            first_conv_macs: macs.first_conv as f64,
            spike_macs: macs.other as f64,
            sops,
            energy_mj: at(precision).energy_mj,
            precision,
            by_precision: EnergyPrecision::ALL.into_iter().map(at).collect(),
            operations,
            sops_per_layer,
        }
    }
}

impl EnergyReport {
    /// The one-line figure: energy per image, first-conv MACs, SOPs, mean firing rate.
    pub fn summary_line(&self) -> String {
        format!(
            "energy/image {:.4} mJ at {} (first conv {:.1} M MACs, {:.1} M SOPs, mean firing rate {:.4})",
            self.energy_mj,
            self.precision,
            self.first_conv_macs / 1e6,
            self.sops / 1e6,
            self.mean_rate
        )
    }

    /// The one-line figure, the firing rate of every spiking layer, and the operations of
    /// every synaptic layer with the rate of the spikes that are its input.
    pub fn table(&self) -> String {
        let mut s = self.summary_line();
        s.push('\n');
        for l in &self.layers {
            s += &format!("  {:<40} {:.4}\n", l.name, l.rate);
        }
        if !self.operations.is_empty() {
            s += &self.operations_table();
        }
        s
    }

    /// Per synaptic layer: its input (the spiking layer whose rate is used), that rate, its
    /// MACs and SOPs per image; then both totals.
    pub fn operations_table(&self) -> String {
        let mut s = format!(
            "  {:<28} {:<44} {:>7} {:>11} {:>11}\n",
            "layer", "input spikes (rate used)", "rate", "M MACs", "M SOPs"
        );
        for o in &self.operations {
            let mut input = match o.inputs.len() {
                0 => "the image (dense MACs)".to_string(),
                1 => o.inputs[0].clone(),
                n => format!("sum of {n} spike layers"),
            };
            if let Some(w) = &o.with {
                input += &format!(" × {}", w.rsplit('.').next().unwrap_or(w));
            }
            if !o.note.is_empty() && o.inputs.len() == 1 {
                input += &format!(" ({})", o.note);
            }
            let rate = o
                .input_rate
                .map_or_else(|| "-".to_string(), |r| format!("{r:.4}"));
            s += &format!(
                "  {:<28} {:<44} {:>7} {:>11.3} {:>11.3}\n",
                o.op,
                input,
                rate,
                o.macs / 1e6,
                o.sops / 1e6
            );
        }
        s += &format!(
            "  spike-driven SOPs per image: {:.3} M layer by layer; {:.3} M as the paper counts \
             them (mean rate {:.4} × {:.3} M MACs), which the energy uses\n",
            self.sops_per_layer / 1e6,
            self.sops / 1e6,
            self.mean_rate,
            self.spike_macs / 1e6
        );
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rates() -> RateAccumulator {
        let mut acc = RateAccumulator::default();
        let stat = |name: &str, spikes: f64, elements: usize| FiringStat {
            name: name.into(),
            shape: vec![1, 1, elements],
            spikes,
            elements,
        };
        acc.add(&[stat("a", 30.0, 100), stat("b", 10.0, 300)], 2);
        acc
    }

    #[test]
    fn every_precision_uses_its_operation_energies_and_fp32_is_the_papers() {
        let cfg = ModelConfig::preset("cifar10-2-256").unwrap();
        let macs = cfg.macs();
        let acc = rates();
        let fp32 = acc.report(&cfg, 0);
        assert_eq!(fp32.precision, EnergyPrecision::Fp32);
        assert!((fp32.mean_rate - 0.1).abs() < 1e-12, "{}", fp32.mean_rate);
        let sops = 0.1 * macs.other as f64;
        let paper = (4.6 * macs.first_conv as f64 + 0.9 * sops) * 1e-9;
        assert!((fp32.energy_mj - paper).abs() <= 1e-12 * paper, "{fp32:?}");
        for (p, (mac, ac)) in
            EnergyPrecision::ALL
                .into_iter()
                .zip([(4.6, 0.9), (1.5, 0.4), (0.23, 0.03)])
        {
            let rep = acc.report_at(&cfg, 0, p);
            let want = (mac * macs.first_conv as f64 + ac * sops) * 1e-9;
            assert!((rep.energy_mj - want).abs() <= 1e-12 * want, "{p}: {rep:?}");
            assert_eq!(rep.precision, p);
            // The totals at every precision are the same whichever is chosen.
            assert_eq!(rep.by_precision, fp32.by_precision);
            let own = rep.by_precision.iter().find(|e| e.precision == p).unwrap();
            assert_eq!(
                (own.e_mac_pj, own.e_ac_pj, own.energy_mj),
                (mac, ac, rep.energy_mj)
            );
            assert!(
                rep.summary_line().contains(&format!("mJ at {p} ")),
                "{}",
                rep.summary_line()
            );
        }
    }

    #[test]
    fn each_layer_is_paired_with_its_inputs_rate() {
        for preset in ["cifar10-2-256", "spikformer-cifar10-4-384"] {
            let cfg = ModelConfig::preset(preset).unwrap();
            let ops = cfg.synaptic_ops();
            // Every spiking layer an op reads, with its own rate (k + 1) / 100.
            let mut names: Vec<String> = Vec::new();
            for o in &ops {
                for i in o.inputs.iter().chain(&o.with) {
                    if !names.contains(i) {
                        names.push(i.clone());
                    }
                }
            }
            let rate = |n: &str| (names.iter().position(|m| m == n).unwrap() + 1) as f64 / 100.0;
            let mut acc = RateAccumulator::default();
            let stats: Vec<FiringStat> = names
                .iter()
                .map(|n| FiringStat {
                    name: n.clone(),
                    shape: vec![100],
                    spikes: rate(n) * 100.0,
                    elements: 100,
                })
                .collect();
            acc.add(&stats, 1);
            let rep = acc.report(&cfg, 0);
            assert_eq!(rep.operations.len(), ops.len());
            let first = &rep.operations[0];
            assert_eq!((first.input_rate, first.sops), (None, first.macs));
            let mut total = 0.0;
            for (o, want) in rep.operations.iter().zip(&ops).skip(1) {
                let r: f64 = want.inputs.iter().map(|i| rate(i)).sum();
                assert!((o.input_rate.unwrap() - r).abs() < 1e-12, "{}", o.op);
                assert!(
                    (o.sops - r * want.macs as f64).abs() <= 1e-9 * o.sops,
                    "{}",
                    o.op
                );
                total += o.sops;
            }
            assert!((rep.sops_per_layer - total).abs() <= 1e-9 * total);
            let table = rep.table();
            let product = if preset.starts_with("spikformer") {
                ["block.0.attn.qk", "q_lif × k_lif"]
            } else {
                ["block.0.attn.kv", "k_lif × v_lif"]
            };
            assert!(
                table.contains(product[0]) && table.contains(product[1]),
                "{table}"
            );
            if preset.starts_with("spikformer") {
                // The residual stream: the sum of the spikes added into it.
                let q = rep
                    .operations
                    .iter()
                    .find(|o| o.op == "block.1.attn.q_linear")
                    .unwrap();
                assert_eq!(q.inputs.len(), 4, "{q:?}");
                assert!(table.contains("sum of 4 spike layers"), "{table}");
            } else {
                assert!(
                    table.contains("block.0.attn.q_conv")
                        && table.contains("block.0.attn.shortcut_lif"),
                    "{table}"
                );
            }
            // energy.json carries the table.
            let json = serde_json::to_value(&rep).unwrap();
            assert_eq!(json["operations"].as_array().unwrap().len(), ops.len());
        }
    }

    #[test]
    fn precision_names_parse_and_an_unknown_one_is_an_error_naming_the_key() {
        for (p, n) in EnergyPrecision::ALL.into_iter().zip(EnergyPrecision::NAMES) {
            assert_eq!(n.parse::<EnergyPrecision>().unwrap(), p);
            assert_eq!(p.to_string(), n);
        }
        assert!("fp8".parse::<EnergyPrecision>().is_err());
        let base = "[model]\npreset = \"cifar10-2-256\"\n[data]\ndataset = \"cifar10\"\n";
        let cfg = crate::config::RunConfig::parse(
            &format!("{base}[energy]\nprecision = \"int8\"\n"),
            &[],
        )
        .unwrap();
        assert_eq!(cfg.energy.precision, EnergyPrecision::Int8);
        let set = crate::config::RunConfig::parse(base, &["energy.precision=\"fp16\"".into()]);
        assert_eq!(set.unwrap().energy.precision, EnergyPrecision::Fp16);
        assert_eq!(
            crate::config::RunConfig::parse(base, &[])
                .unwrap()
                .energy
                .precision,
            EnergyPrecision::Fp32
        );
        let e =
            crate::config::RunConfig::parse(&format!("{base}[energy]\nprecision = \"fp8\"\n"), &[])
                .unwrap_err()
                .to_string();
        assert!(e.contains("energy") && e.contains("fp8"), "{e}");
    }
}
