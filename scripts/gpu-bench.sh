#!/usr/bin/env bash
# statten and the PyTorch reference side by side, in one run, on the same workloads: training
# throughput (synthetic data, forward + loss + backward + AdamW) of the three reference anchors,
# images/s, memory and the ratio, naming the GPU; then the CIFAR-10 step's kernel profile.
#
#   cargo build --release && scripts/gpu-bench.sh                # on the GPU machine itself
#   STATTEN_BIN=/path/to/statten scripts/gpu-bench.sh            # a binary built elsewhere
#
# The reference: ../shared/reference (or a copy in .ref/, as ../shared/reference/README.md says
# for the GPU machines: `pip install --no-deps --no-index .ref/wheels/*.whl` once), run with
# REF_PYTHON (default python3) on REF_DEVICE (cuda where nvidia-smi answers, else cpu) with
# SpikingJelly's REF_BACKEND (cupy on cuda, else torch), fp32 and with --amp on cuda (REF_AMP=0: fp32 only;
# REF=0: statten alone).
#
# Environment: STATTEN_BIN (default target/release/statten, else `statten` on PATH), or
# STATTEN_BINS for several builds side by side as LABEL=PATH words (e.g. "wgsl=statten
# spirv=statten-vulkan", the second built with `--features vulkan`); PRECISIONS (statten's
# --precision values, default "f32 f16" on a GPU, "f32" on the CPU); DEVICE
# (statten's, default wgpu), ITERS (timed steps, default 10), WARMUP (untimed steps: shader
# compilation and autotuning, default 3), WORKLOADS (default "cifar10-2-512:64
# imagenet-8-768:32 cifar10dvs-2-256-t16:16", preset:batch), THREADS (CPU threads of both, default
# 1 on a GPU, all cores on the CPU), PROFILE (1, the default: the first workload's kernel profile
# on wgpu, per build; 0: not). A machine without the Vulkan loader needs libvulkan1 (Debian/Ubuntu).
set -uo pipefail
cd "$(dirname "$0")/.."

BIN="${STATTEN_BIN:-}"
if [ -z "$BIN" ]; then
  if [ -x target/release/statten ]; then BIN=target/release/statten
  elif [ -n "${CARGO_TARGET_DIR:-}" ] && [ -x "$CARGO_TARGET_DIR/release/statten" ]; then BIN="$CARGO_TARGET_DIR/release/statten"
  else BIN=statten
  fi
fi
BINS="${STATTEN_BINS:-statten=$BIN}"
DEVICE="${DEVICE:-wgpu}"
ITERS="${ITERS:-10}"
WARMUP="${WARMUP:-3}"
WORKLOADS="${WORKLOADS:-cifar10-2-512:64 imagenet-8-768:32 cifar10dvs-2-256-t16:16}"
if command -v nvidia-smi >/dev/null && nvidia-smi -L >/dev/null 2>&1; then
  GPU="$(nvidia-smi --query-gpu=name --format=csv,noheader | head -1)"
  REF_DEVICE="${REF_DEVICE:-cuda}"
else
  GPU="no NVIDIA GPU"
  REF_DEVICE="${REF_DEVICE:-cpu}"
fi
if [ "$REF_DEVICE" = cpu ]; then
  THREADS="${THREADS:-$(nproc)}"; REF_BACKEND="${REF_BACKEND:-torch}"
else
  THREADS="${THREADS:-1}"; REF_BACKEND="${REF_BACKEND:-cupy}"
fi
REF_DIR="${REF_DIR:-}"
if [ -z "$REF_DIR" ]; then
  if [ -f .ref/bench_torch.py ]; then REF_DIR=.ref; else REF_DIR=../shared/reference; fi
fi
REF_PYTHON="${REF_PYTHON:-python3}"
# autocast is CUDA's: on the CPU the reference's --amp runs fp32.
if [ "$REF_DEVICE" = cpu ]; then REF_AMP="${REF_AMP:-0}"; else REF_AMP="${REF_AMP:-1}"; fi
if [ "$REF_DEVICE" = cpu ]; then PRECISIONS="${PRECISIONS:-f32}"; else PRECISIONS="${PRECISIONS:-f32 f16}"; fi

