//! A custom small spiking transformer built from statten-core's blocks alone (no facade, no
//! statten-data or statten-train), trained for a few steps on Fashion-MNIST with Burn's AdamW.
//!
//! ```text
//! sudo apt-get install dataset-fashion-mnist     # or pass the folder of the four .gz files
//! cargo run --release -p statten-core --example custom_model [FASHION_MNIST_DIR]
//! ```
//!
//! The model: a 3×3 conv stem → BN → LIF, then one Spike-driven Transformer encoder block
//! (STAtten attention over chunks of 2 timesteps + spiking MLP), global average pooling, a LIF
//! and a linear head; the logits are averaged over T.

use std::io::Read;
use std::path::{Path, PathBuf};

use burn::module::Module;
use burn::nn::conv::{Conv2d, Conv2dConfig};
use burn::nn::{Linear, LinearConfig, PaddingConfig2d};
use burn::optim::{AdamWConfig, GradientsParams};
use burn::tensor::activation::log_softmax;
use burn::tensor::{Device, Int, Tensor, TensorData};
use statten_core::attention::{AttentionKind, MsAttentionConfig};
use statten_core::layers::{merged, TorchBatchNorm};
use statten_core::models::SdtBlock;
use statten_core::{MultiStepNeuron, NeuronConfig};

const T: usize = 4;
const DIM: usize = 32;

/// Conv stem (stride 2 twice: 28 → 7) + one SDT block + head.
#[derive(Module, Debug)]
struct TinySpikingTransformer {
    stem: Conv2d,
    stem_bn: TorchBatchNorm,
    stem_lif: MultiStepNeuron,
    block: SdtBlock,
    head_lif: MultiStepNeuron,
    head: Linear,
}

impl TinySpikingTransformer {
    fn new(device: &Device) -> statten_core::Result<Self> {
        let neuron = NeuronConfig::default(); // LIF, tau 2, threshold 1, sigmoid surrogate
        let attn = MsAttentionConfig {
            dim: DIM,
            num_heads: 4,
            kind: AttentionKind::Statten,
            chunk_size: 2,
            time_steps: T,
            grid_h: 7,
            neuron,
            ..Default::default()
        };
        Ok(Self {
            stem: Conv2dConfig::new([1, DIM], [3, 3])
                .with_stride([4, 4])
                .with_padding(PaddingConfig2d::Explicit(1, 1, 1, 1))
                .init(device),
            stem_bn: TorchBatchNorm::new(DIM, device),
            stem_lif: neuron.init("stem_lif", device),
            block: SdtBlock::new(&attn, 2, "block.0", device)?,
            head_lif: neuron.init("head_lif", device),
            head: LinearConfig::new(DIM, 10).init(device),
        })
    }

    /// `[B, 1, 28, 28]` images → logits `[B, 10]` (direct encoding: the image at every step).
    fn forward(&self, images: Tensor<4>) -> Tensor<2> {
        let [b, c, h, w] = images.dims();
        let x: Tensor<5> = images.unsqueeze::<5>().expand([T, b, c, h, w]);
        // Per-timestep layers run on [T·B, …] through `merged`.
        let x = merged(x, |z| self.stem_bn.forward(self.stem.forward(z)));
        let x = self.stem_lif.forward(x);
        let x = self.block.forward(x); // [T, B, C, 7, 7]
        let [t, b, c, h, w] = x.dims();
        let feat: Tensor<3> = x.reshape([t, b, c, h * w]).mean_dim(3).reshape([t, b, c]);
        let logits: Tensor<3> = self.head.forward(self.head_lif.forward(feat));
        logits.mean_dim(0).reshape([b, 10])
    }
}

/// A gzipped IDX file's payload after its header of `header` bytes.
fn read_idx(path: &Path, header: usize) -> Vec<u8> {
    let file = std::fs::File::open(path).unwrap_or_else(|e| {
        panic!(
            "{}: {e} (install Debian's dataset-fashion-mnist or pass the folder)",
            path.display()
        )
    });
    let mut bytes = Vec::new();
    flate2::read::GzDecoder::new(file)
        .read_to_end(&mut bytes)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    assert!(bytes.len() > header, "{}: truncated", path.display());
    bytes.split_off(header)
}

fn main() -> statten_core::Result<()> {
    let dir = std::env::args()
        .nth(1)
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/usr/share/datasets/fashion-mnist"));
    let images = read_idx(&dir.join("train-images-idx3-ubyte.gz"), 16);
    let labels = read_idx(&dir.join("train-labels-idx1-ubyte.gz"), 8);
    let (n_img, batch, steps) = (28 * 28, 64, 150);

    let device = Device::flex().autodiff();
    device.seed(7);
    let mut model = TinySpikingTransformer::new(&device)?;
    let mut opt = AdamWConfig::new().with_weight_decay(1e-2).init();
    for step in 0..steps {
        let lo = step * batch;
        let pixels: Vec<f32> = images[lo * n_img..(lo + batch) * n_img]
            .iter()
            .map(|&p| (p as f32 / 255.0 - 0.2860) / 0.3530)
            .collect();
        let y: Vec<i64> = labels[lo..lo + batch].iter().map(|&l| l as i64).collect();
        let x = Tensor::<4>::from_data(TensorData::new(pixels, [batch, 1, 28, 28]), &device);
        let y = Tensor::<1, Int>::from_data(TensorData::new(y.clone(), [batch]), &device);
        let logits = model.forward(x);
        let hits = logits
            .clone()
            .argmax(1)
            .reshape([batch])
            .equal(y.clone())
            .int()
            .sum()
            .into_scalar::<i64>();
        // Cross-entropy: −mean log p(label).
        let loss = -log_softmax(logits, 1)
            .gather(1, y.reshape([batch, 1]))
            .mean();
        let value = loss.clone().into_scalar::<f32>();
        let grads = GradientsParams::from_grads(loss.backward(), &model);
        model = opt.step(5e-3, model, grads);
        if step % 25 == 0 || step + 1 == steps {
            println!(
                "step {:>2}/{steps}  loss {value:.4}  batch accuracy {:>3.0} %",
                step + 1,
                100.0 * hits as f64 / batch as f64
            );
        }
    }
    Ok(())
}
