//! Holding a service's new requests while it is paused (for a migration
//! or draining): requests wait at the service's gate, in arrival order,
//! until it opens or their maximum hold passes (then 503). Requests
//! already forwarded are not touched and finish.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use arc_swap::ArcSwap;
use tokio::sync::oneshot;

/// The gates of paused services by name; read by the proxy without a lock,
/// replaced whole by the controller.
pub type SharedPauses = Arc<ArcSwap<HashMap<String, Arc<PauseGate>>>>;

/// One paused service's gate.
#[derive(Debug)]
pub struct PauseGate {
    /// How long one request may be held.
    pub max_hold: Duration,
    /// When the service was paused (unix ms), for those who look.
    pub since: u64,
    open: AtomicBool,
    /// Held requests, oldest first.
    queue: Mutex<VecDeque<oneshot::Sender<()>>>,
}

/// The request waited its maximum hold.
#[derive(Debug)]
pub struct HoldExpired;

impl PauseGate {
    pub fn new(max_hold: Duration, since: u64) -> Self {
        Self {
            max_hold,
            since,
            open: AtomicBool::new(false),
            queue: Mutex::new(VecDeque::new()),
        }
    }

    /// Waits until the gate opens, at most `max_hold`.
    pub async fn hold(&self) -> Result<(), HoldExpired> {
        let rx = {
            let mut queue = self.queue.lock().unwrap_or_else(|p| p.into_inner());
            if self.open.load(Ordering::Acquire) {
                return Ok(());
            }
            let (tx, rx) = oneshot::channel();
            queue.push_back(tx);
            rx
        };
        match tokio::time::timeout(self.max_hold, rx).await {
            Ok(Ok(())) => Ok(()),
            _ => Err(HoldExpired),
        }
    }

    /// Requests held right now.
    pub fn held(&self) -> usize {
        let queue = self.queue.lock().unwrap_or_else(|p| p.into_inner());
        queue.iter().filter(|tx| !tx.is_closed()).count()
    }

    /// Opens the gate and lets the held requests go, oldest first; returns
    /// how many were still waiting.
    pub fn open(&self) -> usize {
        let mut queue = self.queue.lock().unwrap_or_else(|p| p.into_inner());
        self.open.store(true, Ordering::Release);
        let mut released = 0;
        while let Some(tx) = queue.pop_front() {
            if tx.send(()).is_ok() {
                released += 1;
            }
        }
        released
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn held_requests_go_in_order_when_the_gate_opens() {
        let gate = Arc::new(PauseGate::new(Duration::from_secs(30), 0));
        let (done_tx, mut done_rx) = tokio::sync::mpsc::unbounded_channel();
        for i in 0..5 {
            let (gate, done) = (Arc::clone(&gate), done_tx.clone());
            tokio::spawn(async move {
                gate.hold().await.expect("released");
                done.send(i).expect("send");
            });
            tokio::task::yield_now().await;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert_eq!(gate.held(), 5);
        assert!(done_rx.try_recv().is_err(), "nothing passes a closed gate");
        assert_eq!(gate.open(), 5);
        let mut order = Vec::new();
        for _ in 0..5 {
            order.push(done_rx.recv().await.expect("done"));
        }
        assert_eq!(order, [0, 1, 2, 3, 4]);
        assert!(gate.hold().await.is_ok(), "an open gate holds nothing");
    }

    #[tokio::test]
    async fn a_request_held_too_long_is_let_go_with_an_error() {
        let gate = PauseGate::new(Duration::from_millis(300), 0);
        let started = tokio::time::Instant::now();
        assert!(gate.hold().await.is_err());
        assert!(started.elapsed() >= Duration::from_millis(300));
        assert_eq!(gate.open(), 0);
    }
}
