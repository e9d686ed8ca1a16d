//! index.html: the answers first (each law's optimal configurations as tables with units and
//! intervals), then the plots, the laws' details, the points the fits left out, and every point.
//! Self-contained: inline style, images by relative path, no network. Every number a table shows
//! from laws.json also carries its full value in `data-value` (and `data-lo`, `data-hi`), so a
//! check can compare the page with the file.

use crate::plots::Figure;
use crate::units::{self, unit};
use crate::view::{EstimateView, LawView, LawsView, OptimalView};
use crate::{PointSummary, ReportInputs, ReportOptions};
use std::fmt::Write as _;

/// Escapes text for HTML.
pub fn esc(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;")
}

const STYLE: &str = "body{font-family:system-ui,sans-serif;margin:2em auto;max-width:1180px;padding:0 1em;color:#222}\
table{border-collapse:collapse;margin:.6em 0 1.2em}td,th{border:1px solid #ccc;padding:3px 8px;text-align:right}\
th{background:#f3f3f3;font-weight:600}td.l,th.l{text-align:left}caption{text-align:left;font-weight:600;padding:4px 0}\
img{max-width:100%;height:auto;border:1px solid #ddd;margin:.5em 0}figure{margin:1em 0 2em}figcaption{color:#444;font-size:.92em}\
code{background:#f6f6f6;padding:0 3px}.live{background:#fff7d6;border:1px solid #e6cf74;padding:.4em .8em}\
.err{color:#a40000}.note{color:#555;font-size:.92em}nav a{margin-right:1em}.ci{color:#555}";

/// A number's data attribute text: full precision, NaN as empty.
fn attr(x: f64) -> String {
    if x.is_finite() {
        format!("{x:e}")
    } else {
        String::new()
    }
}

/// A readable title for an optimal configuration's kind.
pub fn kind_title(kind: &str) -> String {
    match kind {
        "compute_optimal" => "Compute-optimal model size and data for a budget C".into(),
        "dcpt_fixed_ratio_compute_optimal" => "Compute-optimal N and D at a fixed mixture ratio r".into(),
        "dcpt_best_ratio_under_general_tolerance" => {
            "Best mixture ratio with the general loss at most (1 + T) times its r = 0 value; r_critical: the critical mixture ratio".into()
        }
        "dcpt_fixed_domain_tokens" => "Best mixture ratio for a fixed amount of domain tokens".into(),
        "vocab_optimal" => "Optimal vocabulary size for a non-vocabulary model size and budget".into(),
        "precision_split" => "Best exponent/mantissa split for a bit width".into(),
        other => other.replace('_', " "),
    }
}

fn header(name: &str) -> String {
    let (u, _) = unit(name);
    if u.is_empty() {
        format!("<th>{}</th>", esc(name))
    } else {
        format!("<th>{}<br><span class=\"note\">{}</span></th>", esc(name), esc(u))
    }
}

fn input_cell(name: &str, v: f64) -> String {
    format!("<td data-q=\"{}\" data-value=\"{}\">{}</td>", esc(name), attr(v), esc(&units::value(name, v)))
}

fn estimate_cell(name: &str, e: &EstimateView) -> String {
    let v = e.value();
    match e.interval() {
        Some((lo, hi)) => format!(
            "<td data-q=\"{n}\" data-value=\"{v}\" data-lo=\"{l}\" data-hi=\"{h}\">{s} <span class=\"ci\">[{a}, {b}]</span></td>",
            n = esc(name),
            v = attr(v),
            l = attr(lo),
            h = attr(hi),
            s = esc(&units::value(name, v)),
            a = esc(&units::value(name, lo)),
            b = esc(&units::value(name, hi)),
        ),
        None => format!("<td data-q=\"{}\" data-value=\"{}\">{}</td>", esc(name), attr(v), esc(&units::value(name, v))),
    }
}

/// Column order of an answer: sizes, data, their ratio, vocabulary, mixture, precision, the rest,
/// losses last.
fn rank(name: &str) -> u8 {
    let stem = name.split('_').next().unwrap_or(name);
    match stem {
        _ if name.starts_with("loss") => 9,
        "N" => 0,
        "D" => 1,
        "tokens" => 2,
        "V" => 3,
        "r" => 4,
        _ if name.contains("bits") => 5,
        _ => 6,
    }
}

