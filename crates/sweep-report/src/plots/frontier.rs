//! The compute-optimal frontier (N_opt and D_opt against C for Chinchilla's approaches 1, 2 and 3
//! side by side, with bootstrap bands) and the IsoFLOP profiles with their parabolas and minima.
//!
//! laws.json fields read: a law's `kind` (`approach1`, `approach2`) or name (`chinchilla`: approach
//! 3), `frontier` (C, N_opt, D_opt with intervals: the band), else `params` (a, b, k_N, k_D for the
//! approaches; E, A, B, alpha, beta for chinchilla) for the line alone, `optimal` entries of kind
//! `compute_optimal` (markers with intervals), `variables` (the columns N, D, C, loss were read
//! from). The IsoFLOP profiles need only the results table (`C_budget` when the sweep records
//! it, else C clustered).

use super::{budget_groups, col, Drawn, Figure};
use crate::chart::{
    band, category, chart_on, colour, distinct, error_bars, log_axis, parabola, sci_label, si_label, span,
};
use crate::chart::{svg_chart, svg_panels, tryp, Interval, Marked, H, W};
use crate::view::{LawView, LawsView};
use plotters::prelude::*;
use sweep_fit::Table;

/// One approach's frontier: (C, N, N band, D, D band) along C, and its answers at the asked budgets.
struct Line {
    label: String,
    colour: RGBColor,
    /// (C, N_opt, N lo, N hi, D_opt, D lo, D hi); bands NaN when absent.
    curve: Vec<[f64; 7]>,
    /// (C, N_opt, N interval, D_opt, D interval) of `compute_optimal` entries.
    answers: Vec<(f64, f64, Interval, f64, Interval)>,
}

fn approach_label(e: &LawView) -> Option<(usize, String)> {
    match (e.kind.as_str(), e.name.as_str()) {
        ("approach1", _) => Some((0, "approach 1 (envelope of learning curves)".into())),
        ("approach2", _) => Some((1, "approach 2 (IsoFLOP parabolas)".into())),
        (_, "chinchilla") => Some((2, "approach 3 (parametric fit)".into())),
        _ if !e.frontier.is_empty() => Some((3, e.name.clone())),
        _ => None,
    }
}

fn line_of(e: &LawView, c_range: (f64, f64)) -> Option<Line> {
    let (i, label) = approach_label(e)?;
    if !e.fitted() {
        return None;
    }
    let nan = f64::NAN;
    let curve: Vec<[f64; 7]> = if !e.frontier.is_empty() {
        e.frontier
            .iter()
            .map(|p| {
                let (nl, nh) = p.n_opt.interval().unwrap_or((nan, nan));
                let (dl, dh) = p.d_opt.interval().unwrap_or((nan, nan));
                [p.c.0, p.n_opt.value(), nl, nh, p.d_opt.value(), dl, dh]
            })
            .collect()
    } else {
        // An older laws.json: the line from the parameters, without a band.
        let names = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        let opt: Box<dyn Fn(f64) -> (f64, f64)> = if e.name == "chinchilla" {
            let t = e.theta(&names(&["E", "A", "B", "alpha", "beta"]))?;
            Box::new(move |c| sweep_fit::optimal::chinchilla_optimal(&t, c))
        } else {
            let t = e.theta(&names(&["a", "b", "k_N", "k_D"]))?;
            Box::new(move |c| (t[2] * c.powf(t[0]), t[3] * c.powf(t[1])))
        };
        (0..=24)
            .map(|k| {
                let c = c_range.0 * (c_range.1 / c_range.0).powf(k as f64 / 24.0);
                let (n, d) = opt(c);
                [c, n, nan, nan, d, nan, nan]
            })
            .collect()
    };
    let answers = e
        .optimal
        .iter()
        .filter(|o| o.kind == "compute_optimal")
        .filter_map(|o| {
            let c = o.inputs.get("C")?.0;
            let n = o.values.get("N_opt")?;
            let d = o.values.get("D_opt")?;
            Some((c, n.value(), n.interval(), d.value(), d.interval()))
        })
        .collect();
    Some(Line { label, colour: category(i), curve, answers })
}

/// The minimum of each IsoFLOP profile: (budget, N at the minimum, loss there).
pub fn isoflop_minima(table: &Table, laws: Option<&LawsView>) -> Vec<(f64, f64, f64)> {
    profiles(table, laws).map(|p| p.iter().filter_map(|g| g.minimum).collect()).unwrap_or_default()
}

