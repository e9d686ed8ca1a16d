//! Fake quantisation against independent references: the `float8` crate and candle's F8E4M3
//! cast for OCP FP8, `half` for fp16/bf16, value tables built here from sign/exponent/mantissa
//! bits for FP4/FP6 and every other ExMy, and direct computations for integer formats and scales.

/// Named `quant::...` so that `cargo test -p sweep-train quant` selects these tests.
mod quant {
    use candle_core::{DType, Device, Tensor, Var};
    use float8::{F8E4M3, F8E5M2};
    use half::{bf16, f16};
    use sweep_plan::config::{QuantTarget, Rounding};
    use sweep_plan::precision::{NumberFormat, PrecisionSpec, Scaling};
    use sweep_plan::ResolvedPrecision;
    use sweep_train::quant::{
        fake_quant, fake_quant_at, quant_grad, quant_grad_at, quantize_slice, random_bits, FloatFormat, Format,
        IntFormat, QuantConfig, QuantTargets, ScaleRule,
    };
    use sweep_train::rng::uniform;

    fn float_cfg(e: u32, m: u32, scaling: Scaling, rounding: Rounding, rule: ScaleRule) -> QuantConfig {
        QuantConfig::new(Format::Float(FloatFormat::new(e, m).unwrap()), scaling, rounding, 7)
            .unwrap()
            .with_scale_rule(rule)
    }

    fn int_cfg(bits: u32, scaling: Scaling, rounding: Rounding) -> QuantConfig {
        QuantConfig::new(Format::Int(IntFormat::new(bits).unwrap()), scaling, rounding, 7).unwrap()
    }

    /// A plain saturating cast to ExMy, round to nearest even, no scaling.
    fn cast(e: u32, m: u32, xs: &[f32]) -> Vec<f32> {
        let mut v = xs.to_vec();
        let row_len = v.len().max(1);
        quantize_slice(&mut v, row_len, &float_cfg(e, m, Scaling::Tensor, Rounding::Nearest, ScaleRule::Unit), 0)
            .unwrap();
        v
    }

    /// Same value, NaN equal to NaN, and the sign of zero compared.
    fn same(a: f32, b: f32) -> bool {
        (a.is_nan() && b.is_nan()) || a.to_bits() == b.to_bits()
    }

    fn assert_same(got: &[f32], want: &[f32], inputs: &[f32], what: &str) {
        assert_eq!(got.len(), want.len());
        for i in 0..got.len() {
            assert!(
                same(got[i], want[i]),
                "{what}: input {:e} ({:#010x}) gave {:e}, expected {:e}",
                inputs[i],
                inputs[i].to_bits(),
                got[i],
                want[i]
            );
        }
    }

    /// An independent table of one ExMy format: (value, code) for every code, built from the bit
    /// fields. The finite-code convention restated: E4M3 has NaN at S.1111.111; E >= 5 reserves the
    /// all-ones exponent (inf/NaN); every other code of every other format is finite.
    fn table(e: u32, m: u32) -> Vec<(f64, u32)> {
        let bias = (1i32 << (e - 1)) - 1;
        let top = (1u32 << e) - 1;
        let mut out = Vec::new();
        for sign in 0..2u32 {
            for exp in 0..=top {
                for mant in 0..(1u32 << m) {
                    let code = (sign << (e + m)) | (exp << m) | mant;
                    let is_e4m3_nan = e == 4 && m == 3 && exp == top && mant == (1 << m) - 1;
                    let value = if (e >= 5 && exp == top) || is_e4m3_nan {
                        if mant == 0 {
                            f64::INFINITY
                        } else {
                            f64::NAN
                        }
                    } else if exp == 0 {
                        mant as f64 / 2f64.powi(m as i32) * 2f64.powi(1 - bias)
                    } else {
                        (1.0 + mant as f64 / 2f64.powi(m as i32)) * 2f64.powi(exp as i32 - bias)
                    };
                    out.push((if sign == 1 { -value } else { value }, code));
                }
            }
        }
        out
    }

    /// The sorted non-negative finite values of a table, with their codes.
    fn positive_finite(t: &[(f64, u32)]) -> Vec<(f64, u32)> {
        let mut v: Vec<(f64, u32)> = t.iter().copied().filter(|(x, _)| x.is_finite() && x.is_sign_positive()).collect();
        v.sort_by(|a, b| a.0.partial_cmp(&b.0).unwrap());
        v
    }

    /// Brute-force rounding by the table: nearest value, ties to the code with an even last bit,
    /// beyond the largest value saturate, NaN stays NaN.
    fn reference_round(pos: &[(f64, u32)], x: f32) -> f32 {
        if x.is_nan() {
            return f32::NAN;
        }
        let a = (x as f64).abs();
        let max = pos.last().unwrap().0;
        let r = if a >= max {
            max
        } else {
            let i = pos.partition_point(|(v, _)| *v <= a) - 1; // pos[i].0 <= a < pos[i+1].0
            let (lo, hi) = (pos[i], pos[i + 1]);
            let (dl, dh) = (a - lo.0, hi.0 - a);
            if dl < dh || (dl == dh && lo.1 & 1 == 0) {
                lo.0
            } else {
                hi.0
            }
        };
        let r = r as f32;
        if x.is_sign_negative() {
            -r
        } else {
            r
        }
    }

    /// Deterministic test inputs: log-uniform magnitudes in [lo, hi], random signs.
    fn log_uniform(n: usize, lo: f64, hi: f64, stream: u64) -> Vec<f32> {
        (0..n as u64)
            .map(|i| {
                let m = (lo.ln() + uniform(11, stream, i) * (hi.ln() - lo.ln())).exp() as f32;
                if uniform(12, stream, i) < 0.5 {
                    -m
                } else {
                    m
                }
            })
            .collect()
    }

