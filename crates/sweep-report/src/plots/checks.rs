//! How far to trust a fit: the extrapolation check (each law refitted without its largest models,
//! predicting them: predicted against observed with the prediction's bootstrap interval), the
//! residuals against each of the law's variables, and predicted against observed for all points.
//!
//! laws.json fields read: `extrapolation` (`held_out`, `n_train`, `mean_abs_rel_error`,
//! `max_abs_rel_error`, `points[].observed`, `.predicted`, `.predicted_ci`); for residuals and
//! parity, `params` and `variables` of a fitted built-in parametric law (predictions are
//! recomputed from the results table).

use super::{file_safe, Drawn, Figure, Model};
use crate::chart::{auto_label, tryp, Marked, H, W};
use crate::chart::{
    category, chart_on, colour, distinct, error_bars, index_of, log_axis, plain_label, si_label, span, svg_chart,
    svg_panels,
};
use crate::view::LawsView;
use plotters::prelude::*;
use sweep_fit::Table;

/// Predicted against observed for the held-out points of every law with an extrapolation
/// check, one panel per law, each prediction with its bootstrap interval.
pub fn extrapolation(laws: &LawsView) -> Option<Drawn> {
    let checks: Vec<_> = laws
        .laws
        .iter()
        .filter_map(|e| Some((e, e.extrapolation.as_ref().filter(|x| !x.points.is_empty())?)))
        .collect();
    if checks.is_empty() {
        return None;
    }
    let what = "extrapolation.svg";
    let n = checks.len();
    let cols = n.min(2);
    let panel = if n == 1 { (W, H) } else { (560, 440) };
    let drawn = svg_panels(
        what,
        "Extrapolation check: refit without the largest scale, predict it",
        n,
        cols,
        panel,
        |i, area| {
            let (e, x) = checks[i];
            let approach = e.kind.starts_with("approach");
            let response = if approach { "N_opt".to_string() } else { e.column("loss").to_string() };
            let pts: Vec<Marked> = x
                .points
                .iter()
                .map(|p| {
                    let ci = p.predicted_ci.map(|[a, b]| (a.0, b.0)).filter(|(a, b)| a.is_finite() && b.is_finite());
                    (p.observed.0, p.predicted.0, ci)
                })
                .filter(|p| p.0.is_finite() && p.1.is_finite())
                .collect();
            let values = pts.iter().flat_map(|p| [Some(p.0), Some(p.1), p.2.map(|c| c.0), p.2.map(|c| c.1)]).flatten();
            let log = approach;
            let Some((lo, hi)) = span(values, log) else { return Ok(()) };
            let caption = format!(
                "{}: mean |error| {:.2}%, max {:.2}%",
                e.name,
                100.0 * x.mean_abs_rel_error.0,
                100.0 * x.max_abs_rel_error.0
            );
            let label = format!("held out: {}", x.held_out);
            if log {
                chart_on(
                    what,
                    area,
                    &caption,
                    (log_axis(lo, hi), log_axis(lo, hi)),
                    Some(SeriesLabelPosition::UpperLeft),
                    15,
                    |chart| {
                        tryp!(
                            what,
                            chart
                                .configure_mesh()
                                .light_line_style(BLACK.mix(0.04))
                                .x_desc(format!("observed {response}"))
                                .y_desc(format!("predicted by the refit ({} points)", x.n_train))
                                .x_label_formatter(&|v| si_label(v))
                                .y_label_formatter(&|v| si_label(v))
                                .draw()
                        );
                        held_out_series(what, chart, &pts, (lo, hi), &label)
                    },
                )
            } else {
                chart_on(what, area, &caption, (lo..hi, lo..hi), Some(SeriesLabelPosition::UpperLeft), 15, |chart| {
                    tryp!(
                        what,
                        chart
                            .configure_mesh()
                            .light_line_style(BLACK.mix(0.04))
                            .x_desc(format!("observed {response}"))
                            .y_desc(format!("predicted by the refit ({} points)", x.n_train))
                            .draw()
                    );
                    held_out_series(what, chart, &pts, (lo, hi), &label)
                })
            }
        },
    );
    let cols = cols as u32;
    let rows = n.div_ceil(cols as usize) as u32;
    Some(drawn.map_err(|e| e.to_string()).map(|svg| {
        Figure::new(
            what,
            "Extrapolation check: each law refitted without its largest models (approaches: without the highest budgets), predicting what was held out; bars: the bootstrap interval of each prediction",
            svg,
            (panel.0 * cols, panel.1 * rows + 36),
        )
    }))
}

