#!/usr/bin/env bash
# Where a training step's GPU time goes, kernel by kernel: Nsight Compute (ncu) times every
# kernel of one `sweep bench train` step and of one step of scripts/torch_reference.py on the same
# shape, and the totals by kernel name are printed side by side. Needs .gpu/ from
# scripts/build-cuda.sh and a GPU machine with ncu (the lent device has it). Usage:
#   scripts/gpu-profile.sh [bench arguments, default: the d 1024, ctx 512, vocab 32768 shape with 2 layers]
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-/tmp/gpu-profile}
mkdir -p "$OUT"
. scripts/gpu-env.sh
SHAPE=${*:-"--d-model 1024 --layers 2 --heads 16 --ctx 512 --batch 16 --vocab 32768 --ffn swiglu"}
NCU=(ncu --clock-control none --metrics gpu__time_duration.sum --csv --page raw --print-units base)
for prec in fp32 bf16; do
  timeout 240 "${NCU[@]}" --log-file "$OUT/candle-$prec.csv" $W/sweep bench train --device cuda:0 --steps 1 --warmup 0 --json $SHAPE --precision $prec
  timeout 240 "${NCU[@]}" --log-file "$OUT/torch-$prec.csv" python3 scripts/torch_reference.py --device cuda --steps 1 --warmup 0 --sdpa $SHAPE --precision $prec
done
python3 - "$OUT" <<'PY'
import csv, collections, os, re, sys
out = sys.argv[1]
def load(name):
    path = os.path.join(out, name)
    if not os.path.exists(path):
        return None
    lines = [l for l in open(path) if l.startswith('"')]
    rows = list(csv.reader(lines))
    if not rows:
        return None
    head = rows[0]
    ki, ti = head.index("Kernel Name"), head.index("gpu__time_duration.sum")
    agg = collections.defaultdict(lambda: [0.0, 0])
    for r in rows[2:]:
        try:
            t = float(r[ti].replace(",", ""))
        except ValueError:
            continue
        name = re.sub(r"\(.*", "", r[ki])[:60]
        agg[name][0] += t / 1e6
        agg[name][1] += 1
    return agg
for prec in ("fp32", "bf16"):
    for impl in ("candle", "torch"):
        agg = load(f"{impl}-{prec}.csv")
        if agg is None:
            print(f"== {impl} {prec}: no profile"); continue
        total = sum(v[0] for v in agg.values())
        print(f"== {impl} {prec}: {total:.1f} ms in {sum(v[1] for v in agg.values())} kernels (whole run: step and set-up)")
        for name, (ms, n) in sorted(agg.items(), key=lambda kv: -kv[1][0])[:22]:
            print(f"   {ms:8.2f} ms {n:6d}  {name}")
PY
