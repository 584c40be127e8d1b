#!/usr/bin/env bash
# Training throughput of the three reference anchors on a GPU through wgpu, as one prepared
# run for a GPU machine: synthetic data, forward + loss + backward + AdamW, the median step time
# over the timed steps, images/s and the device memory pool's size. The PyTorch reference on an
# H200 (fp32) trains them at 2,034 / 148 / 324 images/s.
#
#   cargo build --release && scripts/gpu-bench.sh                # on the GPU machine itself
#   STATTEN_BIN=/path/to/statten scripts/gpu-bench.sh            # a binary built elsewhere
#
# Environment: STATTEN_BIN (default target/release/statten, else `statten` on PATH),
# ITERS (timed steps, default 10), WARMUP (untimed steps: shader compilation and autotuning,
# default 3), PROFILE (1, the default: also the CIFAR-10 step's kernel profile, launches and
# time per kind and the ten slowest kernels; 0: not). A machine without the Vulkan loader needs
# libvulkan1 (Debian/Ubuntu).
set -euo pipefail
cd "$(dirname "$0")/.."

BIN="${STATTEN_BIN:-}"
if [ -z "$BIN" ]; then
  if [ -x target/release/statten ]; then BIN=target/release/statten
  elif [ -n "${CARGO_TARGET_DIR:-}" ] && [ -x "$CARGO_TARGET_DIR/release/statten" ]; then BIN="$CARGO_TARGET_DIR/release/statten"
  else BIN=statten
  fi
fi
ITERS="${ITERS:-10}"
WARMUP="${WARMUP:-3}"

if ! ldconfig -p 2>/dev/null | grep -q libvulkan; then
  echo "warning: no libvulkan in the loader cache; wgpu may find no adapter" >&2
fi
command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader

status=0
run() {
  echo "== $*"
  "$BIN" bench --device wgpu --iters "$ITERS" --warmup "$WARMUP" "$@" || status=1
}
run --train cifar10-2-512 --batch 64          # reference: 2,034 images/s
run --train imagenet-8-768 --batch 32         # reference:   148 images/s
run --train cifar10dvs-2-256-t16 --batch 16   # reference:   324 images/s
if [ "${PROFILE:-1}" = 1 ]; then
  run --train cifar10-2-512 --batch 64 --profile   # where the step's time goes, kernel by kind
fi
exit "$status"
