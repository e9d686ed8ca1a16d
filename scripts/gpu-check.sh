#!/usr/bin/env bash
# The CUDA checks, in one go on a GPU machine (the lent device of the tool library, or any box
# with an NVIDIA driver >= 580 and PyTorch): run scripts/build-cuda.sh where cargo is, carry .gpu/
# and run this from the repository root. Each step has its own time limit and a failure does not
# stop the others; the exit status counts the failed steps.
#   1. crates/sweep-train/tests/cuda.rs: fake-quant kernels bit for bit against the CPU, the
#      quantised-gradient op, training steps on CUDA against the CPU (fp32, e4m3, e2m1, bf16);
#   2. `sweep bench train` beside scripts/torch_reference.py on the same GPU, two shapes;
#   3. the precision smoke sweep on CUDA against the same sweep on the CPU, then on CUDA killed with
#      SIGKILL halfway and resumed, against the uninterrupted CUDA run.
# Writes log.txt, bench.jsonl and e2e.txt under $OUT (default /tmp/gpu-check).
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-/tmp/gpu-check}
mkdir -p "$OUT"
exec > >(tee "$OUT/log.txt") 2>&1
FAILED=0
step() { # step NAME SECONDS COMMAND...
  local name=$1 secs=$2; shift 2
  echo "== $name ($(date +%T))"
  local t0=$SECONDS
  timeout "$secs" "$@"; local rc=$?
  echo "== $name: rc $rc, $((SECONDS - t0)) s"
  [ $rc -eq 0 ] || FAILED=$((FAILED + 1))
  return $rc
}

. scripts/gpu-env.sh
[ -x $W/sweep ] && [ -x $W/cuda-tests ] || exit 90
nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.sm --format=csv,noheader
ldd $W/sweep | grep -E "not found|libcu|nvrtc|curand" | sed 's/^/  /'
python3 -c 'import torch; print("torch", torch.__version__, torch.cuda.get_device_name(0))'

step "cuda tests" 150 $W/cuda-tests --test-threads 1

bench_c() { # tag, sweep bench args... (KERNELS=0 in the environment: composed candle ops)
  local tag=$1; shift
  local r; r=$(SWEEP_CUDA_KERNELS=${KERNELS:-1} timeout 60 $W/sweep bench train --device cuda:0 --steps 20 --warmup 5 --json "$@") || { echo "bench $tag failed"; FAILED=$((FAILED + 1)); return; }
  echo "{\"tag\": \"$tag\", \"impl\": \"candle\", \"result\": $r}" | tee -a "$OUT/bench.jsonl"
}
bench_t() {
  local tag=$1; shift
  local r; r=$(timeout 90 python3 scripts/torch_reference.py --device cuda --steps 20 --warmup 5 "$@") || { echo "torch $tag failed"; FAILED=$((FAILED + 1)); return; }
  echo "{\"tag\": \"$tag\", \"impl\": \"torch\", \"result\": $r}" | tee -a "$OUT/bench.jsonl"
}
SMALL="--d-model 256 --layers 4 --heads 4 --ctx 128 --batch 16 --vocab 4096 --ffn swiglu"
MEDIUM="--d-model 1024 --layers 8 --heads 16 --ctx 512 --batch 16 --vocab 32768 --ffn swiglu"
echo "== bench ($(date +%T))"
for shape in SMALL MEDIUM; do
  args=${!shape}
  bench_c "$shape fp32" $args
  KERNELS=0 bench_c "$shape fp32 composed" $args
  bench_c "$shape bf16" $args --precision bf16
  KERNELS=0 bench_c "$shape bf16 composed" $args --precision bf16
  bench_c "$shape fp8-e4m3" $args --precision fp8-e4m3
  bench_t "$shape fp32 eager" $args
  bench_t "$shape fp32 sdpa" $args --sdpa
  bench_t "$shape bf16 sdpa" $args --sdpa --precision bf16
