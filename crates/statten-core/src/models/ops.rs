//! The synaptic layers of a model, one by one: each layer's multiply-accumulates per image
//! (summed over T) and the spiking layers whose spikes are its input — what the energy
//! report's per-layer table pairs (firing rate × operations). Their sum is
//! [`ModelConfig::macs`].

use super::{Arch, ModelConfig};
use crate::attention::AttentionKind;

/// One synaptic layer of a forward pass.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SynapticOp {
    /// The layer (`state_dict` module name, or `block.{j}.attn.<product>` for the attention's
    /// matrix products).
    pub name: String,
    /// The spiking layers (monitor names) whose spikes are the input; empty for the first
    /// convolution, whose input is the real-valued image. Several: their spikes are summed
    /// (Spikformer's residual stream), and each spike costs one accumulate per weight.
    pub inputs: Vec<String>,
    /// The attention products' other operand, when it is spikes too (the rate paired with
    /// the operations is the first input's: its spikes select what is accumulated).
    pub with: Option<String>,
    /// Multiply-accumulates per image, all time steps.
    pub macs: u64,
    /// How the input relates to those spikes, when not plainly (`max-pooled`, …).
    pub note: &'static str,
}

impl ModelConfig {
    /// Every synaptic layer in forward order, the first convolution first.
    pub fn synaptic_ops(&self) -> Vec<SynapticOp> {
        let t = self.time_steps as u64;
        let c = self.embed_dim as u64;
        let hid = c * self.mlp_ratio as u64;
        let d = c / self.num_heads as u64;
        let k = self.num_classes as u64;
        let pools = self.pooling();
        let spikformer = self.arch == Arch::Spikformer;
        let mut ops = Vec::new();
        let pe = |n: &str| vec![format!("patch_embed.{n}")];
        // The stem: each conv at its input's resolution, a pool after it where configured.
        let chans = [
            (self.in_channels as u64, c / 8),
            (c / 8, c / 4),
            (c / 4, c / 2),
            (c / 2, c),
        ];
        let convs = ["proj_conv", "proj_conv1", "proj_conv2", "proj_conv3"];
        let lifs = ["proj_lif", "proj_lif1", "proj_lif2", "proj_lif3"];
        let mut h = self.img_size as u64;
        for (i, (ci, co)) in chans.into_iter().enumerate() {
            let (inputs, note) = match i {
                0 => (vec![], "the image (real-valued: MACs)"),
                _ if pools[i - 1] => (pe(lifs[i - 1]), "max-pooled"),
                _ => (pe(lifs[i - 1]), ""),
            };
            push(
                &mut ops,
                t,
                format!("patch_embed.{}", convs[i]),
                inputs,
                9 * ci * co * h * h,
                note,
            );
            if pools[i] {
                h = (h - 1) / 2 + 1;
            }
        }
        let n = h * h;
        // SDT pools the fourth stage's BN output before its LIF; Spikformer pools the spikes.
        let rpe_note = if spikformer && pools[3] {
            "max-pooled"
        } else {
            ""
        };
        push(
            &mut ops,
            t,
            "patch_embed.rpe_conv".into(),
            pe("proj_lif3"),
            9 * c * c * n,
            rpe_note,
        );
        // Spikformer's residual stream: the sum of the spikes added into it so far.
        let mut stream = vec![
            "patch_embed.rpe_lif".to_string(),
            "patch_embed.proj_lif3".to_string(),
        ];
        for j in 0..self.depth {
            let a = |n: &str| format!("block.{j}.attn.{n}");
            let m = |n: &str| format!("block.{j}.mlp.{n}");
            if spikformer {
                for p in ["q_linear", "k_linear", "v_linear"] {
                    push(
                        &mut ops,
                        t,
                        a(p),
                        stream.clone(),
                        c * c * n,
                        "the residual stream",
                    );
                }
            } else {
                for p in ["q_conv", "k_conv", "v_conv"] {
                    push(&mut ops, t, a(p), vec![a("shortcut_lif")], c * c * n, "");
                }
            }
            match self.attention {
                AttentionKind::Statten => {
                    push(&mut ops, t, a("kv"), vec![a("k_lif")], n * d * c, "Kᵀ·V").with =
                        Some(a("v_lif"));
                    push(
                        &mut ops,
                        t,
                        a("qkv"),
                        vec![a("q_lif")],
                        n * d * c,
                        "Q·(KᵀV)",
                    );
                }
                AttentionKind::Sdsa => {
                    push(&mut ops, t, a("kv"), vec![a("k_lif")], n * c, "K ⊙ V").with =
                        Some(a("v_lif"));
                    push(&mut ops, t, a("qkv"), vec![a("q_lif")], n * c, "Q ⊙ KV").with =
                        Some(a("talking_heads_lif"));
                }
                AttentionKind::Ssa => {
                    push(&mut ops, t, a("qk"), vec![a("q_lif")], n * n * c, "Q·Kᵀ").with =
                        Some(a("k_lif"));
                    push(
                        &mut ops,
                        t,
                        a("qkv"),
                        vec![a("v_lif")],
                        n * n * c,
                        "(QKᵀ)·V",
                    );
                }
            }
            if spikformer {
                push(
                    &mut ops,
                    t,
                    a("proj_linear"),
                    vec![a("attn_lif")],
                    c * c * n,
                    "",
                );
                stream.push(a("proj_lif"));
                push(
                    &mut ops,
                    t,
                    m("fc1_linear"),
                    stream.clone(),
                    c * hid * n,
                    "the residual stream",
                );
                push(
                    &mut ops,
                    t,
                    m("fc2_linear"),
                    vec![m("fc1_lif")],
                    hid * c * n,
                    "",
                );
                stream.push(m("fc2_lif"));
            } else {
                let (input, note) = match self.attention {
                    AttentionKind::Sdsa => (a("talking_heads_lif"), "masked by Q's spikes"),
                    _ => (a("attn_lif"), ""),
                };
                push(&mut ops, t, a("proj_conv"), vec![input], c * c * n, note);
                push(
                    &mut ops,
                    t,
                    m("fc1_conv"),
                    vec![m("fc1_lif")],
                    c * hid * n,
                    "",
                );
                push(
                    &mut ops,
                    t,
                    m("fc2_conv"),
                    vec![m("fc2_lif")],
                    hid * c * n,
                    "",
                );
            }
        }
        if spikformer {
            push(
                &mut ops,
                t,
                "head".into(),
                stream,
                c * k,
                "the residual stream, mean over tokens",
            );
        } else {
            push(
                &mut ops,
                t,
                "head".into(),
                vec!["head_lif".into()],
                c * k,
                "",
            );
        }
        ops
    }
}

