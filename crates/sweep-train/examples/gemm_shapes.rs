use std::time::Instant;
fn run(m: usize, n: usize, k: usize, threads: usize, a_t: bool, b_t: bool) -> f64 {
    let a = vec![1.0f32; m * k];
    let b = vec![1.0f32; k * n];
    let mut c = vec![0.0f32; m * n];
    let par = if threads > 1 { gemm::Parallelism::Rayon(threads) } else { gemm::Parallelism::None };
    let (a_cs, a_rs) = if a_t { (m as isize, 1) } else { (1, k as isize) };
    let (b_cs, b_rs) = if b_t { (k as isize, 1) } else { (1, n as isize) };
    let mut best = f64::MAX;
    for _ in 0..20 {
        let t = Instant::now();
        unsafe {
            gemm::gemm(
                m,
                n,
                k,
                c.as_mut_ptr(),
                1,
                n as isize,
                false,
                a.as_ptr(),
                a_cs,
                a_rs,
                b.as_ptr(),
                b_cs,
                b_rs,
                0.0,
                1.0,
                false,
                false,
                false,
                par,
            )
        }
        best = best.min(t.elapsed().as_secs_f64());
    }
    2.0 * (m * n * k) as f64 / best / 1e9
}
fn main() {
    for &(m, n, k, at, bt, name) in &[
        (2048, 768, 256, false, true, "qkv fwd fused"),
        (2048, 256, 256, false, true, "q fwd"),
        (2048, 1024, 256, false, true, "up fwd"),
        (2048, 256, 1024, false, true, "down fwd"),
        (2048, 4096, 256, false, true, "logits fwd"),
        (2048, 256, 4096, false, false, "logits dx"),
        (4096, 256, 2048, true, false, "logits dW"),
        (256, 256, 2048, true, false, "o dW"),
        (1024, 256, 2048, true, false, "up dW"),
        (128, 128, 64, false, true, "attn qk"),
        (128, 64, 128, false, false, "attn pv"),
    ] {
        println!(
            "{name:>14} {m}x{n}x{k}: 1t {:.1} GF/s  2t {:.1} GF/s",
            run(m, n, k, 1, at, bt),
            run(m, n, k, 2, at, bt)
        );
    }
}
