//! Learning curves, one panel per model size on log axes with a marker at each run's final loss,
//! and the final loss of every finished point against its compute with the fitted law's curves.

use super::{col, Drawn, Figure, Model};
use crate::chart::{
    chart_on, colour, distinct, index_of, log_axis, si_label, span, svg_chart, svg_panels, thin, tryp, H, W,
};
use crate::view::LawsView;
use crate::PointSummary;
use plotters::prelude::*;
use sweep_fit::Table;

/// Points drawn per curve at most (first and last kept; log-spaced in between).
const CURVE_POINTS: usize = 80;

/// Learning curves: a panel per model size, log-log, runs coloured by training tokens, each
/// finished run's final loss marked (a cross for failed runs, an open circle for running ones).
pub fn learning_curves(points: &[PointSummary]) -> Option<Drawn> {
    let with: Vec<&PointSummary> = points.iter().filter(|p| p.curve.iter().any(|c| c.0 > 0.0)).collect();
    if with.is_empty() {
        return None;
    }
    let sizes = distinct(with.iter().map(|p| p.n));
    let tokens = distinct(with.iter().map(|p| p.d));
    let all = || with.iter().flat_map(|p| p.curve.iter().copied()).filter(|c| c.0 > 0.0 && c.1 > 0.0);
    let (Some(xr), Some(yr)) = (span(all().map(|c| c.0), true), span(all().map(|c| c.1), true)) else {
        return Some(Err("no positive losses yet".into()));
    };
    let n = sizes.len().max(1);
    let cols = match n {
        1 => 1,
        2 | 4 => 2,
        3 | 5 | 6 | 9 => 3,
        _ => 4,
    };
    let panel = (if cols == 1 { W } else { 1000 / cols as u32 }, if cols == 1 { H } else { 300 });
    let what = "loss_curves.svg";
    let legend_d = tokens.len() <= 8;
    let title = if legend_d {
        "Validation loss during training, one panel per model size".to_string()
    } else {
        format!(
            "Validation loss during training, one panel per model size; colour: training tokens {} (dark) to {} (yellow)",
            si_label(&tokens[0]),
            si_label(&tokens[tokens.len() - 1])
        )
    };
    let drawn = svg_panels(what, &title, n, cols, panel, |i, area| {
        let size = sizes[i];
        let runs: Vec<&&PointSummary> = with.iter().filter(|p| p.n == size).collect();
        let caption = format!("N = {} ({} run{})", si_label(&size), runs.len(), if runs.len() == 1 { "" } else { "s" });
        let legend = (legend_d && i == 0).then_some(SeriesLabelPosition::UpperRight);
        chart_on(what, area, &caption, (log_axis(xr.0, xr.1), log_axis(yr.0, yr.1)), legend, 15, |chart| {
            tryp!(
                what,
                chart
                    .configure_mesh()
                    .light_line_style(BLACK.mix(0.04))
                    .x_desc("training tokens")
                    .y_desc("validation loss")
                    .x_label_formatter(&|x| si_label(x))
                    .y_label_formatter(&|y| format!("{y:.2}"))
                    .label_style(("sans-serif", 11))
                    .draw()
            );
            let mut labelled = std::collections::BTreeSet::new();
            for p in &runs {
                let c = colour(index_of(p.d, &tokens), tokens.len());
                let curve: Vec<(f64, f64)> = p.curve.iter().copied().filter(|(x, y)| *x > 0.0 && *y > 0.0).collect();
                let curve = thin(&curve, CURVE_POINTS);
                let series = tryp!(what, chart.draw_series(LineSeries::new(curve.iter().copied(), c.stroke_width(1))));
                if legend_d && i == 0 && labelled.insert(p.d.to_bits()) {
                    series
                        .label(format!("D = {}", si_label(&p.d)))
                        .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 16, y)], c.stroke_width(2)));
                }
                let Some(&last) = curve.last() else { continue };
                match (p.state.as_str(), p.final_loss) {
                    ("done", Some(l)) if l > 0.0 => {
                        tryp!(what, chart.draw_series([Circle::new((last.0, l), 3, c.filled())]));
                    }
                    ("failed", _) => {
                        tryp!(what, chart.draw_series([Cross::new(last, 4, RED.stroke_width(2))]));
                    }
                    _ => {
                        tryp!(what, chart.draw_series([Circle::new(last, 3, c.stroke_width(1))]));
                    }
                }
            }
            Ok(())
        })
    });
    let cols = cols.min(n) as u32;
    let rows = n.div_ceil(cols as usize) as u32;
    Some(drawn.map_err(|e| e.to_string()).map(|svg| {
        Figure::new(
            what,
            "Learning curves: validation loss against training tokens, one panel per model size (log axes); a dot marks each finished run's final loss, a red cross a failed run, an open circle a running one",
            svg,
            (panel.0 * cols, panel.1 * rows + 36),
        )
    }))
}