struct Profile {
    /// The legend: the budget, and the vocabulary size when the budget's points vary it.
    label: String,
    /// (N, loss) of its points.
    points: Vec<(f64, f64)>,
    /// (centre of ln N, coefficients) of the parabola in ln N.
    fit: Option<(f64, [f64; 3])>,
    /// (budget, N, loss) at the parabola's minimum when it opens upwards inside the profile.
    minimum: Option<(f64, f64, f64)>,
}

/// IsoFLOP profiles of the table: budgets with at least three distinct model sizes.
fn profiles(table: &Table, laws: Option<&LawsView>) -> Option<Vec<Profile>> {
    let a2 = laws.and_then(|l| l.laws.iter().find(|e| e.kind == "approach2"));
    let column = |v: &'static str| a2.map(|e| e.column(v).to_string()).unwrap_or_else(|| v.to_string());
    let (n, loss) = (col(table, &column("N"))?, col(table, &column("loss"))?);
    let rows: Vec<usize> = (0..table.len()).filter(|&i| n[i] > 0.0 && loss[i].is_finite()).collect();
    let (groups, _) = budget_groups(table, &column("C"), &rows);
    // A budget whose points vary the vocabulary (an IsoFLOP-over-vocabulary study) is one profile
    // per vocabulary size: sizes of different vocabularies are different curves.
    let vocab = col(table, "V");
    let mut split: Vec<(f64, String, Vec<usize>)> = Vec::new();
    for (budget, rows) in groups {
        let vs = vocab.map(|v| distinct(rows.iter().map(|&i| v[i]))).unwrap_or_default();
        match vocab {
            Some(v) if vs.len() > 1 => {
                for x in vs {
                    let sub = rows.iter().copied().filter(|&i| v[i] == x).collect();
                    split.push((budget, format!("C = {}, V = {}", sci_label(&budget), si_label(&x)), sub));
                }
            }
            _ => split.push((budget, format!("C = {}", sci_label(&budget)), rows)),
        }
    }
    let out: Vec<Profile> = split
        .into_iter()
        .filter(|g| distinct(g.2.iter().map(|&i| n[i])).len() >= 3)
        .map(|(budget, label, rows)| {
            let points: Vec<(f64, f64)> = rows.iter().map(|&i| (n[i], loss[i])).collect();
            let x: Vec<f64> = points.iter().map(|p| p.0.ln()).collect();
            let y: Vec<f64> = points.iter().map(|p| p.1).collect();
            let fit = parabola(&x, &y);
            let (lo, hi) =
                (x.iter().copied().fold(f64::INFINITY, f64::min), x.iter().copied().fold(f64::MIN, f64::max));
            let minimum = fit.and_then(|(m, k)| {
                let u = -k[1] / (2.0 * k[2]);
                let xm = m + u;
                (k[2] > 0.0 && xm >= lo && xm <= hi).then(|| (budget, xm.exp(), k[0] + k[1] * u + k[2] * u * u))
            });
            Profile { label, points, fit, minimum }
        })
        .collect();
    (!out.is_empty()).then_some(out)
}

