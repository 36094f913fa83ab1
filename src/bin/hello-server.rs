//! `hello-server`: a small HTTP test service for Switchyard's end-to-end tests and README.
//!
//! It speaks HTTP/1.1 and cleartext HTTP/2 (h2c, prior knowledge) on `--host`:`--port`.
//!
//! # Flags
//!
//! * `--port N` (env `PORT`, required): port to listen on; `0` picks a free one.
//! * `--host ADDR` (default `127.0.0.1`): address to listen on.
//! * `--version V` (env `SWITCHYARD_VERSION`, default `0.0.0`): version to report.
//! * `--latency-ms N` (default 0): sleep N ms before answering any request but `/healthz`.
//! * `--fail-health-for SECS` (default 0): `/healthz` answers 503 for the first SECS seconds.
//! * `--fail-rate F` (0.0..=1.0, default 0): fraction of non-health requests answered with 500.
//!   Deterministic: the n-th such request (from 1) fails when `floor(n*F) != floor((n-1)*F)`.
//! * `--exit-after SECS`: exit with code 3 after SECS seconds.
//! * `--exit-immediately`: exit with `--exit-code` (default 1) before binding anything.
//! * `--ignore-sigterm`: ignore SIGTERM, so a supervisor has to escalate to SIGKILL.
//!
//! The environment variable `SWITCHYARD_INSTANCE` (default `0`) names the instance.
//!
//! SIGTERM (unless ignored) or SIGINT stops accepting connections, lets in-flight requests
//! finish and exits 0; a second such signal during that drain exits 1 at once.
//!
//! # Endpoints
//!
//! * `GET /healthz`: 200 `ok\n`; 503 `starting\n` during `--fail-health-for`, and 503
//!   `failing\n` while failing on request (below).
//! * `POST /control/health/fail`: from now on `/healthz` answers 503, until
//!   `POST /control/health/ok` makes it answer 200 again (as far as `--fail-health-for` allows).
//!   Both answer 200; other methods get 405. They are exempt from `--latency-ms` and
//!   `--fail-rate`, so a test can always reach them.
//! * `/`: JSON `{"service","version","instance","pid","port"}`.
//! * `/echo`, `/echo/...`: JSON with version, instance, method, path (with query), headers,
//!   body (UTF-8, lossy) and `body_len`.
//! * `/status/{code}`: that status (200..=999) with body `status {code}\n`.
//! * `/sse?n=N&interval_ms=M`: N events `data: {i}\n\n` (i = 1..=N), one every M ms,
//!   the first at once (defaults 5 and 100).
//! * `/bytes?n=N`: N bytes of `x`.
//! * `/ws`: with `Connection: upgrade` and an `Upgrade` header, 101 (with `x-seen-forwarded-for`,
//!   `x-seen-forwarded-prefix` and `x-seen-request-id`: each field's lines in the request,
//!   joined by ` | `) and then an echo
//!   of the raw upgraded connection until EOF; otherwise 400.
//! * anything else: 404 `not found\n`.
//!
//! Every response has `x-served-by: hello/{version}/{instance}`, and every request is logged to
//! stdout as `{method} {path} -> {status}`, except health probes (`/healthz`): only one whose
//! status differs from the probe before it is logged (the first, and each change).

use std::convert::Infallible;
use std::io::Write as _;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU16, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use clap::Parser;
use http::header::{CONNECTION, CONTENT_TYPE, HeaderValue, UPGRADE};
use http::{Method, Request, Response, StatusCode};
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Full, Limited, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::signal::unix::{Signal, SignalKind, signal};

/// Response body type used by every handler.
type Body = UnsyncBoxBody<Bytes, Infallible>;

/// Largest request body `/echo` reads.
const MAX_ECHO_BODY: usize = 64 * 1024 * 1024;
/// Largest body `/bytes` produces.
const MAX_BYTES: usize = 256 * 1024 * 1024;
/// Largest event count `/sse` streams.
const MAX_SSE_EVENTS: u64 = 1_000_000;