/// The tables of one law's optimal configurations, one per kind of question.
fn optimal_tables(h: &mut String, law: &LawView) {
    let mut kinds: Vec<&str> = Vec::new();
    for o in &law.optimal {
        if !kinds.contains(&o.kind.as_str()) {
            kinds.push(&o.kind);
        }
    }
    for kind in kinds {
        let rows: Vec<&OptimalView> = law.optimal.iter().filter(|o| o.kind == kind).collect();
        let mut inputs: Vec<&str> = Vec::new();
        let mut values: Vec<&str> = Vec::new();
        for o in &rows {
            for k in o.inputs.keys() {
                if !inputs.contains(&k.as_str()) {
                    inputs.push(k);
                }
            }
            for k in o.values.keys() {
                if !values.contains(&k.as_str()) {
                    values.push(k);
                }
            }
        }
        values.sort_by_key(|v| rank(v));
        let _ = write!(
            h,
            "<table class=\"optimal\" data-law=\"{}\" data-kind=\"{}\"><caption>{}</caption>\n<tr>",
            esc(&law.name),
            esc(kind),
            esc(&kind_title(kind))
        );
        for k in inputs.iter().chain(values.iter()) {
            h.push_str(&header(k));
        }
        h.push_str("</tr>\n");
        for o in rows {
            h.push_str("<tr>");
            for k in &inputs {
                h.push_str(&input_cell(k, o.inputs.get(*k).map(|v| v.0).unwrap_or(f64::NAN)));
            }
            for k in &values {
                match o.values.get(*k) {
                    Some(e) => h.push_str(&estimate_cell(k, e)),
                    None => h.push_str("<td>–</td>"),
                }
            }
            h.push_str("</tr>\n");
        }
        h.push_str("</table>\n");
    }
}

fn law_heading(law: &LawView) -> String {
    let group = law.group_label();
    if group.is_empty() {
        esc(&law.name)
    } else {
        format!("{} <span class=\"note\">({})</span>", esc(&law.name), esc(&group))
    }
}

fn level_text(law: &LawView) -> String {
    match law.fit.as_ref().and_then(|f| f.bootstrap.as_ref()) {
        Some(b) if b.intervals_withheld.is_some() => {
            format!("intervals withheld: {}", b.intervals_withheld.as_deref().unwrap_or(""))
        }
        Some(b) => format!(
            "intervals: {:.0}% bootstrap percentiles over {} resamples{}{}",
            100.0 * b.level.0,
            b.resamples,
            if b.unit.is_empty() { String::new() } else { format!(" of {}", b.unit) },
            if b.failed > 0 { format!(", {} failed", b.failed) } else { String::new() }
        ),
        None => "no intervals (bootstrap off)".into(),
    }
}

/// Answers: one section per law with its optimal configurations (or why there are none).
fn answers(h: &mut String, laws: &LawsView) {
    for law in &laws.laws {
        let _ =
            writeln!(h, "<h3>{} <span class=\"note\"><code>{}</code></span></h3>", law_heading(law), esc(&law.formula));
        if let Some(e) = &law.error {
            let _ = writeln!(h, "<p class=\"err\">Not fitted: {}</p>", esc(e));
            continue;
        }
        if law.optimal.is_empty() {
            h.push_str("<p class=\"note\">No optimal configuration was asked of this law (see <code>[fit.optimal]</code>).</p>\n");
            continue;
        }
        let _ = writeln!(h, "<p class=\"note\">{}</p>", esc(&level_text(law)));
        optimal_tables(h, law);
    }
}

