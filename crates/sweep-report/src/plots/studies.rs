//! The plots of particular studies, each drawn when the results table varies its axis:
//! - mixture ratio (column `r`, three or more values): general and domain loss against r per
//!   (N, D), with the fitted D-CPT laws' curves (laws `dcpt_general`, `dcpt_domain`: `params`,
//!   `variables`);
//! - vocabulary size (column `V`, two or more values): loss against V per compute budget
//!   (`C_budget`, else C within 10%), with the fitted `vocab` law's curve (`params`, `variables`;
//!   its response column, e.g. unigram-normalised loss, is the one plotted);
//! - precision (column `bits` or `exp_bits`, two or more values): loss against bits per model
//!   size, and loss against the exponent/mantissa split per size, with the fitted `fp_quant`
//!   law's curve along each bit width's splits (`params`, `variables`).

use super::{budget_groups, col, Drawn, Figure, Model};
use crate::chart::{
    category, chart_on, colour, distinct, log_axis, sci_label, si_label, span, svg_chart, svg_panels, tryp,
};
use crate::chart::{H, W};
use crate::view::LawsView;
use plotters::prelude::*;
use sweep_fit::Table;

fn model(laws: Option<&LawsView>, name: &str) -> Option<Model> {
    laws?.laws.iter().find(|e| e.name == name).and_then(|e| Model::of(e).ok())
}

/// Column of variable `v` for `m` (or `v` itself).
fn column_of(m: Option<&Model>, v: &str) -> String {
    m.and_then(|m| m.vars.iter().position(|x| x == v).map(|k| m.columns[k].clone())).unwrap_or_else(|| v.to_string())
}

/// Loss against mixture ratio per (N, D): a panel for the general and one for the domain loss,
/// each with its D-CPT law's curves when fitted.
pub fn mixture(table: &Table, laws: Option<&LawsView>) -> Option<Drawn> {
    let (mg, md) = (model(laws, "dcpt_general"), model(laws, "dcpt_domain"));
    let any = mg.as_ref().or(md.as_ref());
    let (r_col, n_col, d_col) = (column_of(any, "r"), column_of(any, "N"), column_of(any, "D"));
    let (r, n, d) = (col(table, &r_col)?, col(table, &n_col)?, col(table, &d_col)?);
    if distinct(r.iter().copied()).len() < 3 {
        return None;
    }
    let general = mg.as_ref().map(|m| m.response.clone()).unwrap_or_else(|| "loss_general".into());
    let domain = md.as_ref().map(|m| m.response.clone()).unwrap_or_else(|| "loss_domain".into());
    let panels: Vec<(String, &[f64], Option<&Model>)> = [(general, mg.as_ref()), (domain, md.as_ref())]
        .into_iter()
        .filter_map(|(name, m)| {
            let c = col(table, &name)?;
            c.iter().any(|v| v.is_finite()).then_some((name, c, m))
        })
        .collect();
    if panels.is_empty() {
        return None;
    }
    // (N, D) groups, ordered by N then D.
    let mut groups: Vec<(f64, f64)> = Vec::new();
    for i in 0..table.len() {
        if !groups.contains(&(n[i], d[i])) {
            groups.push((n[i], d[i]));
        }
    }
    groups.sort_by(|a, b| a.0.total_cmp(&b.0).then(a.1.total_cmp(&b.1)));
    let what = "mixture.svg";
    let np = panels.len();
    let panel = (560, 460);
    let drawn = svg_panels(
        what,
        "Loss against the domain mixture ratio r, per model size and token budget",
        np,
        2,
        panel,
        |p, area| {
            let (name, y, m) = &panels[p];
            let mut ys: Vec<f64> = y.to_vec();
            let curves: Vec<Vec<(f64, f64)>> = groups
                .iter()
                .map(|&(gn, gd)| {
                    let Some(m) = m else { return Vec::new() };
                    (0..=50)
                        .map(|k| k as f64 / 50.0)
                        .map(|rr| {
                            (
                                rr,
                                m.predict_with(|v| {
                                    Some(if v == "N" {
                                        gn
                                    } else if v == "D" {
                                        gd
                                    } else {
                                        rr
                                    })
                                }),
                            )
                        })
                        .filter(|q| q.1.is_finite())
                        .collect()
                })
                .collect();
            // Curves widen the range only up to twice the data's spread (a law's 1/r term explodes at 0).
            let (lo, hi) = span(ys.iter().copied(), false).unwrap_or((0.0, 1.0));
            let room = hi - lo;
            ys.extend(curves.iter().flatten().map(|q| q.1).filter(|v| *v > lo - room && *v < hi + room));
            let Some((ylo, yhi)) = span(ys.into_iter(), false) else { return Ok(()) };
            let caption = match m {
                Some(_) => format!("{name} with the fitted D-CPT law"),
                None => name.clone(),
            };
            chart_on(
                what,
                area,
                &caption,
                (-0.03..1.03, ylo..yhi),
                Some(SeriesLabelPosition::UpperRight),
                16,
                |chart| {
                    tryp!(
                        what,
                        chart
                            .configure_mesh()
                            .light_line_style(BLACK.mix(0.04))
                            .x_desc("domain mixture ratio r")
                            .y_desc(format!("{name} (nats/token)"))
                            .draw()
                    );
                    for (g, &(gn, gd)) in groups.iter().enumerate() {
                        let c = colour(g, groups.len());
                        let mut pts: Vec<(f64, f64)> = (0..table.len())
                            .filter(|&i| n[i] == gn && d[i] == gd && y[i].is_finite())
                            .map(|i| (r[i], y[i]))
                            .collect();
                        pts.sort_by(|a, b| a.0.total_cmp(&b.0));
                        let fitted: Vec<(f64, f64)> =
                            curves[g].iter().copied().filter(|q| q.1 >= ylo && q.1 <= yhi).collect();
                        if fitted.len() >= 2 {
                            tryp!(what, chart.draw_series(LineSeries::new(fitted, c.stroke_width(2))));
                        } else {
                            tryp!(
                                what,
                                chart.draw_series(LineSeries::new(pts.iter().copied(), c.mix(0.5).stroke_width(1)))
                            );
                        }
                        tryp!(what, chart.draw_series(pts.iter().map(|&q| Circle::new(q, 4, c.filled()))))
                            .label(format!("N = {}, D = {}", si_label(&gn), si_label(&gd)))
                            .legend(move |(x, y)| Circle::new((x + 9, y), 4, c.filled()));
                    }
                    Ok(())
                },
            )
        },
    );
    Some(drawn.map_err(|e| e.to_string()).map(|svg| {
        Figure::new(
            what,
            "Mixture study: general and domain validation loss against the mixture ratio r for each (N, D), with the fitted D-CPT laws' curves (lines) when fitted",
            svg,
            (panel.0 * np as u32, panel.1 + 36),
        )
    }))
}

