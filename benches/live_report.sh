#!/usr/bin/env bash
# Cost of the live report: the same 2000-point simulated sweep (20 sizes x 100 token budgets,
# simulate trainer, no delay per point, no [fit]) run with the report rewritten as points finish
# (the default) and with --no-live-report, alternating, REPEATS times each: wall and CPU time of
# the whole `sweep run` (the final report is written in both), the load average beside each run,
# and the live report's own count of rewrites and seconds.
# The sweep directory is on /dev/shm by default (DIR=... to choose): with no disk latency the
# sweep is as fast as it gets, the worst case for the report's share; on a disk shared with other
# jobs the fsync waits of the sweep itself dominate and vary by tens of percent between runs.
# Usage: benches/live_report.sh [repeats]   (DIR=/some/dir to run elsewhere)
set -euo pipefail
cd "$(dirname "$0")/.."
REPEATS=${1:-3}
cargo build --release --quiet
BASE=${DIR:-/dev/shm}
WORK=$(mktemp -d "$BASE/live-report-bench.XXXXXX")
trap 'rm -rf "$WORK"' EXIT
python3 - "$WORK/big.toml" <<'PY'
import sys
sizes = [round(1e6 * (100 ** (i / 19))) for i in range(20)]
ks = [round(5 * (40 ** (j / 99)), 3) for j in range(100)]
open(sys.argv[1], "w").write(f"""[sweep]
name = "big"
seed = 1
trainer = "simulate"

[grid]
model = {sizes}
tokens_per_param = {ks}

[model]
context = 256

[train]
batch_size = 256
log_every = 100
checkpoint_every = 100000

[simulate]
noise = 0.005
seconds_per_point = 0.0
""")
PY
for i in $(seq "$REPEATS"); do
  for MODE in live off; do
    OUT="$WORK/$MODE-$i"
    FLAG=()
    [ "$MODE" = off ] && FLAG=(--no-live-report)
    LOAD=$(cut -d' ' -f1 /proc/loadavg)
    TIMEFORMAT='%R %U %S'
    T=$( { time ./target/release/sweep run "$WORK/big.toml" --out "$OUT" --no-progress "${FLAG[@]}" 2> "$OUT.log" >/dev/null; } 2>&1 )
    read -r WALL USER SYS <<< "$T"
    LIVE=$(grep -o 'live report: .*' "$OUT.log" || echo "live report: off")
    DONE=$(grep -o '[0-9]*/[0-9]* done' "$OUT.log" | tail -1)
    printf '%-4s run %d: wall %6.2f s, cpu %6.2f s user + %5.2f s sys  (%s; load %s; %s)\n' \
      "$MODE" "$i" "$WALL" "$USER" "$SYS" "$DONE" "$LOAD" "$LIVE"
    rm -rf "$OUT"
  done
done
