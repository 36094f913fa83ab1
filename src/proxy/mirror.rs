//! Mirroring: copies of a service's requests go to its shadows, never in
//! the way of the live request. Each shadow has a bounded queue and a
//! bounded number of copies in flight; a copy that finds the queue full is
//! dropped and counted. When both answers are in, they are compared and
//! the result goes into the shadow's report.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::listener::Inbound;
use bytes::{Bytes, BytesMut};
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Method, Request, Response, Uri, Version};
use http_body::Body as _;
use tokio::sync::{Semaphore, mpsc, watch};
use tokio_util::sync::{CancellationToken, DropGuard};

use super::connection::{AnswerFields, UpstreamBody, UpstreamConnection, UpstreamError};
use super::headers::Forwarding;
use super::pool::Connections;
use super::request_body::RequestBody;
use super::{Backend, ProxySettings};
use crate::model::{ComparePolicy, ShadowSettings};
use crate::shadow::{CapturedResponse, CompareRules, PathPattern, ShadowStats, compare};

/// Marks a mirrored copy; only the proxy sets it.
pub(crate) const X_SWITCHYARD_SHADOW: HeaderName = HeaderName::from_static("x-switchyard-shadow");

/// How many copies a shadow may have waiting and in flight.
#[derive(Debug, Clone)]
pub struct MirrorSettings {
    /// Copies waiting per shadow; more are dropped.
    pub queue: usize,
    /// Copies in flight per shadow at once.
    pub concurrency: usize,
    pub proxy: ProxySettings,
    /// Where the mirrors' workers run: the data plane's first runtime.
    pub runtime: tokio::runtime::Handle,
    /// Every runtime of the data plane: a TCP service's address is
    /// accepted on by each, like the proxy's listener.
    pub workers: Vec<tokio::runtime::Handle>,
}

/// What main answered, for comparison.
pub(crate) struct MainAnswer {
    pub response: CapturedResponse,
    pub from: SocketAddr,
}

pub(crate) type MainSender = watch::Sender<Option<Arc<MainAnswer>>>;
type MainReceiver = watch::Receiver<Option<Arc<MainAnswer>>>;

/// The request line and headers of a copy.
struct Head {
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    line: String,
}

struct Job {
    head: Arc<Head>,
    body: Bytes,
    main: MainReceiver,
    main_backend: Arc<Backend>,
}

/// A request's copy on its way to the shadows chosen for it.
pub(crate) struct Fanout {
    mirrors: Vec<Arc<Mirror>>,
    head: Arc<Head>,
    main: MainReceiver,
    main_backend: Arc<Backend>,
}

impl Fanout {
    /// The body is complete: queue a copy for every chosen shadow.
    pub(crate) fn send(self, body: Bytes) {
        for mirror in &self.mirrors {
            mirror.offer(Job {
                head: Arc::clone(&self.head),
                body: body.clone(),
                main: self.main.clone(),
                main_backend: Arc::clone(&self.main_backend),
            });
        }
    }

