//! The report of a sweep: SVG plots and an index.html that shows them beside the points and the
//! fitted laws.
//!
//! - `loss_curves.svg`: validation loss against training tokens for every point (log x), one
//!   colour per model size.
//! - `final_loss.svg`: final loss of every finished point against its training compute 6ND.
//! - `law-<name>.svg`: for each fitted parametric built-in law, the law's prediction against the
//!   observed loss at every point it was fitted to, with the identity line.
//! - `index.html`: status counts, the laws (estimates, intervals, fit quality, optimal
//!   configurations) and a table of the points.
//!
//! [`inputs`] reads a sweep directory into the report's inputs ([`inputs::write_sweep_report`]
//! does both); [`write_report`] draws from inputs given by any caller. Every file is written to
//! a temporary name and renamed into place.

pub mod inputs;

pub use inputs::write_sweep_report;

use plotters::coord::ranged1d::AsRangedCoord;
use plotters::prelude::*;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use sweep_fit::{LawsFile, Table};

/// Errors of report generation.
#[derive(Debug, thiserror::Error)]
pub enum ReportError {
    /// Writing a file failed.
    #[error("writing {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// Drawing a plot failed.
    #[error("drawing {what}: {msg}")]
    Plot {
        /// The plot.
        what: String,
        /// The cause.
        msg: String,
    },
}

/// One point of the sweep, as the report shows it.
#[derive(Debug, Clone)]
pub struct PointSummary {
    /// Point id.
    pub id: String,
    /// Model label from the grid ("tiny", "1e6", ...).
    pub label: String,
    /// Non-embedding parameters.
    pub n: f64,
    /// All parameters (the N of laws that count all parameters, such as Chinchilla's).
    pub n_total: f64,
    /// Training tokens.
    pub d: f64,
    /// Domain mixture ratio.
    pub r: f64,
    /// Vocabulary size.
    pub vocab: usize,
    /// Precision name.
    pub precision: String,
    /// done, failed, running or pending.
    pub state: String,
    /// Final validation loss (finished points).
    pub final_loss: Option<f64>,
    /// (tokens, validation loss) at each evaluation.
    pub curve: Vec<(f64, f64)>,
}

/// What [`write_report`] wrote.
#[derive(Debug, Clone)]
pub struct ReportSummary {
    /// The report directory.
    pub dir: PathBuf,
    /// Files written (plots and index.html), in order.
    pub files: Vec<PathBuf>,
    /// Laws that got no plot, with the reason.
    pub skipped: Vec<(String, String)>,
}

const W: u32 = 760;
const H: u32 = 480;

/// Writes the plots and index.html of a sweep into `dir` (created if needed). `table` is the
/// results table the laws were fitted to (one row per finished point), `laws` the fitted laws.
pub fn write_report(
    dir: &Path,
    title: &str,
    points: &[PointSummary],
    table: Option<&Table>,
    laws: Option<&LawsFile>,
) -> Result<ReportSummary, ReportError> {
    std::fs::create_dir_all(dir).map_err(|e| ReportError::Io { path: dir.to_path_buf(), source: e })?;
    let mut files = Vec::new();
    let mut skipped = Vec::new();
    let mut images: Vec<(String, String)> = Vec::new();
    let sizes = size_classes(points);
    if points.iter().any(|p| !p.curve.is_empty()) {
        let svg = loss_curves(points, &sizes)?;
        files.push(write_atomic(dir, "loss_curves.svg", &svg)?);
        images.push(("loss_curves.svg".into(), "Validation loss against training tokens, one line per point".into()));
    }
    if points.iter().any(|p| p.final_loss.is_some()) {
        let svg = final_loss(points, &sizes, laws.and_then(nd_law))?;
        files.push(write_atomic(dir, "final_loss.svg", &svg)?);
        images.push(("final_loss.svg".into(), "Final loss against training compute 6ND, with the fitted law's curve for each model size when one was fitted".into()));
    }
    if let (Some(table), Some(laws)) = (table, laws) {
        for entry in &laws.laws {
            match law_parity(entry, table) {
                Ok(svg) => {
                    let name = format!("law-{}.svg", file_safe(&entry.name));
                    files.push(write_atomic(dir, &name, &svg)?);
                    images.push((name, format!("{}: predicted against observed", entry.name)));
                }
                Err(why) => skipped.push((entry.name.clone(), why)),
            }
        }
    }
    let html = index_html(title, points, laws, &images, &skipped);
    files.push(write_atomic(dir, "index.html", &html)?);
    Ok(ReportSummary { dir: dir.to_path_buf(), files, skipped })
}

