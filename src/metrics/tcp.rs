//! What the TCP forwarder records for one release: connections open and
//! total, bytes each way, failed connects to its instances, and how long
//! connections lasted. Atomic adds only.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// Upper bounds (seconds) of the duration buckets; the last bucket takes
/// everything longer. TCP connections live from milliseconds to days.
pub const DURATION_BOUNDS_SECS: [f64; 9] =
    [0.01, 0.1, 1.0, 10.0, 60.0, 600.0, 3600.0, 21600.0, 86400.0];

/// A release's TCP counters.
#[derive(Debug, Default)]
pub struct TcpMetrics {
    open: AtomicU64,
    total: AtomicU64,
    /// From clients to the release.
    bytes_in: AtomicU64,
    /// From the release to clients.
    bytes_out: AtomicU64,
    connect_failures: AtomicU64,
    /// Closed connections by duration bucket (one more than the bounds).
    durations: [AtomicU64; DURATION_BOUNDS_SECS.len() + 1],
    duration_sum_ms: AtomicU64,
}

/// The counters at one moment, for `status`, `ls` and `/metrics`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TcpSnapshot {
    pub open: u64,
    pub total: u64,
    pub bytes_in: u64,
    pub bytes_out: u64,
    pub connect_failures: u64,
    /// Closed connections per bucket of [`DURATION_BOUNDS_SECS`] (not
    /// cumulative; the last one is everything longer).
    pub durations: Vec<u64>,
    pub duration_sum_ms: u64,
}

impl TcpMetrics {
    /// A connection to the release opened.
    pub fn opened(&self) {
        self.open.fetch_add(1, Ordering::Relaxed);
        self.total.fetch_add(1, Ordering::Relaxed);
    }

    /// A connection closed after `lasted` (its bytes were counted as
    /// they passed: `carried`).
    pub fn closed(&self, lasted: Duration) {
        self.open.fetch_sub(1, Ordering::Relaxed);
        let secs = lasted.as_secs_f64();
        let bucket = DURATION_BOUNDS_SECS
            .iter()
            .position(|b| secs <= *b)
            .unwrap_or(DURATION_BOUNDS_SECS.len());
        self.durations[bucket].fetch_add(1, Ordering::Relaxed);
        self.duration_sum_ms.fetch_add(
            u64::try_from(lasted.as_millis()).unwrap_or(u64::MAX),
            Ordering::Relaxed,
        );
    }

    /// Bytes carried so far by a connection still open, counted as they
    /// pass so a long-lived connection shows its traffic.
    pub fn carried(&self, bytes_in: u64, bytes_out: u64) {
        self.bytes_in.fetch_add(bytes_in, Ordering::Relaxed);
        self.bytes_out.fetch_add(bytes_out, Ordering::Relaxed);
    }

    /// A connection to an instance could not be opened.
    pub fn connect_failed(&self) {
        self.connect_failures.fetch_add(1, Ordering::Relaxed);
    }

    pub fn open(&self) -> u64 {
        self.open.load(Ordering::Relaxed)
    }

    pub fn snapshot(&self) -> TcpSnapshot {
        TcpSnapshot {
            open: self.open.load(Ordering::Relaxed),
            total: self.total.load(Ordering::Relaxed),
            bytes_in: self.bytes_in.load(Ordering::Relaxed),
            bytes_out: self.bytes_out.load(Ordering::Relaxed),
            connect_failures: self.connect_failures.load(Ordering::Relaxed),
            durations: self
                .durations
                .iter()
                .map(|d| d.load(Ordering::Relaxed))
                .collect(),
            duration_sum_ms: self.duration_sum_ms.load(Ordering::Relaxed),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_closed_connection_lands_in_its_duration_bucket() {
        let m = TcpMetrics::default();
        m.opened();
        m.opened();
        m.carried(10, 20);
        m.closed(Duration::from_millis(500));
        let s = m.snapshot();
        assert_eq!((s.open, s.total, s.bytes_in, s.bytes_out), (1, 2, 10, 20));
        assert_eq!(s.durations[2], 1, "0.5 s is at most 1 s");
        m.closed(Duration::from_secs(200_000));
        assert_eq!(m.snapshot().durations[DURATION_BOUNDS_SECS.len()], 1);
    }
}
