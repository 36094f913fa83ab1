//! What the proxy records for one release.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use super::latency::{HistogramSnapshot, LatencyHistogram};

/// Seconds per slot of the sliding window.
const SLOT_SECS: u64 = 10;
/// Slots kept: a minute plus the slot being filled.
const SLOTS: usize = 7;

/// One slot of the sliding window.
#[derive(Debug, Default)]
struct Slot {
    /// Which 10-second period the slot holds.
    period: AtomicU64,
    requests: AtomicU64,
    errors: AtomicU64,
    latency: LatencyHistogram,
}

/// How a request ended by its client's doing. None of these counts
/// against the release: they are kept apart from its answers, its errors
/// and its latency, so rollout analysis never sees them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientFault {
    /// The request body was malformed (an invalid chunk, say): 400.
    BadBody,
    /// The request body came slower than `--client-body-min-rate`: 408.
    SlowBody,
    /// The client went away before its request body was whole: 499.
    Aborted,
}

impl ClientFault {
    pub const ALL: [ClientFault; 3] = [
        ClientFault::BadBody,
        ClientFault::SlowBody,
        ClientFault::Aborted,
    ];

    /// The `fault` label in `/metrics`.
    pub fn label(self) -> &'static str {
        match self {
            ClientFault::BadBody => "bad_body",
            ClientFault::SlowBody => "slow_body",
            ClientFault::Aborted => "aborted",
        }
    }
}

/// Where an upstream ran out of time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UpstreamPhase {
    /// Opening a connection (`--connect-timeout`).
    Connect,
    /// Waiting for the response headers (`--upstream-timeout`).
    Header,
    /// Sending the response body (`--upstream-body-min-rate`).
    Body,
}

impl UpstreamPhase {
    pub const ALL: [UpstreamPhase; 3] = [
        UpstreamPhase::Connect,
        UpstreamPhase::Header,
        UpstreamPhase::Body,
    ];

    /// The `phase` label in `/metrics`.
    pub fn label(self) -> &'static str {
        match self {
            UpstreamPhase::Connect => "connect",
            UpstreamPhase::Header => "header",
            UpstreamPhase::Body => "body",
        }
    }
}

#[derive(Debug)]
pub struct ReleaseMetrics {
    started: Instant,
    /// By status class: 1xx … 5xx.
    responses: [AtomicU64; 5],
    /// Requests the proxy could not get answered (502, 503, 504 of its own).
    upstream_errors: AtomicU64,
    /// Answers the upstream broke off after they began (its body stalled
    /// or was cut): errors of the release, though their status was not.
    broken_responses: AtomicU64,
    /// By [`UpstreamPhase`].
    upstream_timeouts: [AtomicU64; 3],
    /// By [`ClientFault`]; not among the answers above.
    client_faults: [AtomicU64; 3],
    latency: LatencyHistogram,
    window: [Slot; SLOTS],
}

impl Default for ReleaseMetrics {
    fn default() -> Self {
        Self {
            started: Instant::now(),
            responses: Default::default(),
            upstream_errors: AtomicU64::new(0),
            broken_responses: AtomicU64::new(0),
            upstream_timeouts: Default::default(),
            client_faults: Default::default(),
            latency: LatencyHistogram::default(),
            window: Default::default(),
        }
    }
}

/// Counts since start, for Prometheus and for analysis intervals (the
/// difference of two snapshots).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct MetricsSnapshot {
    pub responses: [u64; 5],
    pub upstream_errors: u64,
    pub broken_responses: u64,
    /// By [`UpstreamPhase`].
    pub upstream_timeouts: [u64; 3],
    /// By [`ClientFault`].
    pub client_faults: [u64; 3],
    pub latency: HistogramSnapshot,
}

impl MetricsSnapshot {
    /// Answers of the release (client faults are not among them).
    pub fn requests(&self) -> u64 {
        self.responses.iter().sum()
    }

    /// 5xx answers, the proxy's own 502/503/504 included, and answers the
    /// upstream broke off after they began.
    pub fn errors(&self) -> u64 {
        self.responses[4] + self.broken_responses
    }

    pub fn upstream_timeouts(&self, phase: UpstreamPhase) -> u64 {
        self.upstream_timeouts[phase as usize]
    }

    pub fn client_faults(&self, fault: ClientFault) -> u64 {
        self.client_faults[fault as usize]
    }