/// Writes `contents` to dir/name atomically (sweep-io: a temporary file, fsync, rename).
fn write_atomic(dir: &Path, name: &str, contents: &str) -> Result<PathBuf, ReportError> {
    let path = dir.join(name);
    sweep_io::atomic::write(&path, contents.as_bytes())
        .map_err(|e| ReportError::Io { path: path.clone(), source: e })?;
    Ok(path)
}

fn file_safe(name: &str) -> String {
    name.chars().map(|c| if c.is_ascii_alphanumeric() || c == '-' || c == '_' { c } else { '_' }).collect()
}

/// Distinct model sizes, ascending (each gets a colour).
fn size_classes(points: &[PointSummary]) -> Vec<f64> {
    let mut v: Vec<f64> = points.iter().map(|p| p.n).filter(|n| n.is_finite()).collect();
    v.sort_by(f64::total_cmp);
    v.dedup();
    v
}

/// A colour from dark blue (smallest) to yellow (largest), viridis-like.
fn colour(i: usize, n: usize) -> RGBColor {
    const STOPS: [(u8, u8, u8); 5] = [(68, 1, 84), (59, 82, 139), (33, 145, 140), (94, 201, 98), (253, 231, 37)];
    let t = if n <= 1 { 0.0 } else { i as f64 / (n - 1) as f64 };
    let x = t * (STOPS.len() - 1) as f64;
    let k = (x.floor() as usize).min(STOPS.len() - 2);
    let f = x - k as f64;
    let mix = |a: u8, b: u8| (a as f64 + (b as f64 - a as f64) * f).round() as u8;
    let (a, b) = (STOPS[k], STOPS[k + 1]);
    RGBColor(mix(a.0, b.0), mix(a.1, b.1), mix(a.2, b.2))
}

fn colour_of(n: f64, sizes: &[f64]) -> RGBColor {
    let i = sizes.iter().position(|&s| s == n).unwrap_or(0);
    colour(i, sizes.len())
}

/// 1.2M, 350k, 3.4B ...
pub fn si(x: f64) -> String {
    let a = x.abs();
    let (v, s) = if a >= 1e12 {
        (x / 1e12, "T")
    } else if a >= 1e9 {
        (x / 1e9, "B")
    } else if a >= 1e6 {
        (x / 1e6, "M")
    } else if a >= 1e3 {
        (x / 1e3, "k")
    } else {
        (x, "")
    };
    if v.abs() >= 100.0 {
        format!("{v:.0}{s}")
    } else if v.abs() >= 10.0 {
        format!("{v:.1}{s}")
    } else {
        format!("{v:.2}{s}")
    }
}

/// Range [lo, hi] of finite values, padded; a degenerate range is widened.
fn span(values: impl Iterator<Item = f64>, log: bool) -> Option<(f64, f64)> {
    let (mut lo, mut hi) = (f64::INFINITY, f64::NEG_INFINITY);
    for v in values.filter(|v| v.is_finite() && (!log || *v > 0.0)) {
        lo = lo.min(v);
        hi = hi.max(v);
    }
    if !lo.is_finite() {
        return None;
    }
    if log {
        let (l, h) = if hi > lo { (lo, hi) } else { (lo / 2.0, hi * 2.0) };
        Some((l / 1.15, h * 1.15))
    } else {
        let pad = if hi > lo { 0.05 * (hi - lo) } else { 0.5f64.max(lo.abs() * 0.05) };
        Some((lo - pad, hi + pad))
    }
}

macro_rules! tryp {
    ($what:expr, $e:expr) => {
        $e.map_err(|e| ReportError::Plot { what: $what.to_string(), msg: e.to_string() })?
    };
}