#[derive(Debug, Parser)]
#[command(
    name = "hello-server",
    about = "Small HTTP test service for Switchyard"
)]
struct Args {
    /// Port to listen on (0 picks a free one).
    #[arg(long, env = "PORT")]
    port: u16,
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1")]
    host: std::net::IpAddr,
    /// Version to report.
    #[arg(long, env = "SWITCHYARD_VERSION", default_value = "0.0.0")]
    version: String,
    /// Milliseconds to sleep before answering any request except /healthz.
    #[arg(long, default_value_t = 0)]
    latency_ms: u64,
    /// /healthz answers 503 for this many seconds after start.
    #[arg(long, default_value_t = 0)]
    fail_health_for: u64,
    /// Exit with code 3 after this many seconds.
    #[arg(long)]
    exit_after: Option<u64>,
    /// Exit with --exit-code before binding anything.
    #[arg(long)]
    exit_immediately: bool,
    /// Exit code for --exit-immediately.
    #[arg(long, default_value_t = 1)]
    exit_code: i32,
    /// Fraction (0.0..=1.0) of non-health requests that answer 500.
    #[arg(long, default_value_t = 0.0, value_parser = parse_fraction)]
    fail_rate: f64,
    /// Ignore SIGTERM (a supervisor must escalate to SIGKILL).
    #[arg(long)]
    ignore_sigterm: bool,
    /// API majors served, e.g. `v1,v2`: a request whose `x-api-version`
    /// header names another major gets 406, so a wrong route shows.
    #[arg(long, value_delimiter = ',')]
    api_versions: Vec<String>,
}

/// The major of an API version as a client names it (`v2`, `2`, `2.0`).
fn api_major(text: &str) -> Option<u32> {
    let t = text.trim();
    let t = t.strip_prefix(['v', 'V']).unwrap_or(t);
    t.split('.').next()?.parse().ok()
}

/// Parses a number in 0.0..=1.0 for `--fail-rate`.
fn parse_fraction(s: &str) -> Result<f64, String> {
    let f: f64 = s.parse().map_err(|e| format!("not a number: {e}"))?;
    if (0.0..=1.0).contains(&f) {
        Ok(f)
    } else {
        Err(format!("{f} is not in 0.0..=1.0"))
    }
}

/// What every request handler needs to know.
struct State {
    version: String,
    instance: String,
    served_by: HeaderValue,
    port: u16,
    started: Instant,
    latency: Duration,
    fail_health_for: Duration,
    fail_rate: f64,
    /// Number of non-health requests seen so far, for `--fail-rate`.
    requests: AtomicU64,
    /// Set by `POST /control/health/fail`, cleared by `POST /control/health/ok`.
    health_failing: AtomicBool,
    /// The status of the last health probe (0 before the first).
    last_health: AtomicU16,
    /// API majors served (`--api-versions`); empty serves any.
    api_majors: Vec<u32>,
}

impl State {
    /// Whether the next non-health request should fail, per `--fail-rate`.
    fn next_request_fails(&self) -> bool {
        let n = self.requests.fetch_add(1, Ordering::Relaxed) + 1;
        // Precision loss only past 2^53 requests, which is fine for a test service.
        #[allow(clippy::cast_precision_loss)]
        let (now, before) = (n as f64 * self.fail_rate, (n - 1) as f64 * self.fail_rate);
        now.floor() != before.floor()
    }
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let args = Args::parse();
    if args.exit_immediately {
        eprintln!("hello-server: exiting at once as asked (--exit-immediately)");
        std::process::exit(args.exit_code);
    }
    if let Err(e) = run(args).await {
        eprintln!("hello-server: {e}");
        std::process::exit(1);
    }
}

/// Binds, serves until a shutdown signal, then drains in-flight requests.
async fn run(args: Args) -> std::io::Result<()> {
    // Install the signal handlers before binding, so no signal arrives unhandled.
    let mut signals = ShutdownSignals::new(args.ignore_sigterm)?;
    let listener = TcpListener::bind(SocketAddr::new(args.host, args.port)).await?;
    let addr = listener.local_addr()?;
    let state = Arc::new(make_state(&args, addr.port())?);
    log_line(&format!(
        "hello-server {} listening on {addr}",
        state.version
    ));
    if let Some(secs) = args.exit_after {
        tokio::spawn(exit_after(secs));
    }

    let builder = auto::Builder::new(TokioExecutor::new());
    let graceful = GracefulShutdown::new();
    let signal_name = loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => serve_connection(&builder, &graceful, &state, stream),
                Err(e) => {
                    eprintln!("hello-server: accept failed: {e}");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            },
            name = signals.next() => break name,
        }
    };
    drop(listener);
    eprintln!("hello-server: {signal_name} received, draining in-flight requests");
    tokio::select! {
        () = graceful.shutdown() => {
            eprintln!("hello-server: drained, exiting");
            Ok(())
        }
        name = signals.next() => {
            eprintln!("hello-server: second {name} received, exiting without draining");
            std::process::exit(1);
        }
    }
}

