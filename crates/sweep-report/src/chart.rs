//! Drawing helpers shared by the plots: a chart or a grid of panels as SVG text, colours, axis
//! ranges, error bars, bands, curve thinning and the least-squares parabola of IsoFLOP profiles.

use crate::ReportError;
use plotters::coord::combinators::{BindKeyPoints, LogCoord, WithKeyPoints};
use plotters::coord::ranged1d::AsRangedCoord;
use plotters::coord::Shift;
use plotters::prelude::*;

/// A drawing area of the SVG backend.
pub type Area<'a> = DrawingArea<SVGBackend<'a>, Shift>;

/// Maps a plotters error to a [`ReportError`] naming the plot.
macro_rules! tryp {
    ($what:expr, $e:expr) => {
        $e.map_err(|e| $crate::ReportError::Plot { what: $what.to_string(), msg: e.to_string() })?
    };
}
pub(crate) use tryp;

/// An interval (low, high), when there is one.
pub type Interval = Option<(f64, f64)>;

/// (x, y, interval of y).
pub type Marked = (f64, f64, Interval);

/// Width and height of a single chart.
pub const W: u32 = 760;
/// Height of a single chart.
pub const H: u32 = 480;

/// A chart's SVG text: a white canvas, the caption, axes over `x` by `y`, what `draw` adds
/// (mesh and series), then the legend at `legend` (none when `legend` is None).
pub fn svg_chart<X: AsRangedCoord, Y: AsRangedCoord>(
    what: &str,
    caption: &str,
    size: (u32, u32),
    (x, y): (X, Y),
    legend: Option<SeriesLabelPosition>,
    draw: impl FnOnce(
        &mut ChartContext<'_, SVGBackend<'_>, Cartesian2d<X::CoordDescType, Y::CoordDescType>>,
    ) -> Result<(), ReportError>,
) -> Result<String, ReportError> {
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, size).into_drawing_area();
        tryp!(what, root.fill(&WHITE));
        chart_on(what, &root, caption, (x, y), legend, 20, draw)?;
        tryp!(what, root.present());
    }
    Ok(svg)
}

/// Draws one chart on `area` (a whole canvas or a panel of one).
pub fn chart_on<X: AsRangedCoord, Y: AsRangedCoord>(
    what: &str,
    area: &Area<'_>,
    caption: &str,
    (x, y): (X, Y),
    legend: Option<SeriesLabelPosition>,
    font: u32,
    draw: impl FnOnce(
        &mut ChartContext<'_, SVGBackend<'_>, Cartesian2d<X::CoordDescType, Y::CoordDescType>>,
    ) -> Result<(), ReportError>,
) -> Result<(), ReportError> {
    let small = font < 20;
    let mut chart = tryp!(
        what,
        ChartBuilder::on(area)
            .caption(caption, ("sans-serif", font))
            .margin(if small { 6 } else { 12 })
            .x_label_area_size(if small { 34 } else { 42 })
            .y_label_area_size(if small { 48 } else { 60 })
            .build_cartesian_2d(x, y)
    );
    draw(&mut chart)?;
    if let Some(pos) = legend {
        tryp!(
            what,
            chart
                .configure_series_labels()
                .position(pos)
                .label_font(("sans-serif", if small { 11 } else { 13 }))
                .background_style(WHITE.mix(0.85))
                .border_style(BLACK.mix(0.5))
                .draw()
        );
    }
    Ok(())
}

/// An SVG of `n` panels in rows of `cols` under a title; `draw(i, area)` draws panel i.
pub fn svg_panels(
    what: &str,
    title: &str,
    n: usize,
    cols: usize,
    (panel_w, panel_h): (u32, u32),
    mut draw: impl FnMut(usize, &Area<'_>) -> Result<(), ReportError>,
) -> Result<String, ReportError> {
    let cols = cols.clamp(1, n.max(1));
    let rows = n.div_ceil(cols).max(1);
    let size = (panel_w * cols as u32, panel_h * rows as u32 + 36);
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, size).into_drawing_area();
        tryp!(what, root.fill(&WHITE));
        let body = tryp!(what, root.titled(title, ("sans-serif", 20)));
        let areas = body.split_evenly((rows, cols));
        for (i, area) in areas.iter().enumerate().take(n) {
            draw(i, area)?;
        }
        tryp!(what, root.present());
    }
    Ok(svg)
}

