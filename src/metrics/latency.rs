//! A log-linear latency histogram: exact below 32 µs, then 16 buckets per
//! power of two (at most 1/16 relative error), up to about 134 s. Good to
//! p99.9 with a few kilobytes and one atomic add per sample.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use serde::{Deserialize, Serialize};

const LINEAR: u64 = 32;
const SUB_BITS: u32 = 4;
const SUB: u64 = 1 << SUB_BITS;
/// Octaves above the linear part: 2^5 µs … 2^27 µs.
const OCTAVES: u64 = 23;
pub const BUCKETS: usize = (LINEAR + OCTAVES * SUB) as usize;

/// The bucket of a latency in microseconds.
pub fn bucket_of(micros: u64) -> usize {
    if micros < LINEAR {
        return micros as usize;
    }
    let octave = 63 - u64::from(micros.leading_zeros()); // ≥ 5
    let sub = (micros >> (octave - u64::from(SUB_BITS))) & (SUB - 1);
    let index = LINEAR + (octave - 5) * SUB + sub;
    (index as usize).min(BUCKETS - 1)
}

/// The largest latency (µs) that falls in bucket `index`.
pub fn upper_bound_micros(index: usize) -> u64 {
    let index = index as u64;
    if index < LINEAR {
        return index;
    }
    let octave = (index - LINEAR) / SUB + 5;
    let sub = (index - LINEAR) % SUB;
    let base = 1u64 << octave;
    let step = base >> SUB_BITS;
    base + (sub + 1) * step - 1
}

/// Counts per bucket, shared by the proxy's tasks.
pub struct LatencyHistogram {
    counts: Box<[AtomicU64]>,
    sum_micros: AtomicU64,
}

impl Default for LatencyHistogram {
    fn default() -> Self {
        Self {
            counts: (0..BUCKETS).map(|_| AtomicU64::new(0)).collect(),
            sum_micros: AtomicU64::new(0),
        }
    }
}

impl std::fmt::Debug for LatencyHistogram {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LatencyHistogram").finish_non_exhaustive()
    }
}

impl LatencyHistogram {
    pub fn record(&self, elapsed: Duration) {
        let micros = u64::try_from(elapsed.as_micros()).unwrap_or(u64::MAX);
        self.counts[bucket_of(micros)].fetch_add(1, Ordering::Relaxed);
        self.sum_micros.fetch_add(micros, Ordering::Relaxed);
    }

    pub fn reset(&self) {
        for c in self.counts.iter() {
            c.store(0, Ordering::Relaxed);
        }
        self.sum_micros.store(0, Ordering::Relaxed);
    }

    pub fn snapshot(&self) -> HistogramSnapshot {
        HistogramSnapshot {
            counts: self
                .counts
                .iter()
                .map(|c| c.load(Ordering::Relaxed))
                .collect(),
            sum_micros: self.sum_micros.load(Ordering::Relaxed),
        }
    }
}

/// A histogram's counts at one moment.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct HistogramSnapshot {
    pub counts: Vec<u64>,
    pub sum_micros: u64,
}

impl HistogramSnapshot {
    pub fn count(&self) -> u64 {
        self.counts.iter().sum()
    }

    /// The latency at quantile `q` (0.5, 0.99, 0.999): the upper bound of
    /// the bucket holding it. `None` without samples.
    pub fn quantile(&self, q: f64) -> Option<Duration> {
        let total = self.count();
        if total == 0 {
            return None;
        }
        let rank = ((q * total as f64).ceil() as u64).clamp(1, total);
        let mut seen = 0;
        for (i, c) in self.counts.iter().enumerate() {
            seen += c;
            if seen >= rank {
                return Some(Duration::from_micros(upper_bound_micros(i)));
            }
        }
        None
    }

    /// What was added since `earlier` (a snapshot of the same histogram).
    pub fn since(&self, earlier: &HistogramSnapshot) -> HistogramSnapshot {
        HistogramSnapshot {
            counts: self
                .counts
                .iter()
                .enumerate()
                .map(|(i, c)| c.saturating_sub(earlier.counts.get(i).copied().unwrap_or(0)))
                .collect(),
            sum_micros: self.sum_micros.saturating_sub(earlier.sum_micros),
        }
    }

    /// Adds another snapshot's counts to this one.
    pub fn merge(&mut self, other: &HistogramSnapshot) {
        if self.counts.len() < other.counts.len() {
            self.counts.resize(other.counts.len(), 0);
        }
        for (a, b) in self.counts.iter_mut().zip(&other.counts) {
            *a += b;
        }
        self.sum_micros += other.sum_micros;
    }

    /// Samples at or below `micros`, for Prometheus' cumulative buckets.
    pub fn count_at_most(&self, micros: u64) -> u64 {
        self.counts
            .iter()
            .enumerate()
            .take_while(|(i, _)| upper_bound_micros(*i) <= micros)
            .map(|(_, c)| c)
            .sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_are_contiguous_and_within_a_sixteenth() {
        let mut previous_upper = None;
        for i in 0..BUCKETS {
            let upper = upper_bound_micros(i);
            if let Some(p) = previous_upper {
                assert_eq!(bucket_of(p + 1), i, "bucket {i} starts right after {p}");
            }
            assert_eq!(bucket_of(upper), i);
            previous_upper = Some(upper);
        }
        for v in [33u64, 1000, 12_345, 999_999, 60_000_000] {
            let upper = upper_bound_micros(bucket_of(v));
            assert!(
                upper >= v && (upper - v) as f64 <= v as f64 / 16.0,
                "{v} → {upper}"
            );
        }
    }

    #[test]
    fn quantiles_come_from_the_samples() {
        let h = LatencyHistogram::default();
        for ms in 1..=1000u64 {
            h.record(Duration::from_millis(ms));
        }
        let s = h.snapshot();
        let p50 = s.quantile(0.5).expect("p50").as_millis();
        let p99 = s.quantile(0.99).expect("p99").as_millis();
        let p999 = s.quantile(0.999).expect("p999").as_millis();
        assert!((470..=535).contains(&p50), "{p50}");
        assert!((960..=1060).contains(&p99), "{p99}");
        assert!((980..=1070).contains(&p999), "{p999}");
        assert_eq!(s.count(), 1000);
        let later = h.snapshot();
        assert_eq!(later.since(&s).count(), 0);
    }
}