/// Relative residuals (observed / predicted - 1, in %) of each fitted built-in law against each
/// of its variables, one panel per variable, coloured by model size.
pub fn residuals(table: &Table, laws: &LawsView) -> Vec<Drawn> {
    let mut out = Vec::new();
    for e in &laws.laws {
        let Ok(m) = Model::of(e) else { continue };
        let rows = m.rows(table);
        if rows.is_empty() {
            continue;
        }
        let what = format!("residuals-{}.svg", file_safe(&e.name));
        // Size classes from the first N-like variable.
        let size_var = m.vars.iter().position(|v| v.starts_with('N')).unwrap_or(0);
        let sizes = distinct(rows.iter().map(|r| r.1[size_var]));
        let res: Vec<f64> = rows.iter().map(|r| 100.0 * (r.2 / r.3 - 1.0)).collect();
        let Some((ylo, yhi)) = span(res.iter().copied().chain([0.0]), false) else { continue };
        let nv = m.vars.len();
        let cols = nv.min(3);
        let panel = (if nv == 1 { W } else { 1000 / cols as u32 }, 340);
        let drawn =
            svg_panels(&what, &format!("{}: residuals against each variable", e.name), nv, cols, panel, |k, area| {
                let xs: Vec<f64> = rows.iter().map(|r| r.1[k]).collect();
                let positive = xs.iter().all(|&v| v > 0.0);
                let (mn, mx) = xs.iter().fold((f64::INFINITY, f64::NEG_INFINITY), |a, &v| (a.0.min(v), a.1.max(v)));
                let log = positive && mx / mn > 20.0;
                let Some((xlo, xhi)) = span(xs.iter().copied(), log) else { return Ok(()) };
                let var = m.vars[k].clone();
                let caption = if m.columns[k] == var {
                    format!("against {var}")
                } else {
                    format!("against {var} (column {})", m.columns[k])
                };
                let y_desc = "observed / predicted - 1 (%)";
                if log {
                    chart_on(&what, area, &caption, (log_axis(xlo, xhi), ylo..yhi), None, 15, |chart| {
                        tryp!(
                            what,
                            chart
                                .configure_mesh()
                                .light_line_style(BLACK.mix(0.04))
                                .x_desc(var.as_str())
                                .y_desc(y_desc)
                                .x_label_formatter(&|v| si_label(v))
                                .y_label_formatter(&|v| plain_label(v))
                                .draw()
                        );
                        residual_series(&what, chart, &rows, &res, (k, size_var), &sizes, (xlo, xhi))
                    })
                } else {
                    chart_on(&what, area, &caption, (xlo..xhi, ylo..yhi), None, 15, |chart| {
                        tryp!(
                            what,
                            chart
                                .configure_mesh()
                                .light_line_style(BLACK.mix(0.04))
                                .x_desc(var.as_str())
                                .y_desc(y_desc)
                                .x_label_formatter(&|v| auto_label(v))
                                .y_label_formatter(&|v| plain_label(v))
                                .draw()
                        );
                        residual_series(&what, chart, &rows, &res, (k, size_var), &sizes, (xlo, xhi))
                    })
                }
            });
        let rows_n = nv.div_ceil(cols) as u32;
        out.push(drawn.map_err(|e| e.to_string()).map(|svg| {
            Figure::new(
                what.clone(),
                format!("{}: relative residuals (observed / predicted - 1) of the {} fitted points against each variable; colour: model size", e.name, rows.len()),
                svg,
                (panel.0 * cols as u32, panel.1 * rows_n + 36),
            )
        }));
    }
    out
}