if [ "$DEVICE" = wgpu ] && ! ldconfig -p 2>/dev/null | grep -q libvulkan; then
  echo "warning: no libvulkan in the loader cache; wgpu may find no adapter" >&2
fi
echo "GPU: $GPU; statten on $DEVICE ($BINS; precisions $PRECISIONS), the reference on $REF_DEVICE (backend $REF_BACKEND); $WARMUP warm-up + $ITERS timed steps, $THREADS CPU threads"
command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader

status=0
# images/s and memory of a `statten bench --train` or `bench_torch.py` line.
ips() { grep -oE '[0-9.]+ images/s' <<<"$1" | head -1 | cut -d' ' -f1; }
mem() { grep -oE '(device pool|peak RSS|peak GPU memory) [0-9.]+ [A-Za-z]+' <<<"$1" | head -1; }
ratio() { [ -n "$1" ] && [ -n "$2" ] && awk -v a="$1" -v b="$2" 'BEGIN { if (b > 0) printf "%.2f×", a / b; else print "-" }' || echo "-"; }

rows=()
for w in $WORKLOADS; do
  preset="${w%%:*}"; batch="${w##*:}"
  r_out=""; a_out=""
  if [ "${REF:-1}" = 1 ]; then
    echo "== reference $preset batch $batch fp32"
    r_out="$(cd "$REF_DIR" && STATTEN_REF_DEVICE="$REF_DEVICE" STATTEN_REF_BACKEND="$REF_BACKEND" STATTEN_REF_WARMUP="$WARMUP" "$REF_PYTHON" bench_torch.py "$preset" "$batch" "$ITERS" "$THREADS" 2>&1)" || status=1
    echo "$r_out" | tail -3
    if [ "$REF_AMP" = 1 ]; then
      echo "== reference $preset batch $batch amp"
      a_out="$(cd "$REF_DIR" && STATTEN_REF_AMP=1 STATTEN_REF_DEVICE="$REF_DEVICE" STATTEN_REF_BACKEND="$REF_BACKEND" STATTEN_REF_WARMUP="$WARMUP" "$REF_PYTHON" bench_torch.py "$preset" "$batch" "$ITERS" "$THREADS" 2>&1)" || status=1
      echo "$a_out" | tail -3
    fi
  fi
  r="$(ips "$r_out")"; a="$(ips "$a_out")"
  for v in $BINS; do
    label="${v%%=*}"; bin="${v#*=}"
    for prec in $PRECISIONS; do
      echo "== statten ($label) $preset batch $batch $prec"
      s_out="$("$bin" bench --device "$DEVICE" --threads "$THREADS" --iters "$ITERS" --warmup "$WARMUP" --train "$preset" --batch "$batch" --precision "$prec" 2>&1)" || status=1
      echo "$s_out"
      compiler="$(grep -oE 'wgpu<[a-z]+>' <<<"$s_out" | head -1)"
      s="$(ips "$s_out")"
      rows+=("$(printf '| %s b%s | %s %s | %s | %s | %s | %s | %s | %s | %s | %s |' "$preset" "$batch" "$label" "${compiler:-}" "$prec" "${s:--}" "${r:--}" "${a:--}" "$(ratio "$s" "$r")" "$(ratio "$s" "$a")" "$(mem "$s_out")" "$(mem "$r_out")")")
    done
  done
done

echo
echo "side by side on $GPU (statten on $DEVICE; the reference on $REF_DEVICE, $REF_BACKEND LIF), images/s:"
echo "| workload | statten build | precision | statten | reference fp32 | reference amp | statten / ref fp32 | statten / ref amp | statten memory | reference memory (fp32) |"
echo "|---|---|---|---|---|---|---|---|---|---|"
printf '%s\n' "${rows[@]}"

if [ "${PROFILE:-1}" = 1 ] && [ "$DEVICE" = wgpu ]; then
  first="${WORKLOADS%% *}"
  for v in $BINS; do
    for prec in $PRECISIONS; do
      echo "== kernel profile of statten (${v%%=*}) ${first%%:*} step, batch ${first##*:}, $prec"
      "${v#*=}" bench --device wgpu --threads "$THREADS" --iters "$ITERS" --warmup "$WARMUP" --train "${first%%:*}" --batch "${first##*:}" --precision "$prec" --profile || status=1
    done
  done
fi
exit "$status"