/// Builds the shared state from the flags, the environment and the bound port.
fn make_state(args: &Args, port: u16) -> std::io::Result<State> {
    let instance = std::env::var("SWITCHYARD_INSTANCE").unwrap_or_else(|_| "0".to_owned());
    let served_by = HeaderValue::try_from(format!("hello/{}/{instance}", args.version))
        .map_err(|e| std::io::Error::other(format!("bad version or instance: {e}")))?;
    Ok(State {
        version: args.version.clone(),
        instance,
        served_by,
        port,
        started: Instant::now(),
        latency: Duration::from_millis(args.latency_ms),
        fail_health_for: Duration::from_secs(args.fail_health_for),
        fail_rate: args.fail_rate,
        requests: AtomicU64::new(0),
        health_failing: AtomicBool::new(false),
        last_health: AtomicU16::new(0),
        api_majors: args
            .api_versions
            .iter()
            .map(|v| {
                api_major(v).ok_or_else(|| {
                    std::io::Error::other(format!("--api-versions: `{v}` is not like v2"))
                })
            })
            .collect::<std::io::Result<_>>()?,
    })
}

/// Sleeps `secs` seconds, then exits the process with code 3.
async fn exit_after(secs: u64) {
    tokio::time::sleep(Duration::from_secs(secs)).await;
    eprintln!("exiting after {secs} s");
    let _ = std::io::stdout().flush();
    std::process::exit(3);
}

/// SIGINT and SIGTERM, with SIGTERM optionally ignored.
struct ShutdownSignals {
    interrupt: Signal,
    terminate: Signal,
    ignore_sigterm: bool,
}

impl ShutdownSignals {
    fn new(ignore_sigterm: bool) -> std::io::Result<Self> {
        // Listening for SIGTERM replaces its default action even when it is ignored below.
        Ok(Self {
            interrupt: signal(SignalKind::interrupt())?,
            terminate: signal(SignalKind::terminate())?,
            ignore_sigterm,
        })
    }

    /// Waits for the next signal that should shut the server down, and names it.
    async fn next(&mut self) -> &'static str {
        loop {
            tokio::select! {
                _ = self.interrupt.recv() => return "SIGINT",
                _ = self.terminate.recv() => {
                    if !self.ignore_sigterm {
                        return "SIGTERM";
                    }
                    eprintln!("hello-server: ignoring SIGTERM (--ignore-sigterm)");
                }
            }
        }
    }
}

/// Serves one accepted connection on its own task, watched for graceful shutdown.
fn serve_connection(
    builder: &auto::Builder<TokioExecutor>,
    graceful: &GracefulShutdown,
    state: &Arc<State>,
    stream: tokio::net::TcpStream,
) {
    let state = Arc::clone(state);
    let service = service_fn(move |req| handle(Arc::clone(&state), req));
    let conn = builder
        .serve_connection_with_upgrades(TokioIo::new(stream), service)
        .into_owned();
    let conn = graceful.watch(conn);
    tokio::spawn(async move {
        if let Err(e) = conn.await {
            eprintln!("hello-server: connection error: {e}");
        }
    });
}

/// Answers one request: routes it, stamps `x-served-by` and logs it
/// (a health probe only when its answer changed).
async fn handle(state: Arc<State>, req: Request<Incoming>) -> Result<Response<Body>, Infallible> {
    let method = req.method().clone();
    let path = req.uri().path().to_owned();
    let mut resp = route(&state, req).await;
    resp.headers_mut()
        .insert("x-served-by", state.served_by.clone());
    let status = resp.status().as_u16();
    // Health probes come every second or so and would bury the requests:
    // only a change of their answer is worth a line.
    let quiet = path == "/healthz" && state.last_health.swap(status, Ordering::Relaxed) == status;
    if !quiet {
        log_line(&format!("{method} {path} -> {status}"));
    }
    Ok(resp)
}