/// A colour from dark blue (first) to yellow (last), viridis-like.
pub fn colour(i: usize, n: usize) -> RGBColor {
    const STOPS: [(u8, u8, u8); 5] = [(68, 1, 84), (59, 82, 139), (33, 145, 140), (94, 201, 98), (220, 200, 20)];
    let t = if n <= 1 { 0.0 } else { i as f64 / (n - 1) as f64 };
    let x = t * (STOPS.len() - 1) as f64;
    let k = (x.floor() as usize).min(STOPS.len() - 2);
    let f = x - k as f64;
    let mix = |a: u8, b: u8| (a as f64 + (b as f64 - a as f64) * f).round() as u8;
    let (a, b) = (STOPS[k], STOPS[k + 1]);
    RGBColor(mix(a.0, b.0), mix(a.1, b.1), mix(a.2, b.2))
}

/// Distinct colours for a few categories (approaches, laws), colour-blind friendly (Okabe-Ito).
pub fn category(i: usize) -> RGBColor {
    const C: [RGBColor; 7] = [
        RGBColor(0, 114, 178),
        RGBColor(213, 94, 0),
        RGBColor(0, 158, 115),
        RGBColor(204, 121, 167),
        RGBColor(230, 159, 0),
        RGBColor(86, 180, 233),
        RGBColor(120, 120, 120),
    ];
    C[i % C.len()]
}

/// Sorted distinct finite values.
pub fn distinct(values: impl Iterator<Item = f64>) -> Vec<f64> {
    let mut v: Vec<f64> = values.filter(|x| x.is_finite()).collect();
    v.sort_by(f64::total_cmp);
    v.dedup();
    v
}

/// Position of `x` among `classes` (exact match), for colouring.
pub fn index_of(x: f64, classes: &[f64]) -> usize {
    classes.iter().position(|&c| c == x).unwrap_or(0)
}

/// Range [lo, hi] of finite values (positive ones on a log axis), padded; a degenerate range is
/// widened. None when there is no such value.
pub fn span(values: impl Iterator<Item = f64>, log: bool) -> Option<(f64, f64)> {
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
        let pad = (h / l).powf(0.04).max(1.05);
        Some((l / pad, h * pad))
    } else {
        let pad = if hi > lo { 0.05 * (hi - lo) } else { 0.5f64.max(lo.abs() * 0.05) };
        Some((lo - pad, hi + pad))
    }
}

/// An axis label for a count: 1M, 2.5M, 350k (SI prefix, no trailing zeros).
pub fn si_label(x: &f64) -> String {
    let s = crate::units::si(*x);
    let unit_at = s.find(|c: char| c.is_ascii_alphabetic()).unwrap_or(s.len());
    let (num, unit) = s.split_at(unit_at);
    if num.contains('.') && !num.contains('e') {
        format!("{}{unit}", num.trim_end_matches('0').trim_end_matches('.'))
    } else {
        s
    }
}

/// An axis label for any value: SI prefixes from a thousand up, else [`plain_label`].
pub fn auto_label(x: &f64) -> String {
    if x.abs() >= 1000.0 {
        si_label(x)
    } else {
        plain_label(x)
    }
}

/// An axis label for a value of order one: up to three decimals, no trailing zeros, no "-0".
pub fn plain_label(x: &f64) -> String {
    if x.abs() < 1e-12 {
        return "0".into();
    }
    let s = format!("{x:.3}");
    s.trim_end_matches('0').trim_end_matches('.').to_string()
}

/// `1e18`-style label.
pub fn sci_label(x: &f64) -> String {
    format!("{x:.0e}")
}

