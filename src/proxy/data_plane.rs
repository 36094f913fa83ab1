//! The threads the data plane runs on, apart from the control plane's, so
//! that a store write or a burst of admin work never stalls client traffic.
//!
//! One worker is a single-threaded runtime: no work stealing and no wake-ups
//! across threads, the least CPU per request (measured in `BENCHMARKS.md`).
//! More workers are a work-stealing runtime with that many threads.

use std::io;
use std::thread::JoinHandle;
use std::time::Duration;

use tokio::runtime::{Builder, Handle};
use tokio::sync::oneshot;

/// The data plane's runtime, on threads of its own; dropping it stops them
/// (tasks still running are dropped).
pub struct DataPlane {
    handle: Handle,
    stop: Option<oneshot::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl DataPlane {
    pub fn start(workers: usize) -> io::Result<Self> {
        let mut builder = if workers <= 1 {
            Builder::new_current_thread()
        } else {
            let mut builder = Builder::new_multi_thread();
            builder.worker_threads(workers);
            builder
        };
        let runtime = builder
            .enable_all()
            .thread_name("switchyard-proxy")
            .build()?;
        let handle = runtime.handle().clone();
        let (stop, stopped) = oneshot::channel::<()>();
        let thread = std::thread::Builder::new()
            .name("switchyard-proxy".into())
            .spawn(move || {
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

    /// Where data-plane tasks are spawned.
    pub fn handle(&self) -> &Handle {
        &self.handle
    }
}

impl Drop for DataPlane {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}
