#!/usr/bin/env bash
# Times the Rust fitter (criterion, benches/fit.rs) and scipy (scripts/fit_reference.py) on the
# same 240-point data set with the same 4500-start grid and objective, and prints the ratio.
set -euo pipefail
cd "$(dirname "$0")/.."
[ -f benches/data/chinchilla_synth.csv ] || python3 scripts/fit_reference.py --generate
cargo bench --bench fit -- --noplot 2>&1 | grep -Ev '^\s*$' | tail -n 20
python3 scripts/fit_reference.py > target/fit_reference.json
python3 - <<'PY'
import json
est = lambda k: json.load(open(f"target/criterion/chinchilla_240_points/{k}/new/estimates.json"))["mean"]["point_estimate"] / 1e9
fit, boot = est("fit_4500_starts"), est("bootstrap_1000_resamples")
ref = json.load(open("target/fit_reference.json"))
print(f"Rust fit (4500 starts, 240 points):   {fit:.3f} s")
print(f"Rust bootstrap (1000 resamples):      {boot:.3f} s")
print(f"scipy L-BFGS-B fit (same grid):        {ref['seconds']:.1f} s  (objective {ref['objective']:.12e})")
print(f"ratio scipy / Rust fit:                {ref['seconds'] / fit:.0f}x")
PY
