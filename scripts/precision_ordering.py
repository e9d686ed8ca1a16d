#!/usr/bin/env python3
"""Loss ordering of training precisions over paired seeds, from a finished sweep directory.

For every (model, tokens) cell, each precision's final validation loss is paired with fp32's
for the same seed (same initialisation and data order), and the gap loss(format) - loss(fp32)
is summarised over the seeds: mean, standard deviation, and the mean's standard error. The
seed spread of fp32 itself (the standard deviation of its loss over seeds) is printed beside it,
so a gap can be read against the run-to-run noise. Then the expected ordering
fp32 <= mxfp8 <= mxfp6 <= mxfp4/nvfp4 is checked on the paired means, per cell.

    python3 scripts/precision_ordering.py runs/precision            # e.g. after --profile smoke

Standard library only.
"""

import json
import math
import statistics
import sys
from collections import defaultdict
from pathlib import Path

ORDER = [("fp32",), ("mxfp8-e4m3",), ("mxfp6-e3m2", "mxfp6-e2m3"), ("mxfp4", "nvfp4")]


def load(sweep_dir):
    rows = []
    for point_dir in sorted((Path(sweep_dir) / "points").iterdir()):
        result = point_dir / "result.json"
        if not result.exists():
            continue
        point = json.loads((point_dir / "point.json").read_text())
        metrics = json.loads(result.read_text())
        loss = metrics["final"]["loss"]
        rows.append((point["label"], point["tokens"], point["seed"], point["precision"]["name"], loss))
    return rows


def main():
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    rows = load(sys.argv[1])
    by_cell = defaultdict(lambda: defaultdict(dict))  # (model, tokens) -> precision -> seed -> loss
    for model, tokens, seed, precision, loss in rows:
        by_cell[(model, tokens)][precision][seed] = loss
    holds_all, compared = True, 0
    for (model, tokens), table in sorted(by_cell.items()):
        base = table.get("fp32", {})
        if not base:
            print(f"\n{model}, {tokens} tokens: no fp32 run to pair with; skipped")
            continue
        spread = statistics.stdev(base.values()) if len(base) > 1 else float("nan")
        print(f"\n{model}, {tokens} tokens: fp32 loss {statistics.mean(base.values()):.4f}, "
              f"seed spread (sd over {len(base)} seeds) {spread:.4f}")
        print(f"  {'precision':58s} {'mean gap':>9s} {'sd':>8s} {'se':>8s} {'gap/spread':>10s}  per-seed gaps")
        means = {}
        for precision in sorted(table, key=lambda p: statistics.mean(table[p].values())):
            seeds = sorted(set(table[precision]) & set(base))
            gaps = [table[precision][s] - base[s] for s in seeds]
            if not gaps:
                continue
            m = statistics.mean(gaps)
            sd = statistics.stdev(gaps) if len(gaps) > 1 else float("nan")
            se = sd / math.sqrt(len(gaps)) if len(gaps) > 1 else float("nan")
            means[precision] = m
            ratio = m / spread if spread > 0 else float("nan")
            print(f"  {precision:58s} {m:+9.4f} {sd:8.4f} {se:8.4f} {ratio:10.2f}  "
                  + " ".join(f"{g:+.4f}" for g in gaps))
        # The ordering on the paired means: each group's worst must not beat the next group's best.
        levels = [[means[p] for p in group if p in means] for group in ORDER]
        levels = [lv for lv in levels if lv]
        ok = all(max(a) <= min(b) for a, b in zip(levels, levels[1:]))
        holds_all &= ok
        compared += 1
        print("  ordering fp32 <= mxfp8 <= mxfp6 <= mxfp4/nvfp4 on the paired means:", "holds" if ok else "does NOT hold")
    if compared == 0:
        sys.exit("no cell has an fp32 run to pair with")
    print(f"\nordering holds in all {compared} cells" if holds_all else "\nordering does NOT hold in every cell")


if __name__ == "__main__":
    main()
