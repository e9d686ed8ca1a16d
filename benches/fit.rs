//! Fitter benchmark: the 4500-start Chinchilla approach-3 fit on 240 points, and a 1000-resample
//! bootstrap, on benches/data/chinchilla_synth.csv (written by scripts/fit_reference.py, which
//! times scipy doing the same fit). Run both with scripts/bench_fit.sh.

use criterion::{criterion_group, criterion_main, Criterion};
use std::hint::black_box;
use std::path::Path;
use sweep_fit::bootstrap::bootstrap_params;
use sweep_fit::fit::{fit_multistart, Dataset, FitOptions};
use sweep_fit::law::start_grid;
use sweep_fit::laws::builtin_law;
use sweep_fit::Table;

fn bench(c: &mut Criterion) {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("benches/data/chinchilla_synth.csv");
    let table = Table::from_csv(&path, &[]).expect("benches/data/chinchilla_synth.csv");
    let law = builtin_law("chinchilla").unwrap();
    let data = Dataset::from_table(law.as_ref(), &table, &|s: &str| s.to_string()).unwrap();
    let starts = start_grid(law.params());
    assert_eq!(starts.len(), 4500);
    let opts = FitOptions::default();
    let fit = fit_multistart(law.as_ref(), &data, &starts, &opts).unwrap();
    eprintln!("best of 4500 starts: {:?} (objective {:.12e})", fit.best.theta, fit.best.objective);
    let boot_starts: Vec<Vec<f64>> = fit.top.iter().take(3).map(|r| r.theta.clone()).collect();

    let mut g = c.benchmark_group("chinchilla_240_points");
    g.sample_size(10);
    g.bench_function("fit_4500_starts", |b| {
        b.iter(|| fit_multistart(law.as_ref(), black_box(&data), &starts, &opts).unwrap())
    });
    g.bench_function("bootstrap_1000_resamples", |b| {
        b.iter(|| bootstrap_params(law.as_ref(), black_box(&data), &boot_starts, &opts, 1000, 0))
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