/// A chart's SVG text: a white canvas, the caption, axes over `x` by `y`, what `draw` adds
/// (mesh and series), then the legend at `legend`.
fn svg_chart<X: AsRangedCoord, Y: AsRangedCoord>(
    what: &str,
    caption: &str,
    (x, y): (X, Y),
    legend: SeriesLabelPosition,
    draw: impl FnOnce(
        &mut ChartContext<'_, SVGBackend<'_>, Cartesian2d<X::CoordDescType, Y::CoordDescType>>,
    ) -> Result<(), ReportError>,
) -> Result<String, ReportError> {
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (W, H)).into_drawing_area();
        tryp!(what, root.fill(&WHITE));
        let mut chart = tryp!(
            what,
            ChartBuilder::on(&root)
                .caption(caption, ("sans-serif", 20))
                .margin(12)
                .x_label_area_size(42)
                .y_label_area_size(56)
                .build_cartesian_2d(x, y)
        );
        draw(&mut chart)?;
        tryp!(
            what,
            chart
                .configure_series_labels()
                .position(legend)
                .background_style(WHITE.mix(0.85))
                .border_style(BLACK)
                .draw()
        );
        tryp!(what, root.present());
    }
    Ok(svg)
}

fn loss_curves(points: &[PointSummary], sizes: &[f64]) -> Result<String, ReportError> {
    let what = "loss_curves.svg";
    let all = || points.iter().flat_map(|p| p.curve.iter().copied());
    let (Some((x0, x1)), Some((y0, y1))) = (span(all().map(|c| c.0), true), span(all().map(|c| c.1), false)) else {
        return Err(ReportError::Plot { what: what.into(), msg: "no finite losses".into() });
    };
    svg_chart(
        what,
        "Validation loss during training",
        ((x0..x1).log_scale(), y0..y1),
        SeriesLabelPosition::UpperRight,
        |chart| {
            tryp!(
                what,
                chart
                    .configure_mesh()
                    .x_labels(8)
                    .light_line_style(BLACK.mix(0.04))
                    .x_desc("training tokens")
                    .y_desc("validation loss (nats/token)")
                    .x_label_formatter(&|x| si(*x))
                    .draw()
            );
            let mut labelled = std::collections::BTreeSet::new();
            for p in points.iter().filter(|p| !p.curve.is_empty()) {
                let c = colour_of(p.n, sizes);
                let series = tryp!(
                    what,
                    chart.draw_series(LineSeries::new(
                        p.curve.iter().copied().filter(|(x, y)| *x > 0.0 && y.is_finite()),
                        c.stroke_width(2)
                    ))
                );
                if labelled.insert(p.n.to_bits()) {
                    series
                        .label(format!("N = {}", si(p.n)))
                        .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 18, y)], c.stroke_width(3)));
                }
            }
            Ok(())
        },
    )
}

/// A fitted law of N and D drawn over the final losses: its name, the law, its parameters in
/// the law's order, and whether its N counts all parameters (its counting convention).
type NdLaw = (String, Box<dyn sweep_fit::Law>, Vec<f64>, bool);

/// The first fitted parametric built-in law of N and D alone (chinchilla, kaplan).
fn nd_law(laws: &LawsFile) -> Option<NdLaw> {
    laws.laws.iter().filter(|e| e.kind == "parametric" && e.error.is_none()).find_map(|e| {
        let law = sweep_fit::laws::builtin_law(&e.name).ok()?;
        let mut vars = law.variables();
        vars.sort();
        if vars != ["D", "N"] {
            return None;
        }
        let theta =
            law.params().iter().map(|p| e.params.get(&p.name).map(|v| v.estimate)).collect::<Option<Vec<f64>>>()?;
        let all = e.variables.get("N").is_some_and(|c| c == "N_total");
        Some((e.name.clone(), law, theta, all))
    })
}