/// Picks the endpoint for a request, applying latency and injected failures.
async fn route(state: &State, req: Request<Incoming>) -> Response<Body> {
    let path = req.uri().path().to_owned();
    if path == "/healthz" {
        return healthz(state);
    }
    if let Some(action) = path.strip_prefix("/control/health/") {
        return control_health(state, req.method(), action);
    }
    if !state.latency.is_zero() {
        tokio::time::sleep(state.latency).await;
    }
    if state.next_request_fails() {
        return text(StatusCode::INTERNAL_SERVER_ERROR, "injected failure\n");
    }
    if !state.api_majors.is_empty() {
        let asked = req
            .headers()
            .get("x-api-version")
            .and_then(|v| v.to_str().ok());
        if let Some(asked) = asked {
            if !api_major(asked).is_some_and(|m| state.api_majors.contains(&m)) {
                return text(
                    StatusCode::NOT_ACCEPTABLE,
                    &format!("hello {} does not serve API {asked}\n", state.version),
                );
            }
        }
    }
    let query = req.uri().query().unwrap_or("").to_owned();
    match path.as_str() {
        "/" => root(state),
        "/sse" => sse(&query),
        "/bytes" => bytes_body(&query),
        "/ws" => websocket_echo(req),
        p if p == "/echo" || p.starts_with("/echo/") => echo(state, req).await,
        p if p.starts_with("/status/") => status(&p["/status/".len()..]),
        _ => text(StatusCode::NOT_FOUND, "not found\n"),
    }
}

fn healthz(state: &State) -> Response<Body> {
    if state.started.elapsed() < state.fail_health_for {
        text(StatusCode::SERVICE_UNAVAILABLE, "starting\n")
    } else if state.health_failing.load(Ordering::Relaxed) {
        text(StatusCode::SERVICE_UNAVAILABLE, "failing\n")
    } else {
        text(StatusCode::OK, "ok\n")
    }
}

/// `POST /control/health/{fail,ok}`: makes `/healthz` fail, or pass again.
fn control_health(state: &State, method: &Method, action: &str) -> Response<Body> {
    let failing = match action {
        "fail" => true,
        "ok" => false,
        _ => return text(StatusCode::NOT_FOUND, "not found\n"),
    };
    if method != Method::POST {
        let mut resp = text(StatusCode::METHOD_NOT_ALLOWED, "use POST\n");
        resp.headers_mut()
            .insert(http::header::ALLOW, HeaderValue::from_static("POST"));
        return resp;
    }
    state.health_failing.store(failing, Ordering::Relaxed);
    let body = if failing {
        "/healthz fails from now on\n"
    } else {
        "/healthz passes again\n"
    };
    text(StatusCode::OK, body)
}

fn root(state: &State) -> Response<Body> {
    json_response(&json!({
        "service": "hello",
        "version": state.version,
        "instance": state.instance,
        "pid": std::process::id(),
        "port": state.port,
    }))
}

/// Echoes the request back as JSON, after reading its whole body.
async fn echo(state: &State, req: Request<Incoming>) -> Response<Body> {
    let (parts, body) = req.into_parts();
    let body = match Limited::new(body, MAX_ECHO_BODY).collect().await {
        Ok(collected) => collected.to_bytes(),
        Err(e) => {
            return text(
                StatusCode::PAYLOAD_TOO_LARGE,
                &format!("cannot read body: {e}\n"),
            );
        }
    };
    let mut headers = serde_json::Map::new();
    for name in parts.headers.keys() {
        let values: Vec<String> = parts
            .headers
            .get_all(name)
            .iter()
            .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
            .collect();
        headers.insert(name.as_str().to_owned(), json!(values));
    }
    let path = parts
        .uri
        .path_and_query()
        .map_or_else(|| parts.uri.path().to_owned(), ToString::to_string);
    json_response(&json!({
        "version": state.version,
        "instance": state.instance,
        "method": parts.method.as_str(),
        "path": path,
        "headers": headers,
        "body": String::from_utf8_lossy(&body),
        "body_len": body.len(),
    }))
}

/// Answers with the status code named in the path.
fn status(code: &str) -> Response<Body> {
    match code
        .parse::<u16>()
        .ok()
        .and_then(|c| StatusCode::from_u16(c).ok())
    {
        Some(code) if code.as_u16() >= 200 => text(code, &format!("status {}\n", code.as_u16())),
        _ => text(StatusCode::BAD_REQUEST, "bad status code\n"),
    }
}

/// Streams `n` server-sent events, one every `interval_ms`, each in its own frame.
fn sse(query: &str) -> Response<Body> {
    let (Some(n), Some(interval_ms)) = (
        query_u64(query, "n", 5),
        query_u64(query, "interval_ms", 100),
    ) else {
        return text(StatusCode::BAD_REQUEST, "bad query\n");
    };
    if n > MAX_SSE_EVENTS {
        return text(StatusCode::BAD_REQUEST, "n too large\n");
    }
    let (tx, rx) = tokio::sync::mpsc::channel::<Bytes>(1);
    tokio::spawn(async move {
        for i in 1..=n {
            if i > 1 {
                tokio::time::sleep(Duration::from_millis(interval_ms)).await;
            }
            if tx
                .send(Bytes::from(format!("data: {i}\n\n")))
                .await
                .is_err()
            {
                break; // The client went away.
            }
        }
    });
    let frames = futures_util::stream::unfold(rx, |mut rx| async move {
        let chunk = rx.recv().await?;
        Some((Ok(Frame::data(chunk)), rx))
    });
    let mut resp = Response::new(StreamBody::new(frames).boxed_unsync());
    resp.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("text/event-stream"));
    resp.headers_mut()
        .insert("cache-control", HeaderValue::from_static("no-cache"));
    resp
}

