//! Units and number formats by quantity name, so a table of any law's answer reads in units
//! (`N_opt` in parameters, `D_opt` in tokens, `C` in FLOPs, ratios as fractions, bit widths as
//! bits) without code per law: a quantity is known by its name's stem (the part before `_opt`,
//! `_crit`, `_total` ...).

/// How a quantity is shown.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Style {
    /// Large counts with SI prefixes (2.60B).
    Count,
    /// FLOPs in scientific notation (1.00e21).
    Flops,
    /// Losses and other values of order one, five significant digits.
    Plain,
    /// Fractions in 0..1, three decimals.
    Fraction,
    /// Whole numbers (bit widths, block sizes).
    Whole,
}

/// The unit and style of a quantity, from its name.
pub fn unit(name: &str) -> (&'static str, Style) {
    let n = name.trim();
    let stem = n.split(['_', '\'']).next().unwrap_or(n);
    match n {
        "tokens_per_param" => return ("tokens per parameter", Style::Plain),
        "loss_bpb" => return ("bits/byte", Style::Plain),
        "embed_dim" => return ("width", Style::Whole),
        "block_size" => return ("elements per scale", Style::Whole),
        "man_bits_continuous" => return ("bits", Style::Plain),
        "T" => return ("relative tolerance", Style::Fraction),
        "epochs" => return ("epochs", Style::Plain),
        "H" => return ("bytes", Style::Count),
        "U" => return ("tokens", Style::Count),
        _ => {}
    }
    if n.starts_with("loss") || n == "L" || n.starts_with("L_") {
        return ("nats/token", Style::Plain);
    }
    if n.ends_with("bits") || n.starts_with("bits") || stem == "P" || n.starts_with("precision") {
        return ("bits", Style::Whole);
    }
    match stem {
        "N" => ("parameters", Style::Count),
        "D" => ("tokens", Style::Count),
        "C" => ("FLOPs", Style::Flops),
        "V" => ("vocabulary entries", Style::Count),
        "r" => ("domain fraction of tokens", Style::Fraction),
        _ => ("", Style::Plain),
    }
}

/// A value of quantity `name` in its style (no unit).
pub fn value(name: &str, v: f64) -> String {
    if !v.is_finite() {
        return "–".into();
    }
    match unit(name).1 {
        Style::Count => si(v),
        Style::Flops => format!("{v:.2e}"),
        Style::Fraction => format!("{v:.3}"),
        Style::Whole if v == v.round() => format!("{v:.0}"),
        Style::Whole | Style::Plain => plain(v),
    }
}

/// A value with its interval: `2.60B [2.30B, 2.90B]`.
pub fn with_interval(name: &str, v: f64, ci: Option<(f64, f64)>) -> String {
    match ci {
        Some((lo, hi)) => format!("{} [{}, {}]", value(name, v), value(name, lo), value(name, hi)),
        None => value(name, v),
    }
}

/// Five significant digits, scientific outside 1e-3..1e5.
pub fn plain(x: f64) -> String {
    if !x.is_finite() {
        return "–".into();
    }
    let a = x.abs();
    if a != 0.0 && !(1e-3..1e5).contains(&a) {
        format!("{x:.2e}")
    } else if a >= 100.0 {
        format!("{x:.1}")
    } else {
        format!("{x:.4}")
    }
}

/// 1.20M, 350k, 3.40B ...: three significant digits with an SI prefix.
pub fn si(x: f64) -> String {
    let a = x.abs();
    let (v, s) = if a >= 1e15 {
        return format!("{x:.2e}");
    } else if a >= 1e12 {
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

/// Parses what [`value`] wrote back into a number (SI prefixes, scientific notation); for tests
/// and the browser check.
pub fn parse_shown(s: &str) -> Option<f64> {
    let s = s.trim();
    let (body, mult) = match s.chars().last()? {
        'k' => (&s[..s.len() - 1], 1e3),
        'M' => (&s[..s.len() - 1], 1e6),
        'B' => (&s[..s.len() - 1], 1e9),
        'T' => (&s[..s.len() - 1], 1e12),
        _ => (s, 1.0),
    };
    body.parse::<f64>().ok().map(|v| v * mult)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantities_get_units_by_name() {
        assert_eq!(unit("N_opt").0, "parameters");
        assert_eq!(unit("N_v_opt").0, "parameters");
        assert_eq!(unit("D_opt").0, "tokens");
        assert_eq!(unit("D_crit").0, "tokens");
        assert_eq!(unit("C"), ("FLOPs", Style::Flops));
        assert_eq!(unit("loss_domain").0, "nats/token");
        assert_eq!(unit("r_critical").1, Style::Fraction);
        assert_eq!(unit("V_opt").0, "vocabulary entries");
        assert_eq!(unit("exp_bits"), ("bits", Style::Whole));
        assert_eq!(unit("man_bits_continuous"), ("bits", Style::Plain));
        assert_eq!(unit("tokens_per_param").0, "tokens per parameter");
        assert_eq!(unit("something_new"), ("", Style::Plain));
    }

    #[test]
    fn values_read_back() {
        assert_eq!(value("N_opt", 2.6e9), "2.60B");
        assert_eq!(with_interval("N_opt", 2.6e9, Some((2.3e9, 2.9e9))), "2.60B [2.30B, 2.90B]");
        assert_eq!(value("C", 1e21), "1.00e21");
        assert_eq!(value("exp_bits", 3.0), "3");
        assert_eq!(value("loss", 2.345678), "2.3457");
        assert_eq!(value("r_opt", f64::NAN), "–");
        assert_eq!(si(350_000.0), "350k");
        assert_eq!(si(12.0), "12.0");
        for (name, v) in [("N_opt", 2.6123e9), ("D", 4.56e4), ("C", 3.3e19), ("loss", 1.98765), ("r", 0.4567)] {
            let back = parse_shown(&value(name, v)).unwrap();
            assert!((back / v - 1.0).abs() < 5e-3, "{name} {v} -> {}", value(name, v));
        }
    }
}