/// At most `max` points of a curve, log-spaced in x, always keeping the first and the last.
pub fn thin(curve: &[(f64, f64)], max: usize) -> Vec<(f64, f64)> {
    if curve.len() <= max || max < 2 {
        return curve.to_vec();
    }
    let mut out = Vec::with_capacity(max);
    let n = curve.len();
    let mut last = usize::MAX;
    for k in 0..max {
        // Indices spaced evenly in log(1 + i): dense early, where the curve bends.
        let f = k as f64 / (max - 1) as f64;
        let i = (((n as f64).ln() * f).exp() - 1.0).round() as usize;
        let i = i.min(n - 1);
        if i != last {
            out.push(curve[i]);
            last = i;
        }
    }
    if last != n - 1 {
        out.push(curve[n - 1]);
    }
    out
}

/// A log axis over [lo, hi] with readable ticks ([`log_ticks`]) and light grid lines at each
/// 1..9 x 10^k (only powers of ten over wide ranges).
pub fn log_axis(lo: f64, hi: f64) -> WithKeyPoints<LogCoord<f64>> {
    let decades = (hi / lo).log10();
    let mut light = Vec::new();
    let mut p = 10f64.powf(lo.log10().floor());
    while p <= hi {
        for m in 1..=9 {
            let v = p * m as f64;
            if v >= lo && v <= hi && (decades <= 4.0 || m == 1) {
                light.push(v);
            }
        }
        p *= 10.0;
    }
    (lo..hi).log_scale().with_key_points(log_ticks(lo, hi)).with_light_points(light)
}

/// Tick values for a log axis over [lo, hi]: powers of ten with 2 and 5 (or 3) between them when
/// that gives three to eight labels, fewer powers of ten over very wide ranges, and evenly
/// spaced round values inside a range too narrow for that.
pub fn log_ticks(lo: f64, hi: f64) -> Vec<f64> {
    if !(lo > 0.0 && hi > lo && hi.is_finite()) {
        return Vec::new();
    }
    let ladder = |ms: &[f64]| {
        let mut ticks = Vec::new();
        let mut p = 10f64.powf(lo.log10().floor());
        while p <= hi * 10.0 {
            for &m in ms {
                let v = p * m;
                if v >= lo * (1.0 - 1e-12) && v <= hi * (1.0 + 1e-12) {
                    ticks.push(v);
                }
            }
            p *= 10.0;
        }
        ticks
    };
    let fine = ladder(&[1.0, 2.0, 5.0]);
    if fine.len() < 3 {
        return linear_ticks(lo, hi, 6);
    }
    for ms in [&[1.0, 2.0, 5.0][..], &[1.0, 3.0], &[1.0]] {
        let t = ladder(ms);
        if t.len() <= 8 {
            return t;
        }
    }
    let powers = ladder(&[1.0]);
    let every = powers.len().div_ceil(7);
    powers.into_iter().step_by(every).collect()
}

/// Round values (steps of 1, 2 or 5 x 10^k) inside [lo, hi], the step giving the count nearest
/// `n`.
pub fn linear_ticks(lo: f64, hi: f64, n: usize) -> Vec<f64> {
    if !(hi > lo && lo.is_finite() && hi.is_finite()) {
        return Vec::new();
    }
    let raw = (hi - lo) / n.max(1) as f64;
    let mag = 10f64.powf(raw.log10().floor());
    let count = |step: f64| ((hi / step).floor() - (lo / step).ceil() + 1.0).max(0.0);
    let step = [0.5, 1.0, 2.0, 5.0, 10.0]
        .iter()
        .map(|m| m * mag)
        .min_by(|a, b| (count(*a) - n as f64).abs().total_cmp(&(count(*b) - n as f64).abs()))
        .unwrap_or(mag);
    let mut out = Vec::new();
    let mut k = (lo / step).ceil();
    while k * step <= hi * (1.0 + 1e-12) && out.len() < 50 {
        out.push(k * step);
        k += 1.0;
    }
    out
}

/// Draws vertical error bars (x, low, high) with small caps in `style`.
pub fn error_bars<DB: DrawingBackend, X: Ranged<ValueType = f64>, Y: Ranged<ValueType = f64>>(
    what: &str,
    chart: &mut ChartContext<'_, DB, Cartesian2d<X, Y>>,
    bars: &[(f64, f64, f64)],
    style: ShapeStyle,
) -> Result<(), ReportError> {
    tryp!(what, chart.draw_series(bars.iter().map(|&(x, lo, hi)| PathElement::new(vec![(x, lo), (x, hi)], style))));
    // Caps: short horizontal strokes drawn in pixel offsets around the ends.
    tryp!(
        what,
        chart.draw_series(bars.iter().flat_map(|&(x, lo, hi)| {
            [lo, hi].map(|y| EmptyElement::at((x, y)) + PathElement::new(vec![(-4, 0), (4, 0)], style))
        }))
    );
    Ok(())
}

