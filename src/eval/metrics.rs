//! The four numbers every forget request reports (see `DESIGN.md`, metrics), and the Avg. Gap that
//! compares a method against the retrained model. Kept as one small serializable struct so the CLI's
//! `--json` output and `docs/RESULTS.md` print the same fields.

use serde::Serialize;

/// Forget, retain and test accuracy and MIA-efficacy, all in percent (0..100).
#[derive(Serialize, Clone, Copy, Debug, PartialEq)]
pub struct Metrics {
    pub forget_acc: f64,
    pub retain_acc: f64,
    pub test_acc: f64,
    pub mia: f64,
}

/// Avg. Gap: mean |Δ| over the four metrics, in percentage points.
pub fn avg_gap(a: &Metrics, b: &Metrics) -> f64 {
    ((a.forget_acc - b.forget_acc).abs()
        + (a.retain_acc - b.retain_acc).abs()
        + (a.test_acc - b.test_acc).abs()
        + (a.mia - b.mia).abs())
        / 4.0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gap_is_mean_absolute_difference() {
        let a = Metrics {
            forget_acc: 90.0,
            retain_acc: 99.0,
            test_acc: 91.0,
            mia: 10.0,
        };
        let b = Metrics {
            forget_acc: 92.0,
            retain_acc: 98.0,
            test_acc: 91.0,
            mia: 15.0,
        };
        assert_eq!(avg_gap(&a, &b), (2.0 + 1.0 + 0.0 + 5.0) / 4.0);
        assert_eq!(avg_gap(&a, &b), avg_gap(&b, &a));
        assert_eq!(avg_gap(&a, &a), 0.0);
        let json = serde_json::to_string(&a).unwrap();
        assert_eq!(
            json,
            r#"{"forget_acc":90.0,"retain_acc":99.0,"test_acc":91.0,"mia":10.0}"#
        );
    }
}
