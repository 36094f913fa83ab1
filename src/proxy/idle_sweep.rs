//! Idle upstream connections closed on a timer: each pooled connection
//! remembers when it was given back, and every worker of the data plane
//! sweeps its own share of every pool now and then, closing those idle
//! longer than `serve --upstream-idle-timeout`. Without it a burst's
//! connections (up to [`super::pool`]'s cap per instance) stay open, with
//! their buffers, until the instance closes them.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::{Duration, Instant};

/// Every pool's idle connections, for the sweeps to find them; a pool
/// that is gone (its instance replaced) is forgotten at the next sweep.
static POOLS: Mutex<Vec<Weak<dyn Sweep>>> = Mutex::new(Vec::new());

/// The longest wait between two sweeps: a connection is closed at most
/// this long after its idle timeout.
const MAX_PERIOD: Duration = Duration::from_secs(5);
/// The shortest wait between two sweeps (for idle timeouts of a moment).
const MIN_PERIOD: Duration = Duration::from_millis(10);

/// The idle connections of one share of a pool (one worker's), the most
/// recently given back last: taken last in, first out, so the oldest are
/// the first to go.
#[derive(Debug)]
pub(crate) struct IdleList<T> {
    entries: VecDeque<(T, Instant)>,
}

impl<T> Default for IdleList<T> {
    fn default() -> Self {
        Self {
            entries: VecDeque::new(),
        }
    }
}

impl<T> IdleList<T> {
    /// A connection just given back.
    pub(crate) fn push(&mut self, conn: T) {
        self.entries.push_back((conn, Instant::now()));
    }

    /// The connection given back last.
    pub(crate) fn pop(&mut self) -> Option<T> {
        self.entries.pop_back().map(|(conn, _)| conn)
    }

    pub(crate) fn len(&self) -> usize {
        self.entries.len()
    }

    pub(crate) fn clear(&mut self) {
        self.entries.clear();
    }

    /// Takes out the connections given back at or before `deadline`.
    fn expired(&mut self, deadline: Instant) -> Vec<T> {
        let count = self
            .entries
            .iter()
            .take_while(|(_, since)| *since <= deadline)
            .count();
        self.entries.drain(..count).map(|(conn, _)| conn).collect()
    }
}

/// A pool's idle connections: a share per worker, and one for the control
/// plane's thread (pinned addresses), the last.
#[derive(Debug)]
pub(crate) struct IdleShares<T> {
    shares: Box<[Mutex<IdleList<T>>]>,
}

impl<T: Send + 'static> IdleShares<T> {
    /// `count` empty shares, known to the sweeps.
    pub(crate) fn registered(count: usize) -> Arc<Self> {
        let shares = Arc::new(Self {
            shares: (0..count.max(1)).map(|_| Mutex::default()).collect(),
        });
        let weak: Weak<dyn Sweep> = Arc::downgrade(&shares) as Weak<dyn Sweep>;
        pools().push(weak);
        shares
    }
}

impl<T> IdleShares<T> {
    /// Share `index` (the last one for an index past the end).
    pub(crate) fn share(&self, index: usize) -> MutexGuard<'_, IdleList<T>> {
        let share = &self.shares[index.min(self.shares.len() - 1)];
        share.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Drops every idle connection.
    pub(crate) fn clear(&self) {
        for index in 0..self.shares.len() {
            self.share(index).clear();
        }
    }
}

/// What a sweep does to one pool, whatever its connections are.
trait Sweep: Send + Sync {
    /// Closes the connections of share `index` given back at or before
    /// `deadline`; returns how many.
    fn close_expired(&self, index: usize, deadline: Instant) -> usize;
    fn shares(&self) -> usize;
}

impl<T: Send> Sweep for IdleShares<T> {
    fn close_expired(&self, index: usize, deadline: Instant) -> usize {
        // Closed once the share is unlocked again.
        let expired = self.share(index).expired(deadline);
        expired.len()
    }