/// Appends a layer of `macs` per time step (× `t`) to `ops`.
fn push<'a>(
    ops: &'a mut Vec<SynapticOp>,
    t: u64,
    name: String,
    inputs: Vec<String>,
    macs: u64,
    note: &'static str,
) -> &'a mut SynapticOp {
    ops.push(SynapticOp {
        name,
        inputs,
        with: None,
        macs: macs * t,
        note,
    });
    ops.last_mut().expect("just pushed")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::models::PRESETS;

    #[test]
    fn the_layers_sum_to_the_models_mac_count() {
        let mut checked = 0;
        for p in PRESETS {
            let cfg = ModelConfig::preset(p.name).unwrap();
            let ops = cfg.synaptic_ops();
            let macs = cfg.macs();
            assert_eq!(ops[0].macs, macs.first_conv, "{}", p.name);
            assert!(ops[0].inputs.is_empty());
            assert_eq!(
                ops[1..].iter().map(|o| o.macs).sum::<u64>(),
                macs.other,
                "{}",
                p.name
            );
            assert!(ops[1..].iter().all(|o| !o.inputs.is_empty()));
            checked += 1;
        }
        assert!(checked >= 4);
    }

    #[test]
    fn every_input_is_a_spiking_layer_the_monitor_records() {
        use crate::monitor::Monitor;
        use burn::prelude::*;
        let device = Device::flex();
        for name in [
            "cifar10-2-256",
            "cifar10-2-256-sdsa",
            "spikformer-cifar10-4-384",
            "spikformer-cifar10-4-384-statten",
            "cifar10dvs-2-256-t10",
        ] {
            let mut cfg = ModelConfig::preset(name).unwrap();
            (cfg.depth, cfg.embed_dim, cfg.num_heads, cfg.img_size) = (2, 32, 4, 16);
            if cfg.attention == AttentionKind::Statten {
                (cfg.time_steps, cfg.chunk_size) = (2, 2);
            } else {
                cfg.time_steps = 2;
            }
            let model = cfg.init(&device).unwrap();
            let x = Tensor::<5>::ones([2, 1, cfg.in_channels, 16, 16], &device);
            let mut m = Monitor::enabled();
            model.forward_monitored(x, &mut m);
            let recorded: Vec<String> = m.records().iter().map(|r| r.name.clone()).collect();
            let ops = cfg.synaptic_ops();
            for op in &ops {
                for i in op.inputs.iter().chain(&op.with) {
                    assert!(
                        recorded.contains(i),
                        "{name}: {} reads {i}, not recorded",
                        op.name
                    );
                }
            }
            // And every recorded layer feeds some layer.
            for r in &recorded {
                assert!(
                    ops.iter()
                        .any(|o| o.inputs.contains(r) || o.with.as_ref() == Some(r)),
                    "{name}: {r} feeds no listed layer"
                );
            }
        }
    }
}