    pub fn since(&self, earlier: &MetricsSnapshot) -> MetricsSnapshot {
        fn minus<const N: usize>(now: &[u64; N], then: &[u64; N]) -> [u64; N] {
            std::array::from_fn(|i| now[i].saturating_sub(then[i]))
        }
        MetricsSnapshot {
            responses: minus(&self.responses, &earlier.responses),
            upstream_errors: self.upstream_errors.saturating_sub(earlier.upstream_errors),
            broken_responses: self
                .broken_responses
                .saturating_sub(earlier.broken_responses),
            upstream_timeouts: minus(&self.upstream_timeouts, &earlier.upstream_timeouts),
            client_faults: minus(&self.client_faults, &earlier.client_faults),
            latency: self.latency.since(&earlier.latency),
        }
    }
}

/// The last minute of a release, as `switchyard status` shows it.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct WindowSummary {
    pub seconds: f64,
    pub requests: u64,
    pub errors: u64,
    pub rate_per_second: f64,
    /// errors / requests, 0 to 1.
    pub error_rate: f64,
    pub p50_ms: Option<f64>,
    pub p99_ms: Option<f64>,
    pub p999_ms: Option<f64>,
}

fn ms(d: Option<Duration>) -> Option<f64> {
    d.map(|d| d.as_secs_f64() * 1000.0)
}

impl WindowSummary {
    /// The summary of `requests` answers, `errors` of them 5xx, with these
    /// latencies, over `seconds`.
    pub fn of(seconds: f64, requests: u64, errors: u64, latency: &HistogramSnapshot) -> Self {
        WindowSummary {
            seconds,
            requests,
            errors,
            rate_per_second: requests as f64 / seconds.max(f64::EPSILON),
            error_rate: if requests == 0 {
                0.0
            } else {
                errors as f64 / requests as f64
            },
            p50_ms: ms(latency.quantile(0.5)),
            p99_ms: ms(latency.quantile(0.99)),
            p999_ms: ms(latency.quantile(0.999)),
        }
    }
}

/// The counts behind a [`WindowSummary`]: what a node of a fleet reports
/// of its last minute, so that the minutes of several nodes add up.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct MinuteCounts {
    /// How long the window covers (ms).
    pub millis: u64,
    pub requests: u64,
    pub errors: u64,
    pub latency: HistogramSnapshot,
}

impl MinuteCounts {
    /// The summary of these counts.
    pub fn summary(&self) -> WindowSummary {
        WindowSummary::of(
            self.millis as f64 / 1000.0,
            self.requests,
            self.errors,
            &self.latency,
        )
    }

    /// Adds another node's minute: counts and latencies add up, the
    /// window is the longer of the two (nodes' windows cover the same
    /// minute, each from its own start).
    pub fn merge(&mut self, other: &MinuteCounts) {
        self.millis = self.millis.max(other.millis);
        self.requests += other.requests;
        self.errors += other.errors;
        self.latency.merge(&other.latency);
    }
}

impl ReleaseMetrics {
    /// Records one answer: its status and the time to its headers.
    pub fn record(&self, status: u16, own_error: bool, elapsed: Duration) {
        let class = usize::from((status / 100).clamp(1, 5)) - 1;
        self.responses[class].fetch_add(1, Ordering::Relaxed);
        if own_error {
            self.upstream_errors.fetch_add(1, Ordering::Relaxed);
        }
        self.latency.record(elapsed);
        let slot = self.slot();
        slot.requests.fetch_add(1, Ordering::Relaxed);
        if status >= 500 {
            slot.errors.fetch_add(1, Ordering::Relaxed);
        }
        slot.latency.record(elapsed);
    }

    /// Records an answer the upstream broke off after it began: one more
    /// error of the release (the answer itself was recorded already).
    pub fn record_broken_response(&self) {
        self.broken_responses.fetch_add(1, Ordering::Relaxed);
        self.slot().errors.fetch_add(1, Ordering::Relaxed);
    }

    pub fn record_upstream_timeout(&self, phase: UpstreamPhase) {
        self.upstream_timeouts[phase as usize].fetch_add(1, Ordering::Relaxed);
    }

    /// Records a request that ended by its client's doing: only here, not
    /// among the answers, the errors or the latency of the release.
    pub fn record_client_fault(&self, fault: ClientFault) {
        self.client_faults[fault as usize].fetch_add(1, Ordering::Relaxed);
    }

