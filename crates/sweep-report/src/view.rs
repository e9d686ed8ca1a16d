//! laws.json as the report reads it: leniently. Every field is optional, unknown fields are
//! ignored, a null number (serde_json writes NaN as null) reads as NaN, and an entry that cannot
//! be read at all is shown with the reason; so a laws.json written by an older or newer sweep,
//! or one extended by a new law, never fails the report. The writer's strict types are
//! `sweep_fit::output`.

use serde::{Deserialize, Deserializer};
use std::collections::BTreeMap;
use std::path::Path;

/// A number that reads null (or anything not a number) as NaN.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Num(pub f64);

impl<'de> Deserialize<'de> for Num {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Num, D::Error> {
        let v = serde_json::Value::deserialize(d)?;
        Ok(Num(v.as_f64().unwrap_or(f64::NAN)))
    }
}

/// A value and its interval.
#[derive(Debug, Clone, Copy, PartialEq, Default, Deserialize)]
#[serde(default)]
pub struct EstimateView {
    /// The fit's value (NaN when absent).
    pub estimate: Num,
    /// `[low, high]` when given.
    pub ci: Option<[Num; 2]>,
}

impl EstimateView {
    /// The value.
    pub fn value(&self) -> f64 {
        self.estimate.0
    }
    /// The interval when both ends are finite.
    pub fn interval(&self) -> Option<(f64, f64)> {
        self.ci.map(|[a, b]| (a.0, b.0)).filter(|(a, b)| a.is_finite() && b.is_finite())
    }
}

/// The whole file.
#[derive(Debug, Clone, Default)]
pub struct LawsView {
    /// Format version (0 when absent).
    pub schema_version: u64,
    /// Every law entry, in the file's order.
    pub laws: Vec<LawView>,
    /// Points the fit left out (`left_out`: id, label, state, reason).
    pub left_out: Vec<BTreeMap<String, String>>,
}

/// One law entry.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct LawView {
    /// Law name.
    pub name: String,
    /// parametric, approach1, approach2 ...
    pub kind: String,
    /// Readable formula.
    pub formula: String,
    /// Why the law was not fitted (or why this entry could not be read).
    pub error: Option<String>,
    /// The subset of rows fitted when a law is fitted per group.
    pub group: Option<BTreeMap<String, Num>>,
    /// Counting conventions, shown as given.
    pub counting: Option<serde_json::Value>,
    /// Variable → table column.
    pub variables: BTreeMap<String, String>,
    /// Fitted parameters.
    pub params: BTreeMap<String, EstimateView>,
    /// Derived quantities.
    pub derived: BTreeMap<String, EstimateView>,
    /// Fit quality.
    pub fit: Option<FitView>,
    /// The extrapolation check.
    pub extrapolation: Option<ExtrapolationView>,
    /// Optimal configurations.
    pub optimal: Vec<OptimalView>,
    /// Notes for the reader.
    pub notes: Vec<String>,
    /// Rows derived before the fit (IsoFLOP minima, critical ratios), column → value.
    pub derived_points: Vec<BTreeMap<String, Num>>,
    /// The compute-optimal frontier with bands.
    pub frontier: Vec<FrontierView>,
    /// Data provenance.
    pub data: Option<serde_json::Value>,
}

impl LawView {
    /// The table column the law read for `var` (the variable's own name when not recorded).
    pub fn column<'a>(&'a self, var: &'a str) -> &'a str {
        self.variables.get(var).map(String::as_str).unwrap_or(var)
    }
    /// Parameter estimates in the order of `names`; None when one is missing or not finite.
    pub fn theta(&self, names: &[String]) -> Option<Vec<f64>> {
        names.iter().map(|n| self.params.get(n).map(|e| e.value()).filter(|v| v.is_finite())).collect()
    }
    /// True when the entry holds a fit (no error and fitted parameters).
    pub fn fitted(&self) -> bool {
        self.error.is_none() && !self.params.is_empty()
    }
    /// The group as text (`N = 1e8`), empty when the law is not fitted per group.
    pub fn group_label(&self) -> String {
        self.group
            .as_ref()
            .map(|g| {
                g.iter().map(|(k, v)| format!("{k} = {}", crate::units::plain(v.0))).collect::<Vec<_>>().join(", ")
            })
            .unwrap_or_default()
    }
}

/// Fit quality.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct FitView {
    /// Objective name.
    pub objective: String,
    /// Points fitted.
    pub n_points: Option<u64>,
    /// R².
    pub r2: Num,
    /// RMSE.
    pub rmse: Num,
    /// Whether the best start converged.
    pub converged: Option<bool>,
    /// Gradient norm at the optimum.
    pub grad_norm: Option<Num>,
    /// Bootstrap settings and outcome.
    pub bootstrap: Option<BootstrapView>,
}

