//! Shadow traffic end to end: what a shadow receives, what clients see, the
//! bounded queue, sampling and methods, the body limit, the comparison
//! report and its persistence — through the real binary and real sockets.

mod support;

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use serde_json::Value;
use support::listing::actions;
use support::own_server::OwnServer;
use support::raw_http::connect;
use support::{Env, Reply};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

/// The bound on every wait: generous, so a slow machine only slows tests.
const WAIT: Duration = Duration::from_secs(60);

// ---------------------------------------------------------------- helpers

impl Reply {
    /// Asserts that main (1.0.0) answered, with a 200.
    fn assert_from_main(&self) {
        assert_eq!(self.status, 200, "{}", self.body);
        assert_eq!(
            self.header("x-switchyard-version"),
            Some("1.0.0"),
            "{}",
            self.body
        );
    }
}

async fn reply(request: reqwest::RequestBuilder) -> Reply {
    support::reply(request, WAIT).await
}

async fn get(env: &Env, path: &str) -> Reply {
    reply(env.http.get(format!("{}{path}", env.proxy()))).await
}

async fn post(env: &Env, path: &str, body: impl Into<reqwest::Body>) -> Reply {
    reply(
        env.http
            .post(format!("{}{path}", env.proxy()))
            .body(body.into()),
    )
    .await
}

/// A body sent with chunked transfer encoding: `total` bytes of `byte` in
/// chunks of `chunk`, length not announced.
fn streamed(byte: u8, total: usize, chunk: usize) -> reqwest::Body {
    let chunks: Vec<Result<Bytes, std::io::Error>> = (0..total)
        .step_by(chunk)
        .map(|start| Ok(Bytes::from(vec![byte; chunk.min(total - start)])))
        .collect();
    reqwest::Body::wrap_stream(futures_util::stream::iter(chunks))
}

/// Header values by name as hello-server's /echo saw them.
fn echo_headers(echo: &Value) -> BTreeMap<String, Vec<String>> {
    echo["headers"]
        .as_object()
        .expect("echo has headers")
        .iter()
        .map(|(name, values)| {
            let values = values
                .as_array()
                .expect("header values")
                .iter()
                .map(|v| v.as_str().expect("header value").to_owned())
                .collect();
            (name.clone(), values)
        })
        .collect()
}

/// The role of `version` of the first service, from `ls --json`.
async fn role(env: &Env, version: &str) -> String {
    let ls = env.ls().await;
    ls[0]["releases"]
        .as_array()
        .expect("releases")
        .iter()
        .find(|r| r["version"] == version)
        .and_then(|r| r["role"].as_str())
        .unwrap_or_else(|| panic!("no release {version} in {ls}"))
        .to_owned()
}

/// The report of shadow `version` of `hello`, from the admin API.
async fn report(env: &Env, version: &str) -> Value {
    let url = format!(
        "{}/v1/services/hello/shadows/report?version={version}",
        env.admin()
    );
    let response = tokio::time::timeout(WAIT, env.http.get(&url).send())
        .await
        .expect("report within the wait")
        .expect("GET the report");
    assert_eq!(response.status().as_u16(), 200, "GET {url}");
    let reports: Value = response.json().await.expect("the report is JSON");
    let list = reports.as_array().expect("a list of reports");
    assert_eq!(list.len(), 1, "one report for one version: {reports:#}");
    list[0].clone()
}

