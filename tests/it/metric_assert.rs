//! One assertion on one metric sample, showing the whole scrape when it fails.

use crate::support::broker::Metrics;

pub trait AssertMetric {
    /// The sum of the samples of `name` with `labels` is `expected`.
    fn assert_value(&self, name: &str, labels: &[(&str, &str)], expected: f64);
    /// The sum of the samples of `name` with `labels` (0 when absent) is at
    /// least `min`.
    fn assert_at_least(&self, name: &str, labels: &[(&str, &str)], min: f64);
}

impl AssertMetric for Metrics {
    #[track_caller]
    fn assert_value(&self, name: &str, labels: &[(&str, &str)], expected: f64) {
        assert_eq!(
            self.value(name, labels),
            Some(expected),
            "{name} {labels:?}:\n{}",
            self.0
        );
    }

    #[track_caller]
    fn assert_at_least(&self, name: &str, labels: &[(&str, &str)], min: f64) {
        assert!(
            self.value_or_zero(name, labels) >= min,
            "{name} {labels:?} < {min}:\n{}",
            self.0
        );
    }
}
