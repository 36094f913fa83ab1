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

#[derive(Debug)]
pub struct ReleaseMetrics {
    started: Instant,
    /// By status class: 1xx … 5xx.
    responses: [AtomicU64; 5],
    /// Requests the proxy could not get answered (502, 503, 504 of its own).
    upstream_errors: AtomicU64,
    latency: LatencyHistogram,
    window: [Slot; SLOTS],
}

impl Default for ReleaseMetrics {
    fn default() -> Self {
        Self {
            started: Instant::now(),
            responses: Default::default(),
            upstream_errors: AtomicU64::new(0),
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
    pub latency: HistogramSnapshot,
}

impl MetricsSnapshot {
    pub fn requests(&self) -> u64 {
        self.responses.iter().sum()
    }

    /// 5xx answers, the proxy's own 502/503/504 included.
    pub fn errors(&self) -> u64 {
        self.responses[4]
    }

    pub fn since(&self, earlier: &MetricsSnapshot) -> MetricsSnapshot {
        let mut responses = [0; 5];
        for (i, r) in responses.iter_mut().enumerate() {
            *r = self.responses[i].saturating_sub(earlier.responses[i]);
        }
        MetricsSnapshot {
            responses,
            upstream_errors: self.upstream_errors.saturating_sub(earlier.upstream_errors),
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

impl ReleaseMetrics {
    /// Records one answer: its status and the time to its headers.
    pub fn record(&self, status: u16, own_error: bool, elapsed: Duration) {
        let class = usize::from((status / 100).clamp(1, 5)) - 1;
        self.responses[class].fetch_add(1, Ordering::Relaxed);
        if own_error {
            self.upstream_errors.fetch_add(1, Ordering::Relaxed);
        }
        self.latency.record(elapsed);
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
        slot.requests.fetch_add(1, Ordering::Relaxed);
        if status >= 500 {
            slot.errors.fetch_add(1, Ordering::Relaxed);
        }
        slot.latency.record(elapsed);
    }

    pub fn snapshot(&self) -> MetricsSnapshot {
        let mut responses = [0; 5];
        for (i, r) in responses.iter_mut().enumerate() {
            *r = self.responses[i].load(Ordering::Relaxed);
        }
        MetricsSnapshot {
            responses,
            upstream_errors: self.upstream_errors.load(Ordering::Relaxed),
            latency: self.latency.snapshot(),
        }
    }

    /// The last minute (the six full 10-second periods before this one,
    /// plus the one being filled).
    pub fn last_minute(&self) -> WindowSummary {
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
        WindowSummary::of(covered, requests, errors, &latency)
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
}