    /// Midpoints between consecutive values of a table (exact in f32 for M <= 10), and their
    /// neighbours one f32 step away on each side.
    fn ties_and_neighbours(pos: &[(f64, u32)]) -> Vec<f32> {
        let mut out = Vec::new();
        for w in pos.windows(2) {
            let mid = ((w[0].0 + w[1].0) / 2.0) as f32;
            assert_eq!(mid as f64, (w[0].0 + w[1].0) / 2.0, "midpoint must be exact in f32");
            out.extend([mid, -mid, f32::from_bits(mid.to_bits() + 1), f32::from_bits(mid.to_bits() - 1)]);
        }
        out
    }

    #[test]
    fn format_maxima_follow_the_ocp_conventions() {
        for (e, m, max) in [(4, 3, 448.0), (5, 2, 57344.0), (2, 1, 6.0), (3, 2, 28.0), (2, 3, 7.5), (5, 10, 65504.0)] {
            assert_eq!(FloatFormat::new(e, m).unwrap().max, max, "e{e}m{m}");
        }
        assert_eq!(FloatFormat::new(8, 7).unwrap().max, bf16::MAX.to_f32());
        assert_eq!(FloatFormat::new(4, 3).unwrap().min_subnormal(), 2f32.powi(-9));
        assert_eq!(FloatFormat::new(5, 2).unwrap().min_subnormal(), 2f32.powi(-16));
        assert_eq!(IntFormat::new(8).unwrap().max, 127.0);
        assert_eq!(IntFormat::new(4).unwrap().max, 7.0);
        assert_eq!(IntFormat::new(2).unwrap().max, 1.0);
    }

    #[test]
    fn all_256_fp8_codes_decode_like_the_references_and_round_to_themselves() {
        for (e, m) in [(4u32, 3u32), (5, 2)] {
            let f = FloatFormat::new(e, m).unwrap();
            let t = table(e, m);
            let mut finite = Vec::new();
            for code in 0..256u32 {
                let reference = if e == 4 {
                    F8E4M3::from_bits(code as u8).to_f32()
                } else {
                    F8E5M2::from_bits(code as u8).to_f32()
                };
                let ours = f.decode(code);
                let (tabled, tcode) = t[code as usize];
                assert_eq!(tcode, code);
                assert!(same(ours, reference), "e{e}m{m} code {code:#04x}: decode {ours} vs float8 {reference}");
                assert!(same(ours, tabled as f32), "e{e}m{m} code {code:#04x}: decode {ours} vs table {tabled}");
                if ours.is_finite() {
                    finite.push(ours);
                }
            }
            assert_eq!(finite.len(), if e == 4 { 254 } else { 248 });
            assert_same(&cast(e, m, &finite), &finite, &finite, &format!("e{e}m{m} code values"));
        }
        // candle's own F8E4M3 dtype decodes every finite code to the same value.
        let codes: Vec<f32> =
            (0..256u32).map(|c| FloatFormat::new(4, 3).unwrap().decode(c)).filter(|v| v.is_finite()).collect();
        let t = Tensor::new(codes.as_slice(), &Device::Cpu).unwrap();
        let back: Vec<f32> = t.to_dtype(DType::F8E4M3).unwrap().to_dtype(DType::F32).unwrap().to_vec1().unwrap();
        assert_same(&back, &codes, &codes, "candle F8E4M3 round trip of the codes");
    }

    #[test]
    fn fp8_rounding_matches_the_float8_reference_on_random_ties_subnormals_and_nan() {
        for (e, m) in [(4u32, 3u32), (5, 2)] {
            let f = FloatFormat::new(e, m).unwrap();
            let pos = positive_finite(&table(e, m));
            let reference = |x: f32| if e == 4 { F8E4M3::from_f32(x).to_f32() } else { F8E5M2::from_f32(x).to_f32() };
            // In range: log-uniform over the whole range, the subnormal range, ties and their neighbours,
            // zero of both signs and NaN.
            let mut xs = log_uniform(20_000, f.min_subnormal() as f64 / 8.0, f.max as f64, 1);
            xs.extend(log_uniform(5_000, f.min_subnormal() as f64 / 4.0, f.min_normal() as f64, 2));
            xs.extend(ties_and_neighbours(&pos));
            xs.extend([
                0.0,
                -0.0,
                f32::NAN,
                f.min_subnormal() / 2.0,
                -f.min_subnormal() / 2.0,
                f.min_subnormal() * 0.50001,
            ]);
            let want: Vec<f32> = xs.iter().map(|&x| reference(x)).collect();
            assert_same(&cast(e, m, &xs), &want, &xs, &format!("e{e}m{m} vs float8"));
            let brute: Vec<f32> = xs.iter().map(|&x| reference_round(&pos, x)).collect();
            assert_same(&cast(e, m, &xs), &brute, &xs, &format!("e{e}m{m} vs table"));
            // Overflow saturates to ±max (checked directly; float8's from_f32 also saturates, and agrees).
            let over = [f.max * 1.03, f.max * 1.2, -f.max * 4.0, 1e30, -3e38, f32::INFINITY, f32::NEG_INFINITY];
            let got = cast(e, m, &over);
            for (x, y) in over.iter().zip(&got) {
                assert_eq!(*y, f.max.copysign(*x), "e{e}m{m}: {x} must saturate");
                assert_eq!(*y, reference(*x), "e{e}m{m}: float8 saturates {x} too");
            }
        }
        // candle's F32 -> F8E4M3 -> F32 cast agrees on in-range inputs and ties.
        let f = FloatFormat::new(4, 3).unwrap();
        let mut xs = log_uniform(10_000, f.min_subnormal() as f64 / 4.0, 448.0, 3);
        xs.extend(ties_and_neighbours(&positive_finite(&table(4, 3))));
        let t = Tensor::new(xs.as_slice(), &Device::Cpu).unwrap();
        let candle: Vec<f32> = t.to_dtype(DType::F8E4M3).unwrap().to_dtype(DType::F32).unwrap().to_vec1().unwrap();
        assert_same(&cast(4, 3, &xs), &candle, &xs, "e4m3 vs candle cast");
    }