/// Answers with `n` bytes of `x`.
fn bytes_body(query: &str) -> Response<Body> {
    let n = query_u64(query, "n", 0).and_then(|n| usize::try_from(n).ok());
    match n {
        Some(n) if n <= MAX_BYTES => {
            let mut resp = Response::new(full(vec![b'x'; n]));
            resp.headers_mut().insert(
                CONTENT_TYPE,
                HeaderValue::from_static("application/octet-stream"),
            );
            resp
        }
        _ => text(StatusCode::BAD_REQUEST, "bad query\n"),
    }
}

/// Accepts an HTTP/1.1 upgrade and echoes raw bytes on the upgraded connection.
fn websocket_echo(mut req: Request<Incoming>) -> Response<Body> {
    let wants_upgrade = req.headers().get_all(CONNECTION).iter().any(|v| {
        v.to_str().is_ok_and(|s| {
            s.split(',')
                .any(|token| token.trim().eq_ignore_ascii_case("upgrade"))
        })
    });
    let Some(protocol) = req.headers().get(UPGRADE).cloned() else {
        return text(StatusCode::BAD_REQUEST, "upgrade required\n");
    };
    if !wants_upgrade {
        return text(StatusCode::BAD_REQUEST, "upgrade required\n");
    }
    let on_upgrade = hyper::upgrade::on(&mut req);
    tokio::spawn(async move {
        match on_upgrade.await {
            Ok(upgraded) => {
                if let Err(e) = echo_bytes(TokioIo::new(upgraded)).await {
                    eprintln!("hello-server: /ws echo failed: {e}");
                }
            }
            Err(e) => eprintln!("hello-server: /ws upgrade failed: {e}"),
        }
    });
    let mut resp = Response::new(empty());
    *resp.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    // What a proxy told this instance about the request, for tests to see.
    for (seen, name) in [
        ("x-seen-forwarded-for", "x-forwarded-for"),
        ("x-seen-forwarded-prefix", "x-forwarded-prefix"),
        ("x-seen-request-id", "x-request-id"),
    ] {
        // Every line the request had, so that a field sent twice shows.
        let lines: Vec<&str> = req
            .headers()
            .get_all(name)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .collect();
        if let Ok(value) = HeaderValue::from_str(&lines.join(" | ")) {
            if !lines.is_empty() {
                resp.headers_mut().insert(seen, value);
            }
        }
    }
    resp.headers_mut().insert(UPGRADE, protocol);
    resp.headers_mut()
        .insert(CONNECTION, HeaderValue::from_static("upgrade"));
    resp
}

/// Writes back every byte read from `io` until EOF, then closes the write side.
async fn echo_bytes<T>(mut io: T) -> std::io::Result<()>
where
    T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        let n = io.read(&mut buf).await?;
        if n == 0 {
            return io.shutdown().await;
        }
        io.write_all(&buf[..n]).await?;
        io.flush().await?;
    }
}

/// Reads `key` from a query string as a number: the default when absent, `None` when invalid.
fn query_u64(query: &str, key: &str, default: u64) -> Option<u64> {
    let value = query
        .split('&')
        .map(|pair| pair.split_once('=').unwrap_or((pair, "")))
        .find(|(k, _)| *k == key)
        .map(|(_, v)| v);
    match value {
        None => Some(default),
        Some(v) => v.parse().ok(),
    }
}

fn full(data: impl Into<Bytes>) -> Body {
    Full::new(data.into()).boxed_unsync()
}

fn empty() -> Body {
    full(Bytes::new())
}

fn text(status: StatusCode, body: &str) -> Response<Body> {
    let mut resp = Response::new(full(body.to_owned()));
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    resp
}

fn json_response(value: &serde_json::Value) -> Response<Body> {
    let mut resp = Response::new(full(value.to_string()));
    resp.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    resp
}

/// Prints one line to stdout and flushes it, ignoring a closed stdout.
fn log_line(line: &str) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{line}");
    let _ = out.flush();
}
