//! Clients sending requests through the proxy back to back until they are
//! stopped, and the single requests they are made of. Every request goes
//! through [`Http1`], which never sends a request twice: a test that
//! counts failed requests sees every one.

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use tokio::task::JoinHandle;

use super::http1::Http1;

/// What one request got: (status, x-switchyard-version, body), or the
/// transport error.
pub type Answer = Result<(u16, String, String), String>;

/// GET `path` from `addr` on a connection of its own, in the background
/// (for a request that must be in flight while something changes).
pub fn spawn_get(addr: &str, path: &str) -> JoinHandle<Answer> {
    let (mut client, path) = (Http1::new(addr), path.to_owned());
    tokio::spawn(async move { client.get(&path).await })
}

/// The answers that failed (a transport error or a status other than 200),
/// described.
pub fn failures<'a>(answers: impl IntoIterator<Item = &'a Answer>) -> Vec<String> {
    answers
        .into_iter()
        .filter_map(|a| match a {
            Ok((200, _, _)) => None,
            Ok((status, version, body)) => Some(format!("{status} from `{version}`: {body}")),
            Err(e) => Some(e.clone()),
        })
        .collect()
}

/// One [`Http1`] client per load client, each used by its client alone.
#[derive(Clone)]
pub struct Clients(Arc<Vec<tokio::sync::Mutex<Http1>>>);

impl Clients {
    pub fn new(addr: &str, clients: usize) -> Clients {
        Clients(Arc::new(
            (0..clients)
                .map(|_| tokio::sync::Mutex::new(Http1::new(addr)))
                .collect(),
        ))
    }

    /// GET `path` as client `client`.
    pub async fn get(&self, client: usize, path: &str) -> Answer {
        self.get_with(client, path, &[]).await
    }

    /// GET `path` with extra headers as client `client`.
    pub async fn get_with(&self, client: usize, path: &str, headers: &[(&str, &str)]) -> Answer {
        self.0[client].lock().await.get_with(path, headers).await
    }
}

/// A [`Load`] of GET `path` from `clients` clients of `addr`, keeping every
/// answer; no client starts a request after `deadline`.
pub fn gets(addr: &str, path: &str, clients: usize, deadline: Instant) -> Load<Answer> {
    let (conns, path) = (Clients::new(addr, clients), path.to_owned());
    Load::start_until(clients, deadline, move |client, _| {
        let (conns, path) = (conns.clone(), path.clone());
        async move { conns.get(client, &path).await }
    })
}

/// `clients` tasks, each sending request after request back to back
/// (`request(client, n)` makes a client's `n`-th, from 0) until stopped,
/// keeping what every request returned. Clients still running when it is
/// dropped are aborted.
pub struct Load<T> {
    stop: Arc<AtomicBool>,
    done: Arc<AtomicU64>,
    tasks: Vec<JoinHandle<Vec<T>>>,
}

impl<T: Send + 'static> Load<T> {
    pub fn start<F, Fut>(clients: usize, request: F) -> Load<T>
    where
        F: Fn(usize, usize) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = T> + Send + 'static,
    {
        Self::spawn(clients, None, request)
    }

    /// Like [`Load::start`], but no client starts a request after `deadline`,
    /// however the test goes.
    pub fn start_until<F, Fut>(clients: usize, deadline: Instant, request: F) -> Load<T>
    where
        F: Fn(usize, usize) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = T> + Send + 'static,
    {
        Self::spawn(clients, Some(deadline), request)
    }

    fn spawn<F, Fut>(clients: usize, deadline: Option<Instant>, request: F) -> Load<T>
    where
        F: Fn(usize, usize) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = T> + Send + 'static,
    {
        let stop = Arc::new(AtomicBool::new(false));
        let done = Arc::new(AtomicU64::new(0));
        let request = Arc::new(request);
        let tasks = (0..clients)
            .map(|client| {
                let (stop, done) = (Arc::clone(&stop), Arc::clone(&done));
                let request = Arc::clone(&request);
                tokio::spawn(async move {
                    let mut results = Vec::new();
                    let mut n = 0;
                    while !stop.load(Ordering::Relaxed)
                        && deadline.is_none_or(|deadline| Instant::now() < deadline)
                    {
                        results.push(request(client, n).await);
                        done.fetch_add(1, Ordering::Relaxed);
                        n += 1;
                    }
                    results
                })
            })
            .collect();
        Load { stop, done, tasks }
    }

    /// Requests finished so far, however they ended.
    pub fn done(&self) -> u64 {
        self.done.load(Ordering::Relaxed)
    }

    /// Waits until `more` requests beyond those finished now have
    /// finished (the load has run through whatever happened meanwhile);
    /// panics after `wait`.
    pub async fn run_for(&self, more: u64, wait: Duration) {
        let target = self.done() + more;
        super::within(wait, &format!("{more} more requests of the load"), async {
            while self.done() < target {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        })
        .await;
    }

    /// Stops the clients and returns what every request returned.
    pub async fn finish(mut self) -> Vec<T> {
        self.stop.store(true, Ordering::Relaxed);
        let mut all = Vec::new();
        for task in std::mem::take(&mut self.tasks) {
            all.extend(task.await.expect("load task"));
        }
        all
    }

    /// Like [`Load::finish`], each client given `wait` to stop.
    pub async fn finish_within(mut self, wait: Duration) -> Vec<T> {
        self.stop.store(true, Ordering::Relaxed);
        let mut all = Vec::new();
        for task in std::mem::take(&mut self.tasks) {
            all.extend(
                tokio::time::timeout(wait, task)
                    .await
                    .expect("the load stops within the wait")
                    .expect("load task"),
            );
        }
        all
    }
}

