//! Holds changes back while serve hands over: changes already in progress
//! finish first, new ones are refused until the handover ends (for good
//! once it succeeded: the serve that handed over makes no more changes).
//! The admin API's middleware that holds requests at this gate is
//! `api::change_gate`.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use tokio::sync::Notify;

/// Counts the changes in progress and, when closed, lets none begin.
#[derive(Clone, Default)]
pub struct ChangeGate {
    inner: Arc<Inner>,
}

#[derive(Default)]
struct Inner {
    closed: AtomicBool,
    in_progress: AtomicUsize,
    idle: Notify,
}

/// A change in progress, until dropped.
pub struct Change {
    inner: Arc<Inner>,
}

impl Drop for Change {
    fn drop(&mut self) {
        if self.inner.in_progress.fetch_sub(1, Ordering::SeqCst) == 1 {
            self.inner.idle.notify_waiters();
        }
    }
}

impl ChangeGate {
    /// A change may begin, unless the gate is closed.
    pub fn enter(&self) -> Option<Change> {
        // Counted before the check, so that `close` never misses a change
        // that got past it.
        self.inner.in_progress.fetch_add(1, Ordering::SeqCst);
        let change = Change {
            inner: Arc::clone(&self.inner),
        };
        (!self.inner.closed.load(Ordering::SeqCst)).then_some(change)
    }

    /// Closes the gate and waits, at most `wait`, for the changes in
    /// progress to finish. False when some are still running (the gate
    /// stays closed; `open` it again to give up).
    pub async fn close(&self, wait: Duration) -> bool {
        self.inner.closed.store(true, Ordering::SeqCst);
        tokio::time::timeout(wait, async {
            loop {
                let idle = self.inner.idle.notified();
                if self.inner.in_progress.load(Ordering::SeqCst) == 0 {
                    return;
                }
                idle.await;
            }
        })
        .await
        .is_ok()
    }

    pub fn open(&self) {
        self.inner.closed.store(false, Ordering::SeqCst);
    }

    pub fn is_closed(&self) -> bool {
        self.inner.closed.load(Ordering::SeqCst)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn close_waits_for_changes_in_progress_and_refuses_new_ones() {
        let gate = ChangeGate::default();
        let change = gate.enter().expect("open gate lets a change in");
        assert!(
            !gate.close(Duration::from_millis(20)).await,
            "a change is still in progress"
        );
        assert!(gate.enter().is_none(), "a closed gate lets no change in");
        let closing = tokio::spawn({
            let gate = gate.clone();
            async move { gate.close(Duration::from_secs(10)).await }
        });
        drop(change);
        assert!(
            closing.await.expect("joined"),
            "closed once the change ended"
        );
        gate.open();
        assert!(gate.enter().is_some());
    }
}
