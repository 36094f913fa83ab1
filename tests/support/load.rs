//! Clients sending requests through the proxy back to back until they are
//! stopped, and the single requests they are made of.

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use tokio::task::JoinHandle;

/// What one request got: (status, x-switchyard-version, body), or the
/// transport error.
pub type Answer = Result<(u16, String, String), String>;

/// Sends a request and reads its body to the end.
pub async fn fetch(request: reqwest::RequestBuilder) -> Answer {
    let response = request.send().await.map_err(|e| format!("{e:?}"))?;
    let status = response.status().as_u16();
    let version = super::version_header(response.headers());
    let body = response.text().await.map_err(|e| format!("body: {e:?}"))?;
    Ok((status, version, body))
}

/// Starts [`fetch`] in the background (for a request that must be in
/// flight while something changes).
pub fn spawn_fetch(request: reqwest::RequestBuilder) -> JoinHandle<Answer> {
    tokio::spawn(fetch(request))
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

/// `clients` tasks, each sending request after request back to back
/// (`request(client, n)` makes a client's `n`-th, from 0) until stopped,
/// keeping what every request returned. Clients still running when it is
/// dropped are aborted.
pub struct Load<T> {
    stop: Arc<AtomicBool>,
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
        let request = Arc::new(request);
        let tasks = (0..clients)
            .map(|client| {
                let (stop, request) = (Arc::clone(&stop), Arc::clone(&request));
                tokio::spawn(async move {
                    let mut results = Vec::new();
                    let mut n = 0;
                    while !stop.load(Ordering::Relaxed)
                        && deadline.is_none_or(|deadline| Instant::now() < deadline)
                    {
                        results.push(request(client, n).await);
                        n += 1;
                    }
                    results
                })
            })
            .collect();
        Load { stop, tasks }
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
}