/// Predicted against observed for every point of each fitted built-in parametric law, with the
/// identity line. Err(reason) for a law that cannot be drawn.
pub fn parity(table: &Table, laws: &LawsView) -> Vec<(String, Drawn)> {
    let mut out = Vec::new();
    for e in &laws.laws {
        if e.kind.starts_with("approach") {
            continue;
        }
        let m = match Model::of(e) {
            Ok(m) => m,
            Err(why) => {
                out.push((e.name.clone(), Err(why)));
                continue;
            }
        };
        let pairs: Vec<(f64, f64)> = m.rows(table).iter().map(|r| (r.2, r.3)).collect();
        if pairs.is_empty() {
            out.push((e.name.clone(), Err("no point has all of the law's columns".into())));
            continue;
        }
        let what = format!("law-{}.svg", file_safe(&e.name));
        let Some((lo, hi)) = span(pairs.iter().flat_map(|&(a, b)| [a, b]), false) else { continue };
        let r2 = e.fit.as_ref().map(|f| f.r2.0).unwrap_or(f64::NAN);
        let caption = format!("{}: {} points, R² {:.4}", e.name, pairs.len(), r2);
        let drawn =
            svg_chart(&what, &caption, (W, H), (lo..hi, lo..hi), Some(SeriesLabelPosition::UpperLeft), |chart| {
                tryp!(
                    what,
                    chart
                        .configure_mesh()
                        .light_line_style(BLACK.mix(0.04))
                        .x_desc(format!("observed {}", m.response))
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
        out.push((
            e.name.clone(),
            drawn
                .map_err(|e| e.to_string())
                .map(|svg| Figure::new(what.clone(), format!("{}: predicted against observed", e.name), svg, (W, H))),
        ));
    }
    out
}

type Row = (usize, Vec<f64>, f64, f64);

/// The identity line, the held-out points and their intervals.
fn held_out_series<X: Ranged<ValueType = f64>, Y: Ranged<ValueType = f64>>(
    what: &str,
    chart: &mut ChartContext<'_, SVGBackend<'_>, Cartesian2d<X, Y>>,
    pts: &[Marked],
    (lo, hi): (f64, f64),
    label: &str,
) -> Result<(), crate::ReportError> {
    let c = category(0);
    tryp!(what, chart.draw_series(LineSeries::new([(lo, lo), (hi, hi)], BLACK.mix(0.4).stroke_width(1))))
        .label("predicted = observed")
        .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 18, y)], BLACK.mix(0.4)));
    let bars: Vec<(f64, f64, f64)> = pts.iter().filter_map(|p| p.2.map(|(a, b)| (p.0, a, b))).collect();
    error_bars(what, chart, &bars, c.stroke_width(1))?;
    tryp!(what, chart.draw_series(pts.iter().map(|p| Circle::new((p.0, p.1), 4, c.filled()))))
        .label(label)
        .legend(move |(x, y)| Circle::new((x + 9, y), 4, c.filled()));
    Ok(())
}

/// The zero line and the residuals against variable `k`, coloured by the size variable.
fn residual_series<X: Ranged<ValueType = f64>, Y: Ranged<ValueType = f64>>(
    what: &str,
    chart: &mut ChartContext<'_, SVGBackend<'_>, Cartesian2d<X, Y>>,
    rows: &[Row],
    res: &[f64],
    (k, size_var): (usize, usize),
    sizes: &[f64],
    (xlo, xhi): (f64, f64),
) -> Result<(), crate::ReportError> {
    tryp!(what, chart.draw_series(LineSeries::new([(xlo, 0.0), (xhi, 0.0)], BLACK.mix(0.5))));
    tryp!(
        what,
        chart.draw_series(rows.iter().zip(res).map(|(r, &y)| {
            let c = colour(index_of(r.1[size_var], sizes), sizes.len());
            Circle::new((r.1[k], y), 3, c.filled())
        }))
    );
    Ok(())
}