/// log-log interpolation of y at x along sorted (x, y) points (clamped at the ends).
fn loglog_interp(pts: &[(f64, f64)], x: f64) -> f64 {
    let j = pts.partition_point(|p| p.0 < x).clamp(1, pts.len() - 1);
    let ((x0, y0), (x1, y1)) = (pts[j - 1], pts[j]);
    if x1 <= x0 {
        return y0;
    }
    let t = ((x.ln() - x0.ln()) / (x1.ln() - x0.ln())).clamp(0.0, 1.0);
    (y0.ln() + t * (y1.ln() - y0.ln())).exp()
}

/// Loss against vocabulary size per compute budget (per model size when the budgets do not
/// group), with the fitted vocabulary law's curve along each budget's points.
pub fn vocab(table: &Table, laws: Option<&LawsView>) -> Option<Drawn> {
    let m = model(laws, "vocab");
    let v = col(table, "V")?;
    if distinct(v.iter().copied()).len() < 2 {
        return None;
    }
    let y_col = m.as_ref().map(|m| m.response.clone()).unwrap_or_else(|| "loss".into());
    let y = col(table, &y_col)?;
    let rows: Vec<usize> = (0..table.len()).filter(|&i| v[i] > 0.0 && y[i].is_finite()).collect();
    let (mut groups, _) = budget_groups(table, "C", &rows);
    groups.retain(|g| distinct(g.1.iter().map(|&i| v[i])).len() >= 2);
    let by_budget = !groups.is_empty();
    let mut labels: Vec<String> = Vec::new();
    if by_budget {
        // Each line one model size at one budget (Tao et al.'s profiles hold N_nv fixed along V):
        // a budget whose points have several non-vocabulary sizes is split by size.
        let nnv = m.as_ref().and_then(|m| col(table, &column_of(Some(m), "N_nv"))).or_else(|| col(table, "N_nv"));
        let mut split = Vec::new();
        for (c, rows) in groups {
            let sizes = nnv.map(|x| distinct(rows.iter().map(|&i| x[i]))).unwrap_or_default();
            match nnv {
                Some(x) if sizes.len() > 1 => {
                    for s in sizes {
                        let sub: Vec<usize> = rows.iter().copied().filter(|&i| x[i] == s).collect();
                        if distinct(sub.iter().map(|&i| v[i])).len() >= 2 {
                            labels.push(format!("C = {}, N_nv = {}", sci_label(&c), si_label(&s)));
                            split.push((c, sub));
                        }
                    }
                }
                _ => {
                    labels.push(format!("C = {}", sci_label(&c)));
                    split.push((c, rows));
                }
            }
        }
        groups = split;
    } else {
        // Not an IsoFLOP design: one line per model size.
        let n = col(table, "N")?;
        for s in distinct(rows.iter().map(|&i| n[i])) {
            labels.push(format!("N = {}", si_label(&s)));
            groups.push((s, rows.iter().copied().filter(|&i| n[i] == s).collect()));
        }
    }
    let curves: Vec<Vec<(f64, f64)>> = groups
        .iter()
        .map(|(_, rows)| {
            let Some(m) = &m else { return Vec::new() };
            let get = |c: &str| col(table, &column_of(Some(m), c));
            let (Some(nnv), Some(nv), Some(d)) = (get("N_nv"), get("N_v"), get("D")) else { return Vec::new() };
            let n0 = nnv[rows[0]];
            if rows.iter().any(|&i| (nnv[i] / n0 - 1.0).abs() > 1e-9) {
                return Vec::new();
            }
            let width = nv[rows[0]] / v[rows[0]];
            let mut vd: Vec<(f64, f64)> = rows.iter().map(|&i| (v[i], d[i])).collect();
            vd.sort_by(|a, b| a.0.total_cmp(&b.0));
            vd.dedup_by(|a, b| a.0 == b.0);
            let (v0, v1) = (vd[0].0, vd[vd.len() - 1].0);
            (0..=60)
                .map(|k| v0 * (v1 / v0).powf(k as f64 / 60.0))
                .map(|vv| {
                    let dd = loglog_interp(&vd, vv);
                    let p = m.predict_with(|var| match var {
                        "N_nv" => Some(n0),
                        "N_v" => Some(vv * width),
                        "D" => Some(dd),
                        _ => None,
                    });
                    (vv, p)
                })
                .filter(|q| q.1.is_finite())
                .collect()
        })
        .collect();
    let all_y = rows.iter().map(|&i| y[i]).chain(curves.iter().flatten().map(|q| q.1));
    let (xr, yr) = (span(rows.iter().map(|&i| v[i]), true)?, span(all_y, false)?);
    let what = "vocab.svg";
    let drawn = svg_chart(
        what,
        "Loss against vocabulary size",
        (W, H),
        (log_axis(xr.0, xr.1), yr.0..yr.1),
        Some(SeriesLabelPosition::UpperRight),
        |chart| {
            tryp!(
                what,
                chart
                    .configure_mesh()
                    .light_line_style(BLACK.mix(0.04))
                    .x_desc("vocabulary size V")
                    .y_desc(y_col.as_str())
                    .x_label_formatter(&|x| si_label(x))
                    .draw()
            );
            for (g, (_, rows)) in groups.iter().enumerate() {
                let c = colour(g, groups.len());
                let mut pts: Vec<(f64, f64)> = rows.iter().map(|&i| (v[i], y[i])).collect();
                pts.sort_by(|a, b| a.0.total_cmp(&b.0));
                if curves[g].len() >= 2 {
                    tryp!(what, chart.draw_series(LineSeries::new(curves[g].iter().copied(), c.stroke_width(2))));
                    let best = curves[g].iter().copied().min_by(|a, b| a.1.total_cmp(&b.1)).expect("non-empty");
                    tryp!(what, chart.draw_series([TriangleMarker::new(best, 7, BLACK.filled())]));
                } else {
                    tryp!(what, chart.draw_series(LineSeries::new(pts.iter().copied(), c.mix(0.5).stroke_width(1))));
                }
                let label = labels[g].clone();
                tryp!(what, chart.draw_series(pts.iter().map(|&q| Circle::new(q, 4, c.filled()))))
                    .label(label)
                    .legend(move |(x, y)| Circle::new((x + 9, y), 4, c.filled()));
            }
            Ok(())
        },
    );
    let by = if by_budget { "per compute budget (and non-vocabulary size)" } else { "per model size" };
    Some(drawn.map_err(|e| e.to_string()).map(|svg| {
        Figure::new(
            what,
            format!("Vocabulary study: {y_col} against vocabulary size {by}, with the fitted vocabulary law along each line's points and its minimum (black triangle) when fitted"),
            svg,
            (W, H),
        )
    }))
}