    /// The body passed the size limit: not mirrored.
    pub(crate) fn too_large(self) {
        for mirror in &self.mirrors {
            lock(&mirror.shared.stats).too_large += 1;
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// One shadow's mirror: its queue, its settings, its counts.
pub struct Mirror {
    pub version: String,
    enabled: bool,
    sample_percent: u64,
    methods: Vec<Method>,
    picks: AtomicU64,
    tx: mpsc::Sender<Job>,
    shared: Arc<Shared>,
    /// Cancels the workers when the mirror drops, unless it was retired.
    stop: Mutex<Option<DropGuard>>,
}

/// What the mirror's workers need.
struct Shared {
    backend: Arc<Backend>,
    rules: CompareRules,
    noise_percent: u64,
    noise_picks: AtomicU64,
    body_limit: usize,
    stats: Arc<Mutex<ShadowStats>>,
    proxy: ProxySettings,
}

/// Spreads `percent` of a counter's values evenly: value n is picked when
/// floor((n+1)·p/100) > floor(n·p/100).
fn picked(counter: &AtomicU64, percent: u64) -> bool {
    if percent >= 100 {
        return true;
    }
    let n = counter.fetch_add(1, Ordering::Relaxed);
    (n + 1) * percent / 100 > n * percent / 100
}

impl Mirror {
    /// Starts the mirror of one shadow; dropping it stops its workers.
    pub fn start(
        backend: Arc<Backend>,
        shadow: &ShadowSettings,
        compare: &ComparePolicy,
        stats: Arc<Mutex<ShadowStats>>,
        settings: &MirrorSettings,
    ) -> Arc<Mirror> {
        let (tx, rx) = mpsc::channel(settings.queue.max(1));
        let cancel = CancellationToken::new();
        let rules = CompareRules {
            headers: compare.headers.clone(),
            // Validated when the policy was set; a bad one is skipped.
            ignore_paths: compare
                .ignore_paths
                .iter()
                .filter_map(|p| PathPattern::parse(p).ok())
                .collect(),
        };
        let shared = Arc::new(Shared {
            backend: Arc::clone(&backend),
            rules,
            noise_percent: u64::from(compare.noise_percent),
            noise_picks: AtomicU64::new(0),
            body_limit: usize::try_from(compare.body_limit).unwrap_or(usize::MAX),
            stats,
            proxy: settings.proxy.clone(),
        });
        settings.runtime.spawn(work(
            rx,
            Arc::clone(&shared),
            settings.concurrency.max(1),
            cancel.clone(),
        ));
        Arc::new(Mirror {
            version: backend.version.clone(),
            enabled: shadow.enabled,
            sample_percent: u64::from(shadow.sample_percent),
            methods: shadow
                .methods
                .iter()
                .filter_map(|m| Method::from_bytes(m.as_bytes()).ok())
                .collect(),
            picks: AtomicU64::new(0),
            tx,
            shared,
            stop: Mutex::new(Some(cancel.drop_guard())),
        })
    }

    /// For a mirror a new one replaces (its shadow's settings changed):
    /// once the last request holding it is done, its workers finish the
    /// copies already queued and in flight instead of dropping them, and
    /// then stop. Without this, dropping the mirror cancels them (the
    /// shadow left).
    pub fn retire(&self) {
        if let Some(guard) = lock(&self.stop).take() {
            // The token goes without being cancelled: the queue closes
            // when the last sender drops, and the workers end after it.
            drop(guard.disarm());
        }
    }

    fn wants(&self, method: &Method) -> bool {
        self.enabled
            && (self.methods.is_empty() || self.methods.contains(method))
            && picked(&self.picks, self.sample_percent)
    }

    /// Whether the queue has room for one more copy now; when it has none,
    /// the copy is counted as dropped before anything is built for it.
    fn has_room(&self) -> bool {
        if self.tx.capacity() > 0 {
            return true;
        }
        lock(&self.shared.stats).dropped += 1;
        false
    }

    fn offer(&self, job: Job) {
        if self.tx.try_send(job).is_err() {
            lock(&self.shared.stats).dropped += 1;
        }
    }
}

/// Chooses the shadows that get a copy of this request: its fields, the
/// proxy's `forwarding` ones and the copy's mark. Returns the copy's
/// fan-out, the sender through which main's answer will reach them, and the
/// body size limit; `None` when no shadow gets a copy.
pub(crate) fn fan_out(
    mirrors: &[Arc<Mirror>],
    req: &Request<Inbound>,
    forwarding: &Forwarding<'_>,
    main_backend: &Arc<Backend>,
) -> Option<(Fanout, MainSender, usize)> {
    let chosen: Vec<Arc<Mirror>> = mirrors
        .iter()
        .filter(|m| m.wants(req.method()) && m.has_room())
        .cloned()
        .collect();
    if chosen.is_empty() {
        return None;
    }
    let limit = chosen
        .iter()
        .map(|m| m.shared.body_limit)
        .max()
        .unwrap_or(0);
    let announced = req.body().size_hint().exact().unwrap_or(0);
    let mut headers = req.headers().clone();
    forwarding.add_to(&mut headers);
    headers.insert(X_SWITCHYARD_SHADOW, HeaderValue::from_static("1"));
    let uri = forwarding.target(req.uri());
    let path = uri.path_and_query().map_or("/", |p| p.as_str());
    let head = Arc::new(Head {
        method: req.method().clone(),
        line: format!("{} {path}", req.method()),
        uri,
        headers,
    });
    let (tx, rx) = watch::channel(None);
    let fanout = Fanout {
        mirrors: chosen,
        head,
        main: rx,
        main_backend: Arc::clone(main_backend),
    };
    if announced > limit as u64 {
        fanout.too_large();
        return None;
    }
    Some((fanout, tx, limit))
}

/// Takes copies off the queue, at most `concurrency` at a time.
async fn work(
    mut rx: mpsc::Receiver<Job>,
    shared: Arc<Shared>,
    concurrency: usize,
    cancel: CancellationToken,
) {
    let slots = Arc::new(Semaphore::new(concurrency));
    loop {
        // A free slot first, then a copy: copies wait in the queue, not
        // here, so no more than `queue` of them wait.
        let permit = tokio::select! {
            permit = Arc::clone(&slots).acquire_owned() => match permit {
                Ok(p) => p,
                Err(_) => return,
            },
            () = cancel.cancelled() => return,
        };
        let job = tokio::select! {
            job = rx.recv() => match job {
                Some(job) => job,
                None => return,
            },
            () = cancel.cancelled() => return,
        };
        let shared = Arc::clone(&shared);
        let cancel = cancel.clone();
        tokio::spawn(async move {
            tokio::select! {
                () = shared.run(job) => {}
                () = cancel.cancelled() => {}
            }
            drop(permit);
        });
    }
}

impl Shared {
    async fn run(&self, job: Job) {
        lock(&self.stats).mirrored += 1;
        let shadow = match self.send_copy(&self.backend, &job, None).await {
            Some(answer) => answer,
            None => {
                lock(&self.stats).shadow_failed += 1;
                return;
            }
        };
        if shadow.response.status >= 500 {
            // Answered, and compared below, but an error all the same.
            lock(&self.stats).shadow_5xx += 1;
        }
        let Some(main) = self.main_answer(job.main.clone()).await else {
            // Main's answer never completed (client gone, main failed).
            return;
        };
        let diffs = compare(&main.response, &shadow.response, &self.rules);
        lock(&self.stats).record(&job.head.line, &diffs);

        let noise = self.noise_percent > 0
            && job.main_backend.healthy_count() >= 2
            && picked(&self.noise_picks, self.noise_percent);
        if noise {
            if let Some(other) = self
                .send_copy(&job.main_backend, &job, Some(main.from))
                .await
            {
                let diffs = compare(&main.response, &other.response, &self.rules);
                lock(&self.stats).record_noise(&diffs);
            }
        }
    }

    async fn main_answer(&self, mut main: MainReceiver) -> Option<Arc<MainAnswer>> {
        let wait = self.proxy.upstream_timeout + Duration::from_secs(5);
        let answer = tokio::time::timeout(wait, main.wait_for(|a| a.is_some()))
            .await
            .ok()?
            .ok()?;
        answer.clone()
    }

    /// Sends the copy to `backend` (avoiding `not`) and reads the answer up
    /// to the body limit. `None` when it could not be had.
    async fn send_copy(
        &self,
        backend: &Arc<Backend>,
        job: &Job,
        not: Option<SocketAddr>,
    ) -> Option<MainAnswer> {
        // An empty body is no body: hyper would announce `content-length: 0`
        // for a `Full` one, a header main never got.
        let body = if job.body.is_empty() {
            RequestBody::empty()
        } else {
            RequestBody::Full(Some(job.body.clone()))
        };
        let mut req = Request::new(body);
        *req.method_mut() = job.head.method.clone();
        *req.uri_mut() = job.head.uri.clone();
        *req.version_mut() = Version::HTTP_11;
        *req.headers_mut() = job.head.headers.clone();
        if job.body.is_empty() {
            req.headers_mut().remove(header::TRANSFER_ENCODING);
        }
        let exclude: Vec<SocketAddr> = not.into_iter().collect();
        // The copy's fields are compared: all of them in its map.
        let delivered =
            super::forward::deliver(backend, req, None, AnswerFields::Map, &exclude, &self.proxy)
                .await
                .ok()?;
        let from = delivered.upstream.addr;
        let mut conn = delivered.conn;
        let read = tokio::time::timeout(
            self.proxy.upstream_timeout,
            capture(delivered.response, &mut conn, self.body_limit),
        )
        .await
        .ok()?
        .ok()?;
        if !read.1 {
            // Read to its end: the connection can serve the next copy.
            delivered.upstream.give_back(conn);
        }
        Some(MainAnswer {
            response: read.0,
            from,
        })
    }
}

/// Lower-case header pairs, for comparison.
pub(crate) fn header_pairs(headers: &HeaderMap) -> Vec<(String, String)> {
    headers
        .iter()
        .map(|(n, v)| {
            (
                n.as_str().to_owned(),
                String::from_utf8_lossy(v.as_bytes()).into_owned(),
            )
        })
        .collect()
}

/// Reads a response that came on `conn` up to `limit` body bytes; the flag
/// says it was cut.
async fn capture(
    response: Response<UpstreamBody>,
    conn: &mut UpstreamConnection,
    limit: usize,
) -> Result<(CapturedResponse, bool), UpstreamError> {
    let (parts, mut body) = response.into_parts();
    let mut buf = BytesMut::new();
    let mut truncated = false;
    while let Some(frame) = std::future::poll_fn(|cx| conn.poll_body(&mut body, cx)).await {
        if let Some(data) = frame?.data_ref() {
            if buf.len() + data.len() > limit {
                truncated = true;
                break;
            }
            buf.extend_from_slice(data);
        }
    }
    Ok((
        CapturedResponse {
            status: parts.status.as_u16(),
            headers: header_pairs(&parts.headers),
            body: buf.freeze(),
            truncated,
        },
        truncated,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sampling_spreads_the_share_evenly() {
        for percent in [0u64, 1, 10, 33, 50, 99, 100] {
            let counter = AtomicU64::new(0);
            let hits = (0..1000).filter(|_| picked(&counter, percent)).count() as u64;
            assert_eq!(hits, percent * 10, "{percent}%");
        }
    }
}
