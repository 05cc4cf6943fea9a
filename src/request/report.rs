//! The report of one forget request: what `qforget forget --json` prints, what the C API hands
//! back as JSON, and what `serve` sends when a request ends. One struct, so the three agree
//! field for field.

use std::collections::BTreeMap;

use serde::Serialize;

use crate::eval::forgetting::Measured;
use crate::eval::metrics::Metrics;
use crate::unlearn::GuardReport;

/// Metrics of one side (before or after), with the Avg. Gap to the reference when there is one.
#[derive(Debug, Clone, Serialize)]
pub struct Side {
    #[serde(flatten)]
    pub m: Measured,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub gap: Option<f64>,
}

/// Everything a request did, in the order a reader wants it.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub method: &'static str,
    pub model: String,
    pub dataset: String,
    pub forget_count: usize,
    pub retain_count: usize,
    /// Wall time of the method itself (not of the measurements), seconds.
    pub seconds: f64,
    pub epoch_seconds: Vec<f64>,
    /// The int8 GEMM kernel tier that ran (`avx512-vnni`, `avx2`, `neon-dotprod`, …): every
    /// time figure is only meaningful with it.
    pub kernel: &'static str,
    pub steps: usize,
    pub stopped: String,
    /// The forgetting target (stopping rule) the request ran to.
    pub target: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub target_met: Option<bool>,
    /// Why nothing may be written (the request failed).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub refused: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub guard: Option<GuardReport>,
    pub notes: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub before: Option<Side>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub after: Option<Side>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reference: Option<Metrics>,
    /// The exported model, once written.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub export: Option<String>,
    /// The delta file, once written.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub delta: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub delta_sha256: Option<String>,
    pub changed_weights: usize,
    pub settings: BTreeMap<String, String>,
    /// Where the time went (`forget --profile`, `crate::profile`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub profile: Option<Vec<crate::profile::PhaseTime>>,
}

impl Report {
    /// Pretty-printed JSON (the `--json` output).
    pub fn to_json(&self) -> String {
        // Only plain numbers, strings and maps: serialization cannot fail.
        serde_json::to_string_pretty(self).unwrap_or_else(|e| format!("{{\"error\": \"{e}\"}}"))
    }

    /// A metrics side as the flat name → number map the journal stores.
    pub(crate) fn flat(m: &Option<Side>) -> BTreeMap<String, f64> {
        let Some(s) = m else {
            return BTreeMap::new();
        };
        let v = serde_json::to_value(s.m).unwrap_or_default();
        v.as_object()
            .map(|o| {
                o.iter()
                    .filter_map(|(k, v)| v.as_f64().map(|x| (k.clone(), x)))
                    .collect()
            })
            .unwrap_or_default()
    }
}