fn final_loss(points: &[PointSummary], sizes: &[f64], law: Option<NdLaw>) -> Result<String, ReportError> {
    let what = "final_loss.svg";
    let done: Vec<(f64, f64, f64)> = points
        .iter()
        .filter_map(|p| Some((6.0 * p.n * p.d, p.final_loss?, p.n)))
        .filter(|(c, l, _)| *c > 0.0 && l.is_finite())
        .collect();
    let (Some((x0, x1)), Some((y0, y1))) =
        (span(done.iter().map(|d| d.0), true), span(done.iter().map(|d| d.1), false))
    else {
        return Err(ReportError::Plot { what: what.into(), msg: "no finished points with finite losses".into() });
    };
    svg_chart(
        what,
        "Final loss against compute",
        ((x0..x1).log_scale(), y0..y1),
        SeriesLabelPosition::UpperRight,
        |chart| {
            tryp!(
                what,
                chart
                    .configure_mesh()
                    .x_labels(8)
                    .light_line_style(BLACK.mix(0.04))
                    .x_desc("training compute 6ND (FLOPs)")
                    .y_desc("final validation loss")
                    .x_label_formatter(&|x| format!("{x:.0e}"))
                    .draw()
            );
            // The fitted law's loss for each model size across the compute range (D = C / 6N).
            if let Some((name, law, theta, all_params)) = &law {
                let vars = law.variables();
                let mut labelled = false;
                for (i, &n) in sizes.iter().enumerate() {
                    let c = colour(i, sizes.len());
                    // The law's own N for this size class (all parameters for Chinchilla's count).
                    let n_law = if *all_params { points.iter().find(|p| p.n == n).map_or(n, |p| p.n_total) } else { n };
                    let curve: Vec<(f64, f64)> = (0..=60)
                        .map(|k| x0 * (x1 / x0).powf(k as f64 / 60.0))
                        .filter_map(|cx| {
                            let x: Vec<f64> =
                                vars.iter().map(|v| if v == "N" { n_law } else { cx / (6.0 * n) }).collect();
                            let y = law.predict(theta, &x);
                            (y.is_finite() && y >= y0 && y <= y1).then_some((cx, y))
                        })
                        .collect();
                    if curve.len() < 2 {
                        continue;
                    }
                    let series = tryp!(what, chart.draw_series(LineSeries::new(curve, c.mix(0.9).stroke_width(1))));
                    if !labelled {
                        labelled = true;
                        let label = format!("fitted {name}");
                        series
                            .label(label)
                            .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 18, y)], BLACK.mix(0.6)));
                    }
                }
            }
            for (i, &n) in sizes.iter().enumerate() {
                let c = colour(i, sizes.len());
                let mut pts: Vec<(f64, f64)> = done.iter().filter(|d| d.2 == n).map(|d| (d.0, d.1)).collect();
                if pts.is_empty() {
                    continue;
                }
                pts.sort_by(|a, b| a.0.total_cmp(&b.0));
                if law.is_none() {
                    tryp!(what, chart.draw_series(LineSeries::new(pts.iter().copied(), c.mix(0.5).stroke_width(1))));
                }
                tryp!(what, chart.draw_series(pts.iter().map(|&(x, y)| Circle::new((x, y), 4, c.filled()))))
                    .label(format!("N = {}", si(n)))
                    .legend(move |(x, y)| Circle::new((x + 9, y), 4, c.filled()));
            }
            Ok(())
        },
    )
}