fn details(h: &mut String, laws: &LawsView, skipped: &[(String, String)]) {
    for l in &laws.laws {
        let _ = writeln!(h, "<h3 id=\"law-{}\">{}</h3>", esc(&crate::plots::file_safe(&l.name)), law_heading(l));
        let _ = writeln!(h, "<p><code>{}</code> <span class=\"note\">({})</span></p>", esc(&l.formula), esc(&l.kind));
        if let Some(e) = &l.error {
            let _ = writeln!(h, "<p class=\"err\">Not fitted: {}</p>", esc(e));
        }
        if let Some(c) = &l.counting {
            let _ = writeln!(h, "<p>{}</p>", counting_html(c));
        }
        if let Some(f) = &l.fit {
            let _ = writeln!(
                h,
                "<p>{} points, objective {}, R² {:.4}, RMSE {}{}{}; {}.</p>",
                f.n_points.unwrap_or(0),
                esc(&f.objective),
                f.r2.0,
                units::plain(f.rmse.0),
                match f.converged {
                    Some(false) => ", <span class=\"err\">did not converge</span>",
                    _ => "",
                },
                f.grad_norm.map(|g| format!(", final gradient norm {}", units::plain(g.0))).unwrap_or_default(),
                esc(&level_text(l))
            );
        }
        if !l.params.is_empty() || !l.derived.is_empty() {
            let _ = writeln!(
                h,
                "<table class=\"params\" data-law=\"{}\"><tr><th class=\"l\">parameter</th><th>estimate</th><th>interval</th></tr>",
                esc(&l.name)
            );
            for (name, e) in l.params.iter().chain(l.derived.iter()) {
                let (lo, hi) = e.interval().unwrap_or((f64::NAN, f64::NAN));
                let ci =
                    if lo.is_finite() { format!("[{}, {}]", units::plain(lo), units::plain(hi)) } else { "–".into() };
                let _ = writeln!(
                    h,
                    "<tr><td class=\"l\">{n}</td><td data-q=\"{n}\" data-value=\"{v}\" data-lo=\"{a}\" data-hi=\"{b}\">{s}</td><td>{ci}</td></tr>",
                    n = esc(name),
                    v = attr(e.value()),
                    a = attr(lo),
                    b = attr(hi),
                    s = units::plain(e.value()),
                );
            }
            h.push_str("</table>\n");
        }
        if let Some(x) = &l.extrapolation {
            let _ = writeln!(
                h,
                "<p>Extrapolation: refitted on {} points without {}; predicting them: mean |relative error| {:.2}%, max {:.2}%.</p>",
                x.n_train,
                esc(&x.held_out),
                100.0 * x.mean_abs_rel_error.0,
                100.0 * x.max_abs_rel_error.0
            );
        }
        for n in &l.notes {
            let _ = writeln!(h, "<p class=\"note\">Note: {}</p>", esc(n));
        }
        if let Some((_, why)) = skipped.iter().find(|(n, _)| n == &l.name) {
            let _ = writeln!(h, "<p class=\"note\">No plot of predicted against observed: {}.</p>", esc(why));
        }
    }
    if !laws.left_out.is_empty() {
        let _ = writeln!(
            h,
            "<h3 id=\"left-out\">Points left out of the fits</h3>\n<p>{} point(s) of the sweep are not in these fits (the laws were fitted to the finished points).</p>\n<table><tr><th class=\"l\">point</th><th class=\"l\">model</th><th class=\"l\">state</th><th class=\"l\">reason</th></tr>",
            laws.left_out.len()
        );
        for p in &laws.left_out {
            let get = |k: &str| esc(p.get(k).map(String::as_str).unwrap_or(""));
            let _ = writeln!(
                h,
                "<tr><td class=\"l\"><code>{}</code></td><td class=\"l\">{}</td><td class=\"l\">{}</td><td class=\"l\">{}</td></tr>",
                get("point"),
                get("label"),
                get("state"),
                get("reason")
            );
        }
        h.push_str("</table>\n");
    }
}

/// A law's counting conventions as a sentence: "Counting: parameters <b>all</b>, compute
/// <b>6ND_all</b> (N ← N_total, C ← C_total)", and whether they were assumed; any other shape is
/// shown as given.
fn counting_html(c: &serde_json::Value) -> String {
    let Some(o) = c.as_object() else { return format!("Counting: {}", esc(&c.to_string())) };
    let word = |k: &str| o.get(k).and_then(|v| v.as_str()).unwrap_or("?");
    let columns = o
        .get("columns")
        .and_then(|v| v.as_object())
        .map(|m| m.iter().map(|(v, col)| format!("{v} ← {}", col.as_str().unwrap_or("?"))).collect::<Vec<_>>())
        .unwrap_or_default();
    let flops = o.get("flops_per_token").and_then(|f| {
        let (k, p) = (f.get("k")?.as_f64()?, f.get("p")?.as_f64()?);
        let fitted = f.get("fitted").and_then(|v| v.as_bool()).unwrap_or(false);
        Some(format!("; FLOPs per token {} N^{p:.3}{}", crate::units::plain(k), if fitted { " (fitted)" } else { "" }))
    });
    format!(
        "Counting: parameters <b>{}</b>, compute <b>{}</b>{}{}{}",
        esc(word("parameters")),
        esc(word("compute")),
        if columns.is_empty() { String::new() } else { format!(" ({})", esc(&columns.join(", "))) },
        esc(&flops.unwrap_or_default()),
        if o.get("assumed").and_then(|v| v.as_bool()) == Some(true) {
            " — assumed: the table has no column for this convention"
        } else {
            ""
        }
    )
}

