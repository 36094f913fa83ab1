//! At most one log line a second about something that can happen
//! thousands of times a second (accept errors, refused connections), each
//! line saying how many times it happened since the one before.

use std::time::Duration;

use tokio::time::Instant;

/// Counts events and says when the next one is worth a log line.
#[derive(Debug)]
pub struct Throttle {
    every: Duration,
    last: Option<Instant>,
    /// Events since the last line.
    unreported: u64,
}

impl Throttle {
    pub fn new(every: Duration) -> Throttle {
        Throttle {
            every,
            last: None,
            unreported: 0,
        }
    }

    /// Notes one event at `now`. `Some(n)`: log it now, saying that `n`
    /// more happened since the last line; `None`: it is counted for the
    /// next line.
    pub fn note(&mut self, now: Instant) -> Option<u64> {
        match self.last {
            Some(last) if now.saturating_duration_since(last) < self.every => {
                self.unreported += 1;
                None
            }
            _ => {
                self.last = Some(now);
                Some(std::mem::take(&mut self.unreported))
            }
        }
    }

    /// The events not reported yet, forgetting them: for a last line once
    /// the events have stopped.
    pub fn take_unreported(&mut self) -> u64 {
        std::mem::take(&mut self.unreported)
    }
}

/// How long to wait after a failed accept: doubling from 10 ms to 1 s
/// while accepts keep failing, so that a full file table is retried
/// without spinning.
#[derive(Debug, Default)]
pub struct Backoff {
    failures: u32,
}

impl Backoff {
    const FIRST: Duration = Duration::from_millis(10);
    const MOST: Duration = Duration::from_secs(1);

    pub fn next(&mut self) -> Duration {
        let wait = Self::FIRST
            .saturating_mul(1 << self.failures.min(10))
            .min(Self::MOST);
        self.failures = self.failures.saturating_add(1);
        wait
    }

    pub fn reset(&mut self) {
        self.failures = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_line_a_second_counting_what_happened_between() {
        let t0 = Instant::now();
        let mut throttle = Throttle::new(Duration::from_secs(1));
        assert_eq!(throttle.note(t0), Some(0), "the first one is told at once");
        for ms in [10, 300, 999] {
            assert_eq!(throttle.note(t0 + Duration::from_millis(ms)), None);
        }
        assert_eq!(throttle.note(t0 + Duration::from_millis(1000)), Some(3));
        assert_eq!(throttle.note(t0 + Duration::from_millis(1500)), None);
        assert_eq!(throttle.take_unreported(), 1);
        assert_eq!(throttle.take_unreported(), 0);
    }

    #[test]
    fn backoff_doubles_up_to_a_second_and_starts_over_after_a_success() {
        let mut backoff = Backoff::default();
        let waits: Vec<u128> = (0..10).map(|_| backoff.next().as_millis()).collect();
        assert_eq!(waits, [10, 20, 40, 80, 160, 320, 640, 1000, 1000, 1000]);
        backoff.reset();
        assert_eq!(backoff.next(), Duration::from_millis(10));
    }
}