/// IsoFLOP profiles: loss against N at each budget, the least-squares parabola in ln N and its
/// minimum. None unless some budget has three or more model sizes.
pub fn isoflop(table: &Table, laws: Option<&LawsView>) -> Option<Drawn> {
    let profiles = profiles(table, laws)?;
    let exact = col(table, "C_budget").is_some_and(|b| b.iter().any(|v| v.is_finite()));
    let all = || profiles.iter().flat_map(|p| p.points.iter().copied());
    let (xr, yr) = (span(all().map(|p| p.0), true)?, span(all().map(|p| p.1), false)?);
    let what = "isoflop.svg";
    let k = profiles.len();
    let drawn = svg_chart(
        what,
        "IsoFLOP profiles",
        (W, H),
        (log_axis(xr.0, xr.1), yr.0..yr.1),
        Some(SeriesLabelPosition::UpperRight),
        |chart| {
            tryp!(
                what,
                chart
                    .configure_mesh()
                    .light_line_style(BLACK.mix(0.04))
                    .x_desc("parameters N")
                    .y_desc("final validation loss (nats/token)")
                    .x_label_formatter(&|x| si_label(x))
                    .draw()
            );
            for (i, p) in profiles.iter().enumerate() {
                let c = colour(i, k);
                if let Some((m, q)) = p.fit {
                    let (lo, hi) = (
                        p.points.iter().map(|x| x.0.ln()).fold(f64::INFINITY, f64::min),
                        p.points.iter().map(|x| x.0.ln()).fold(f64::MIN, f64::max),
                    );
                    let curve = (0..=60).map(|j| {
                        let x = lo + (hi - lo) * j as f64 / 60.0;
                        let u = x - m;
                        (x.exp(), q[0] + q[1] * u + q[2] * u * u)
                    });
                    tryp!(what, chart.draw_series(LineSeries::new(curve, c.stroke_width(2))));
                }
                tryp!(what, chart.draw_series(p.points.iter().map(|&xy| Circle::new(xy, 4, c.filled()))))
                    .label(p.label.clone())
                    .legend(move |(x, y)| Circle::new((x + 9, y), 4, c.filled()));
                if let Some((_, nm, lm)) = p.minimum {
                    tryp!(what, chart.draw_series([TriangleMarker::new((nm, lm), 7, BLACK.filled())]));
                    tryp!(
                        what,
                        chart.draw_series([EmptyElement::at((nm, lm))
                            + Text::new(
                                format!("N* = {}", si_label(&nm)),
                                (8, 4),
                                ("sans-serif", 12).into_font().color(&BLACK.mix(0.8))
                            )])
                    );
                }
            }
            Ok(())
        },
    );
    let how = if exact {
        "points grouped by the budget they were placed on"
    } else {
        "points grouped by compute 6ND within 10%"
    };
    Some(drawn.map_err(|e| e.to_string()).map(|svg| {
        Figure::new(
            what,
            format!("IsoFLOP profiles: final loss against model size at each compute budget ({how}), the least-squares parabola in ln N, and its minimum N* (black triangle)"),
            svg,
            (W, H),
        )
    }))
}

