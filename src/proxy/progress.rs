//! How fast a body must move: a floor of bytes in every interval, for the
//! client's request body and for the upstream's response body. A floor,
//! not a deadline, so a large body takes as long as it needs while it
//! keeps coming, and one that trickles or stops is ended.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::str::FromStr;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::time::{Instant, Sleep};

/// At least `bytes` in every `interval`; written `BYTES/INTERVAL`, e.g.
/// `1024/10s`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MinRate {
    pub bytes: u64,
    pub interval: Duration,
}

impl FromStr for MinRate {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        let usage = "write it as BYTES/INTERVAL, e.g. 1024/10s";
        let (bytes, interval) = text
            .split_once('/')
            .ok_or_else(|| format!("`{text}` is not a rate: {usage}"))?;
        let bytes: u64 = bytes
            .trim()
            .parse()
            .map_err(|e| format!("`{bytes}` is not a number of bytes ({e}): {usage}"))?;
        let interval = humantime::parse_duration(interval.trim())
            .map_err(|e| format!("`{interval}` is not an interval ({e}): {usage}"))?;
        if bytes == 0 {
            return Err(format!(
                "`{text}` asks for no bytes at all, so nothing would ever be timed out: give at least 1 byte"
            ));
        }
        if interval < Duration::from_millis(10) {
            return Err(format!(
                "`{text}`: the interval must be at least 10ms, e.g. 1024/10s"
            ));
        }
        Ok(MinRate { bytes, interval })
    }
}

impl fmt::Display for MinRate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}/{}",
            self.bytes,
            humantime::format_duration(self.interval)
        )
    }
}

/// Watches one body against its [`MinRate`]. Nothing is armed while the
/// body flows: the timer starts the first time the body has to wait, and
/// is looked at (and set again) once per interval, never per frame.
#[derive(Debug)]
pub(crate) struct Progress {
    rate: MinRate,
    /// Bytes since the current interval began.
    moved: u64,
    timer: Option<Pin<Box<Sleep>>>,
}

impl Progress {
    pub(crate) fn new(rate: MinRate) -> Self {
        Self {
            rate,
            moved: 0,
            timer: None,
        }
    }

    pub(crate) fn rate(&self) -> MinRate {
        self.rate
    }

    /// Counts bytes that came through.
    #[inline]
    pub(crate) fn moved(&mut self, bytes: usize) {
        self.moved = self.moved.saturating_add(bytes as u64);
    }

    /// To be called when the body has nothing to give now: ready when an
    /// interval ended with fewer bytes than the floor (the body stalled),
    /// pending otherwise (the caller is woken at the interval's end).
    pub(crate) fn poll_stalled(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        let interval = self.rate.interval;
        let timer = match &mut self.timer {
            Some(timer) => timer,
            None => {
                // The first interval begins with the first wait.
                self.moved = 0;
                self.timer.insert(Box::pin(tokio::time::sleep(interval)))
            }
        };
        while timer.as_mut().poll(cx).is_ready() {
            if self.moved < self.rate.bytes {
                return Poll::Ready(());
            }
            self.moved = 0;
            timer.as_mut().reset(Instant::now() + interval);
        }
        Poll::Pending
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rate(text: &str) -> MinRate {
        text.parse().expect("a valid rate")
    }

    #[test]
    fn rates_are_read_as_bytes_per_interval() {
        assert_eq!(
            rate("1024/10s"),
            MinRate {
                bytes: 1024,
                interval: Duration::from_secs(10)
            }
        );
        assert_eq!(rate(" 1 / 1m ").interval, Duration::from_secs(60));
        assert_eq!(rate("1024/10s").to_string(), "1024/10s");
        for bad in ["1024", "x/10s", "1024/soon", "0/10s", "10/1ms", "-1/1s"] {
            let error = bad.parse::<MinRate>().expect_err(bad);
            assert!(
                error.contains(bad.trim()) || error.contains("BYTES"),
                "{error}"
            );
        }
    }

    /// Polls the watcher once, as a body would when it has nothing to give.
    fn stalled(progress: &mut Progress) -> bool {
        let mut cx = Context::from_waker(std::task::Waker::noop());
        progress.poll_stalled(&mut cx).is_ready()
    }

    #[tokio::test(start_paused = true)]
    async fn a_body_below_the_floor_stalls_after_one_interval() {
        let mut progress = Progress::new(rate("100/1s"));
        progress.moved(5000);
        // Bytes before the first wait do not carry over.
        assert!(!stalled(&mut progress));
        tokio::time::advance(Duration::from_millis(600)).await;
        progress.moved(99);
        assert!(!stalled(&mut progress));
        tokio::time::advance(Duration::from_millis(500)).await;
        assert!(stalled(&mut progress));
    }

    #[tokio::test(start_paused = true)]
    async fn a_body_at_the_floor_lives_for_as_long_as_it_keeps_coming() {
        let mut progress = Progress::new(rate("100/1s"));
        assert!(!stalled(&mut progress));
        for _ in 0..100 {
            tokio::time::advance(Duration::from_millis(500)).await;
            progress.moved(50);
            assert!(!stalled(&mut progress));
        }
        tokio::time::advance(Duration::from_secs(3)).await;
        assert!(stalled(&mut progress));
    }
}