/// Predicted against observed for a parametric built-in law; Err(reason) when it cannot be drawn.
fn law_parity(entry: &sweep_fit::LawEntry, table: &Table) -> Result<String, String> {
    if let Some(e) = &entry.error {
        return Err(format!("not fitted: {e}"));
    }
    if entry.kind != "parametric" {
        return Err(format!("{} fits are not a formula with a prediction per point", entry.kind));
    }
    let r2 = entry.fit.as_ref().map_or(f64::NAN, |f| f.r2);
    let law = sweep_fit::laws::builtin_law(&entry.name)
        .map_err(|_| "not a built-in law (user formulas are listed, not plotted)".to_string())?;
    let theta: Vec<f64> = law
        .params()
        .iter()
        .map(|p| {
            entry
                .params
                .get(&p.name)
                .map(|e| e.estimate)
                .ok_or_else(|| format!("laws.json has no parameter {}", p.name))
        })
        .collect::<Result<_, _>>()?;
    let col = |v: &str| -> Result<&[f64], String> {
        let name = entry.variables.get(v).map(String::as_str).unwrap_or(v);
        table.column(name).map_err(|e| e.to_string())
    };
    let vars: Vec<&[f64]> = law.variables().iter().map(|v| col(v)).collect::<Result<_, _>>()?;
    let observed = col(&law.response())?;
    let pairs: Vec<(f64, f64)> = (0..table.len())
        .filter_map(|i| {
            let x: Vec<f64> = vars.iter().map(|c| c[i]).collect();
            if law.check_inputs(&x).is_err() || !observed[i].is_finite() {
                return None;
            }
            let p = law.predict(&theta, &x);
            p.is_finite().then_some((observed[i], p))
        })
        .collect();
    if pairs.is_empty() {
        return Err("no point has all of the law's columns".into());
    }
    let what = format!("law-{}.svg", entry.name);
    let (lo, hi) = span(pairs.iter().flat_map(|&(a, b)| [a, b]), false).ok_or("no finite values")?;
    let caption = format!("{}: {} points, R² {:.4}", entry.name, pairs.len(), r2);
    let drawn = svg_chart(&what, &caption, (lo..hi, lo..hi), SeriesLabelPosition::UpperLeft, |chart| {
        tryp!(
            what,
            chart
                .configure_mesh()
                .light_line_style(BLACK.mix(0.04))
                .x_desc(format!("observed {}", law.response()))
                .y_desc("predicted by the fitted law")
                .draw()
        );
        tryp!(what, chart.draw_series(LineSeries::new([(lo, lo), (hi, hi)], BLACK.mix(0.4).stroke_width(1))))
            .label("predicted = observed")
            .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 18, y)], BLACK.mix(0.4)));
        let c = colour(1, 4);
        tryp!(what, chart.draw_series(pairs.iter().map(|&(o, p)| Circle::new((o, p), 4, c.filled()))))
            .label("finished points")
            .legend(move |(x, y)| Circle::new((x + 9, y), 4, c.filled()));
        Ok(())
    });
    drawn.map_err(|e| e.to_string())
}

fn esc(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;")
}

fn num(x: f64) -> String {
    if !x.is_finite() {
        return "–".into();
    }
    let a = x.abs();
    if a != 0.0 && !(1e-3..1e5).contains(&a) {
        format!("{x:.4e}")
    } else {
        format!("{x:.5}")
    }
}