/// The compute-optimal frontier: N_opt and D_opt against C for every fitted approach, with
/// bootstrap bands, the answers at the asked budgets (error bars), the finished runs (grey) and
/// the IsoFLOP minima (black). None when no approach was fitted.
pub fn frontier(table: Option<&Table>, laws: &LawsView) -> Option<Drawn> {
    // The runs' (C, N, D), in the first approach's columns.
    let first = laws.laws.iter().find(|e| approach_label(e).is_some() && e.fitted())?;
    let runs: Vec<(f64, f64, f64)> = table
        .and_then(|t| {
            let n = col(t, first.column("N"))?;
            let d = col(t, first.column("D")).or_else(|| col(t, "D"))?;
            Some((0..t.len()).map(|i| (6.0 * n[i] * d[i], n[i], d[i])).filter(|r| r.0 > 0.0).collect())
        })
        .unwrap_or_default();
    let minima: Vec<(f64, f64, f64)> = table
        .map(|t| isoflop_minima(t, Some(laws)))
        .unwrap_or_default()
        .into_iter()
        .map(|(c, n, _)| (c, n, c / (6.0 * n)))
        .collect();
    let mut c_span: Vec<f64> = runs.iter().map(|r| r.0).collect();
    for e in &laws.laws {
        c_span.extend(
            e.optimal.iter().filter(|o| o.kind == "compute_optimal").filter_map(|o| Some(o.inputs.get("C")?.0)),
        );
    }
    let c_range = span(c_span.iter().copied(), true).unwrap_or((1e15, 1e22));
    let lines: Vec<Line> = laws.laws.iter().filter_map(|e| line_of(e, c_range)).collect();
    if lines.is_empty() {
        return None;
    }
    let what = "frontier.svg";
    let panel = (560, 460);
    let drawn = svg_panels(what, "Compute-optimal frontier", 2, 2, panel, |i, area| {
        // Panel 0: N_opt (curve columns 1..=3); panel 1: D_opt (4..=6).
        let (k, name, unit) = if i == 0 { (1, "N_opt", "parameters") } else { (4, "D_opt", "tokens") };
        let mut xs: Vec<f64> = c_span.clone();
        let mut ys: Vec<f64> = runs.iter().map(|r| if i == 0 { r.1 } else { r.2 }).collect();
        for l in &lines {
            xs.extend(l.curve.iter().map(|p| p[0]));
            ys.extend(l.curve.iter().flat_map(|p| [p[k], p[k + 1], p[k + 2]]));
            ys.extend(l.answers.iter().map(|a| if i == 0 { a.1 } else { a.3 }));
        }
        let (Some(xr), Some(yr)) = (span(xs.into_iter(), true), span(ys.into_iter(), true)) else {
            return Ok(());
        };
        let caption = format!("{name} against compute");
        chart_on(
            what,
            area,
            &caption,
            (log_axis(xr.0, xr.1), log_axis(yr.0, yr.1)),
            Some(SeriesLabelPosition::UpperLeft),
            16,
            |chart| {
                tryp!(
                    what,
                    chart
                        .configure_mesh()
                        .light_line_style(BLACK.mix(0.04))
                        .x_desc("compute C (FLOPs)")
                        .y_desc(format!("{name} ({unit})"))
                        .x_label_formatter(&|x| sci_label(x))
                        .y_label_formatter(&|y| si_label(y))
                        .label_style(("sans-serif", 12))
                        .draw()
                );
                if !runs.is_empty() {
                    let grey = BLACK.mix(0.25);
                    tryp!(
                        what,
                        chart.draw_series(runs.iter().map(|r| Circle::new(
                            (r.0, if i == 0 { r.1 } else { r.2 }),
                            2,
                            grey.filled()
                        )))
                    )
                    .label("finished runs")
                    .legend(move |(x, y)| Circle::new((x + 9, y), 2, grey.filled()));
                }
                for l in &lines {
                    let c = l.colour;
                    let banded: Vec<(f64, f64, f64)> = l
                        .curve
                        .iter()
                        .filter(|p| p[k + 1].is_finite() && p[k + 2].is_finite() && p[k + 1] > 0.0)
                        .map(|p| (p[0], p[k + 1], p[k + 2]))
                        .collect();
                    if banded.len() >= 2 {
                        tryp!(what, chart.draw_series([band(&banded, c)]));
                    }
                    let line = l.curve.iter().filter(|p| p[k] > 0.0 && p[k].is_finite()).map(|p| (p[0], p[k]));
                    let label = if banded.len() >= 2 { format!("{} with band", l.label) } else { l.label.clone() };
                    tryp!(what, chart.draw_series(LineSeries::new(line, c.stroke_width(2))))
                        .label(label)
                        .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 18, y)], c.stroke_width(3)));
                    let ans: Vec<Marked> = l
                        .answers
                        .iter()
                        .map(|a| if i == 0 { (a.0, a.1, a.2) } else { (a.0, a.3, a.4) })
                        .filter(|a| a.1 > 0.0)
                        .collect();
                    let bars: Vec<(f64, f64, f64)> =
                        ans.iter().filter_map(|a| a.2.map(|(lo, hi)| (a.0, lo, hi))).filter(|b| b.1 > 0.0).collect();
                    error_bars(what, chart, &bars, c.stroke_width(2))?;
                    tryp!(
                        what,
                        chart.draw_series(
                            ans.iter().map(|a| Rectangle::new(
                                [(a.0 / 1.06, a.1 / 1.06), (a.0 * 1.06, a.1 * 1.06)],
                                c.filled()
                            ))
                        )
                    );
                }
                if !minima.is_empty() {
                    tryp!(
                        what,
                        chart.draw_series(minima.iter().map(|m| TriangleMarker::new(
                            (m.0, if i == 0 { m.1 } else { m.2 }),
                            6,
                            BLACK.filled()
                        )))
                    )
                    .label("IsoFLOP minima")
                    .legend(|(x, y)| TriangleMarker::new((x + 9, y), 5, BLACK.filled()));
                }
                Ok(())
            },
        )
    });
    let with_band = lines.iter().any(|l| l.curve.iter().any(|p| p[2].is_finite()));
    let note = if with_band {
        "shaded: the bootstrap interval"
    } else {
        "no bands: laws.json has no frontier intervals (bootstrap off, or written by an older sweep fit)"
    };
    Some(drawn.map_err(|e| e.to_string()).map(|svg| {
        Figure::new(
            what,
            format!("Compute-optimal frontier: N_opt and D_opt against compute for each fitted approach ({note}); squares with error bars: the answers at the budgets asked for in [fit.optimal]; grey: the finished runs; black triangles: the IsoFLOP minima"),
            svg,
            (panel.0 * 2, panel.1 + 36),
        )
    }))
}
