#!/usr/bin/env bash
# statten and the PyTorch reference side by side on this machine, in one sitting, at the same
# thread counts: LIF fwd+bwd, one STAtten block fwd+bwd, the CIFAR-10 2-512 training step at
# batch 8 and 64 (median ms, images/s, peak RSS), and the CIFAR10-DVS 2-256 T=16 step at
# batch 16. Run it on an otherwise idle machine; BENCHMARKS.md reports its ratios.
#
#   scripts/cpu-bench-vs-reference.sh [THREADS...]     # default: 1 2
#   ALGS="exact winograd" scripts/cpu-bench-vs-reference.sh 2   # the train steps both ways
#
# Needs a release build (cargo build --release) and the reference's Python environment as
# ../shared/reference/README.md sets it up (REF_PY, default ~/.cache/statten-ref-venv/bin/python).
# The reference code is only run, from ../shared/reference; nothing of it is in this repo.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
BIN="${STATTEN_BIN:-${CARGO_TARGET_DIR:-target}/release/statten}"
REF="${REF_DIR:-$ROOT/../shared/reference}"
PY="${REF_PY:-$HOME/.cache/statten-ref-venv/bin/python}"
B64="${B64:-1}"       # set B64=0 to skip the (slow) batch-64 steps
# statten's CPU convolution algorithms to time the train steps with (space-separated):
# `exact` is the default; `winograd` the opt-in that is not reference-exact.
read -r -a ALGS <<<"${ALGS:-exact}"
threads=("$@"); [ "${#threads[@]}" -gt 0 ] || threads=(1 2)
[ -x "$BIN" ] || { echo "error: no statten binary at $BIN (cargo build --release, or set STATTEN_BIN)" >&2; exit 1; }
[ -x "$PY" ] || { echo "error: no reference Python at $PY (see $REF/README.md, or set REF_PY)" >&2; exit 1; }

block_py=$(mktemp --suffix=.py)
trap 'rm -f "$block_py"' EXIT
cat >"$block_py" <<'PY'
# The reference's MS_SSA_Conv (STAtten) block fwd+bwd on [T=4, B=8, C=512, 8, 8].
import sys, time, torch
from spikingjelly.clock_driven import functional
from module.ms_conv import MS_SSA_Conv
steps, threads = int(sys.argv[1]), int(sys.argv[2])
torch.set_num_threads(threads); torch.manual_seed(0)
m = MS_SSA_Conv(512, num_heads=8, attention_mode="STAtten", chunk_size=2)
x0 = torch.randn(4, 8, 512, 8, 8) + 0.5
def step():
    x = x0.clone().requires_grad_(True)
    y, _, _ = m(x)
    y.sum().backward()
    functional.reset_net(m)
step()
ts = []
for _ in range(steps):
    t0 = time.perf_counter(); step(); ts.append(time.perf_counter() - t0)
ts.sort()
print(f"reference block fwd+bwd threads {threads}: median {ts[len(ts)//2]*1e3:.1f} ms")
PY

ref() { (cd "$REF" && PYTHONPATH=. "$PY" -W ignore "$@" 2>&1 | grep -v -i warn); }
echo "machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs); $(date -u +%F)"
for t in "${threads[@]}"; do
  echo "== threads $t"
  ref bench_torch.py lif 32 10 "$t"
  "$BIN" bench --threads "$t" --only lif,lif-composite --iters 10 --warmup 2
  ref "$block_py" 5 "$t"
  "$BIN" bench --threads "$t" --only block --iters 5 --warmup 1
  ref bench_torch.py cifar10-2-512 8 5 "$t"
  for a in "${ALGS[@]}"; do
    "$BIN" bench --threads "$t" --train cifar10-2-512 --batch 8 --iters 5 --warmup 1 --conv-algorithm "$a"
  done
  if [ "$B64" = 1 ]; then
    ref bench_torch.py cifar10-2-512 64 3 "$t"
    for a in "${ALGS[@]}"; do
      "$BIN" bench --threads "$t" --train cifar10-2-512 --batch 64 --iters 3 --warmup 1 --conv-algorithm "$a"
    done
  fi
done
t="${threads[-1]}"
echo "== DVS, threads $t"
ref bench_torch.py cifar10dvs-2-256-t16 16 3 "$t"
# The harness's DVS workload is pooling 1111, chunk 2 (not the recipe's 0011, chunk 4): the
# same model on both sides.
"$BIN" bench --threads "$t" --train cifar10dvs-2-256-t16 --batch 16 --iters 3 --warmup 1 \
  --set 'model.pooling_stat="1111"' --set model.chunk_size=2
