#!/usr/bin/env bash
# Builds `sweep` with --features cuda on a machine without a system CUDA toolkit or GPU driver,
# from PyPI's CUDA 13.0 wheels (see ../shared/reference/candle.md). The binary goes to
# target-cuda/release/sweep, the CUDA test binaries (crates/sweep-train/tests/cuda.rs and
# cuda_block.rs) beside it, and stripped, compressed copies of all three into .gpu/ for
# scripts/gpu-check.sh on a GPU machine.
# Usage: scripts/build-cuda.sh [compute capability, default 90 = H100/H200]
set -euo pipefail
cd "$(dirname "$0")/.."
CAP=${1:-90}
VENV=.venv-cuda
if [ ! -f "$VENV/bin/nvcc-ready" ]; then
  python3 -m venv "$VENV"
  "$VENV/bin/pip" install --quiet "nvidia-cuda-nvcc==13.0.*" "nvidia-cuda-crt==13.0.*" "nvidia-nvvm==13.0.*" \
    "nvidia-cuda-runtime==13.0.*" "nvidia-cuda-nvrtc==13.0.*" "nvidia-cuda-cccl==13.0.*" "nvidia-cublas==13.0.*" nvidia-curand
  touch "$VENV/bin/nvcc-ready"
fi
ROOT=$(realpath "$VENV"/lib/python3*/site-packages/nvidia/cu13)
# The linker wants unversioned names.
for l in cudart cublas cublasLt curand nvrtc; do
  f=$(cd "$ROOT/lib" && ls lib$l.so.* 2>/dev/null | head -1)
  [ -n "$f" ] && ln -sf "$f" "$ROOT/lib/lib$l.so"
done
export CUDA_ROOT=$ROOT CUDA_HOME=$ROOT PATH=$ROOT/bin:$PATH CUDA_COMPUTE_CAP=$CAP LIBRARY_PATH=$ROOT/lib
# No wheel ships the driver library: link against a stub with the driver's soname (the real
# libcuda.so.1 is used at run time). The stub grows by the symbols the linker asks for.
STUB_SYMS=$VENV/stub-symbols.txt
touch "$STUB_SYMS"; grep -q '^cuInit$' "$STUB_SYMS" || echo cuInit >> "$STUB_SYMS"
for attempt in 1 2 3 4 5 6 7 8; do
  sed 's/.*/void &(void){}/' "$STUB_SYMS" > "$VENV/stub.c"
  gcc -shared -Wl,-soname,libcuda.so.1 -o "$ROOT/lib/libcuda.so" "$VENV/stub.c"
  if cargo build --release --features cuda --target-dir target-cuda 2> "$VENV/build.log" &&
    cargo test --release --features cuda --target-dir target-cuda -p sweep-train --test cuda --test cuda_block --no-run --message-format=json 2>> "$VENV/build.log" > "$VENV/test-build.json"; then
    test_bin() { python3 -c 'import json,sys; print([j["executable"] for j in map(json.loads, open(sys.argv[1])) if j.get("reason") == "compiler-artifact" and j.get("executable") and j["target"]["name"] == sys.argv[2]][-1])' "$VENV/test-build.json" "$1"; }
    TEST_BIN=$(test_bin cuda)
    BLOCK_BIN=$(test_bin cuda_block)
    # Stripped and compressed for the trip to a GPU machine (scripts/gpu-check.sh unpacks them).
    mkdir -p .gpu
    for pair in "target-cuda/release/sweep:sweep" "$TEST_BIN:cuda-tests" "$BLOCK_BIN:cuda-block-tests"; do
      strip -o ".gpu/${pair##*:}" "${pair%%:*}"
      xz -T2 -6 -f ".gpu/${pair##*:}"
    done
    echo "built target-cuda/release/sweep and the CUDA tests ($TEST_BIN, $BLOCK_BIN); packed into .gpu/"
    echo "on a GPU machine: scripts/gpu-check.sh (carry .gpu), or run the binary with"
    echo "  LD_LIBRARY_PATH=<copy of $ROOT/lib without libcuda.so> target-cuda/release/sweep ..."
    exit 0
  fi
  grep -o "undefined symbol: [A-Za-z0-9_]*" "$VENV/build.log" | awk '{print $3}' >> "$STUB_SYMS" || true
  sort -u "$STUB_SYMS" -o "$STUB_SYMS"
  grep -q "undefined symbol" "$VENV/build.log" || { tail -30 "$VENV/build.log"; exit 1; }
done
tail -30 "$VENV/build.log"; exit 1