    #[test]
    fn fp4_and_fp6_round_exhaustively_like_a_table_built_from_bits() {
        for (e, m, n_codes, max) in [(2u32, 1u32, 16usize, 6.0f32), (3, 2, 64, 28.0), (2, 3, 64, 7.5)] {
            let f = FloatFormat::new(e, m).unwrap();
            let t = table(e, m);
            assert_eq!(t.len(), n_codes);
            assert!(t.iter().all(|(v, _)| v.is_finite()), "every FP4/FP6 code is finite");
            for &(v, code) in &t {
                assert!(same(f.decode(code), v as f32), "e{e}m{m} code {code:#x}");
            }
            let values: Vec<f32> = t.iter().map(|(v, _)| *v as f32).collect();
            assert_same(&cast(e, m, &values), &values, &values, &format!("e{e}m{m} code values"));
            let pos = positive_finite(&t);
            assert_eq!(pos.last().unwrap().0 as f32, max);
            // Every tie and its neighbours, a dense sweep of [-1.5 max, 1.5 max], and tiny values.
            let mut xs = ties_and_neighbours(&pos);
            xs.extend((0..=30_000).map(|i| (i as f32 / 10_000.0 - 1.5) * max));
            xs.extend(log_uniform(2_000, 1e-6, 1.0, 4));
            let want: Vec<f32> = xs.iter().map(|&x| reference_round(&pos, x)).collect();
            assert_same(&cast(e, m, &xs), &want, &xs, &format!("e{e}m{m} exhaustive"));
        }
    }

    #[test]
    fn every_exmy_format_rounds_like_its_table() {
        for e in 1..=8u32 {
            for m in 0..=10u32 {
                let f = FloatFormat::new(e, m).unwrap();
                let pos = positive_finite(&table(e, m));
                assert_eq!(pos.last().unwrap().0 as f32, f.max, "e{e}m{m} max");
                let mut xs =
                    log_uniform(3_000, f.min_subnormal() as f64 / 4.0, f.max as f64 * 2.0, (e * 16 + m) as u64);
                let ties = ties_and_neighbours(&pos);
                let step = (ties.len() / 4000).max(1);
                xs.extend(ties.iter().step_by(step));
                let want: Vec<f32> = xs.iter().map(|&x| reference_round(&pos, x)).collect();
                assert_same(&cast(e, m, &xs), &want, &xs, &format!("e{e}m{m}"));
            }
        }
    }

    #[test]
    fn the_vectorised_kernel_equals_the_scalar_rounding() {
        // quantize_slice takes a branch-free path for most formats; FloatFormat::round and
        // IntFormat::round are the scalar definitions. They must agree bit for bit, scaled or not.
        for e in 1..=8u32 {
            for m in 0..=10u32 {
                let f = FloatFormat::new(e, m).unwrap();
                let mut xs =
                    log_uniform(4_000, f.min_subnormal() as f64 / 4.0, f.max as f64 * 2.0, (e * 32 + m) as u64);
                let ties = ties_and_neighbours(&positive_finite(&table(e, m)));
                xs.extend(ties.iter().step_by((ties.len() / 2000).max(1)));
                xs.extend([0.0, -0.0, f32::NAN, f32::INFINITY, f32::NEG_INFINITY, f.max, -f.max, 1e-40, -1e-45]);
                let want: Vec<f32> = xs.iter().map(|&x| f.round(x, None)).collect();
                assert_same(&cast(e, m, &xs), &want, &xs, &format!("e{e}m{m} unit scale"));
                let mut finite: Vec<f32> = xs.iter().copied().filter(|x| x.is_finite()).collect();
                finite.truncate(finite.len() / 64 * 64);
                let mut v = finite.clone();
                quantize_slice(
                    &mut v,
                    64,
                    &float_cfg(e, m, Scaling::Block(32), Rounding::Nearest, ScaleRule::AbsMax),
                    0,
                )
                .unwrap();
                assert_same(
                    &v,
                    &direct(&finite, 64, 32, f.max, |y| f.round(y, None)),
                    &finite,
                    &format!("e{e}m{m}-b32"),
                );
                // Stochastic rounding: the same random bits give the same result on both paths.
                let mut v = xs.clone();
                let q = float_cfg(e, m, Scaling::Tensor, Rounding::Stochastic, ScaleRule::Unit);
                quantize_slice(&mut v, xs.len(), &q, 9).unwrap();
                let want: Vec<f32> =
                    xs.iter().enumerate().map(|(i, &x)| f.round(x, Some(random_bits(q.seed, 9, i as u64)))).collect();
                assert_same(&v, &want, &xs, &format!("e{e}m{m} stochastic"));
                let mut v = finite.clone();
                let q = float_cfg(e, m, Scaling::Block(32), Rounding::Stochastic, ScaleRule::AbsMax);
                quantize_slice(&mut v, 64, &q, 2).unwrap();
                let want = direct_indexed(&finite, 64, 32, f.max, |i, y| f.round(y, Some(random_bits(q.seed, 2, i))));
                assert_same(&v, &want, &finite, &format!("e{e}m{m}-b32 stochastic"));
            }
        }
        for bits in 2..=8u32 {
            let n = IntFormat::new(bits).unwrap();
            let mut xs = log_uniform(4_000, 1e-3, 300.0, bits as u64 + 100);
            xs.extend((-600..=600).map(|i| i as f32 * 0.25)); // every half-integer tie
            xs.extend([0.0, -0.0, f32::NAN, f32::INFINITY, f32::NEG_INFINITY]);
            let mut v = xs.clone();
            let q = int_cfg(bits, Scaling::Tensor, Rounding::Nearest).with_scale_rule(ScaleRule::Unit);
            quantize_slice(&mut v, xs.len(), &q, 0).unwrap();
            let want: Vec<f32> = xs.iter().map(|&x| n.round(x, None)).collect();
            assert_same(&v, &want, &xs, &format!("int{bits} unit scale"));
            let mut v = xs.clone();
            let q = int_cfg(bits, Scaling::Tensor, Rounding::Stochastic).with_scale_rule(ScaleRule::Unit);
            quantize_slice(&mut v, xs.len(), &q, 4).unwrap();
            let want: Vec<f32> =
                xs.iter().enumerate().map(|(i, &x)| n.round(x, Some(random_bits(q.seed, 4, i as u64)))).collect();
            assert_same(&v, &want, &xs, &format!("int{bits} stochastic"));
        }
    }