fn points_table(h: &mut String, points: &[PointSummary]) {
    let open = if points.len() <= 300 { " open" } else { "" };
    let _ = writeln!(h, "<details{open}><summary>{} points</summary>", points.len());
    h.push_str("<table class=\"points\"><tr><th class=\"l\">id</th><th class=\"l\">model</th><th>N</th><th>D</th><th>r</th><th>V</th><th class=\"l\">precision</th><th class=\"l\">state</th><th>final loss</th></tr>\n");
    for p in points {
        let _ = writeln!(
            h,
            "<tr><td class=\"l\"><code>{}</code></td><td class=\"l\">{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td class=\"l\">{}</td><td class=\"l\">{}</td><td>{}</td></tr>",
            esc(&p.id[..p.id.len().min(12)]),
            esc(&p.label),
            units::si(p.n),
            units::si(p.d),
            p.r,
            p.vocab,
            esc(&p.precision),
            esc(&p.state),
            p.final_loss.map(units::plain).unwrap_or_else(|| "–".into())
        );
    }
    h.push_str("</table></details>\n");
}

/// The whole page.
pub fn index_html(
    inputs: &ReportInputs,
    options: &ReportOptions,
    figures: &[Figure],
    not_drawn: &[(String, String)],
    skipped: &[(String, String)],
) -> String {
    let points = &inputs.points;
    let mut h = String::new();
    let count = |s: &str| points.iter().filter(|p| p.state == s).count();
    let reload = match options.reload_seconds {
        // A small inline script (not a meta refresh): location.reload keeps the scroll position.
        Some(s) => format!("<script>setTimeout(function(){{location.reload()}},{})</script>\n", s as u64 * 1000),
        None => String::new(),
    };
    let _ = write!(
        h,
        "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>{t}</title>\n<style>{STYLE}</style>\n{reload}</head><body>\n<h1>{t}</h1>\n<p class=\"status\">{n} points: {d} done, {r} running, {p} pending, {f} failed.</p>\n",
        t = esc(&inputs.title),
        n = points.len(),
        d = count("done"),
        r = count("running"),
        p = count("pending"),
        f = count("failed"),
    );
    if let Some(s) = options.reload_seconds {
        let _ = writeln!(
            h,
            "<p class=\"live\">Live: <code>sweep run</code> is running. This page is rewritten as points finish and reloads itself every {s} s; the laws are fitted when the sweep finishes.</p>"
        );
    }
    h.push_str("<nav><a href=\"#answers\">Answers</a><a href=\"#plots\">Plots</a><a href=\"#laws\">Laws</a><a href=\"#points\">Points</a></nav>\n");
    h.push_str("<h2 id=\"answers\">Optimal configurations</h2>\n");
    match (&inputs.laws, &inputs.laws_problem) {
        (_, Some(problem)) => {
            let _ = writeln!(h, "<p class=\"err\">laws.json could not be read: {}</p>", esc(problem));
        }
        (None, None) => h.push_str(
            "<p>No laws.json yet (the sweep has no [fit] section, or the fit has not run: <code>sweep fit DIR</code>).</p>\n",
        ),
        (Some(laws), None) => answers(&mut h, laws),
    }
    h.push_str("<h2 id=\"plots\">Plots</h2>\n");
    if figures.is_empty() {
        h.push_str("<p>No plots yet: nothing has been evaluated.</p>\n");
    }
    for f in figures {
        let _ = writeln!(
            h,
            "<figure><img src=\"{src}\" width=\"{w}\" height=\"{ht}\" alt=\"{c}\"><figcaption>{c}</figcaption></figure>",
            src = esc(&f.file),
            w = f.size.0,
            ht = f.size.1,
            c = esc(&f.caption)
        );
    }
    for (what, why) in not_drawn {
        let _ = writeln!(h, "<p class=\"note\">Not drawn: {}: {}.</p>", esc(what), esc(why));
    }
    h.push_str("<h2 id=\"laws\">Laws</h2>\n");
    match &inputs.laws {
        Some(laws) => details(&mut h, laws, skipped),
        None => h.push_str("<p>None fitted yet.</p>\n"),
    }
    h.push_str("<h2 id=\"points\">Points</h2>\n");
    points_table(&mut h, points);
    h.push_str("</body></html>\n");
    h
}
