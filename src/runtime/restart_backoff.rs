//! How long an instance that exited waits before it starts again: 100 ms
//! after its first exit, doubling with every exit in a row up to 30 s, and
//! back to 100 ms once it has run longer than the crash window.

use std::time::Duration;

const FIRST: Duration = Duration::from_millis(100);
const MAX: Duration = Duration::from_secs(30);

/// The restart delays of one instance.
#[derive(Debug)]
pub(super) struct RestartBackoff {
    next: Duration,
}

impl RestartBackoff {
    pub(super) fn new() -> Self {
        Self { next: FIRST }
    }

    /// The delay before the next start of an instance that just exited
    /// after running for `ran`.
    pub(super) fn after_exit(&mut self, ran: Duration, crash_window: Duration) -> Duration {
        if ran > crash_window {
            self.next = FIRST;
        }
        let delay = self.next;
        self.next = (self.next * 2).min(MAX);
        delay
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const WINDOW: Duration = Duration::from_secs(60);

    #[test]
    fn delays_double_from_100_ms_and_stop_at_30_s() {
        let mut backoff = RestartBackoff::new();
        let delays: Vec<u128> = (0..12)
            .map(|_| backoff.after_exit(Duration::ZERO, WINDOW).as_millis())
            .collect();
        assert_eq!(
            delays,
            [
                100, 200, 400, 800, 1_600, 3_200, 6_400, 12_800, 25_600, 30_000, 30_000, 30_000
            ]
        );
    }

    #[test]
    fn a_run_longer_than_the_crash_window_starts_over() {
        let mut backoff = RestartBackoff::new();
        for _ in 0..4 {
            backoff.after_exit(Duration::ZERO, WINDOW);
        }
        assert_eq!(
            backoff.after_exit(WINDOW, WINDOW),
            Duration::from_millis(1_600),
            "a run as long as the window is still a crash"
        );
        assert_eq!(
            backoff.after_exit(WINDOW + Duration::from_millis(1), WINDOW),
            Duration::from_millis(100)
        );
        assert_eq!(
            backoff.after_exit(Duration::ZERO, WINDOW),
            Duration::from_millis(200)
        );
    }
}