/// The first fitted built-in law of N and D alone (chinchilla, kaplan), to draw over the final
/// losses.
fn nd_model(laws: &LawsView) -> Option<(String, Model)> {
    laws.laws.iter().find_map(|e| {
        let m = Model::of(e).ok()?;
        let mut vars = m.vars.clone();
        vars.sort();
        (vars == ["D", "N"]).then(|| (e.name.clone(), m))
    })
}

/// Final loss of every finished point against its training compute 6ND, one colour per model
/// size, with the fitted law's loss for each size when a law of N and D was fitted (N and D read
/// from the columns that law was fitted to, so the axis follows its counting convention).
pub fn final_loss(table: &Table, laws: Option<&LawsView>) -> Option<Drawn> {
    let model = laws.and_then(nd_model);
    let (n_col, d_col, l_col) = match &model {
        Some((_, m)) => {
            let c = |v: &str| m.columns[m.vars.iter().position(|x| x == v).unwrap_or(0)].clone();
            (c("N"), c("D"), m.response.clone())
        }
        None => ("N".to_string(), "D".to_string(), "loss".to_string()),
    };
    let (Some(n), Some(d), Some(l)) = (col(table, &n_col), col(table, &d_col), col(table, &l_col)) else {
        return None;
    };
    let done: Vec<(f64, f64, f64)> = (0..table.len())
        .map(|i| (6.0 * n[i] * d[i], l[i], n[i]))
        .filter(|(c, l, _)| *c > 0.0 && c.is_finite() && l.is_finite())
        .collect();
    if done.is_empty() {
        return None;
    }
    let sizes = distinct(done.iter().map(|d| d.2));
    let (Some((x0, x1)), Some((y0, y1))) =
        (span(done.iter().map(|d| d.0), true), span(done.iter().map(|d| d.1), false))
    else {
        return Some(Err("no finished points with finite losses".into()));
    };
    let what = "final_loss.svg";
    let drawn = svg_chart(
        what,
        "Final loss against compute",
        (W, H),
        (log_axis(x0, x1), y0..y1),
        Some(SeriesLabelPosition::UpperRight),
        |chart| {
            tryp!(
                what,
                chart
                    .configure_mesh()
                    .light_line_style(BLACK.mix(0.04))
                    .x_desc(format!("training compute 6ND (FLOPs; N = {n_col})"))
                    .y_desc("final validation loss (nats/token)")
                    .x_label_formatter(&|x| format!("{x:.0e}"))
                    .draw()
            );
            // The fitted law's loss for each model size across the compute range (D = C / 6N).
            if let Some((name, m)) = &model {
                let mut labelled = false;
                for (i, &n) in sizes.iter().enumerate() {
                    let c = colour(i, sizes.len());
                    let curve: Vec<(f64, f64)> = (0..=60)
                        .map(|k| x0 * (x1 / x0).powf(k as f64 / 60.0))
                        .filter_map(|cx| {
                            let y = m.predict_with(|v| Some(if v == "N" { n } else { cx / (6.0 * n) }));
                            (y.is_finite() && y >= y0 && y <= y1).then_some((cx, y))
                        })
                        .collect();
                    if curve.len() < 2 {
                        continue;
                    }
                    let series = tryp!(what, chart.draw_series(LineSeries::new(curve, c.mix(0.9).stroke_width(1))));
                    if !labelled {
                        labelled = true;
                        series
                            .label(format!("fitted {name}"))
                            .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 18, y)], BLACK.mix(0.6)));
                    }
                }
            }
            for (i, &n) in sizes.iter().enumerate() {
                let c = colour(i, sizes.len());
                let mut pts: Vec<(f64, f64)> = done.iter().filter(|d| d.2 == n).map(|d| (d.0, d.1)).collect();
                pts.sort_by(|a, b| a.0.total_cmp(&b.0));
                if model.is_none() {
                    tryp!(what, chart.draw_series(LineSeries::new(pts.iter().copied(), c.mix(0.5).stroke_width(1))));
                }
                tryp!(what, chart.draw_series(pts.iter().map(|&(x, y)| Circle::new((x, y), 4, c.filled()))))
                    .label(format!("N = {}", si_label(&n)))
                    .legend(move |(x, y)| Circle::new((x + 9, y), 4, c.filled()));
            }
            Ok(())
        },
    );
    Some(drawn.map_err(|e| e.to_string()).map(|svg| {
        Figure::new(
            what,
            "Final loss against training compute 6ND, one colour per model size, with the fitted law's curve for each size when one was fitted",
            svg,
            (W, H),
        )
    }))
}
