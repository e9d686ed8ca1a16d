//! Helpers shared by the quantisation tests.
#![allow(dead_code)]

use sweep_train::quant::{FloatFormat, Format, IntFormat};

/// One format of every family: FP8 E4M3/E5M2, FP4, FP6 E3M2/E2M3, e1m2, e4m0, e8m7, e5m10, e8m0,
/// e6m4, e3m0, int8/4/2 and the two's-complement levels of MXINT8.
pub fn formats() -> Vec<Format> {
    let mut v: Vec<Format> =
        [(4, 3), (5, 2), (2, 1), (3, 2), (2, 3), (1, 2), (4, 0), (8, 7), (5, 10), (8, 0), (6, 4), (3, 0)]
            .iter()
            .map(|&(e, m)| Format::Float(FloatFormat::new(e, m).unwrap()))
            .collect();
    v.extend([8, 4, 2].iter().map(|&b| Format::Int(IntFormat::new(b).unwrap())));
    v.push(Format::Int(IntFormat::twos_complement(8).unwrap()));
    v
}
