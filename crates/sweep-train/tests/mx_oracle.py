#!/usr/bin/env python3
"""Independent reference for tests/quant_oracle.rs: OCP MX and NVFP4 fake quantisation computed
with the PyPI package `gfloat` (Graphcore's generic floating-point library), used as a test
oracle only.

stdin: one line `FORMAT BLOCK ROW_LEN N`, then N f32 bit patterns (hex), one per line.
FORMAT is one of mxfp8_e4m3, mxfp8_e5m2, mxfp6_e3m2, mxfp6_e2m3, mxfp4_e2m1, mxint8 (gfloat's
block formats: E8M0 scale from gfloat.compute_scale_amax, elements rounded by gfloat with
saturation, decoded by gfloat.decode_block) or nvfp4 (E2M1 elements in blocks, each block scale
rounded to E4M3 by gfloat under a per-tensor f32 scale, the recipe of shared/reference/formats.md).
Blocks of BLOCK run along rows of ROW_LEN (the last block of a row may be shorter).
stdout: N result bit patterns (hex), one per line. Exits 3 when gfloat is missing.
"""

import sys

try:
    import numpy as np
    import gfloat
    from gfloat import formats as gf
except ImportError as e:  # the Rust test skips with this message
    print(f"gfloat oracle unavailable: {e}", file=sys.stderr)
    sys.exit(3)

MX = {
    "mxfp8_e4m3": gf.format_info_mxfp8_e4m3,
    "mxfp8_e5m2": gf.format_info_mxfp8_e5m2,
    "mxfp6_e3m2": gf.format_info_mxfp6_e3m2,
    "mxfp6_e2m3": gf.format_info_mxfp6_e2m3,
    "mxfp4_e2m1": gf.format_info_mxfp4_e2m1,
    "mxint8": gf.format_info_mxint8,
}


def mx_block(fi, vals):
    return gfloat.quantize_block(fi, vals.astype(np.float64), gfloat.compute_scale_amax)


def round_to(fi, v):
    return gfloat.round_float(fi, float(v), gfloat.RoundMode.TiesToEven, True)


def nvfp4(rows, block):
    e2m1, e4m3 = gf.format_info_ocp_e2m1, gf.format_info_ocp_e4m3
    f32 = np.float32
    amax_t = f32(np.max(np.abs(rows)))
    glob = amax_t / f32(448.0 * 6.0)
    if not (glob > 0 and np.isfinite(glob)):
        glob = f32(1.0)
    out = np.empty_like(rows)
    for r, row in enumerate(rows):
        for start in range(0, len(row), block):
            b = row[start:start + block]
            raw = f32(f32(np.max(np.abs(b))) / f32(6.0)) / glob
            clamped = min(max(raw, f32(2.0 ** -9)), f32(448.0))
            scale = f32(f32(round_to(e4m3, clamped)) * glob)
            for j, x in enumerate(b):
                q = round_to(e2m1, f32(x) / scale)
                out[r, start + j] = f32(float(q) * float(scale))
    return out


def main():
    header = sys.stdin.readline().split()
    name, block, row_len, n = header[0], int(header[1]), int(header[2]), int(header[3])
    bits = np.array([int(sys.stdin.readline(), 16) for _ in range(n)], dtype=np.uint32)
    rows = bits.view(np.float32).reshape(-1, row_len)
    if name == "nvfp4":
        out = nvfp4(rows, block)
    else:
        fi = MX[name]
        out = np.empty_like(rows)
        for r, row in enumerate(rows):
            for start in range(0, row_len, block):
                q = np.array(list(mx_block(fi, row[start:start + block])), dtype=np.float64)
                out[r, start:start + block] = q.astype(np.float32)
    sys.stdout.write("".join(f"{b:x}\n" for b in out.reshape(-1).view(np.uint32)))


if __name__ == "__main__":
    main()