    #[test]
    fn fp16_and_bf16_shaped_formats_match_the_half_crate() {
        // e5m10 is fp16's layout; e8m7 is bfloat16's, including f32 subnormal inputs.
        let mut xs = log_uniform(50_000, 2f64.powi(-26), 65504.0, 5);
        xs.extend([0.0, -0.0, 65504.0, 65519.0, -65519.0, 2f32.powi(-25), 2f32.powi(-25) * 1.5, f32::NAN]);
        let want: Vec<f32> = xs.iter().map(|&x| f16::from_f32(x).to_f32()).collect();
        assert_same(&cast(5, 10, &xs), &want, &xs, "e5m10 vs f16");
        let mut xs = log_uniform(50_000, 1e-44, 3e38, 6);
        xs.extend((1..2000u32).map(|i| f32::from_bits(i * 4099 % 0x80_0000))); // f32 subnormals
        xs.extend([
            f32::MAX * 0.99,
            f32::from_bits(0x0000_8000),
            f32::from_bits(0x0001_8000),
            f32::from_bits(0x3f80_8000),
        ]);
        let want: Vec<f32> = xs.iter().map(|&x| bf16::from_f32(x).to_f32()).collect();
        assert_same(&cast(8, 7, &xs), &want, &xs, "e8m7 vs bf16");
    }

    /// Per-group expectation computed directly: s = amax / max (f64; 1 for an all-zero group),
    /// values times the f32 inverse scale, rounded by `round`, times the f32 scale.
    fn direct(xs: &[f32], row_len: usize, group: usize, max: f32, round: impl Fn(f32) -> f32) -> Vec<f32> {
        direct_indexed(xs, row_len, group, max, |_, y| round(y))
    }

    /// [`direct`] with the element's index in `xs` passed to `round` (for stochastic rounding).
    fn direct_indexed(xs: &[f32], row_len: usize, group: usize, max: f32, round: impl Fn(u64, f32) -> f32) -> Vec<f32> {
        let mut out = Vec::new();
        for row in xs.chunks(row_len) {
            for g in row.chunks(group) {
                let amax = g.iter().fold(0f32, |a, x| a.max(x.abs())) as f64;
                let s = if amax == 0.0 { 1.0 } else { amax / max as f64 };
                let (scale, inv) = (s as f32, (1.0 / s) as f32);
                for &x in g {
                    let i = out.len() as u64;
                    out.push(if scale.is_normal() && inv.is_normal() {
                        round(i, x * inv) * scale
                    } else {
                        // The documented fallback for scales outside f32's normal range: f64 scaling.
                        (round(i, (x as f64 * (1.0 / s)) as f32) as f64 * s) as f32
                    });
                }
            }
        }
        out
    }

    #[test]
    fn integer_formats_are_symmetric_and_round_half_to_even() {
        // amax 7 with int4 gives scale 1: the levels are plain integers.
        let xs = [7.0f32, -3.5, 2.5, 0.49, 1.5, -6.9, -0.5, 3.2];
        let mut v = xs.to_vec();
        quantize_slice(&mut v, 8, &int_cfg(4, Scaling::Tensor, Rounding::Nearest), 0).unwrap();
        assert_eq!(v, [7.0, -4.0, 2.0, 0.0, 2.0, -7.0, -0.0, 3.0]);
        for bits in [2u32, 4, 8] {
            let qmax = ((1 << (bits - 1)) - 1) as f32;
            let xs = log_uniform(4096, 1e-3, 10.0, bits as u64);
            let mut v = xs.clone();
            quantize_slice(&mut v, 4096, &int_cfg(bits, Scaling::Tensor, Rounding::Nearest), 0).unwrap();
            let amax = xs.iter().fold(0f32, |a, x| a.max(x.abs()));
            let s = amax / qmax;
            let mut levels: Vec<i64> = v.iter().map(|y| (y / s).round() as i64).collect();
            for (y, l) in v.iter().zip(&levels) {
                assert!((y / s - *l as f32).abs() < 1e-4, "int{bits}: {y} is not on the grid of step {s}");
            }
            levels.sort();
            levels.dedup();
            assert_eq!(levels.first(), Some(&-(qmax as i64)), "int{bits} uses -qmax, never -qmax-1");
            assert_eq!(levels.last(), Some(&(qmax as i64)));
            let want = direct(&xs, 4096, 4096, qmax, |y| y.round_ties_even().clamp(-qmax, qmax));
            assert_same(&v, &want, &xs, &format!("int{bits} tensor"));
        }
    }