fn index_html(
    title: &str,
    points: &[PointSummary],
    laws: Option<&LawsFile>,
    images: &[(String, String)],
    skipped: &[(String, String)],
) -> String {
    let mut h = String::new();
    let count = |s: &str| points.iter().filter(|p| p.state == s).count();
    let _ = write!(
        h,
        "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>{t}</title>\n<style>body{{font-family:sans-serif;margin:2em;max-width:1100px}}table{{border-collapse:collapse;margin:1em 0}}td,th{{border:1px solid #ccc;padding:3px 8px;text-align:right}}th{{background:#f3f3f3}}td.l,th.l{{text-align:left}}img{{max-width:100%;border:1px solid #ddd;margin:.5em 0}}code{{background:#f6f6f6}}</style></head><body>\n<h1>{t}</h1>\n<p>{n} points: {d} done, {r} running, {p} pending, {f} failed.</p>\n",
        t = esc(title),
        n = points.len(),
        d = count("done"),
        r = count("running"),
        p = count("pending"),
        f = count("failed"),
    );
    for (file, caption) in images {
        let _ = writeln!(
            h,
            "<figure><img src=\"{f}\" alt=\"{c}\"><figcaption>{c}</figcaption></figure>",
            f = esc(file),
            c = esc(caption)
        );
    }
    match laws {
        None => h.push_str(
            "<h2>Laws</h2>\n<p>No laws.json yet (the sweep has no [fit] section, or the fit has not run).</p>\n",
        ),
        Some(laws) => {
            h.push_str("<h2>Laws</h2>\n");
            for l in &laws.laws {
                let group = l
                    .group
                    .as_ref()
                    .map(|g| g.iter().map(|(k, v)| format!("{k} = {}", si(*v))).collect::<Vec<_>>().join(", "))
                    .map(|g| format!(" ({g})"))
                    .unwrap_or_default();
                let _ =
                    writeln!(h, "<h3>{}{}</h3>\n<p><code>{}</code></p>", esc(&l.name), esc(&group), esc(&l.formula));
                if let Some(c) = &l.counting {
                    let cols: Vec<String> = c.columns.iter().map(|(v, col)| format!("{v} ← {col}")).collect();
                    let _ = writeln!(
                        h,
                        "<p>Counting: parameters <b>{}</b>, compute <b>{}</b> ({}){}</p>",
                        esc(&c.parameters),
                        esc(&c.compute),
                        esc(&cols.join(", ")),
                        if c.assumed { " — assumed: the table has no column for this convention" } else { "" }
                    );
                }
                for note in &l.notes {
                    let _ = writeln!(h, "<p class=\"note\">Note: {}</p>", esc(note));
                }
                let Some(fit) = &l.fit else {
                    let _ = writeln!(h, "<p><b>Not fitted:</b> {}</p>", esc(l.error.as_deref().unwrap_or("no fit")));
                    continue;
                };
                let _ = writeln!(
                    h,
                    "<p>{}; {} points, objective {}, R² {:.4}{}</p>",
                    esc(&l.kind),
                    fit.n_points,
                    esc(&fit.objective),
                    fit.r2,
                    fit.grad_norm.map(|g| format!(", final gradient norm {}", num(g))).unwrap_or_default()
                );
                if let Some(why) = fit.bootstrap.as_ref().and_then(|b| b.intervals_withheld.as_ref()) {
                    let _ = writeln!(h, "<p><b>Intervals withheld:</b> {}</p>", esc(why));
                }
                h.push_str("<table><tr><th class=\"l\">parameter</th><th>estimate</th><th>interval</th></tr>\n");
                for (name, e) in l.params.iter().chain(l.derived.iter()) {
                    let ci = e.ci.map(|[a, b]| format!("[{}, {}]", num(a), num(b))).unwrap_or_else(|| "–".into());
                    let _ = writeln!(
                        h,
                        "<tr><td class=\"l\">{}</td><td>{}</td><td>{}</td></tr>",
                        esc(name),
                        num(e.estimate),
                        ci
                    );
                }
                h.push_str("</table>\n");
                if !l.optimal.is_empty() {
                    h.push_str("<p>Optimal configurations:</p><ul>\n");
                    for o in &l.optimal {
                        let _ =
                            writeln!(h, "<li><code>{}</code></li>", esc(&serde_json::to_string(o).unwrap_or_default()));
                    }
                    h.push_str("</ul>\n");
                }
                if let Some((_, why)) = skipped.iter().find(|(n, _)| n == &l.name) {
                    let _ = writeln!(h, "<p>No plot: {}.</p>", esc(why));
                }
            }
        }
    }
    if let Some(laws) = laws.filter(|l| !l.left_out.is_empty()) {
        let _ = writeln!(h, "<p>{} point(s) of the sweep are not in these fits:</p><ul>", laws.left_out.len());
        for p in &laws.left_out {
            let _ = writeln!(
                h,
                "<li><code>{}</code> ({}): {}: {}</li>",
                esc(&p.point),
                esc(&p.label),
                esc(&p.state),
                esc(&p.reason)
            );
        }
        h.push_str("</ul>\n");
    }
    h.push_str("<h2>Points</h2>\n<table><tr><th class=\"l\">id</th><th class=\"l\">model</th><th>N</th><th>D</th><th>r</th><th>V</th><th class=\"l\">precision</th><th class=\"l\">state</th><th>final loss</th></tr>\n");
    for p in points {
        let _ = writeln!(
            h,
            "<tr><td class=\"l\"><code>{}</code></td><td class=\"l\">{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td class=\"l\">{}</td><td class=\"l\">{}</td><td>{}</td></tr>",
            esc(&p.id[..p.id.len().min(12)]),
            esc(&p.label),
            si(p.n),
            si(p.d),
            p.r,
            p.vocab,
            esc(&p.precision),
            esc(&p.state),
            p.final_loss.map(num).unwrap_or_else(|| "–".into())
        );
    }
    h.push_str("</table>\n</body></html>\n");
    h
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn si_prefixes() {
        assert_eq!(si(1.5e6), "1.50M");
        assert_eq!(si(350_000.0), "350k");
        assert_eq!(si(12.0), "12.0");
    }

    #[test]
    fn colours_run_from_first_to_last_stop() {
        assert_eq!(colour(0, 3), RGBColor(68, 1, 84));
        assert_eq!(colour(2, 3), RGBColor(253, 231, 37));
    }
}
