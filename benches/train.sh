#!/usr/bin/env bash
# Trainer speed: `sweep bench train` (candle) beside scripts/torch_reference.py (PyTorch) on the
# reference shape (d 256, 4 layers, 4 heads, ctx 128, batch 16, vocab 4096, f32), GELU and SwiGLU,
# back to back on the same machine, with the load average printed beside each pair.
# PyTorch runs three times: eager attention with OpenMP's default (spinning) wait policy, the same
# with OMP_WAIT_POLICY=PASSIVE (much faster when other processes share the cores), and with its
# fused scaled_dot_product_attention (--sdpa); the ratio uses the fastest of the three.
# Usage: benches/train.sh [threads] [steps]
set -euo pipefail
cd "$(dirname "$0")/.."
THREADS=${1:-2}
STEPS=${2:-10}
cargo build --release --quiet
if ! .venv-bench/bin/python -c "import torch" 2>/dev/null; then
  python3 -m venv .venv-bench
  .venv-bench/bin/pip install --quiet numpy torch
fi
ARGS=(--threads "$THREADS" --steps "$STEPS" --warmup 3)
for FFN in gelu swiglu; do
  echo "== $FFN, $THREADS threads, load average: $(cut -d' ' -f1-3 /proc/loadavg)"
  C=$(./target/release/sweep bench train "${ARGS[@]}" --ffn "$FFN" --json)
  T1=$(.venv-bench/bin/python scripts/torch_reference.py "${ARGS[@]}" --ffn "$FFN")
  T2=$(OMP_WAIT_POLICY=PASSIVE .venv-bench/bin/python scripts/torch_reference.py "${ARGS[@]}" --ffn "$FFN")
  T3=$(.venv-bench/bin/python scripts/torch_reference.py "${ARGS[@]}" --ffn "$FFN" --sdpa)
  echo "candle:                 $C"
  echo "pytorch:                $T1"
  echo "pytorch (omp passive):  $T2"
  echo "pytorch (sdpa):         $T3"
  python3 - "$C" "$T1" "$T2" "$T3" <<'PY'
import json, sys
c, *ts = (json.loads(a) for a in sys.argv[1:])
t = max(x["tokens_per_second"] for x in ts)
print(f"candle {c['tokens_per_second']:.0f} tok/s, pytorch {t:.0f} tok/s: ratio candle/pytorch {c['tokens_per_second'] / t:.2f}")
PY
  echo "   load average after: $(cut -d' ' -f1-3 /proc/loadavg)"
done