    #[test]
    fn channel_and_block_scales_match_a_direct_computation() {
        // 6 rows of 40 with magnitudes from 1e-3 to 1e2: every row or block keeps its own scale.
        let rows = 6;
        let row_len = 40;
        let xs: Vec<f32> = (0..rows * row_len)
            .map(|i| ((uniform(3, 9, i as u64) - 0.5) * 10f64.powi((i / row_len) as i32 - 3)) as f32)
            .collect();
        for (scaling, group) in [(Scaling::Channel, row_len), (Scaling::Block(16), 16), (Scaling::Block(8), 8)] {
            let q = int_cfg(4, scaling, Rounding::Nearest);
            let mut v = xs.clone();
            quantize_slice(&mut v, row_len, &q, 0).unwrap();
            let want = direct(&xs, row_len, group, 7.0, |y| y.round_ties_even().clamp(-7.0, 7.0));
            assert_same(&v, &want, &xs, &format!("int4 {scaling:?}"));
            // The smallest row keeps its resolution: several distinct levels, not all zero.
            let mut first: Vec<i64> = v[..row_len].iter().map(|y| (y * 1e6) as i64).collect();
            first.sort();
            first.dedup();
            assert!(first.len() >= 5, "{scaling:?}: the 1e-3 row collapsed to {first:?}");

            let q = float_cfg(4, 3, scaling, Rounding::Nearest, ScaleRule::AbsMax);
            let mut v = xs.clone();
            quantize_slice(&mut v, row_len, &q, 0).unwrap();
            let want = direct(&xs, row_len, group, 448.0, |y| F8E4M3::from_f32(y).to_f32());
            assert_same(&v, &want, &xs, &format!("e4m3 {scaling:?}"));
        }
        // A block size that does not divide the row: blocks 16, 16, 8 in each row.
        let q = float_cfg(2, 1, Scaling::Block(16), Rounding::Nearest, ScaleRule::AbsMax);
        let mut v = xs.clone();
        quantize_slice(&mut v, row_len, &q, 0).unwrap();
        let pos = positive_finite(&table(2, 1));
        let mut want = Vec::new();
        for row in xs.chunks(row_len) {
            for g in [&row[..16], &row[16..32], &row[32..]] {
                want.extend(direct(g, g.len(), g.len(), 6.0, |y| reference_round(&pos, y)));
            }
        }
        assert_same(&v, &want, &xs, "e2m1-b16 on rows of 40");
        // The largest |x| of every block lands on ±6 · scale, i.e. is reproduced to an f32 rounding.
        for (g, gq) in xs.chunks(16).zip(v.chunks(16)).take(2) {
            let i = (0..16).max_by(|&a, &b| g[a].abs().partial_cmp(&g[b].abs()).unwrap()).unwrap();
            assert!((gq[i] - g[i]).abs() <= g[i].abs() * 1e-6, "block max {} became {}", g[i], gq[i]);
        }
    }

    #[test]
    fn large_tensors_take_the_parallel_path_with_the_same_results() {
        // 300 rows of 400 = 120 000 elements, above the parallel threshold; 1 and 2 threads.
        let (rows, row_len) = (300, 400);
        let xs: Vec<f32> = (0..(rows * row_len) as u64).map(|i| sweep_train::rng::normal(5, 6, i) as f32).collect();
        for (scaling, group) in
            [(Scaling::Tensor, rows * row_len), (Scaling::Channel, row_len), (Scaling::Block(32), 32)]
        {
            let q = float_cfg(4, 3, scaling, Rounding::Nearest, ScaleRule::AbsMax);
            let rl = if scaling == Scaling::Tensor { xs.len() } else { row_len };
            let want = direct(&xs, rl, group, 448.0, |y| F8E4M3::from_f32(y).to_f32());
            let f = FloatFormat::new(4, 3).unwrap();
            let qs = float_cfg(4, 3, scaling, Rounding::Stochastic, ScaleRule::AbsMax);
            let want_sr = direct_indexed(&xs, rl, group, 448.0, |i, y| f.round(y, Some(random_bits(qs.seed, 3, i))));
            for threads in [1, 2] {
                let pool = rayon::ThreadPoolBuilder::new().num_threads(threads).build().unwrap();
                let mut v = xs.clone();
                pool.install(|| quantize_slice(&mut v, row_len, &q, 0)).unwrap();
                assert_same(&v, &want, &xs, &format!("e4m3 {scaling:?}, {threads} threads"));
                let mut v = xs.clone();
                pool.install(|| quantize_slice(&mut v, row_len, &qs, 3)).unwrap();
                assert_same(&v, &want_sr, &xs, &format!("e4m3 {scaling:?} stochastic, {threads} threads"));
            }
        }
    }

    #[test]
    fn power_of_two_scales_keep_the_group_in_range() {
        let xs = log_uniform(256, 1e-4, 300.0, 8);
        let q = float_cfg(4, 3, Scaling::Block(32), Rounding::Nearest, ScaleRule::PowerOfTwo);
        let mut v = xs.clone();
        quantize_slice(&mut v, 256, &q, 0).unwrap();
        for (g, gq) in xs.chunks(32).zip(v.chunks(32)) {
            let amax = g.iter().fold(0f32, |a, x| a.max(x.abs()));
            let e = (amax / 448.0).log2().ceil() as i32;
            let s = 2f32.powi(e);
            assert!(amax / s <= 448.0 && amax / s > 224.0, "scale 2^{e} for amax {amax}");
            for (&x, &y) in g.iter().zip(gq) {
                assert_eq!(y, F8E4M3::from_f32(x / s).to_f32() * s, "x {x} scale 2^{e}");
            }
        }
    }