impl<T> Drop for Load<T> {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}

/// Clients sending GETs through the proxy back to back until stopped
/// (for two minutes at most), each on a connection of its own that never
/// sends a request twice, counting answers that were not 200 and requests
/// that failed outright (refused, reset, closed or cut short).
pub fn counting_gets(proxy: &str, path: &str, clients: usize) -> CountingLoad {
    let conns = Clients::new(proxy, clients);
    let path = path.to_owned();
    // Bounded however the test goes: no client runs past this.
    let deadline = Instant::now() + Duration::from_secs(120);
    CountingLoad::start_until(clients, deadline, move |client, _| {
        let (conns, path) = (conns.clone(), path.clone());
        async move {
            match conns.get(client, &path).await {
                Ok((200, _, _)) => Ok(()),
                Ok((status, version, body)) => Err(format!("{status} from `{version}`: {body}")),
                Err(e) => Err(e),
            }
        }
    })
}

/// A [`Load`] whose requests pass (`Ok`) or say what went wrong: counts
/// the passes as they come, keeps the failures.
pub struct CountingLoad {
    load: Load<Result<(), String>>,
    ok: Arc<AtomicU64>,
}

impl CountingLoad {
    pub fn start<F, Fut>(clients: usize, request: F) -> CountingLoad
    where
        F: Fn(usize, usize) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<(), String>> + Send + 'static,
    {
        Self::spawn(clients, None, request)
    }

    /// Like [`CountingLoad::start`], but no client starts a request after
    /// `deadline`, however the test goes.
    pub fn start_until<F, Fut>(clients: usize, deadline: Instant, request: F) -> CountingLoad
    where
        F: Fn(usize, usize) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<(), String>> + Send + 'static,
    {
        Self::spawn(clients, Some(deadline), request)
    }

    fn spawn<F, Fut>(clients: usize, deadline: Option<Instant>, request: F) -> CountingLoad
    where
        F: Fn(usize, usize) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<(), String>> + Send + 'static,
    {
        let ok = Arc::new(AtomicU64::new(0));
        let counter = Arc::clone(&ok);
        let counted = move |client, n| {
            let (sent, counter) = (request(client, n), Arc::clone(&counter));
            async move {
                let result = sent.await;
                if result.is_ok() {
                    counter.fetch_add(1, Ordering::Relaxed);
                }
                result
            }
        };
        let load = Load::spawn(clients, deadline, counted);
        CountingLoad { load, ok }
    }

    /// See [`Load::run_for`].
    pub async fn run_for(&self, more: u64, wait: Duration) {
        self.load.run_for(more, wait).await;
    }

    /// Requests that passed so far.
    pub fn ok(&self) -> u64 {
        self.ok.load(Ordering::Relaxed)
    }

    /// Stops the clients; returns (passed, failures).
    pub async fn finish(self) -> (u64, Vec<String>) {
        let failures = self
            .load
            .finish()
            .await
            .into_iter()
            .filter_map(Result::err)
            .collect();
        (self.ok.load(Ordering::Relaxed), failures)
    }

    /// Lets the clients make `more` requests (within `wait`), stops them
    /// and checks that some passed and none failed.
    pub async fn finish_without_failures(self, more: u64, wait: Duration) {
        self.run_for(more, wait).await;
        let (passed, failures) = self.finish().await;
        assert!(passed > 0, "no request passed");
        assert!(
            failures.is_empty(),
            "{} failed: {failures:?}",
            failures.len()
        );
    }
}