    fn shares(&self) -> usize {
        self.shares.len()
    }
}

fn pools() -> MutexGuard<'static, Vec<Weak<dyn Sweep>>> {
    POOLS.lock().unwrap_or_else(|p| p.into_inner())
}

/// Closes, in every pool, the connections of share `index` idle for
/// `timeout` or longer (with `last`, also those of the shares past it);
/// returns how many.
fn sweep(index: usize, last: bool, timeout: Duration) -> usize {
    let live: Vec<Arc<dyn Sweep>> = {
        let mut pools = pools();
        pools.retain(|pool| pool.strong_count() > 0);
        pools.iter().filter_map(Weak::upgrade).collect()
    };
    sweep_these(&live, index, last, timeout)
}

fn sweep_these(pools: &[Arc<dyn Sweep>], index: usize, last: bool, timeout: Duration) -> usize {
    let Some(deadline) = Instant::now().checked_sub(timeout) else {
        return 0;
    };
    let mut closed = 0;
    for pool in pools {
        let through = if last { pool.shares() } else { index + 1 };
        for share in index..through {
            closed += pool.close_expired(share, deadline);
        }
    }
    closed
}

/// Worker `worker` of `workers`: sweeps its share of every pool for as
/// long as its runtime runs (the last worker also sweeps the control
/// plane's share).
pub(crate) async fn run(worker: usize, workers: usize, timeout: Duration) {
    let period = (timeout / 4).clamp(MIN_PERIOD, MAX_PERIOD);
    let mut ticks = tokio::time::interval(period);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticks.tick().await;
        let closed = sweep(worker, worker + 1 >= workers, timeout);
        if closed > 0 {
            tracing::debug!(closed, "closed idle upstream connections");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_oldest_connections_go_first_and_the_newest_are_taken_first() {
        let mut list = IdleList::default();
        list.push("old");
        let deadline = Instant::now();
        std::thread::sleep(Duration::from_millis(2));
        list.push("new");
        assert_eq!(list.expired(deadline), vec!["old"]);
        assert_eq!(list.len(), 1);
        list.push("newer");
        assert_eq!(list.pop(), Some("newer"));
        assert_eq!(list.pop(), Some("new"));
        assert_eq!(list.pop(), None);
    }

    #[test]
    fn a_sweep_closes_only_idle_connections_of_its_own_share() {
        let shares = IdleShares::registered(3);
        // Only this pool: other tests' pools are left alone.
        let these = [Arc::clone(&shares) as Arc<dyn Sweep>];
        let sweep = |index, last, timeout| sweep_these(&these, index, last, timeout);
        shares.share(0).push(Arc::new(()));
        shares.share(1).push(Arc::new(()));
        shares.share(2).push(Arc::new(()));
        let kept = Arc::new(());
        shares.share(0).push(Arc::clone(&kept));
        // Nothing has been idle for an hour.
        assert_eq!(sweep(0, false, Duration::from_secs(3600)), 0);
        assert_eq!(shares.share(0).len(), 2);
        // Everything is idle for no time at all: share 0 only.
        assert_eq!(sweep(0, false, Duration::ZERO), 2);
        assert_eq!(shares.share(0).len(), 0);
        assert_eq!(Arc::strong_count(&kept), 1, "the connection was dropped");
        assert_eq!((shares.share(1).len(), shares.share(2).len()), (1, 1));
        // The last worker also sweeps the control plane's share.
        sweep(1, true, Duration::ZERO);
        assert_eq!((shares.share(1).len(), shares.share(2).len()), (0, 0));
    }

    #[test]
    fn a_pool_that_is_gone_is_forgotten() {
        let shares = IdleShares::<()>::registered(1);
        let weak = Arc::downgrade(&shares);
        drop(shares);
        sweep(0, true, Duration::from_secs(3600));
        assert!(
            !pools()
                .iter()
                .any(|pool| std::ptr::addr_eq(pool.as_ptr(), weak.as_ptr())),
            "still listed"
        );
    }
}