    #[test]
    fn stochastic_rounding_is_unbiased() {
        let n = 200_000usize;
        // (format, value, lower neighbour, upper neighbour)
        let cases: Vec<(QuantConfig, f32, f32, f32)> = vec![
            (float_cfg(4, 3, Scaling::Tensor, Rounding::Stochastic, ScaleRule::Unit), 1.3, 1.25, 1.375),
            (
                float_cfg(4, 3, Scaling::Tensor, Rounding::Stochastic, ScaleRule::Unit),
                -0.003,
                -0.00390625,
                -0.001953125,
            ),
            (float_cfg(2, 1, Scaling::Tensor, Rounding::Stochastic, ScaleRule::Unit), 4.4, 4.0, 6.0),
            (float_cfg(5, 2, Scaling::Tensor, Rounding::Stochastic, ScaleRule::Unit), 1e-5, 0.0, 2f32.powi(-16)),
        ];
        for (q, x, lo, hi) in cases {
            let mut v = vec![x; n];
            quantize_slice(&mut v, n, &q, 3).unwrap();
            assert!(v.iter().all(|&y| y == lo || y == hi), "{}: {x} rounded outside its neighbours", q.name);
            let mean = v.iter().map(|&y| y as f64).sum::<f64>() / n as f64;
            let p = (x - lo) as f64 / (hi - lo) as f64;
            let sigma = (p * (1.0 - p) / n as f64).sqrt() * (hi - lo) as f64;
            assert!(
                (mean - x as f64).abs() < 4.0 * sigma,
                "{}: mean {mean} of roundings of {x} (sigma {sigma})",
                q.name
            );
        }
        // Integers: x = 2.3 with scale 1 (amax 7 in the group) rounds to 2 or 3, mean 2.3.
        let mut v = vec![2.3f32; n];
        v[0] = 7.0;
        quantize_slice(&mut v, n, &int_cfg(4, Scaling::Tensor, Rounding::Stochastic), 0).unwrap();
        assert!(v[1..].iter().all(|&y| y == 2.0 || y == 3.0));
        let mean = v[1..].iter().map(|&y| y as f64).sum::<f64>() / (n - 1) as f64;
        let sigma = (0.3f64 * 0.7 / n as f64).sqrt();
        assert!((mean - 2.3).abs() < 4.0 * sigma, "int4 mean {mean}");
        // Values already on the grid never move.
        let mut v = vec![1.25f32; 1000];
        quantize_slice(&mut v, 1000, &float_cfg(4, 3, Scaling::Tensor, Rounding::Stochastic, ScaleRule::Unit), 0)
            .unwrap();
        assert!(v.iter().all(|&y| y == 1.25));
    }

    #[test]
    fn stochastic_rounding_is_a_function_of_seed_counter_and_index() {
        let xs: Vec<f32> = (0..100_000u64).map(|i| (uniform(1, 2, i) as f32 - 0.5) * 3.0).collect();
        let run = |seed: u64, counter: u64, threads: usize| {
            let mut q = float_cfg(2, 1, Scaling::Block(32), Rounding::Stochastic, ScaleRule::AbsMax);
            q.seed = seed;
            let mut v = xs.clone();
            let pool = rayon::ThreadPoolBuilder::new().num_threads(threads).build().unwrap();
            pool.install(|| quantize_slice(&mut v, 1000, &q, counter)).unwrap();
            v
        };
        let a = run(1, 5, 2);
        assert_eq!(a, run(1, 5, 2), "same seed and counter");
        assert_eq!(a, run(1, 5, 1), "thread count does not matter");
        assert_ne!(a, run(1, 6, 2), "another counter draws another stream");
        assert_ne!(a, run(2, 5, 2), "another seed draws another stream");
        // Through tensors: the config's counter advances per call and can be restored.
        let q = float_cfg(4, 3, Scaling::Tensor, Rounding::Stochastic, ScaleRule::AbsMax);
        let t = Tensor::new(&xs[..4096], &Device::Cpu).unwrap();
        assert_eq!(q.counter(), 0);
        let first: Vec<f32> = fake_quant(&t, &q).unwrap().to_vec1().unwrap();
        let second: Vec<f32> = fake_quant(&t, &q).unwrap().to_vec1().unwrap();
        assert_eq!(q.counter(), 2);
        assert_ne!(first, second);
        q.set_counter(1);
        assert_eq!(fake_quant(&t, &q).unwrap().to_vec1::<f32>().unwrap(), second, "resumed counter reproduces");
        assert_eq!(fake_quant_at(&t, &q, 0).unwrap().to_vec1::<f32>().unwrap(), first);
        assert_eq!(q.counter(), 2, "explicit counters leave the config's alone");
    }

    #[test]
    fn straight_through_gradient_is_the_identity_everywhere() {
        // Unit scale so that 500 saturates to 448: the identity STE passes its gradient too.
        let q = float_cfg(4, 3, Scaling::Tensor, Rounding::Nearest, ScaleRule::Unit);
        let x = Var::new(&[[0.3f32, -1.1, 500.0], [0.0123, 7.7, -2.0]], &Device::Cpu).unwrap();
        let c = Tensor::new(&[[1.5f32, -2.0, 3.0], [0.25, 4.0, -1.0]], &Device::Cpu).unwrap();
        let y = fake_quant(x.as_tensor(), &q).unwrap();
        let want_y = cast(4, 3, &x.as_tensor().flatten_all().unwrap().to_vec1::<f32>().unwrap());
        assert_eq!(y.flatten_all().unwrap().to_vec1::<f32>().unwrap(), want_y);
        assert_eq!(want_y[2], 448.0);
        let loss = (y * &c).unwrap().sum_all().unwrap();
        let grads = loss.backward().unwrap();
        let g = grads.get(x.as_tensor()).expect("x gets a gradient");
        assert_eq!(g.to_vec2::<f32>().unwrap(), c.to_vec2::<f32>().unwrap());
    }