/// A filled band between `lo` and `hi` over the same x values (in order).
pub fn band(points: &[(f64, f64, f64)], colour: RGBColor) -> Polygon<(f64, f64)> {
    let mut poly: Vec<(f64, f64)> = points.iter().map(|&(x, lo, _)| (x, lo)).collect();
    poly.extend(points.iter().rev().map(|&(x, _, hi)| (x, hi)));
    Polygon::new(poly, colour.mix(0.18).filled())
}

/// The least-squares parabola y = c0 + c1 u + c2 u² in u = x - centre, with its centre; None
/// for fewer than three distinct x or a singular system.
pub fn parabola(x: &[f64], y: &[f64]) -> Option<(f64, [f64; 3])> {
    if distinct(x.iter().copied()).len() < 3 || x.len() != y.len() {
        return None;
    }
    sweep_fit::approaches::parabola(x, y)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn colours_run_from_first_to_last_stop() {
        assert_eq!(colour(0, 3), RGBColor(68, 1, 84));
        assert_eq!(colour(2, 3), RGBColor(220, 200, 20));
    }

    #[test]
    fn log_ticks_are_round_and_few() {
        assert_eq!(log_ticks(8e4, 7.5e6), vec![1e5, 2e5, 5e5, 1e6, 2e6, 5e6]);
        assert_eq!(log_ticks(1e13, 1e18), vec![1e13, 1e14, 1e15, 1e16, 1e17, 1e18]);
        let narrow = log_ticks(2.6e6, 4.1e6);
        assert!(narrow.len() >= 3 && narrow.iter().all(|v| (2.6e6..=4.1e6).contains(v)), "{narrow:?}");
        assert_eq!(linear_ticks(2.6e6, 4.1e6, 5), vec![3.0e6, 3.5e6, 4.0e6]);
        assert_eq!(linear_ticks(5.6, 22.0, 6), vec![6.0, 8.0, 10.0, 12.0, 14.0, 16.0, 18.0, 20.0, 22.0]);
        assert_eq!(si_label(&1e6), "1M");
        assert_eq!(si_label(&2.5e6), "2.5M");
        assert_eq!(si_label(&350e3), "350k");
        assert_eq!(plain_label(&-0.0), "0");
        assert_eq!(plain_label(&0.25), "0.25");
        let wide = log_ticks(1.0, 1e20);
        assert!(wide.len() <= 11 && wide.len() >= 5, "{wide:?}");
    }

    #[test]
    fn thinning_keeps_the_ends_and_the_count() {
        let curve: Vec<(f64, f64)> = (1..=1000).map(|i| (i as f64, 1.0 / i as f64)).collect();
        let t = thin(&curve, 50);
        assert!(t.len() <= 51 && t.len() > 30, "{}", t.len());
        assert_eq!(t[0], curve[0]);
        assert_eq!(*t.last().unwrap(), curve[999]);
        assert!(t.windows(2).all(|w| w[0].0 < w[1].0));
        assert_eq!(thin(&curve[..10], 50).len(), 10);
    }

    #[test]
    fn parabola_recovers_a_known_one() {
        let x: Vec<f64> = (0..7).map(|i| i as f64).collect();
        let y: Vec<f64> = x.iter().map(|u| 2.0 - 0.5 * u + 0.25 * u * u).collect();
        let (c, k) = parabola(&x, &y).unwrap();
        // Minimum at u = 0.5/(2*0.25) = 1 in x.
        let xmin = c - k[1] / (2.0 * k[2]);
        assert!((xmin - 1.0).abs() < 1e-10, "{xmin}");
        assert!((k[2] - 0.25).abs() < 1e-12);
        assert!(parabola(&[1.0, 1.0, 2.0], &[1.0, 2.0, 3.0]).is_none());
    }
}
