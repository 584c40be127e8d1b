//! The CubeCL kernels (GPUs through wgpu): the multi-step LIF.

pub(crate) mod lif;
