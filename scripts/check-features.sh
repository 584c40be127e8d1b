#!/usr/bin/env bash
# Builds (`cargo check`) every feature combination a user can choose, so that none of them
# breaks unnoticed: each backend alone (flex, wgpu, ndarray), with and without the PyTorch
# `.pth` reader, for the library crates (statten-train pulls statten-core with the same
# features), and the facade with and without `mpi`. CI runs it from `.ci/run`.
#
# Uses its own target folder (each combination checks Burn with other features, which would
# otherwise invalidate the test build): CHECK_TARGET_DIR, default ~/.cache/statten/target-check.
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CHECK_TARGET_DIR:-$HOME/.cache/statten/target-check}"
# A warning in one combination (an import only another backend uses) fails it too.
export RUSTFLAGS="${RUSTFLAGS:-} -D warnings"

combos=()
for backend in flex wgpu ndarray; do
  combos+=("-p statten-train --no-default-features --features $backend")
  combos+=("-p statten-train --no-default-features --features $backend,pytorch")
done
combos+=("-p statten" "-p statten --features mpi" "-p statten --features vulkan")

failed=()
for c in "${combos[@]}"; do
  echo "== cargo check $c"
  start=$SECONDS
  # shellcheck disable=SC2086
  if cargo check --quiet $c --lib --bins; then
    echo "   ok ($((SECONDS - start)) s)"
  else
    failed+=("$c")
  fi
done
if [ "${#failed[@]}" -gt 0 ]; then
  printf 'feature combinations that do not build:\n' >&2
  printf '  cargo check %s\n' "${failed[@]}" >&2
  exit 1
fi
echo "all ${#combos[@]} feature combinations build"
