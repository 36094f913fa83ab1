//! The upstream timeout's clock: one deadline per request, kept on timers
//! that a data-plane worker reuses. A timer made for each request is
//! registered with tokio's timer wheel and removed from it again (a lock
//! and two changes of the wheel, about 0.5 k instructions a request); a
//! timer taken from the worker's spares is used as it is armed whenever
//! that is no later than the deadline: it may fire early, and is re-armed
//! for the deadline then. With one upstream timeout for every request, a
//! spare is re-armed about once per timeout period, not once per request.

use std::cell::RefCell;
use std::pin::Pin;
use std::task::{Context, Poll, Waker, ready};
use std::time::Duration;

use tokio::time::{Instant, Sleep, sleep_until};

/// The most spare timers a worker keeps (about as many as it has requests
/// waiting for an answer at once).
const SPARES: usize = 1024;

/// How far off a deadline of a timeout too large to add lies.
const FAR: Duration = Duration::from_secs(86_400 * 365);

thread_local! {
    /// The worker's spare timers, armed for some deadline already.
    static SPARE: RefCell<Vec<Pin<Box<Sleep>>>> = const { RefCell::new(Vec::new()) };
}

/// The moment a request's wait for its answer ends.
pub(crate) struct Deadline {
    at: Instant,
    /// Taken when the deadline is first waited for.
    timer: Option<Pin<Box<Sleep>>>,
}

impl Deadline {
    /// The deadline `timeout` from now.
    pub(crate) fn after(timeout: Duration) -> Self {
        let now = Instant::now();
        Self {
            at: now.checked_add(timeout).unwrap_or_else(|| now + FAR),
            timer: None,
        }
    }

    /// Ready once the deadline has passed.
    pub(crate) fn poll_passed(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        let at = self.at;
        let timer = self.timer.get_or_insert_with(|| spare(at));
        if timer.deadline() > at {
            timer.as_mut().reset(at);
        }
        loop {
            ready!(timer.as_mut().poll(cx));
            if Instant::now() >= at {
                return Poll::Ready(());
            }
            // Armed for an earlier deadline: now for this one.
            timer.as_mut().reset(at);
        }
    }
}

impl Drop for Deadline {
    fn drop(&mut self) {
        let Some(mut timer) = self.timer.take() else {
            return;
        };
        if !super::data_plane::on_worker() {
            // Only a worker's thread runs one runtime for all its life, so
            // that its spares never outlive their timer wheel in use.
            return;
        }
        // The waker of the request's task is let go (a timer that fires in
        // the spares wakes nobody).
        let _ = timer.as_mut().poll(&mut Context::from_waker(Waker::noop()));
        SPARE.with(|spares| {
            let mut spares = spares.borrow_mut();
            if spares.len() < SPARES {
                spares.push(timer);
            }
        });
    }
}

/// A timer armed for some deadline: a spare of this worker's, or a new
/// one armed for `at`.
fn spare(at: Instant) -> Pin<Box<Sleep>> {
    SPARE
        .with(|spares| spares.borrow_mut().pop())
        .unwrap_or_else(|| Box::pin(sleep_until(at)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::future::poll_fn;

    /// The deadline passes five seconds on, whatever the timer it is
    /// given was armed for: none yet, an earlier moment, one already
    /// passed, a later one.
    #[tokio::test(start_paused = true)]
    async fn a_deadline_passes_after_its_timeout_whatever_its_timer_was_armed_for() {
        for armed in [None, Some(2), Some(0), Some(60)] {
            let started = Instant::now();
            let mut deadline = Deadline::after(Duration::from_secs(5));
            deadline.timer =
                armed.map(|secs| Box::pin(sleep_until(started + Duration::from_secs(secs))));
            poll_fn(|cx| deadline.poll_passed(cx)).await;
            assert_eq!(
                started.elapsed(),
                Duration::from_secs(5),
                "armed for {armed:?}"
            );
        }
    }
}