    /// The window slot of this moment, emptied first if it held an older
    /// period.
    fn slot(&self) -> &Slot {
        let period = self.started.elapsed().as_secs() / SLOT_SECS;
        let slot = &self.window[(period % SLOTS as u64) as usize];
        let seen = slot.period.load(Ordering::Acquire);
        if seen != period
            && slot
                .period
                .compare_exchange(seen, period, Ordering::AcqRel, Ordering::Acquire)
                .is_ok()
        {
            // This slot held an older period: start it afresh. A sample
            // racing with the reset may be lost; the window is a summary.
            slot.requests.store(0, Ordering::Relaxed);
            slot.errors.store(0, Ordering::Relaxed);
            slot.latency.reset();
        }
        slot
    }

    pub fn snapshot(&self) -> MetricsSnapshot {
        let mut responses = [0; 5];
        for (i, r) in responses.iter_mut().enumerate() {
            *r = self.responses[i].load(Ordering::Relaxed);
        }
        let load =
            |counts: &[AtomicU64; 3]| std::array::from_fn(|i| counts[i].load(Ordering::Relaxed));
        MetricsSnapshot {
            responses,
            upstream_errors: self.upstream_errors.load(Ordering::Relaxed),
            broken_responses: self.broken_responses.load(Ordering::Relaxed),
            upstream_timeouts: load(&self.upstream_timeouts),
            client_faults: load(&self.client_faults),
            latency: self.latency.snapshot(),
        }
    }

    /// The last minute (the six full 10-second periods before this one,
    /// plus the one being filled).
    pub fn last_minute(&self) -> WindowSummary {
        self.minute_counts().summary()
    }

    /// The counts of [`ReleaseMetrics::last_minute`].
    pub fn minute_counts(&self) -> MinuteCounts {
        let elapsed = self.started.elapsed();
        let now = elapsed.as_secs() / SLOT_SECS;
        let oldest = now.saturating_sub(SLOTS as u64 - 1);
        let mut requests = 0;
        let mut errors = 0;
        let mut latency = HistogramSnapshot::default();
        for slot in &self.window {
            let period = slot.period.load(Ordering::Acquire);
            if period < oldest || period > now {
                continue;
            }
            requests += slot.requests.load(Ordering::Relaxed);
            errors += slot.errors.load(Ordering::Relaxed);
            latency.merge(&slot.latency.snapshot());
        }
        let covered = (elapsed.as_secs_f64() - (oldest * SLOT_SECS) as f64).max(1.0);
        MinuteCounts {
            millis: (covered * 1000.0) as u64,
            requests,
            errors,
            latency,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_by_class_and_window() {
        let m = ReleaseMetrics::default();
        for _ in 0..8 {
            m.record(200, false, Duration::from_millis(5));
        }
        m.record(502, true, Duration::from_millis(1));
        m.record(404, false, Duration::from_millis(2));
        let s = m.snapshot();
        assert_eq!((s.requests(), s.errors(), s.upstream_errors), (10, 1, 1));
        assert_eq!(s.responses[3], 1);
        let w = m.last_minute();
        assert_eq!((w.requests, w.errors), (10, 1));
        assert!((w.error_rate - 0.1).abs() < 1e-9);
        assert!(w.p50_ms.expect("p50") >= 4.5);
        let later = m.snapshot();
        m.record(200, false, Duration::from_millis(5));
        assert_eq!(m.snapshot().since(&later).requests(), 1);
    }

    #[test]
    fn client_faults_are_kept_apart_and_broken_responses_are_errors() {
        let m = ReleaseMetrics::default();
        for _ in 0..4 {
            m.record(200, false, Duration::from_millis(5));
        }
        m.record_client_fault(ClientFault::BadBody);
        m.record_client_fault(ClientFault::SlowBody);
        m.record_client_fault(ClientFault::SlowBody);
        let before = m.snapshot();
        assert_eq!((before.requests(), before.errors()), (4, 0));
        assert_eq!(before.client_faults(ClientFault::SlowBody), 2);
        assert_eq!(before.latency.count(), 4);

        m.record_upstream_timeout(UpstreamPhase::Body);
        m.record_broken_response();
        let after = m.snapshot().since(&before);
        assert_eq!((after.requests(), after.errors()), (0, 1));
        assert_eq!(after.upstream_timeouts(UpstreamPhase::Body), 1);
        assert_eq!(after.client_faults(ClientFault::SlowBody), 0);
        let w = m.last_minute();
        assert_eq!((w.requests, w.errors), (4, 1));
    }
}