/// Bootstrap settings and outcome.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct BootstrapView {
    /// Resamples drawn.
    pub resamples: u64,
    /// Interval level.
    pub level: Num,
    /// Failed resamples.
    pub failed: u64,
    /// What a resample draws.
    pub unit: String,
    /// Why intervals are withheld.
    pub intervals_withheld: Option<String>,
}

/// The extrapolation check.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct ExtrapolationView {
    /// What was held out.
    pub held_out: String,
    /// Points refitted.
    pub n_train: u64,
    /// Mean |relative error|.
    pub mean_abs_rel_error: Num,
    /// Max |relative error|.
    pub max_abs_rel_error: Num,
    /// The held-out points.
    pub points: Vec<HeldOutView>,
}

/// One held-out point.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct HeldOutView {
    /// Variable → value.
    pub inputs: BTreeMap<String, Num>,
    /// Observed response.
    pub observed: Num,
    /// Predicted by the refit.
    pub predicted: Num,
    /// Interval of the prediction.
    pub predicted_ci: Option<[Num; 2]>,
}

/// One optimal configuration.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct OptimalView {
    /// The question.
    pub kind: String,
    /// Its givens.
    pub inputs: BTreeMap<String, Num>,
    /// Its answer.
    pub values: BTreeMap<String, EstimateView>,
}

/// One frontier point.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct FrontierView {
    /// Budget.
    #[serde(rename = "C")]
    pub c: Num,
    /// Compute-optimal parameters.
    #[serde(rename = "N_opt")]
    pub n_opt: EstimateView,
    /// Compute-optimal tokens.
    #[serde(rename = "D_opt")]
    pub d_opt: EstimateView,
}

impl LawsView {
    /// Parses laws.json text; entries that cannot be read become entries with an error.
    pub fn parse(text: &str) -> Result<LawsView, String> {
        let v: serde_json::Value = serde_json::from_str(text).map_err(|e| format!("not JSON: {e}"))?;
        let obj = v.as_object().ok_or("not a JSON object")?;
        let laws = obj
            .get("laws")
            .and_then(|l| l.as_array())
            .map(|a| {
                a.iter()
                    .enumerate()
                    .map(|(i, e)| {
                        LawView::deserialize(e).unwrap_or_else(|err| LawView {
                            name: e
                                .get("name")
                                .and_then(|n| n.as_str())
                                .map(str::to_string)
                                .unwrap_or_else(|| format!("law {}", i + 1)),
                            error: Some(format!("this report could not read the entry: {err}")),
                            ..LawView::default()
                        })
                    })
                    .collect()
            })
            .unwrap_or_default();
        let left_out = obj
            .get("left_out")
            .and_then(|l| l.as_array())
            .map(|a| {
                a.iter()
                    .filter_map(|p| p.as_object())
                    .map(|p| {
                        p.iter()
                            .map(|(k, v)| (k.clone(), v.as_str().map(str::to_string).unwrap_or_else(|| v.to_string())))
                            .collect()
                    })
                    .collect()
            })
            .unwrap_or_default();
        Ok(LawsView { schema_version: obj.get("schema_version").and_then(|v| v.as_u64()).unwrap_or(0), laws, left_out })
    }

    /// Reads laws.json; Ok(None) when the file does not exist, Err(reason) when it cannot be read.
    pub fn read(path: &Path) -> Result<Option<LawsView>, String> {
        match std::fs::read_to_string(path) {
            Ok(text) => LawsView::parse(&text).map(Some).map_err(|e| format!("{}: {e}", path.display())),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(format!("{}: {e}", path.display())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_unknown_and_null_fields_never_fail() {
        let text = r#"{"schema_version": 7, "laws": [
            {"name": "chinchilla", "params": {"E": {"estimate": 1.7, "ci": [1.6, null]}},
             "brand_new_field": {"x": 1},
             "optimal": [{"kind": "compute_optimal", "inputs": {"C": 1e21},
                          "values": {"N_opt": {"estimate": null, "ci": null}}}]},
            {"name": "broken", "params": "not a map"},
            {"name": "cmr", "error": "no mixture ratio varies", "group": {"N": 1e8}}
        ], "left_out": [{"point": "ab12", "state": "failed", "reason": "diverged"}]}"#;
        let v = LawsView::parse(text).unwrap();
        assert_eq!(v.schema_version, 7);
        assert_eq!(v.laws.len(), 3);
        let c = &v.laws[0];
        assert_eq!(c.params["E"].value(), 1.7);
        assert_eq!(c.params["E"].interval(), None, "an interval with a null end is no interval");
        assert!(c.optimal[0].values["N_opt"].value().is_nan());
        assert!(c.fitted());
        assert!(v.laws[1].error.as_deref().unwrap().contains("could not read"), "{:?}", v.laws[1].error);
        assert_eq!(v.laws[1].name, "broken");
        assert!(!v.laws[2].fitted());
        assert_eq!(v.laws[2].group_label(), "N = 1.00e8");
        assert_eq!(v.left_out[0]["reason"], "diverged");
        assert!(LawsView::parse("[1, 2]").is_err());
    }
}