    #[test]
    fn quant_grad_is_identity_forward_and_quantises_the_gradient() {
        let q = float_cfg(2, 1, Scaling::Channel, Rounding::Nearest, ScaleRule::AbsMax);
        let x = Var::new(&[[0.3f32, -1.1, 5.0, 0.7], [0.0123, 7.7, -2.0, 1.0]], &Device::Cpu).unwrap();
        let c_data = [[1.3f32, -2.2, 3.1, 0.1], [0.25, 4.7, -1.0, 2.2]];
        let c = Tensor::new(&c_data, &Device::Cpu).unwrap();
        let y = quant_grad(x.as_tensor(), &q).unwrap();
        assert_eq!(y.to_vec2::<f32>().unwrap(), x.as_tensor().to_vec2::<f32>().unwrap(), "forward is the identity");
        let grads = (y * &c).unwrap().sum_all().unwrap().backward().unwrap();
        let g: Vec<f32> = grads.get(x.as_tensor()).unwrap().flatten_all().unwrap().to_vec1().unwrap();
        let mut want: Vec<f32> = c_data.iter().flatten().copied().collect();
        quantize_slice(&mut want, 4, &q, 0).unwrap();
        assert_eq!(g, want, "the gradient is fake-quantised (e2m1 per row)");
        assert_ne!(g, c_data.iter().flatten().copied().collect::<Vec<f32>>());
        // Stochastic gradient rounding uses the counter drawn in the forward pass.
        let qs = float_cfg(2, 1, Scaling::Tensor, Rounding::Stochastic, ScaleRule::AbsMax);
        let y = quant_grad_at(x.as_tensor(), &qs, 42).unwrap();
        let grads = (y * &c).unwrap().sum_all().unwrap().backward().unwrap();
        let g: Vec<f32> = grads.get(x.as_tensor()).unwrap().flatten_all().unwrap().to_vec1().unwrap();
        let mut want: Vec<f32> = c_data.iter().flatten().copied().collect();
        quantize_slice(&mut want, 4, &qs, 42).unwrap();
        assert_eq!(g, want);
    }

    #[test]
    fn tensors_of_other_dtypes_layouts_and_shapes() {
        let q = float_cfg(4, 3, Scaling::Channel, Rounding::Nearest, ScaleRule::AbsMax);
        let data: Vec<f32> = (0..60u64).map(|i| (uniform(4, 4, i) as f32 - 0.5) * 10.0).collect();
        let t = Tensor::from_vec(data.clone(), (3, 4, 5), &Device::Cpu).unwrap();
        let mut want = data.clone();
        quantize_slice(&mut want, 5, &q, 0).unwrap();
        let got: Vec<f32> = fake_quant(&t, &q).unwrap().flatten_all().unwrap().to_vec1().unwrap();
        assert_eq!(got, want, "rank 3: one scale per row of the last dimension");
        // A transposed (non-contiguous) input is quantised along its own last dimension.
        let tt = t.transpose(1, 2).unwrap();
        let mut want_t: Vec<f32> = tt.contiguous().unwrap().flatten_all().unwrap().to_vec1().unwrap();
        quantize_slice(&mut want_t, 4, &q, 0).unwrap();
        assert_eq!(fake_quant(&tt, &q).unwrap().flatten_all().unwrap().to_vec1::<f32>().unwrap(), want_t);
        // bf16 and f64 go through f32 and keep their dtype.
        let b = t.to_dtype(DType::BF16).unwrap();
        let mut want_b: Vec<f32> = b.to_dtype(DType::F32).unwrap().flatten_all().unwrap().to_vec1().unwrap();
        quantize_slice(&mut want_b, 5, &q, 0).unwrap();
        let got_b = fake_quant(&b, &q).unwrap();
        assert_eq!(got_b.dtype(), DType::BF16);
        let want_b: Vec<f32> = want_b.into_iter().map(|x| bf16::from_f32(x).to_f32()).collect();
        assert_eq!(got_b.to_dtype(DType::F32).unwrap().flatten_all().unwrap().to_vec1::<f32>().unwrap(), want_b);
        assert_eq!(fake_quant(&t.to_dtype(DType::F64).unwrap(), &q).unwrap().dtype(), DType::F64);
        // A scalar, an empty tensor, an all-zero tensor, NaN and infinities in the group.
        let s = Tensor::new(3.3f32, &Device::Cpu).unwrap();
        let sq = fake_quant(&s, &q).unwrap().to_scalar::<f32>().unwrap();
        assert!((sq - 3.3).abs() <= 3.3 * 1e-6, "a lone value is its own group's max: {sq}");
        let e = Tensor::zeros((0, 4), DType::F32, &Device::Cpu).unwrap();
        assert_eq!(fake_quant(&e, &q).unwrap().dims(), &[0, 4]);
        let z = Tensor::zeros((2, 3), DType::F32, &Device::Cpu).unwrap();
        assert_eq!(fake_quant(&z, &q).unwrap().to_vec2::<f32>().unwrap(), vec![vec![0f32; 3]; 2]);
        let mut v = vec![1.0f32, f32::NAN, -2.0, f32::INFINITY];
        quantize_slice(&mut v, 4, &float_cfg(4, 3, Scaling::Tensor, Rounding::Nearest, ScaleRule::AbsMax), 0).unwrap();
        assert!(v[1].is_nan(), "NaN stays NaN");
        // amax is 2 (non-finite values ignored): -2 and +inf land on ∓448 · (2/448), i.e. ∓2 to an f32 rounding.
        assert!((v[2] + 2.0).abs() <= 2e-6, "the scale ignores non-finite values: {}", v[2]);
        assert!((v[3] - 2.0).abs() <= 2e-6, "infinity saturates to max · scale: {}", v[3]);
        assert!((v[0] - 1.0).abs() <= 1e-6, "{}", v[0]);
    }