done
python3 - "$OUT/bench.jsonl" <<'PY'
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
print(f"{'shape/precision':24} {'impl':7} {'tok/s':>10} {'step ms':>9} {'fwd':>7} {'bwd':>7} {'opt':>7} {'loss':>7}")
for r in rows:
    x = r["result"]
    print(f"{r['tag']:24} {r['impl']:7} {x['tokens_per_second']:10.0f} {x['step_ms']:9.2f} {x['forward_ms']:7.2f} {x['backward_ms']:7.2f} {x['optimizer_ms']:7.2f} {x['final_loss']:7.3f}")
PY

# End to end: the precision smoke sweep on CUDA and on the CPU; then on CUDA, killed and resumed.
E=/tmp/sweep-e2e
rm -rf $E
SMOKE=($W/sweep run configs/precision.toml --profile smoke --no-progress --out)
t0=$SECONDS
step "precision smoke on cuda" 120 "${SMOKE[@]}" $E/gpu --devices cuda:0 2> $E.gpu.log || tail -20 $E.gpu.log
T=$((SECONDS - t0))
step "precision smoke on cpu" 120 "${SMOKE[@]}" $E/cpu --devices cpu 2> $E.cpu.log || tail -20 $E.cpu.log
echo "== kill and resume on cuda: SIGKILL after $((T / 2 + 1)) s"
"${SMOKE[@]}" $E/resumed --devices cuda:0 2> $E.resumed.log & p=$!
sleep $((T / 2 + 1)); kill -9 $p; wait $p 2>/dev/null
echo "killed at: $(grep -c 'point done' $E.resumed.log) points done"
step "resume on cuda" 120 "${SMOKE[@]}" $E/resumed --devices cuda:0 2>> $E.resumed.log || tail -20 $E.resumed.log
python3 - $E > "$OUT/e2e.txt" <<'PY'
import json, os, sys
root = sys.argv[1]
def results(name):
    d = os.path.join(root, name, "precision", "points")
    out = {}
    for p in sorted(os.listdir(d)) if os.path.isdir(d) else []:
        f = os.path.join(d, p, "result.json")
        if os.path.exists(f):
            r = json.load(open(f))
            losses = [json.loads(l).get("train_loss") for l in open(os.path.join(d, p, "metrics.jsonl"))]
            out[p] = (r["precision"], r["label"], r["final"]["loss"], r["final"]["device"], losses)
    return out
gpu, cpu, res = results("gpu"), results("cpu"), results("resumed")
print(f"points: gpu {len(gpu)}, cpu {len(cpu)}, resumed {len(res)}")
worst = 0.0
for p, (prec, label, loss, dev, _) in gpu.items():
    c = cpu.get(p)
    rel = abs(loss - c[2]) / c[2] if c else float("nan")
    worst = max(worst, rel)
    same = res.get(p) is not None and res[p][2] == loss and res[p][4] == gpu[p][4]
    print(f"{label:6} {prec:10} cuda {loss:.6f} ({dev})  cpu {c[2] if c else float('nan'):.6f}  rel {rel:.2e}  resumed bit-identical: {same}")
print(f"largest relative difference cuda/cpu: {worst:.2e}")
ok = len(gpu) == len(cpu) == len(res) > 0 and all(res.get(p) and res[p][2] == v[2] and res[p][4] == v[4] for p, v in gpu.items())
print("resume on cuda equals the uninterrupted run:", ok)
PY
cat "$OUT/e2e.txt"
for f in $E.gpu.log $E.cpu.log; do echo "$f: $(head -1 $f | cut -c1-24) .. $(tail -1 $f | cut -c1-24)"; done
# Where the time goes now: one step of the medium shape with 2 layers, kernel by kernel (ncu).
if [ "${PROFILE:-1}" = 1 ] && command -v ncu > /dev/null; then
  timeout 90 ncu --clock-control none --metrics gpu__time_duration.sum --csv --page raw --print-units base --log-file "$OUT/ncu-candle-fp32.csv" \
    $W/sweep bench train --device cuda:0 --steps 1 --warmup 0 --json ${MEDIUM/--layers 8/--layers 2} > /dev/null
fi
echo "== failed steps: $FAILED"
exit $FAILED
