//! A release's recent numbers, for charts: every few seconds the
//! difference between two snapshots of its counters becomes one point,
//! and the last points are kept. Sampled beside the proxy, never by it:
//! the proxy only adds to its counters.

use std::collections::VecDeque;

use serde::{Deserialize, Serialize};

use super::{MetricsSnapshot, WindowSummary};

/// What one release did in one period.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrendPoint {
    /// When the period ended (unix ms).
    pub at: u64,
    #[serde(flatten)]
    pub summary: WindowSummary,
}

/// The last points of one release, oldest first.
#[derive(Debug)]
pub struct Trend {
    last: MetricsSnapshot,
    points: VecDeque<TrendPoint>,
    capacity: usize,
}

impl Trend {
    /// A trend that counts from `start`, keeping at most `capacity` points.
    pub fn new(start: MetricsSnapshot, capacity: usize) -> Self {
        Self {
            last: start,
            points: VecDeque::with_capacity(capacity),
            capacity,
        }
    }

    /// Adds the point for what happened between the last snapshot and
    /// `now`, a period of `seconds` that ended at `at`. Counters that went
    /// back (the release's counters were made afresh) count from zero.
    pub fn record(&mut self, now: MetricsSnapshot, at: u64, seconds: f64) {
        if now.requests() < self.last.requests() {
            self.last = MetricsSnapshot::default();
        }
        let period = now.since(&self.last);
        if self.points.len() == self.capacity {
            self.points.pop_front();
        }
        self.points.push_back(TrendPoint {
            at,
            summary: WindowSummary::of(
                seconds,
                period.requests(),
                period.errors(),
                &period.latency,
            ),
        });
        self.last = now;
    }

    pub fn points(&self) -> impl Iterator<Item = &TrendPoint> {
        self.points.iter()
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::metrics::ReleaseMetrics;

    #[test]
    fn each_point_holds_only_its_own_period() {
        let metrics = ReleaseMetrics::default();
        metrics.record(200, false, Duration::from_millis(3));
        let mut trend = Trend::new(metrics.snapshot(), 3);
        for _ in 0..9 {
            metrics.record(200, false, Duration::from_millis(10));
        }
        metrics.record(503, true, Duration::from_millis(1));
        trend.record(metrics.snapshot(), 5_000, 5.0);
        trend.record(metrics.snapshot(), 10_000, 5.0);
        let points: Vec<&TrendPoint> = trend.points().collect();
        assert_eq!(points.len(), 2);
        let first = &points[0].summary;
        assert_eq!((first.requests, first.errors), (10, 1));
        assert!((first.rate_per_second - 2.0).abs() < 1e-9);
        assert!((first.error_rate - 0.1).abs() < 1e-9);
        assert!(first.p99_ms.expect("p99") >= 9.0, "{first:?}");
        let second = &points[1].summary;
        assert_eq!((second.requests, second.p50_ms), (0, None));
        assert_eq!(points[1].at, 10_000);
    }

    #[test]
    fn keeps_the_last_points_and_survives_counters_made_afresh() {
        let metrics = ReleaseMetrics::default();
        for _ in 0..5 {
            metrics.record(200, false, Duration::from_millis(1));
        }
        let mut trend = Trend::new(metrics.snapshot(), 2);
        for at in 1..=3 {
            trend.record(metrics.snapshot(), at, 1.0);
        }
        let ats: Vec<u64> = trend.points().map(|p| p.at).collect();
        assert_eq!(ats, [2, 3]);
        let fresh = ReleaseMetrics::default();
        fresh.record(200, false, Duration::from_millis(1));
        trend.record(fresh.snapshot(), 4, 1.0);
        let last = trend.points().last().expect("a point");
        assert_eq!(last.summary.requests, 1);
    }
}