    #[test]
    fn per_target_configs_from_a_resolved_precision() {
        let spec = |n: &str| PrecisionSpec::parse(n).unwrap();
        let mut precision = ResolvedPrecision {
            name: "e4m3".into(),
            spec: spec("e4m3"),
            targets: vec![(QuantTarget::Weights, spec("e4m3")), (QuantTarget::Gradients, spec("fp8-e5m2-channel"))],
            rounding: Rounding::Stochastic,
            exp_bits: Some(4),
            man_bits: Some(3),
            bits: 8,
            block_size: 65536.0,
            amax_history: None,
        };
        let t = QuantTargets::from_resolved(&precision, 11).unwrap();
        assert_eq!(t.weights.as_ref().unwrap().name, "e4m3");
        assert_eq!(t.get(QuantTarget::Gradients).unwrap().name, "e5m2-channel");
        assert_eq!(t.gradients.as_ref().unwrap().rounding, Rounding::Stochastic);
        assert!(t.activations.is_none() && t.kv.is_none() && !t.is_empty());
        assert_ne!(
            t.weights.as_ref().unwrap().seed,
            t.gradients.as_ref().unwrap().seed,
            "targets draw separate streams"
        );
        // Counters for a checkpoint: calls advance them, a restore sets them back.
        let x = Tensor::new(&[[0.3f32, 1.7], [2.2, -0.4]], &Device::Cpu).unwrap();
        fake_quant(&x, t.weights.as_ref().unwrap()).unwrap();
        quant_grad(&x, t.gradients.as_ref().unwrap()).unwrap();
        quant_grad(&x, t.gradients.as_ref().unwrap()).unwrap();
        assert_eq!(t.counters(), [1, 0, 2, 0, 0, 0, 0]);
        let resumed = QuantTargets::from_resolved(&precision, 11).unwrap();
        resumed.set_counters(&t.counters());
        assert_eq!(resumed.counters(), [1, 0, 2, 0, 0, 0, 0]);
        // A checkpoint from before the last three targets holds four counters.
        resumed.set_counters(&[3, 0, 5, 0]);
        assert_eq!(resumed.counters(), [3, 0, 5, 0, 0, 0, 0]);
        // A format the quantiser cannot build names its target.
        precision.targets.push((
            QuantTarget::Kv,
            PrecisionSpec {
                name: "int12".into(),
                format: NumberFormat::Int { bits: 12 },
                scaling: Scaling::Tensor,
                scale: Default::default(),
                per_target: vec![],
            },
        ));
        let err = QuantTargets::from_resolved(&precision, 11).unwrap_err().to_string();
        assert!(err.contains("Kv") && err.contains("2..=8"), "{err}");
        assert!(QuantTargets::default().is_empty());
    }

    #[test]
    fn bad_input_is_a_clear_error() {
        assert!(QuantConfig::from_spec(&PrecisionSpec::parse("bf16").unwrap(), Rounding::Nearest, 0)
            .unwrap()
            .is_none());
        assert!(QuantConfig::from_spec(&PrecisionSpec::parse("fp32").unwrap(), Rounding::Nearest, 0)
            .unwrap()
            .is_none());
        let q = QuantConfig::from_spec(&PrecisionSpec::parse("e2m1-b32").unwrap(), Rounding::Stochastic, 3)
            .unwrap()
            .unwrap();
        assert_eq!((q.name.as_str(), q.scaling, q.seed), ("e2m1-b32", Scaling::Block(32), 3));
        let bad = PrecisionSpec {
            name: "e9m2".into(),
            format: NumberFormat::Float { exp_bits: 9, man_bits: 2 },
            scaling: Scaling::Tensor,
            scale: Default::default(),
            per_target: vec![],
        };
        let err = QuantConfig::from_spec(&bad, Rounding::Nearest, 0).unwrap_err();
        assert!(err.to_string().contains("exponent bits must be in 1..=8"), "{err}");
        let bad = PrecisionSpec {
            name: "int9".into(),
            format: NumberFormat::Int { bits: 9 },
            scaling: Scaling::Tensor,
            scale: Default::default(),
            per_target: vec![],
        };
        assert!(QuantConfig::from_spec(&bad, Rounding::Nearest, 0).unwrap_err().to_string().contains("2..=8"));
        let bad = PrecisionSpec {
            name: "int4-b0".into(),
            format: NumberFormat::Int { bits: 4 },
            scaling: Scaling::Block(0),
            scale: Default::default(),
            per_target: vec![],
        };
        assert!(QuantConfig::from_spec(&bad, Rounding::Nearest, 0).unwrap_err().to_string().contains("at least 1"));
        let err = quantize_slice(&mut [1.0; 10], 4, &q, 0).unwrap_err();
        assert!(err.to_string().contains("whole rows of length 4"), "{err}");
        let ints = Tensor::new(&[1u32, 2, 3], &Device::Cpu).unwrap();
        let err = fake_quant(&ints, &q).unwrap_err();
        assert!(err.to_string().contains("not supported"), "{err}");
        assert!(quant_grad(&ints, &q).is_err());
    }
}
