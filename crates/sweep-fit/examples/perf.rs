use sweep_fit::{fit::*, laws::*, law::*, table::Table};
fn main() {
    let t = Table::from_csv(std::path::Path::new("benches/data/chinchilla_synth.csv"), &[]).unwrap();
    let law = builtin_law("chinchilla").unwrap();
    let data = Dataset::from_table(law.as_ref(), &t, &|s: &str| s.to_string()).unwrap();
    let starts = start_grid(law.params());
    let opts = FitOptions::default();
    let t0 = std::time::Instant::now();
    let r = fit_multistart(law.as_ref(), &data, &starts, &opts).unwrap();
    println!("{:?} {:?}", t0.elapsed(), r.best);
    println!("conv {} stalled {} maxit {} failed {} atbest {}", r.starts_converged, r.starts_stalled, r.starts_max_iters, r.starts_failed, r.starts_at_best);
    let mut its: Vec<u64> = starts.iter().filter_map(|s| fit_from(law.as_ref(), &data, s, &opts)).map(|r| r.iterations).collect();
    its.sort(); println!("iters median {} p90 {} max {}", its[its.len()/2], its[its.len()*9/10], its[its.len()-1]);
}
