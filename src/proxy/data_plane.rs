//! The threads the data plane runs on, apart from the control plane's, so
//! that a store write or a burst of admin work never stalls client traffic.
//!
//! Thread per core: each worker is a single-threaded runtime on a thread of
//! its own, with no work stealing and no wake-ups across threads (the least
//! CPU per request, measured in `BENCHMARKS.md`). Every worker accepts on
//! the same listening socket, and keeps its own idle upstream connections
//! ([`worker`] picks its share of a pool), so a connection is only ever
//! polled by the runtime that registered it.

use std::cell::Cell;
use std::io;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

use tokio::runtime::{Builder, Handle};
use tokio::sync::oneshot;

use super::idle_sweep;

/// How many workers the data plane runs (1 until it starts).
static WORKERS: AtomicUsize = AtomicUsize::new(1);

thread_local! {
    /// This thread's worker number, on a data-plane thread.
    static WORKER: Cell<Option<usize>> = const { Cell::new(None) };
}

/// How many workers carry client traffic.
pub(crate) fn workers() -> usize {
    WORKERS.load(Ordering::Relaxed)
}

/// The worker running on this thread: `0..workers()`, or `workers()` on any
/// other thread (the control plane's, which serves pinned addresses, or a
/// test's).
pub(crate) fn worker() -> usize {
    WORKER.with(Cell::get).unwrap_or_else(workers)
}

/// Whether this thread is a data-plane worker's (one runtime for all its
/// life).
pub(crate) fn on_worker() -> bool {
    WORKER.with(Cell::get).is_some()
}

/// The data plane's runtimes, one per worker, each on a thread of its own;
/// dropping it stops them (tasks still running are dropped).
pub struct DataPlane {
    workers: Vec<Worker>,
}

struct Worker {
    handle: Handle,
    stop: Option<oneshot::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl DataPlane {
    /// Starts `workers` workers; each closes its idle upstream connections
    /// once they have been idle for `upstream_idle` ([`super::idle_sweep`]).
    pub fn start(workers: usize, upstream_idle: Duration) -> io::Result<Self> {
        let workers = workers.max(1);
        WORKERS.store(workers, Ordering::Relaxed);
        let mut started = Self {
            workers: Vec::with_capacity(workers),
        };
        for number in 0..workers {
            let worker = Worker::start(number)?;
            worker
                .handle
                .spawn(idle_sweep::run(number, workers, upstream_idle));
            started.workers.push(worker);
        }
        Ok(started)
    }

    /// The first worker's runtime: where data-plane tasks that are not a
    /// listener's run (shadow mirrors' workers).
    pub fn handle(&self) -> &Handle {
        &self.workers[0].handle
    }

    /// Every worker's runtime: each runs its own accept loop on a listener
    /// (the proxy's, and every TCP service's address).
    pub fn handles(&self) -> impl Iterator<Item = &Handle> {
        self.workers.iter().map(|w| &w.handle)
    }
}

impl Worker {
    fn start(number: usize) -> io::Result<Self> {
        let runtime = Builder::new_current_thread()
            .enable_all()
            .thread_name("switchyard-proxy")
            .build()?;
        let handle = runtime.handle().clone();
        let (stop, stopped) = oneshot::channel::<()>();
        let thread = std::thread::Builder::new()
            .name(format!("switchyard-proxy-{number}"))
            .spawn(move || {
                WORKER.with(|w| w.set(Some(number)));
                // A single-threaded runtime runs its tasks while this waits.
                runtime.block_on(async {
                    let _ = stopped.await;
                });
                runtime.shutdown_timeout(Duration::from_secs(1));
            })?;
        Ok(Self {
            handle,
            stop: Some(stop),
            thread: Some(thread),
        })
    }
}

impl Drop for DataPlane {
    fn drop(&mut self) {
        for worker in &mut self.workers {
            if let Some(stop) = worker.stop.take() {
                let _ = stop.send(());
            }
        }
        for worker in &mut self.workers {
            if let Some(thread) = worker.thread.take() {
                let _ = thread.join();
            }
        }
    }
}