/// Polls the report until `ok` holds; panics with the last report.
async fn report_until(env: &Env, version: &str, what: &str, ok: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + WAIT;
    loop {
        let r = report(env, version).await;
        if ok(&r) {
            return r;
        }
        if Instant::now() > deadline {
            panic!(
                "timed out waiting for: {what}\nlast report: {r:#}\nserve log:\n{}",
                env.serve_log()
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Waits until the copies of `requests` requests are accounted for: each
/// mirrored and answered (or failed), dropped, or too large.
async fn accounted_for(env: &Env, version: &str, requests: u64) -> Value {
    report_until(
        env,
        version,
        &format!("the copies of {requests} requests accounted for"),
        |r| n(r, "mirrored") + n(r, "dropped") + n(r, "too_large") >= requests && settled(r),
    )
    .await
}

/// A count from a report.
fn n(report: &Value, key: &str) -> u64 {
    report[key]
        .as_u64()
        .unwrap_or_else(|| panic!("no count `{key}` in {report:#}"))
}

/// A field of a report.
fn field<'a>(report: &'a Value, name: &str) -> Option<&'a Value> {
    report["fields"]
        .as_array()
        .expect("fields")
        .iter()
        .find(|f| f["field"] == name)
}

/// How often a field differed (0 when it never did).
fn diffs(report: &Value, name: &str) -> u64 {
    field(report, name).map_or(0, |f| f["diffs"].as_u64().expect("diffs"))
}

/// Every copy handed to the shadow has been answered (compared, 5xx
/// answers too) or has failed, and is accounted for.
fn settled(r: &Value) -> bool {
    n(r, "mirrored") == n(r, "compared") + n(r, "shadow_failed")
}

/// Lines of a release's log (hello-server logs `METHOD PATH -> STATUS`).
async fn log_lines(env: &Env, version: &str) -> Vec<String> {
    env.cli(&["logs", "hello", version, "-n", "5000"])
        .await
        .ok()
        .stdout
        .lines()
        .map(str::to_owned)
        .collect()
}

fn count_lines(lines: &[String], wanted: &str) -> usize {
    lines.iter().filter(|l| l.contains(wanted)).count()
}

// ------------------------------------------------------ recording upstream

/// One request as an upstream received it.
#[derive(Debug, Clone)]
struct Seen {
    method: String,
    /// Path and query.
    target: String,
    headers: BTreeMap<String, Vec<String>>,
    body: Vec<u8>,
}

struct RecorderState {
    seen: Mutex<Vec<Seen>>,
    delay: Duration,
    /// Requests wait here (after `delay`) until it is true.
    open: tokio::sync::watch::Receiver<bool>,
    in_flight: AtomicUsize,
    peak: AtomicUsize,
    /// When the first answer (but to `/healthz`) was done.
    first_done: Mutex<Option<Instant>>,
}

/// An upstream in this test: records every request but `/healthz`, waits
/// `delay` (and, when held, until let go), and answers
/// `{"recorder":true}`. Stops when dropped.
struct Recorder {
    addr: SocketAddr,
    state: Arc<RecorderState>,
    stop: CancellationToken,
    open: tokio::sync::watch::Sender<bool>,
}

impl Recorder {
    async fn start(delay: Duration) -> Recorder {
        Self::start_with(delay, true).await
    }

    /// A recorder that answers nothing but `/healthz` until [`Recorder::let_go`].
    async fn held() -> Recorder {
        Self::start_with(Duration::ZERO, false).await
    }

    async fn start_with(delay: Duration, open: bool) -> Recorder {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("local addr");
        let (open, opened) = tokio::sync::watch::channel(open);
        let state = Arc::new(RecorderState {
            seen: Mutex::new(Vec::new()),
            delay,
            open: opened,
            in_flight: AtomicUsize::new(0),
            peak: AtomicUsize::new(0),
            first_done: Mutex::new(None),
        });
        let stop = CancellationToken::new();
        let (accept_state, accept_stop) = (Arc::clone(&state), stop.clone());
        tokio::spawn(async move {
            loop {
                let stream = tokio::select! {
                    accepted = listener.accept() => match accepted {
                        Ok((stream, _)) => stream,
                        Err(_) => continue,
                    },
                    () = accept_stop.cancelled() => return,
                };
                let (state, stop) = (Arc::clone(&accept_state), accept_stop.clone());
                tokio::spawn(async move {
                    let service = service_fn(move |req| record(Arc::clone(&state), req));
                    let conn = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service);
                    tokio::select! {
                        _ = conn => {}
                        () = stop.cancelled() => {}
                    }
                });
            }
        });
        Recorder {
            addr,
            state,
            stop,
            open,
        }
    }

    /// Lets every held request (and every later one) be answered.
    fn let_go(&self) {
        self.open.send_replace(true);
    }

    /// Requests it is answering now.
    fn in_flight(&self) -> usize {
        self.state.in_flight.load(Ordering::SeqCst)
    }

    /// Waits until it is answering `n` requests at once.
    async fn wait_in_flight(&self, n: usize) {
        support::within(WAIT, &format!("{n} requests at the recorder"), async {
            while self.in_flight() < n {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        })
        .await;
    }

    fn seen(&self) -> Vec<Seen> {
        self.state.seen.lock().expect("recorder lock").clone()
    }

    /// Most requests it was answering at once.
    fn peak(&self) -> usize {
        self.state.peak.load(Ordering::SeqCst)
    }

    /// When it finished answering its first request, if it has.
    fn first_done(&self) -> Option<Instant> {
        *self.state.first_done.lock().expect("recorder lock")
    }

    /// Waits until a recorded request passes `check`.
    async fn wait_for(&self, what: &str, check: impl Fn(&Seen) -> bool) -> Seen {
        let deadline = Instant::now() + WAIT;
        loop {
            if let Some(seen) = self.seen().into_iter().find(|s| check(s)) {
                return seen;
            }
            assert!(
                Instant::now() < deadline,
                "the recorder never saw {what}; it saw {:#?}",
                self.seen()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

impl Drop for Recorder {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

async fn record(
    state: Arc<RecorderState>,
    req: Request<Incoming>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    if req.uri().path() == "/healthz" {
        return Ok(Response::new(Full::new(Bytes::from_static(b"ok\n"))));
    }
    let (parts, body) = req.into_parts();
    let Ok(body) = body.collect().await else {
        return Ok(Response::new(Full::new(Bytes::new())));
    };
    let mut headers: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for (name, value) in &parts.headers {
        headers
            .entry(name.as_str().to_owned())
            .or_default()
            .push(String::from_utf8_lossy(value.as_bytes()).into_owned());
    }
    let target = parts
        .uri
        .path_and_query()
        .map_or_else(|| parts.uri.path().to_owned(), ToString::to_string);
    state.seen.lock().expect("recorder lock").push(Seen {
        method: parts.method.to_string(),
        target,
        headers,
        body: body.to_bytes().to_vec(),
    });
    let now = state.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
    state.peak.fetch_max(now, Ordering::SeqCst);
    tokio::time::sleep(state.delay).await;
    let _ = state.open.clone().wait_for(|open| *open).await;
    state.in_flight.fetch_sub(1, Ordering::SeqCst);
    state
        .first_done
        .lock()
        .expect("recorder lock")
        .get_or_insert_with(Instant::now);
    let mut response = Response::new(Full::new(Bytes::from_static(b"{\"recorder\":true}")));
    response.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("application/json"),
    );
    Ok(response)
}

// ------------------------------------------------------ what gets mirrored

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shadow_gets_the_same_request_and_the_client_only_main_answer() {
    let env = Env::start().await;
    env.deploy("hello", "1.0.0", &["--host", "hello.test"], &[])
        .await
        .ok();
    let recorder = Recorder::start(Duration::ZERO).await;
    env.deploy_external("hello", "2.0.0", &[recorder.addr], &[])
        .await
        .ok();
    assert_eq!(role(&env, "2.0.0").await, "shadow");

    let r = reply(
        env.http
            .post(format!(
                "{}/services/hello/echo/a/b?x=1&y=two%20words",
                env.proxy()
            ))
            .header("x-custom", "one")
            // Only the proxy marks copies: a client cannot pass for one.
            .header("x-switchyard-shadow", "forged")
            .header("x-multi", "first")
            .header("x-multi", "second")
            .header("content-type", "text/plain")
            .body("the body"),
    )
    .await;
    // The client gets main's answer, and only main's.
    r.assert_from_main();
    assert_eq!(r.header("x-served-by"), Some("hello/1.0.0/0"));
    let echo = r.json();
    assert_eq!(echo["version"], "1.0.0");
    assert_eq!(echo["method"], "POST");
    assert_eq!(echo["body"], "the body");
    let main_saw = echo_headers(&echo);
    assert!(
        !main_saw.contains_key("x-switchyard-shadow"),
        "main got the shadow marker: {main_saw:?}"
    );

    // The shadow got the same request line, headers and body, plus the marker.
    let copy = recorder
        .wait_for("the POST", |s| s.target.starts_with("/echo/a/b"))
        .await;
    assert_eq!(copy.method, "POST");
    assert_eq!(copy.target, "/echo/a/b?x=1&y=two%20words");
    assert_eq!(copy.body, b"the body");
    let mut shadow_saw = copy.headers.clone();
    assert_eq!(
        shadow_saw.remove("x-switchyard-shadow"),
        Some(vec!["1".to_owned()]),
        "{shadow_saw:?}"
    );
    assert_eq!(shadow_saw, main_saw, "shadow's headers vs main's");
    assert_eq!(shadow_saw["x-multi"], ["first", "second"]);

    // A request by host name is mirrored too, with its whole path.
    let r = reply(
        env.http
            .get(format!("{}/echo/by-host?z=1", env.proxy()))
            .header("host", "hello.test"),
    )
    .await;
    r.assert_from_main();
    let main_saw = echo_headers(&r.json());
    let copy = recorder
        .wait_for("the GET by host", |s| s.target.starts_with("/echo/by-host"))
        .await;
    assert_eq!(
        (copy.method.as_str(), copy.target.as_str()),
        ("GET", "/echo/by-host?z=1")
    );
    assert!(copy.body.is_empty());
    let mut shadow_saw = copy.headers.clone();
    assert_eq!(
        shadow_saw.remove("x-switchyard-shadow"),
        Some(vec!["1".to_owned()])
    );
    assert_eq!(shadow_saw, main_saw, "shadow's headers vs main's");

    let r = accounted_for(&env, "2.0.0", 2).await;
    assert_eq!(n(&r, "compared"), 2, "{r:#}");
    assert_eq!(n(&r, "mirrored"), 2, "{r:#}");
    assert_eq!(
        n(&r, "matched"),
        0,
        "the recorder answers differently: {r:#}"
    );
    assert_eq!((n(&r, "dropped"), n(&r, "shadow_errors")), (0, 0), "{r:#}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http2_head_and_expect_continue_requests_are_mirrored_faithfully() {
    let env = Env::start().await;
    env.deploy("hello", "1.0.0", &[], &[]).await.ok();
    let recorder = Recorder::start(Duration::ZERO).await;
    env.deploy_external("hello", "2.0.0", &[recorder.addr], &[])
        .await
        .ok();

    // HTTP/2 from the client: the copy, like main's request, is HTTP/1.1
    // with a Host header.
    let h2 = support::http_client()
        .no_proxy()
        .http2_prior_knowledge()
        .build()
        .expect("HTTP/2 client");
    let r = reply(
        h2.post(format!("{}/services/hello/echo/h2?q=1", env.proxy()))
            .header("x-h2", "yes")
            .body("over h2"),
    )
    .await;
    r.assert_from_main();
    let echo = r.json();
    assert_eq!(echo["body"], "over h2");
    let copy = recorder
        .wait_for("the h2 POST", |s| s.target == "/echo/h2?q=1")
        .await;
    assert_eq!(
        (copy.method.as_str(), copy.body.as_slice()),
        ("POST", &b"over h2"[..])
    );
    let mut shadow_saw = copy.headers.clone();
    shadow_saw.remove("x-switchyard-shadow");
    assert_eq!(
        shadow_saw,
        echo_headers(&echo),
        "shadow's headers vs main's"
    );

    // HEAD: no body either way.
    let r = reply(
        env.http
            .head(format!("{}/services/hello/echo/head", env.proxy())),
    )
    .await;
    r.assert_from_main();
    let copy = recorder
        .wait_for("the HEAD", |s| s.target == "/echo/head")
        .await;
    assert_eq!(copy.method, "HEAD");
    assert!(copy.body.is_empty());
    assert!(!copy.headers.contains_key("content-length"), "{copy:?}");

    // A client that waits for 100 Continue before it sends its body.
    let mut conn = connect(&env, WAIT).await;
    conn.get_mut()
        .write_all(
            b"POST /services/hello/echo/continue HTTP/1.1\r\n\
              Host: h.test\r\n\
              Content-Length: 5\r\n\
              Expect: 100-continue\r\n\
              \r\n",
        )
        .await
        .expect("send head");
    let mut line = String::new();
    tokio::time::timeout(WAIT, conn.read_line(&mut line))
        .await
        .expect("interim response within the wait")
        .expect("read interim response");
    assert!(line.starts_with("HTTP/1.1 100"), "{line:?}");
    conn.get_mut().write_all(b"hello").await.expect("send body");
    let copy = recorder
        .wait_for("the POST after 100 Continue", |s| {
            s.target == "/echo/continue"
        })
        .await;
    assert_eq!(copy.body, b"hello");

    let r = accounted_for(&env, "2.0.0", 3).await;
    assert_eq!(n(&r, "compared"), 3, "{r:#}");
    assert_eq!((n(&r, "mirrored"), n(&r, "shadow_errors")), (3, 0), "{r:#}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_shadow_with_mirroring_on_gets_a_copy() {
    let env = Env::start().await;
    env.deploy("hello", "1.0.0", &[], &[]).await.ok();
    env.deploy("hello", "2.0.0", &[], &[]).await.ok();
    env.deploy("hello", "3.0.0", &[], &[]).await.ok();
    env.deploy("hello", "4.0.0", &["--standby"], &[]).await.ok();
    assert_eq!(role(&env, "3.0.0").await, "shadow");
    assert_eq!(role(&env, "4.0.0").await, "standby");

    for _ in 0..5 {
        get(&env, "/services/hello/echo/both")
            .await
            .assert_from_main();
    }
    for version in ["2.0.0", "3.0.0"] {
        let r = accounted_for(&env, version, 5).await;
        assert_eq!(n(&r, "compared"), 5, "{r:#}");
    }
    env.cli(&["shadow", "set", "hello", "3.0.0", "--off"])
        .await
        .ok();
    for _ in 0..5 {
        get(&env, "/services/hello/echo/one")
            .await
            .assert_from_main();
    }
    // Copies are queued before main answers, and the data plane's one
    // thread starts a queued copy (counting it) before another copy's
    // answer comes back: once 2.0.0 has compared its copies of these
    // requests, a copy 3.0.0 took of them would show in its count.
    accounted_for(&env, "2.0.0", 10).await;

    // Every shadow's report, from the CLI.
    let run = env.cli(&["shadow", "report", "hello", "--json"]).await.ok();
    let reports: Value = serde_json::from_str(&run.stdout).expect("report --json is JSON");
    let compared: Vec<(&str, u64)> = reports
        .as_array()
        .expect("reports")
        .iter()
        .map(|r| (r["version"].as_str().expect("version"), n(r, "compared")))
        .collect();
    assert_eq!(compared, [("2.0.0", 10), ("3.0.0", 5)], "{reports:#}");
    let standby = log_lines(&env, "4.0.0").await;
    assert_eq!(count_lines(&standby, "/echo/"), 0, "{standby:#?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_to_a_release_address_are_not_mirrored() {
    let env = Env::start().await;
    env.deploy("hello", "1.0.0", &[], &[]).await.ok();
    let recorder = Recorder::start(Duration::ZERO).await;
    env.deploy_external("hello", "2.0.0", &[recorder.addr], &[])
        .await
        .ok();

    for i in 0..5 {
        let r = get(&env, &format!("/services/hello_1.0.0/echo/direct?i={i}")).await;
        r.assert_from_main();
    }
    // The shadow's own address reaches it, but that is not a copy.
    let r = get(&env, "/services/hello_2.0.0/echo/own").await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.header("x-switchyard-version"), Some("2.0.0"));
    assert_eq!(r.json()["recorder"], true);
    // A request to the service is, and marks the end of the sequence.
    get(&env, "/services/hello/echo/marker")
        .await
        .assert_from_main();
    recorder
        .wait_for("the marker", |s| s.target == "/echo/marker")
        .await;
    // A copy of a direct request would be ahead of the marker's in the
    // shadow's queue, so it would have been started (and counted) first;
    // settled, every copy counted has reached the recorder.
    let r = accounted_for(&env, "2.0.0", 1).await;
    let seen = recorder.seen();
    assert!(
        seen.iter().all(|s| !s.target.starts_with("/echo/direct")),
        "a request to main's own address was mirrored: {seen:#?}"
    );
    let own = seen
        .iter()
        .find(|s| s.target == "/echo/own")
        .expect("the shadow's own request");
    assert!(!own.headers.contains_key("x-switchyard-shadow"), "{own:?}");
    assert_eq!(seen.len(), 2, "{seen:#?}");
    assert_eq!(n(&report(&env, "2.0.0").await, "mirrored"), 1, "{r:#}");
}

// --------------------------------------------------- never in the way

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_shadow_never_delays_clients_and_catches_up() {
    const REQUESTS: u64 = 20;
    let env = Env::start().await;
    env.deploy("hello", "1.0.0", &[], &[]).await.ok();
    // A shadow that answers no copy until the test lets it.
    let shadow = Recorder::held().await;
    env.deploy_external("hello", "2.0.0", &[shadow.addr], &[])
        .await
        .ok();

    for i in 0..REQUESTS {
        let r = get(&env, &format!("/services/hello/echo/slow?i={i}")).await;
        r.assert_from_main();
        assert_eq!(r.json()["version"], "1.0.0");
    }
    // Every client was answered while the shadow held its copies.
    shadow.wait_in_flight(1).await;
    assert_eq!(shadow.first_done(), None, "the shadow answered a copy");
    let r = report(&env, "2.0.0").await;
    assert_eq!(n(&r, "compared"), 0, "{r:#}");
    assert!(n(&r, "mirrored") >= 1, "no copy in flight: {r:#}");

    shadow.let_go();
    let r = accounted_for(&env, "2.0.0", REQUESTS).await;
    assert_eq!(n(&r, "compared"), REQUESTS, "{r:#}");
    assert_eq!(n(&r, "mirrored"), REQUESTS, "{r:#}");
    assert_eq!((n(&r, "dropped"), n(&r, "shadow_errors")), (0, 0), "{r:#}");
    assert_eq!(shadow.seen().len() as u64, REQUESTS);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dead_shadow_changes_nothing_for_clients() {
    let env = Env::start().await;
    env.deploy("hello", "1.0.0", &[], &[]).await.ok();
    let mut shadow = OwnServer::start("2.0.0", 0, WAIT).await;
    env.deploy_external("hello", "2.0.0", &[shadow.addr], &[])
        .await
        .ok();

    for _ in 0..3 {
        get(&env, "/services/hello/echo/alive")
            .await
            .assert_from_main();
    }
    let r = accounted_for(&env, "2.0.0", 3).await;
    assert_eq!(n(&r, "compared"), 3, "{r:#}");

    shadow.kill().await;
    for i in 0..20 {
        let r = get(&env, &format!("/services/hello/echo/dead?i={i}")).await;
        r.assert_from_main();
        assert_eq!(r.json()["version"], "1.0.0");
    }
    let r = accounted_for(&env, "2.0.0", 23).await;
    assert_eq!(n(&r, "mirrored") + n(&r, "dropped"), 23, "{r:#}");
    assert_eq!(n(&r, "compared"), 3, "{r:#}");
    assert!(n(&r, "shadow_errors") >= 1, "{r:#}");
    assert_eq!(n(&r, "shadow_errors") + n(&r, "dropped"), 20, "{r:#}");
    // Every one of them a connection failure, none an answer.
    assert_eq!(n(&r, "shadow_failed"), n(&r, "shadow_errors"), "{r:#}");
    assert_eq!(n(&r, "shadow_5xx"), 0, "{r:#}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_shadows_5xx_answers_are_shadow_errors() {
    let env = Env::start().await;
    env.deploy("hello", "1.0.0", &[], &[]).await.ok();
    // Every second answer of the shadow is a 500.
    env.deploy("hello", "2.0.0", &[], &["--fail-rate", "0.5"])
        .await
        .ok();
    for i in 0..10 {
        get(&env, &format!("/services/hello/echo/x?i={i}"))
            .await
            .assert_from_main();
    }
    let r = accounted_for(&env, "2.0.0", 10).await;
    assert_eq!(n(&r, "compared"), 10, "{r:#}");
    assert_eq!(
        (
            n(&r, "shadow_errors"),
            n(&r, "shadow_5xx"),
            n(&r, "shadow_failed")
        ),
        (5, 5, 0),
        "{r:#}"
    );
    assert_eq!(diffs(&r, "status"), 5, "{r:#}");
    let text = env.cli(&["shadow", "report", "hello"]).await.ok().stdout;
    assert!(
        text.contains("shadow errors 5 (5 5xx, 0 no answer)"),
        "{text}"
    );
    let metrics = env.metrics().await;
    assert!(
        metrics.contains("switchyard_shadow_errors_total{service=\"hello\",version=\"2.0.0\"} 5"),
        "{metrics}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_report_reset_starts_a_new_window_and_keeps_the_old_one_in_history() {
    let env = Env::start().await;
    env.deploy("hello", "1.0.0", &[], &[]).await.ok();
    for i in 0..5 {
        get(&env, &format!("/services/hello/echo/old?i={i}"))
            .await
            .assert_from_main();
    }
    env.deploy("hello", "2.0.0", &[], &[]).await.ok();
    for i in 0..5 {
        get(&env, &format!("/services/hello/echo/old?i={i}"))
            .await
            .assert_from_main();
    }
    let before = accounted_for(&env, "2.0.0", 5).await;
    assert_eq!(diffs(&before, "$.version"), 5, "{before:#}");
    let history = env
        .cli(&["shadow", "report", "hello", "--history"])
        .await
        .ok();
    assert!(
        history.stdout.contains("no ended window yet"),
        "{}",
        history.stdout
    );

    // The difference is expected: leave it out and count afresh.
    env.cli(&["shadow", "compare", "hello", "--ignore-path", "$.version"])
        .await
        .ok();
    let reset = env
        .cli(&["shadow", "report", "hello", "--reset"])
        .await
        .ok();
    assert!(
        reset.stdout.contains("compared 5, matched 0 (0.0%)")
            && reset
                .stdout
                .contains("hello 2.0.0: a new window starts now"),
        "{}",
        reset.stdout
    );
    let fresh = report(&env, "2.0.0").await;
    assert_eq!(
        (n(&fresh, "mirrored"), n(&fresh, "compared")),
        (0, 0),
        "{fresh:#}"
    );
    assert!(n(&fresh, "since") >= n(&before, "since"), "{fresh:#}");
    for i in 0..3 {
        get(&env, &format!("/services/hello/echo/new?i={i}"))
            .await
            .assert_from_main();
    }
    let r = accounted_for(&env, "2.0.0", 3).await;
    assert_eq!((n(&r, "compared"), n(&r, "matched")), (3, 3), "{r:#}");
    assert_eq!(r["match_rate"], 1.0, "{r:#}");

    // The ended window is in the history, with its counts and fields.
    let run = env
        .cli(&["shadow", "report", "hello", "2.0.0", "--history", "--json"])
        .await
        .ok();
    let windows: Value = serde_json::from_str(&run.stdout).expect("history JSON");
    let windows = windows.as_array().expect("windows");
    assert_eq!(windows.len(), 1, "{windows:#?}");
    assert_eq!(
        (n(&windows[0], "compared"), n(&windows[0], "matched")),
        (5, 0)
    );
    assert_eq!(diffs(&windows[0], "$.version"), 5);
    assert!(n(&windows[0], "until") >= n(&windows[0], "since"));
    let text = env
        .cli(&["shadow", "report", "hello", "--history"])
        .await
        .ok();
    assert!(
        text.stdout.contains("hello 2.0.0 (window ") && text.stdout.contains("compared 5"),
        "{}",
        text.stdout
    );
    let events = env.cli(&["events", "hello"]).await.ok();
    assert!(
        events.stdout.contains("shadow report of 2.0.0 reset"),
        "{}",
        events.stdout
    );
    // A release the service never had is refused, and nothing is reset.
    let refused = env
        .cli(&["shadow", "report", "hello", "9.0.0", "--reset"])
        .await
        .failed();
    assert!(refused.stderr.contains("9.0.0"), "{}", refused.stderr);
    assert_eq!(n(&report(&env, "2.0.0").await, "compared"), 3);

    // A restart keeps both: the new window's counts, the ended one's history.
    let mut env = env;
    let (proxy_addr, admin_addr) = (
        env.serve().proxy_addr.clone(),
        env.serve().admin_addr.clone(),
    );
    env.stop().await;
    env.launch(&proxy_addr, &admin_addr).await;
    let after = report(&env, "2.0.0").await;
    assert_eq!(
        (n(&after, "compared"), n(&after, "since")),
        (3, n(&r, "since")),
        "{after:#}"
    );
    let run = env
        .cli(&["shadow", "report", "hello", "--history", "--json"])
        .await
        .ok();
    let windows: Value = serde_json::from_str(&run.stdout).expect("history JSON");
    assert_eq!(windows.as_array().map(Vec::len), Some(1), "{windows:#}");
    assert_eq!(n(&windows[0], "compared"), 5, "{windows:#}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deploying_a_shadow_says_which_methods_it_gets_and_how_to_limit_them() {
    let env = Env::start().await;
    let refused = env
        .deploy("hello", "1.0.0", &["--shadow-methods", "GET"], &[])
        .await
        .failed();
    assert!(
        refused
            .stderr
            .contains("--shadow-methods applies to a release that enters as a shadow")
            && refused.stderr.contains("would enter as main"),
        "{}",
        refused.stderr
    );
    env.deploy("hello", "1.0.0", &[], &[]).await.ok();
    let every = env.deploy("hello", "2.0.0", &[], &[]).await.ok();
    assert!(
        every
            .stdout
            .contains("of every method: POST, PUT, PATCH and DELETE too")
            && every
                .stdout
                .contains("`switchyard shadow set hello 2.0.0 --methods GET,HEAD`")
            && every.stdout.contains("--shadow-methods GET,HEAD"),
        "{}",
        every.stdout
    );
    let safe = env
        .deploy("hello", "3.0.0", &["--shadow-methods", "get,head"], &[])
        .await
        .ok();
    assert!(
        safe.stdout
            .contains("it gets a copy of hello's main's GET, HEAD requests only"),
        "{}",
        safe.stdout
    );
    let ls = env.ls().await;
    let entry = ls[0]["releases"]
        .as_array()
        .expect("releases")
        .iter()
        .find(|r| r["version"] == "3.0.0")
        .cloned()
        .expect("3.0.0 listed");
    assert_eq!(entry["role"], "shadow", "{ls:#}");
    assert_eq!(
        entry["shadow"]["methods"],
        serde_json::json!(["GET", "HEAD"])
    );

    // As it said: 3.0.0 gets the GET only, 2.0.0 both.
    get(&env, "/services/hello/echo/read")
        .await
        .assert_from_main();
    post(&env, "/services/hello/echo/write", "w")
        .await
        .assert_from_main();
    accounted_for(&env, "2.0.0", 2).await;
    let r = accounted_for(&env, "3.0.0", 1).await;
    assert_eq!(n(&r, "mirrored"), 1, "{r:#}");
    let r = report(&env, "3.0.0").await;
    assert_eq!(n(&r, "mirrored"), 1, "the POST was copied to 3.0.0: {r:#}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn full_shadow_queue_drops_copies_and_counts_them() {
    const REQUESTS: u64 = 30;
    let env = Env::start_with(&["--shadow-queue", "2", "--shadow-concurrency", "1"]).await;
    env.deploy("hello", "1.0.0", &[], &[]).await.ok();
    let recorder = Recorder::held().await;
    env.deploy_external("hello", "2.0.0", &[recorder.addr], &[])
        .await
        .ok();

    // The first copy is with the shadow (held there) before the rest come:
    // two of them fill the queue, the others find it full.
    get(&env, "/services/hello/echo/rush?i=0")
        .await
        .assert_from_main();
    recorder.wait_in_flight(1).await;
    let env_ref = &env;
    let requests = (1..REQUESTS)
        .map(|i| async move { get(env_ref, &format!("/services/hello/echo/rush?i={i}")).await });
    for r in futures_util::future::join_all(requests).await {
        r.assert_from_main();
    }
    // Drops are counted as they happen, before main answers.
    let r = report(&env, "2.0.0").await;
    assert_eq!(n(&r, "dropped"), REQUESTS - 3, "{r:#}");

    recorder.let_go();
    let r = accounted_for(&env, "2.0.0", REQUESTS).await;
    assert_eq!(n(&r, "mirrored") + n(&r, "dropped"), REQUESTS, "{r:#}");
    assert_eq!(
        n(&r, "mirrored"),
        3,
        "one in flight and a queue of 2: {r:#}"
    );
    assert_eq!(n(&r, "compared"), 3, "{r:#}");
    assert_eq!(n(&r, "shadow_errors"), 0, "{r:#}");
    // The shadow got exactly the copies counted as mirrored, one at a time.
    assert_eq!(recorder.seen().len(), 3, "{r:#}");
    assert_eq!(recorder.peak(), 1, "--shadow-concurrency 1");
}

// ---------------------------------------------------------- the report

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_diff_reports_a_changed_field_and_skips_ignored_paths() {
    let env = Env::start().await;
    env.deploy("hello", "1.0.0", &[], &[]).await.ok();
    env.deploy("hello", "2.0.0", &[], &[]).await.ok();

    for _ in 0..5 {
        get(&env, "/services/hello/echo/diff")
            .await
            .assert_from_main();
    }
    let r = accounted_for(&env, "2.0.0", 5).await;
    assert_eq!(n(&r, "compared"), 5, "{r:#}");
    assert_eq!((n(&r, "mirrored"), n(&r, "matched")), (5, 0), "{r:#}");
    assert_eq!(r["match_rate"], 0.0, "{r:#}");
    let version = field(&r, "$.version").expect("$.version differs");
    assert_eq!(version["diffs"], 5, "{r:#}");
    assert_eq!(version["rate"], 1.0, "{r:#}");
    assert_eq!(version["real"], true, "{r:#}");
    assert_eq!(version["kinds"], serde_json::json!(["changed"]), "{r:#}");
    let example = &version["examples"][0];
    assert_eq!(example["main"], "\"1.0.0\"", "{r:#}");
    assert_eq!(example["shadow"], "\"2.0.0\"", "{r:#}");
    assert_eq!(example["request"], "GET /echo/diff", "{r:#}");
    // Only the shadow sees the marker header, and /echo says so; that is
    // Switchyard's doing, not the release's, so it is no difference.
    assert!(
        field(&r, "$.headers.x-switchyard-shadow").is_none(),
        "{r:#}"
    );
    assert_eq!(r["fields"].as_array().map(Vec::len), Some(1), "{r:#}");
    assert!(
        r["own_headers_ignored"]
            .as_array()
            .expect("own headers listed")
            .iter()
            .any(|h| h == "x-switchyard-shadow"),
        "{r:#}"
    );
    // The same report, through the CLI.
    let cli = env
        .cli(&["shadow", "report", "hello", "2.0.0", "--json"])
        .await
        .ok();
    let from_cli: Value = serde_json::from_str(&cli.stdout).expect("report --json is JSON");
    assert_eq!(from_cli[0]["compared"], 5, "{}", cli.stdout);
    let text = env.cli(&["shadow", "report", "hello"]).await.ok().stdout;
    assert!(text.contains("$.version"), "{text}");
    assert!(text.contains("compared 5"), "{text}");
    assert!(
        text.contains("not compared: headers Switchyard sets itself (x-switchyard-shadow,"),
        "{text}"
    );

    env.cli(&["shadow", "compare", "hello", "--ignore-path", "$.version"])
        .await
        .ok();
    for _ in 0..5 {
        get(&env, "/services/hello/echo/diff")
            .await
            .assert_from_main();
    }
    let r = accounted_for(&env, "2.0.0", 10).await;
    assert_eq!(n(&r, "compared"), 10, "{r:#}");
    assert_eq!(
        diffs(&r, "$.version"),
        5,
        "an ignored path was reported: {r:#}"
    );
    // With nothing left to differ, the answers match.
    assert_eq!(n(&r, "matched"), 5, "{r:#}");
    let ls = env.ls().await;
    assert_eq!(
        ls[0]["compare"]["ignore_paths"],
        serde_json::json!(["$.version"]),
        "{ls:#}"
    );

    // Headers compared: hello-server names its version in x-served-by.
    env.cli(&["shadow", "compare", "hello", "--header", "X-Served-By"])
        .await
        .ok();
    get(&env, "/services/hello/echo/diff")
        .await
        .assert_from_main();
    let r = accounted_for(&env, "2.0.0", 11).await;
    assert_eq!(n(&r, "compared"), 11, "{r:#}");
    let served_by = field(&r, "header:x-served-by").expect("x-served-by differs");
    assert_eq!(served_by["diffs"], 1, "{r:#}");
    assert_eq!(served_by["kinds"], serde_json::json!(["header"]), "{r:#}");
    assert_eq!(served_by["examples"][0]["main"], "hello/1.0.0/0", "{r:#}");
    assert_eq!(served_by["examples"][0]["shadow"], "hello/2.0.0/0", "{r:#}");
    assert_eq!(n(&r, "matched"), 5, "{r:#}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fields_that_differ_between_main_instances_are_noise() {
    const REQUESTS: u64 = 10;
    let env = Env::start().await;
    env.deploy("hello", "1.0.0", &["--replicas", "2"], &[])
        .await
        .ok();
    env.deploy("hello", "2.0.0", &[], &[]).await.ok();
    env.cli(&["shadow", "compare", "hello", "--noise", "100"])
        .await
        .ok();

    for _ in 0..REQUESTS {
        get(&env, "/services/hello/").await.assert_from_main();
    }
    let r = report_until(&env, "2.0.0", "every comparison and noise sample", |r| {
        n(r, "compared") >= REQUESTS && n(r, "noise_compared") >= REQUESTS
    })
    .await;
    assert_eq!(n(&r, "compared"), REQUESTS, "{r:#}");
    assert_eq!(n(&r, "noise_compared"), REQUESTS, "{r:#}");
    // pid and port differ between main's two instances: noise.
    for name in ["$.pid", "$.port"] {
        let f = field(&r, name).unwrap_or_else(|| panic!("{name} differs: {r:#}"));
        assert_eq!(f["real"], false, "{name}: {r:#}");
        assert_eq!(f["noise_rate"], 1.0, "{name}: {r:#}");
        assert_eq!(f["diffs"], REQUESTS, "{name}: {r:#}");
    }
    // The version differs only from the shadow: real.
    let version = field(&r, "$.version").expect("$.version differs");
    assert_eq!(version["real"], true, "{r:#}");
    assert_eq!(version["noise_rate"], 0.0, "{r:#}");
    assert_eq!(
        n(&r, "matched"),
        0,
        "the version differs in every answer: {r:#}"
    );
}

// ---------------------------------------------------- what is mirrored

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn copies_on_their_way_when_the_settings_change_still_reach_the_shadow() {
    let env = Env::start().await;
    env.deploy("hello", "1.0.0", &[], &[]).await.ok();
    env.deploy("hello", "2.0.0", &[], &["--latency-ms", "1500"])
        .await
        .ok();
    for _ in 0..6 {
        get(&env, "/services/hello/echo/before-change")
            .await
            .assert_from_main();
    }
    // The copies wait on the slow shadow while its settings change: the
    // new mirror takes the next copies, the old one finishes its own.
    env.cli(&["shadow", "set", "hello", "2.0.0", "--methods", "GET,HEAD"])
        .await
        .ok();
    let r = report_until(&env, "2.0.0", "the six copies compared", |r| {
        n(r, "compared") >= 6 && settled(r)
    })
    .await;
    assert_eq!(n(&r, "mirrored"), 6, "{r:#}");
    assert_eq!(n(&r, "dropped") + n(&r, "shadow_errors"), 0, "{r:#}");
    let lines = log_lines(&env, "2.0.0").await;
    assert_eq!(
        count_lines(&lines, "GET /echo/before-change "),
        6,
        "{lines:#?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sample_methods_and_off_choose_what_is_mirrored() {
    let env = Env::start().await;
    env.deploy("hello", "1.0.0", &[], &[]).await.ok();
    env.deploy("hello", "2.0.0", &[], &[]).await.ok();

    // Half of the requests.
    env.cli(&["shadow", "set", "hello", "2.0.0", "--sample", "50"])
        .await
        .ok();
    for i in 0..20 {
        get(&env, &format!("/services/hello/echo/sampled/{i}"))
            .await
            .assert_from_main();
    }
    // The share is spread by a counter: every second request, the 2nd,
    // 4th, … 20th, exactly 10 of 20. The last one's copy is the last in
    // the queue: once the shadow logged it, every copy has been counted.
    env.eventually("the last sampled copy", WAIT, || async {
        count_lines(&log_lines(&env, "2.0.0").await, "GET /echo/sampled/19 ") == 1
    })
    .await;
    let r = report_until(&env, "2.0.0", "the sampled copies compared", settled).await;
    let sampled = n(&r, "mirrored");
    assert_eq!(sampled, 10, "a 50% sample of 20 requests: {r:#}");
    let lines = log_lines(&env, "2.0.0").await;
    for i in 0..20 {
        let logged = count_lines(&lines, &format!("GET /echo/sampled/{i} "));
        assert_eq!(logged, i % 2, "request {i}: {lines:#?}");
    }

    // GET only: POSTs stay with main.
    env.cli(&[
        "shadow",
        "set",
        "hello",
        "2.0.0",
        "--sample",
        "100",
        "--methods",
        "GET",
    ])
    .await
    .ok();
    for _ in 0..10 {
        post(&env, "/services/hello/echo/post-only", "side effect")
            .await
            .assert_from_main();
        get(&env, "/services/hello/echo/get-only")
            .await
            .assert_from_main();
    }
    // A POST's copy would be queued before the last GET's: once every GET
    // is in the shadow's log, every copy has been counted.
    env.eventually("the ten GET copies", WAIT, || async {
        count_lines(&log_lines(&env, "2.0.0").await, "GET /echo/get-only ") == 10
    })
    .await;
    let r = report_until(&env, "2.0.0", "the GET copies compared", settled).await;
    assert_eq!(n(&r, "mirrored"), sampled + 10, "{r:#}");
    let lines = log_lines(&env, "2.0.0").await;
    assert_eq!(count_lines(&lines, "/echo/post-only"), 0, "{lines:#?}");

    // Off: nothing, though the shadow stays a shadow at its own address.
    env.cli(&["shadow", "set", "hello", "2.0.0", "--off"])
        .await
        .ok();
    for _ in 0..10 {
        get(&env, "/services/hello/echo/while-off")
            .await
            .assert_from_main();
    }
    assert_eq!(role(&env, "2.0.0").await, "shadow");
    let r = get(&env, "/services/hello_2.0.0/echo").await;
    assert_eq!(r.header("x-switchyard-version"), Some("2.0.0"));

    // On again, with the methods kept. A copy taken while off would have
    // been queued before these, and started (counted) on the data plane's
    // thread before these copies' answers came back.
    env.cli(&["shadow", "set", "hello", "2.0.0", "--on"])
        .await
        .ok();
    for _ in 0..4 {
        get(&env, "/services/hello/echo/back-on")
            .await
            .assert_from_main();
    }
    env.eventually("the four copies after --on", WAIT, || async {
        count_lines(&log_lines(&env, "2.0.0").await, "GET /echo/back-on ") == 4
    })
    .await;
    let r = report_until(&env, "2.0.0", "the copies after --on compared", settled).await;
    assert_eq!(n(&r, "mirrored"), sampled + 14, "{r:#}");
    let lines = log_lines(&env, "2.0.0").await;
    assert_eq!(count_lines(&lines, "/echo/while-off"), 0, "{lines:#?}");

    let history = env.history("hello").await;
    let actions = actions(&history);
    let expected = [
        "shadow 2.0.0: on, 100%, GET",
        "shadow 2.0.0: off, 100%, GET",
        "shadow 2.0.0: on, 100%, GET",
        "shadow 2.0.0: on, 50%, all methods",
    ];
    // Newest first.
    let mut newest_first: Vec<&str> = actions
        .iter()
        .map(String::as_str)
        .filter(|a| a.starts_with("shadow 2.0.0"))
        .collect();
    newest_first.truncate(4);
    assert_eq!(newest_first, expected, "{actions:#?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bodies_over_the_limit_reach_main_but_are_not_mirrored() {
    let env = Env::start().await;
    env.deploy("hello", "1.0.0", &[], &[]).await.ok();
    let recorder = Recorder::start(Duration::ZERO).await;
    env.deploy_external("hello", "2.0.0", &[recorder.addr], &[])
        .await
        .ok();
    env.cli(&["shadow", "compare", "hello", "--body-limit", "1024"])
        .await
        .ok();

    // 4 KiB with a length, then 4 KiB streamed: main gets them whole.
    let r = post(&env, "/services/hello/echo/big", vec![b'b'; 4096]).await;
    r.assert_from_main();
    let echo = r.json();
    assert_eq!(echo["body_len"], 4096);
    assert!(
        echo["body"]
            .as_str()
            .is_some_and(|b| b.bytes().all(|c| c == b'b'))
    );
    let r = post(
        &env,
        "/services/hello/echo/big-streamed",
        streamed(b's', 4096, 512),
    )
    .await;
    r.assert_from_main();
    assert_eq!(r.json()["body_len"], 4096);
    let r = accounted_for(&env, "2.0.0", 2).await;
    assert_eq!(
        (n(&r, "too_large"), n(&r, "mirrored")),
        (2, 0),
        "{r:#}\nthe shadow saw {:?}",
        recorder
            .seen()
            .iter()
            .map(|s| (s.target.clone(), s.body.len()))
            .collect::<Vec<_>>()
    );

    // 512 bytes with a length, then streamed: mirrored whole.
    let small: Vec<u8> = (0..512u32).map(|i| b'a' + (i % 26) as u8).collect();
    let r = post(&env, "/services/hello/echo/small", small.clone()).await;
    r.assert_from_main();
    assert_eq!(r.json()["body_len"], 512);
    let r = post(
        &env,
        "/services/hello/echo/small-streamed",
        streamed(b't', 512, 128),
    )
    .await;
    r.assert_from_main();
    assert_eq!(r.json()["body_len"], 512);
    let copy = recorder
        .wait_for("the small POST", |s| s.target == "/echo/small")
        .await;
    assert_eq!(copy.body, small);
    let copy = recorder
        .wait_for("the small streamed POST", |s| {
            s.target == "/echo/small-streamed"
        })
        .await;
    assert_eq!(copy.body, vec![b't'; 512]);

    let r = accounted_for(&env, "2.0.0", 4).await;
    assert_eq!(n(&r, "compared"), 2, "{r:#}");
    assert_eq!(
        (n(&r, "mirrored"), n(&r, "too_large"), n(&r, "dropped")),
        (2, 2, 0),
        "{r:#}"
    );
    let seen = recorder.seen();
    assert!(
        seen.iter().all(|s| !s.target.starts_with("/echo/big")),
        "a body over the limit was mirrored: {:?}",
        seen.iter()
            .map(|s| (&s.target, s.body.len()))
            .collect::<Vec<_>>()
    );
}

// -------------------------------------------------------- persistence

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn summary_counts_survive_a_restart() {
    let mut env = Env::start().await;
    env.deploy("hello", "1.0.0", &[], &[]).await.ok();
    env.deploy("hello", "2.0.0", &[], &[]).await.ok();
    env.cli(&["shadow", "compare", "hello", "--body-limit", "1024"])
        .await
        .ok();
    for _ in 0..6 {
        get(&env, "/services/hello/echo/before")
            .await
            .assert_from_main();
    }
    post(&env, "/services/hello/echo/big", vec![b'b'; 4096])
        .await
        .assert_from_main();
    let before = accounted_for(&env, "2.0.0", 7).await;
    assert_eq!(
        (n(&before, "compared"), n(&before, "too_large")),
        (6, 1),
        "{before:#}"
    );
    assert_eq!(diffs(&before, "$.version"), 6, "{before:#}");

    let (proxy_addr, admin_addr) = (
        env.serve().proxy_addr.clone(),
        env.serve().admin_addr.clone(),
    );
    env.stop().await;
    env.launch(&proxy_addr, &admin_addr).await;

    let after = report(&env, "2.0.0").await;
    for key in [
        "mirrored",
        "compared",
        "matched",
        "dropped",
        "too_large",
        "shadow_errors",
        "noise_compared",
        "since",
    ] {
        assert_eq!(after[key], before[key], "{key}: {before:#}\n{after:#}");
    }
    assert_eq!(after["match_rate"], before["match_rate"]);
    assert_eq!(diffs(&after, "$.version"), 6, "{after:#}");

    // And they keep counting.
    for _ in 0..3 {
        get(&env, "/services/hello/echo/after")
            .await
            .assert_from_main();
    }
    let r = accounted_for(&env, "2.0.0", 10).await;
    assert_eq!(n(&r, "compared"), 9, "{r:#}");
    assert_eq!(n(&r, "mirrored"), 9, "{r:#}");
    assert_eq!(diffs(&r, "$.version"), 9, "{r:#}");
}

/// The shadow summary of hello `version` that serve last saved in its
/// store, read straight from the SQLite file.
fn saved_summary(env: &Env, version: &str) -> Option<Value> {
    let db = rusqlite::Connection::open_with_flags(
        env.state_dir.join("switchyard.db"),
        rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY,
    )
    .expect("open the state database");
    let json: Option<String> = db
        .query_row(
            "SELECT stats FROM shadow_stats WHERE service = 'hello' AND version = ?1",
            [version],
            |row| row.get(0),
        )
        .ok();
    json.map(|j| serde_json::from_str(&j).expect("the saved summary is JSON"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn summaries_are_saved_every_few_seconds_and_survive_kill_9() {
    let mut env = Env::start().await;
    env.deploy("hello", "1.0.0", &["--replicas", "2"], &[])
        .await
        .ok();
    env.deploy("hello", "2.0.0", &[], &[]).await.ok();
    env.cli(&["shadow", "compare", "hello", "--noise", "100"])
        .await
        .ok();
    for _ in 0..3 {
        get(&env, "/services/hello/").await.assert_from_main();
    }
    let before = report_until(&env, "2.0.0", "the comparisons and noise samples", |r| {
        n(r, "compared") >= 3 && n(r, "noise_compared") >= 3 && settled(r)
    })
    .await;
    assert_eq!(
        (n(&before, "compared"), n(&before, "noise_compared")),
        (3, 3),
        "{before:#}"
    );
    // Nothing stops serve: the save that puts these counts in the store is
    // the periodic one.
    env.eventually("serve saves the summary", WAIT, || async {
        saved_summary(&env, "2.0.0").is_some_and(|saved| {
            saved["compared"] == before["compared"]
                && saved["noise_compared"] == before["noise_compared"]
        })
    })
    .await;

    // kill -9: no save on the way out.
    env.kill9_and_restart().await;
    let after = report(&env, "2.0.0").await;
    for key in ["mirrored", "compared", "matched", "noise_compared"] {
        assert_eq!(after[key], before[key], "{key}: {before:#}\n{after:#}");
    }
}