/// Loss against total bits per model size and token budget, and loss against the exponent bits
/// of each bit width's formats per model size (with the fitted fp_quant law along the splits).
pub fn precision(table: &Table, laws: Option<&LawsView>) -> Vec<Drawn> {
    let mut out = Vec::new();
    let m = model(laws, "fp_quant");
    let (Some(n), Some(d), Some(loss)) =
        (col(table, "N"), col(table, "D"), col(table, m.as_ref().map(|m| m.response.as_str()).unwrap_or("loss")))
    else {
        return out;
    };
    let bits = col(table, "bits");
    let exp = col(table, "exp_bits");
    let sizes = distinct(n.iter().copied());
    if let Some(bits) = bits.filter(|b| distinct(b.iter().copied()).len() >= 2) {
        let rows: Vec<usize> = (0..table.len()).filter(|&i| bits[i].is_finite() && loss[i].is_finite()).collect();
        let mut groups: Vec<(f64, f64)> = Vec::new();
        for &i in &rows {
            if !groups.contains(&(n[i], d[i])) {
                groups.push((n[i], d[i]));
            }
        }
        groups.sort_by(|a, b| a.0.total_cmp(&b.0).then(a.1.total_cmp(&b.1)));
        let what = "precision_bits.svg";
        if let (Some(xr), Some(yr)) =
            (span(rows.iter().map(|&i| bits[i]), false), span(rows.iter().map(|&i| loss[i]), false))
        {
            let drawn = svg_chart(
                what,
                "Loss against training precision",
                (W, H),
                (xr.0..xr.1, yr.0..yr.1),
                Some(SeriesLabelPosition::UpperRight),
                |chart| {
                    tryp!(
                        what,
                        chart
                            .configure_mesh()
                            .light_line_style(BLACK.mix(0.04))
                            .x_desc("bits per value")
                            .y_desc("final validation loss (nats/token)")
                            .x_labels((xr.1 - xr.0).ceil() as usize + 1)
                            .x_label_formatter(&|x| format!("{x:.0}"))
                            .draw()
                    );
                    for (g, &(gn, gd)) in groups.iter().enumerate() {
                        let c = colour(g, groups.len());
                        let pts: Vec<(f64, f64)> =
                            rows.iter().filter(|&&i| n[i] == gn && d[i] == gd).map(|&i| (bits[i], loss[i])).collect();
                        // The best format at each bit width, joined.
                        let mut best: Vec<(f64, f64)> = distinct(pts.iter().map(|p| p.0))
                            .into_iter()
                            .map(|b| (b, pts.iter().filter(|p| p.0 == b).map(|p| p.1).fold(f64::INFINITY, f64::min)))
                            .collect();
                        best.sort_by(|a, b| a.0.total_cmp(&b.0));
                        tryp!(what, chart.draw_series(LineSeries::new(best, c.stroke_width(1))));
                        tryp!(what, chart.draw_series(pts.iter().map(|&q| Circle::new(q, 4, c.filled()))))
                            .label(format!("N = {}, D = {}", si_label(&gn), si_label(&gd)))
                            .legend(move |(x, y)| Circle::new((x + 9, y), 4, c.filled()));
                    }
                    Ok(())
                },
            );
            out.push(drawn.map_err(|e| e.to_string()).map(|svg| {
                Figure::new(what, "Precision study: final loss against bits per value for each (N, D); the line joins the best format at each bit width", svg, (W, H))
            }));
        }
    }
    let Some(exp) = exp.filter(|e| distinct(e.iter().copied()).len() >= 2) else { return out };
    let Some(bits) = bits else { return out };
    let man = col(table, "man_bits");
    let block = col(table, "block_size");
    let rows: Vec<usize> = (0..table.len()).filter(|&i| exp[i].is_finite() && loss[i].is_finite()).collect();
    let widths = distinct(rows.iter().map(|&i| bits[i]));
    let what = "precision_split.svg";
    let np = sizes.len();
    let cols = np.min(3);
    let panel = (if np == 1 { W } else { 1000 / cols as u32 }, 380);
    let Some(yr) = span(rows.iter().map(|&i| loss[i]), false) else { return out };
    // Exponent bits from 0 to the widest format's sign-less width (where the law's curves end).
    let top = widths.iter().copied().fold(0.0, f64::max) - 1.0;
    let xr = (-0.3, top.max(rows.iter().map(|&i| exp[i]).fold(0.0, f64::max)) + 0.3);
    let drawn =
        svg_panels(what, "Loss against the exponent/mantissa split, per model size", np, cols, panel, |p, area| {
            let size = sizes[p];
            let here: Vec<usize> = rows.iter().copied().filter(|&i| n[i] == size).collect();
            // Lines: one per (bit width, D, block size).
            let mut keys: Vec<(f64, f64, f64)> = Vec::new();
            for &i in &here {
                let k = (bits[i], d[i], block.map(|b| b[i]).unwrap_or(f64::NAN));
                if !keys.iter().any(|q| q.0 == k.0 && q.1 == k.1 && (q.2 == k.2 || (q.2.is_nan() && k.2.is_nan()))) {
                    keys.push(k);
                }
            }
            keys.sort_by(|a, b| a.0.total_cmp(&b.0).then(a.1.total_cmp(&b.1)));
            let caption = format!("N = {}", si_label(&size));
            chart_on(
                what,
                area,
                &caption,
                (xr.0..xr.1, yr.0..yr.1),
                Some(SeriesLabelPosition::UpperRight),
                15,
                |chart| {
                    tryp!(
                        what,
                        chart
                            .configure_mesh()
                            .light_line_style(BLACK.mix(0.04))
                            .x_desc("exponent bits (the rest: sign and mantissa)")
                            .y_desc("final validation loss")
                            .x_labels((xr.1 - xr.0).ceil() as usize + 1)
                            .x_label_formatter(&|x| format!("{x:.0}"))
                            .draw()
                    );
                    for &(b, dd, bs) in &keys {
                        let c = category(widths.iter().position(|&w| w == b).unwrap_or(0));
                        let same = |i: usize| {
                            bits[i] == b
                                && d[i] == dd
                                && block.map(|x| x[i] == bs || (x[i].is_nan() && bs.is_nan())).unwrap_or(true)
                        };
                        let mut pts: Vec<(f64, f64)> =
                            here.iter().copied().filter(|&i| same(i)).map(|i| (exp[i], loss[i])).collect();
                        pts.sort_by(|a, b| a.0.total_cmp(&b.0));
                        let fitted: Vec<(f64, f64)> = match (&m, man) {
                            (Some(m), Some(_)) => (0..=40)
                                .map(|k| (b - 1.0) * k as f64 / 40.0)
                                .map(|e| {
                                    let y = m.predict_with(|v| match v {
                                        "N" => Some(size),
                                        "D" => Some(dd),
                                        "exp_bits" => Some(e),
                                        "man_bits" => Some(b - 1.0 - e),
                                        "block_size" => Some(bs),
                                        _ => None,
                                    });
                                    (e, y)
                                })
                                .filter(|q| q.1.is_finite() && q.1 >= yr.0 && q.1 <= yr.1)
                                .collect(),
                            _ => Vec::new(),
                        };
                        if fitted.len() >= 2 {
                            tryp!(what, chart.draw_series(LineSeries::new(fitted, c.stroke_width(2))));
                        } else {
                            tryp!(
                                what,
                                chart.draw_series(LineSeries::new(pts.iter().copied(), c.mix(0.5).stroke_width(1)))
                            );
                        }
                        tryp!(what, chart.draw_series(pts.iter().map(|&q| Circle::new(q, 4, c.filled()))))
                            .label(format!("{b:.0} bits, D = {}", si_label(&dd)))
                            .legend(move |(x, y)| Circle::new((x + 9, y), 4, c.filled()));
                    }
                    Ok(())
                },
            )
        });
    let rows_n = np.div_ceil(cols) as u32;
    out.push(drawn.map_err(|e| e.to_string()).map(|svg| {
        Figure::new(
            what,
            "Precision study: final loss against the exponent bits of each bit width's floating-point formats, per model size, with the fitted fp_quant law along the splits (lines) when fitted",
            svg,
            (panel.0 * cols as u32, panel.1 * rows_n + 36),
        )
    }))
    ;
    out
}
