//! The named presets: every configuration of the reference repositories, as one table of
//! names, descriptions and configurations. `configs/models/*.toml` are generated from it
//! (`statten model info --preset NAME --toml`), and a test checks every such file against it.

use super::{Arch, ModelConfig};
use crate::attention::AttentionKind;
use crate::error::{Error, Result};

/// A named configuration of the paper or the reference repositories.
#[derive(Debug, Clone, Copy)]
pub struct Preset {
    /// The name (`model.preset`, `statten model info --preset`).
    pub name: &'static str,
    /// One line: backbone, attention, data, T and the reference's config file.
    pub description: &'static str,
    build: fn() -> ModelConfig,
}

impl Preset {
    /// The preset's model configuration.
    pub fn config(&self) -> ModelConfig {
        (self.build)()
    }
}

/// SDT + STAtten `l`-`c` with `k` classes on 32×32 images (T=4, chunk 2).
fn sdt(c: usize, l: usize, k: usize) -> ModelConfig {
    ModelConfig {
        embed_dim: c,
        depth: l,
        num_classes: k,
        ..ModelConfig::default()
    }
}

/// SDT + STAtten 2-256 on 64×64 event frames, `t` steps in chunks of `cs`.
fn dvs(t: usize, cs: usize, k: usize, tet: bool) -> ModelConfig {
    ModelConfig {
        embed_dim: 256,
        depth: 2,
        time_steps: t,
        chunk_size: cs,
        in_channels: 2,
        img_size: 64,
        num_classes: k,
        dvs: true,
        tet,
        ..ModelConfig::default()
    }
}

/// SDT + STAtten 8-`c` on ImageNet (224×224, pooling in all four stem stages).
fn imagenet(c: usize) -> ModelConfig {
    ModelConfig {
        embed_dim: c,
        depth: 8,
        img_size: 224,
        num_classes: 1000,
        pooling_stat: "1111".into(),
        ..ModelConfig::default()
    }
}

/// Spikformer `l`-`c` (12 heads) with SSA.
fn spikformer(c: usize, l: usize) -> ModelConfig {
    ModelConfig {
        arch: Arch::Spikformer,
        attention: AttentionKind::Ssa,
        embed_dim: c,
        depth: l,
        num_heads: 12,
        ..ModelConfig::default()
    }
}

/// Named presets: every configuration of the reference repositories.
pub const PRESETS: &[Preset] = &[
    Preset {
        name: "cifar10-2-256",
        description: "SDT+STAtten 2-256, CIFAR-10, T=4, chunk 2 (conf/cifar10/2_256_200E_t4.yml)",
        build: || sdt(256, 2, 10),
    },
    Preset {
        name: "cifar10-2-512",
        description: "SDT+STAtten 2-512, CIFAR-10, T=4, chunk 2 (conf/cifar10/2_512_200E_t4.yml)",
        build: || sdt(512, 2, 10),
    },
    Preset {
        name: "cifar100-2-256",
        description: "SDT+STAtten 2-256, CIFAR-100, T=4, chunk 2",
        build: || sdt(256, 2, 100),
    },
    Preset {
        name: "cifar100-2-512",
        description: "SDT+STAtten 2-512, CIFAR-100, T=4, chunk 2",
        build: || sdt(512, 2, 100),
    },
    Preset {
        name: "imagenet-8-512",
        description: "SDT+STAtten 8-512, ImageNet 224, T=4, chunk 2, pooling 1111",
        build: || imagenet(512),
    },
    Preset {
        name: "imagenet-8-768",
        description: "SDT+STAtten 8-768, ImageNet 224, T=4, chunk 2, pooling 1111",
        build: || imagenet(768),
    },
    Preset {
        name: "cifar10dvs-2-256-t10",
        description: "SDT+STAtten 2-256, CIFAR10-DVS 64px, T=10, chunk 5, TET",
        build: || dvs(10, 5, 10, true),
    },
    Preset {
        name: "cifar10dvs-2-256-t16",
        description: "SDT+STAtten 2-256, CIFAR10-DVS 64px, T=16, chunk 4, TET",
        build: || dvs(16, 4, 10, true),
    },
    Preset {
        name: "ncaltech101-2-256-t10",
        description: "SDT+STAtten 2-256, N-Caltech101 64px, T=10, chunk 5",
        build: || dvs(10, 5, 101, false),
    },
    Preset {
        name: "ncaltech101-2-256-t16",
        description: "SDT+STAtten 2-256, N-Caltech101 64px, T=16, chunk 4",
        build: || dvs(16, 4, 101, false),
    },
    Preset {
        name: "spikformer-cifar10-4-384",
        description: "Spikformer 4-384 (12 heads), CIFAR-10, T=4, SSA",
        build: || spikformer(384, 4),
    },
    Preset {
        name: "spikformer-imagenet-8-768",
        description: "Spikformer-style 8-768 (conv SPS pooling 1111), ImageNet, T=4, SSA",
        build: || ModelConfig {
            img_size: 224,
            num_classes: 1000,
            pooling_stat: "1111".into(),
            ..spikformer(768, 8)
        },
    },
];

/// The preset of this name (no suffix), or an error listing the names.
pub(super) fn find(name: &str) -> Result<&'static Preset> {
    PRESETS.iter().find(|p| p.name == name).ok_or_else(|| {
        let names: Vec<&str> = PRESETS.iter().map(|p| p.name).collect();
        Error::config(
            "model.preset",
            format!("unknown preset `{name}`; known: {}", names.join(", ")),
        )
    })
}
