//! The fleet's traffic: what each node reports of the answers each release
//! gave through it (counts by class and latency buckets since it started,
//! and its last minute), and the pure sums the leader's rollout analysis
//! and `switchyard status` make of the live nodes' reports.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::metrics::{MetricsSnapshot, MinuteCounts};
use crate::runtime::ReleaseHandle;

/// What one node reports of one release's traffic.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReleaseTraffic {
    pub service: String,
    pub version: String,
    /// Its counts since this node started it.
    pub total: MetricsSnapshot,
    /// Its last minute on this node.
    pub minute: MinuteCounts,
}

impl ReleaseTraffic {
    /// A release's traffic through this node, as its metrics have it now.
    pub fn of(handle: &ReleaseHandle) -> Self {
        Self {
            service: handle.release.service.to_string(),
            version: handle.release.version.to_string(),
            total: handle.backend.metrics.snapshot(),
            minute: handle.backend.metrics.minute_counts(),
        }
    }
}

/// What one node reports of its releases' traffic (refreshed every few
/// seconds under its lease).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeTraffic {
    pub node: String,
    /// When it was taken (unix ms).
    pub at: u64,
    /// By [`super::ReleaseReadiness::key`].
    pub releases: BTreeMap<String, ReleaseTraffic>,
}

/// The fleet's last minute of a release: the live nodes' minutes added up.
pub fn fleet_minute<'a>(minutes: impl IntoIterator<Item = &'a MinuteCounts>) -> MinuteCounts {
    let mut sum = MinuteCounts::default();
    for minute in minutes {
        sum.merge(minute);
    }
    sum
}

/// What the fleet answered between two looks at the nodes' totals (by
/// node): each node's difference, added up. A node first seen in `after`
/// counts whole (it started the release meanwhile); one whose totals went
/// down started it again, and counts from zero; one gone from `after`
/// counts nothing (its lease lapsed).
pub fn fleet_delta(
    before: &BTreeMap<String, MetricsSnapshot>,
    after: &BTreeMap<String, MetricsSnapshot>,
) -> MetricsSnapshot {
    let mut sum = MetricsSnapshot::default();
    for (node, now) in after {
        let delta = match before.get(node) {
            Some(then) if now.requests() >= then.requests() => now.since(then),
            _ => now.clone(),
        };
        add(&mut sum, &delta);
    }
    sum
}

/// Adds `other`'s counts to `sum`.
pub fn add(sum: &mut MetricsSnapshot, other: &MetricsSnapshot) {
    fn plus<const N: usize>(a: &mut [u64; N], b: &[u64; N]) {
        for (x, y) in a.iter_mut().zip(b) {
            *x += y;
        }
    }
    plus(&mut sum.responses, &other.responses);
    sum.upstream_errors += other.upstream_errors;
    sum.broken_responses += other.broken_responses;
    plus(&mut sum.upstream_timeouts, &other.upstream_timeouts);
    plus(&mut sum.client_faults, &other.client_faults);
    sum.latency.merge(&other.latency);
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::metrics::ReleaseMetrics;

    /// The totals of `ok` answers of 5 ms and `failed` 500s of 50 ms.
    fn traffic(ok: u64, failed: u64) -> ReleaseMetrics {
        let m = ReleaseMetrics::default();
        for _ in 0..ok {
            m.record(200, false, Duration::from_millis(5));
        }
        for _ in 0..failed {
            m.record(500, false, Duration::from_millis(50));
        }
        m
    }

    fn by_node(pairs: &[(&str, MetricsSnapshot)]) -> BTreeMap<String, MetricsSnapshot> {
        pairs
            .iter()
            .map(|(n, s)| ((*n).to_owned(), s.clone()))
            .collect()
    }

    #[test]
    fn the_fleet_minute_is_the_sum_of_the_nodes_minutes() {
        let (one, two) = (traffic(90, 0), traffic(0, 10));
        let minute = fleet_minute([&one.minute_counts(), &two.minute_counts()]);
        assert_eq!((minute.requests, minute.errors), (100, 10));
        let summary = minute.summary();
        assert!((summary.error_rate - 0.1).abs() < 1e-9);
        // p50 from node one's answers, p99 from node two's 500s.
        assert!(summary.p50_ms.expect("p50") < 10.0, "{summary:?}");
        assert!(summary.p99_ms.expect("p99") >= 45.0, "{summary:?}");
        assert_eq!(fleet_minute([]), MinuteCounts::default());
    }

    #[test]
    fn the_fleet_delta_adds_each_nodes_own_difference() {
        let one = traffic(10, 0);
        let two = traffic(5, 1);
        let before = by_node(&[("one", one.snapshot()), ("two", two.snapshot())]);
        for _ in 0..4 {
            one.record(200, false, Duration::from_millis(5));
        }
        two.record(503, true, Duration::from_millis(1));
        let three = traffic(2, 0);
        let after = by_node(&[
            ("one", one.snapshot()),
            ("two", two.snapshot()),
            ("three", three.snapshot()),
        ]);
        let delta = fleet_delta(&before, &after);
        // 4 through one, 1 through two, 2 through three (new meanwhile).
        assert_eq!((delta.requests(), delta.errors()), (7, 1));
        assert_eq!(delta.upstream_errors, 1);
        assert_eq!(delta.latency.count(), 7);
    }

    #[test]
    fn a_node_that_restarted_counts_from_zero_and_one_gone_counts_nothing() {
        let before = by_node(&[
            ("one", traffic(50, 0).snapshot()),
            ("two", traffic(20, 0).snapshot()),
        ]);
        let after = by_node(&[("one", traffic(3, 1).snapshot())]);
        let delta = fleet_delta(&before, &after);
        assert_eq!((delta.requests(), delta.errors()), (4, 1));
    }
}
