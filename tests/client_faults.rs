//! The request's fault told apart from the release's, end to end through
//! the real binary: bad, slow and abandoned uploads are the client's
//! (400, 408, 499) and never roll back a healthy canary; an upstream that
//! stalls is timed out and counted against its release; requests whose
//! framing or headers are ambiguous are refused; what a client says about
//! its own address does not reach the upstream.

mod support;

use std::time::{Duration, Instant};

use serde_json::Value;
use support::load::{Clients, Load};
use support::metrics::Metrics;
use support::raw_http::{connect, read_response};
use support::{Env, within};
use tokio::io::{AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

/// The bound on every wait: generous, so a slow machine only slows tests.
const WAIT: Duration = Duration::from_secs(30);
/// The bound on a whole rollout of a few short intervals.
const ROLLOUT_WAIT: Duration = Duration::from_secs(90);

// ---------------------------------------------------------------- helpers

/// The releases of `hello`.
const V1: (&str, &str) = ("hello", "1.0.0");
const V2: (&str, &str) = ("hello", "2.0.0");

async fn metrics(env: &Env) -> Metrics {
    Metrics::scrape(env).await
}

/// Sends raw bytes on a new connection to the proxy.
async fn send_raw(env: &Env, bytes: &[u8]) -> BufReader<TcpStream> {
    let mut conn = connect(env, WAIT).await;
    within(WAIT, "send raw bytes", conn.get_mut().write_all(bytes))
        .await
        .expect("write to the proxy");
    conn
}

/// Reads what is left on a connection until the proxy closes it; errors
/// (a reset) count as closed.
async fn rest_until_closed(conn: &mut BufReader<TcpStream>) -> Vec<u8> {
    let mut rest = Vec::new();
    let _ = within(
        WAIT,
        "the proxy to close the connection",
        conn.read_to_end(&mut rest),
    )
    .await;
    rest
}

/// Sends `raw` and expects the proxy to answer it itself with `status`
/// and the error `code`, naming `cause`, and to close the connection.
async fn refused(env: &Env, raw: &[u8], status: u16, code: &str, cause: &str) {
    let mut conn = send_raw(env, raw).await;
    let response = read_response(&mut conn, false, WAIT).await;
    assert_eq!(response.status, status, "{response:?}");
    assert_eq!(response.header("x-switchyard-error"), Some(code));
    // The cause is the operator's: in serve's log under the request's id.
    let hint = env
        .hint_for(response.header("x-request-id").unwrap_or_default())
        .await;
    assert!(hint.contains(cause), "serve's log names `{cause}`: {hint}");
    rest_until_closed(&mut conn).await;
}

/// A series of a release and the value it should have: family, release,
/// the family's own label if it has one, value.
type Count<'a> = (&'a str, (&'a str, &'a str), Option<(&'a str, &'a str)>, u64);

/// Asserts the value of each series on the page.
fn assert_counts(text: &Metrics, expected: &[Count]) {
    for (family, release, label, count) in expected {
        assert_eq!(
            text.release(family, *release, *label),
            *count,
            "{family} {release:?} {label:?} in:\n{text}"
        );
    }
}

/// An upload with a chunk size that is no hexadecimal number.
fn bad_chunked_upload(user: &str) -> Vec<u8> {
    format!(
        "POST /services/hello/echo HTTP/1.1\r\nHost: hello.test\r\nx-user-id: {user}\r\n\
         Transfer-Encoding: chunked\r\n\r\nzz\r\nhello\r\n0\r\n\r\n"
    )
    .into_bytes()
}

/// The head and the first bytes of an upload announced at 100,000 bytes.
fn partial_upload(user: &str) -> Vec<u8> {
    format!(
        "POST /services/hello/echo HTTP/1.1\r\nHost: hello.test\r\nx-user-id: {user}\r\n\
         Content-Length: 100000\r\n\r\nten bytes!"
    )
    .into_bytes()
}

/// Polls the rollout until it ends (succeeded, failed or aborted).
async fn rollout_end(env: &Env) -> Value {
    let deadline = Instant::now() + ROLLOUT_WAIT;
    loop {
        let run = env
            .cli(&["rollout", "status", "hello", "--json"])
            .await
            .ok();
        let view: Value = serde_json::from_str(&run.stdout).expect("rollout status is JSON");
        let state = view["state"]["status"]["state"]
            .as_str()
            .unwrap_or_default();
        if ["succeeded", "failed", "aborted"].contains(&state) {
            return view;
        }
        assert!(
            Instant::now() < deadline,
            "the rollout did not end within {ROLLOUT_WAIT:?}: {view:#}\nserve log:\n{}",
            env.serve_log()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

// ------------------------------------------------ the client's faults

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_and_aborted_uploads_during_a_rollout_do_not_roll_back_a_healthy_canary() {
    let env = Env::start().await;
    env.deploy("hello", "1.0.0", &[], &[]).await.ok();
    env.deploy("hello", "2.0.0", &["--standby"], &[]).await.ok();

    // Clients of both releases, answered by either, never failing...
    let clients = Clients::new(&env.serve().proxy_addr, 2);
    let traffic = Load::start(2, move |worker, n| {
        let clients = clients.clone();
        async move {
            let user = format!("user-{}", (n * 2 + worker) % 100);
            let answer = clients
                .get_with(worker, "/services/hello/", &[("x-user-id", &user)])
                .await;
            tokio::time::sleep(Duration::from_millis(10)).await;
            answer.map(|(status, _, _)| status)
        }
    });
    // ...and clients that send broken chunks or walk away mid-upload.
    let proxy = env.serve().proxy_addr.clone();
    let abuse = Load::start(2, move |worker, n| {
        let proxy = proxy.clone();
        async move {
            let user = format!("user-{}", (n * 2 + worker) % 100);
            let mut conn = BufReader::new(
                TcpStream::connect(&proxy)
                    .await
                    .expect("connect to the proxy"),
            );
            let status = if worker == 0 {
                conn.get_mut()
                    .write_all(&bad_chunked_upload(&user))
                    .await
                    .expect("send a bad upload");
                Some(read_response(&mut conn, false, WAIT).await.status)
            } else {
                conn.get_mut()
                    .write_all(&partial_upload(&user))
                    .await
                    .expect("send half an upload");
                None
            };
            drop(conn);
            tokio::time::sleep(Duration::from_millis(20)).await;
            status
        }
    });

    env.cli(&[
        "rollout",
        "hello",
        "2.0.0",
        "--steps",
        "50,100",
        "--interval",
        "2s",
        "--min-requests",
        "10",
        "--sticky-header",
        "x-user-id",
    ])
    .await
    .ok();
    let view = rollout_end(&env).await;
    let bad = abuse.finish_within(WAIT).await;
    let good = traffic.finish_within(WAIT).await;

    assert_eq!(
        view["state"]["status"]["state"], "succeeded",
        "the healthy canary was promoted: {view:#}"
    );
    let failed: Vec<_> = good.iter().filter(|a| !matches!(a, Ok(200))).collect();
    assert!(failed.is_empty(), "clients failed: {failed:?}");
    let refused: Vec<u16> = bad.iter().flatten().copied().collect();
    assert!(!refused.is_empty());
    assert!(
        refused.iter().all(|s| *s == 400),
        "bad chunks get 400: {refused:?}"
    );

    let text = metrics(&env).await;
    assert_counts(
        &text,
        &[
            ("switchyard_requests_total", V1, Some(("class", "5xx")), 0),
            ("switchyard_requests_total", V2, Some(("class", "5xx")), 0),
            ("switchyard_upstream_errors_total", V1, None, 0),
            ("switchyard_upstream_errors_total", V2, None, 0),
        ],
    );
    for fault in ["bad_body", "aborted"] {
        let faults = text.release("switchyard_client_faults_total", V2, Some(("fault", fault)));
        assert!(faults > 0, "{fault} uploads on the canary: {text}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_chunk_size_gets_400_and_is_not_counted_against_the_release() {
    let env = Env::start().await;
    env.deploy("hello", "1.0.0", &[], &[]).await.ok();

    refused(&env, &bad_chunked_upload("one"), 400, "bad-body", "chunk").await;

    let faults = "switchyard_client_faults_total";
    let requests = "switchyard_requests_total";
    assert_counts(
        &metrics(&env).await,
        &[
            (faults, V1, Some(("fault", "bad_body")), 1),
            (requests, V1, Some(("class", "4xx")), 0),
            (requests, V1, Some(("class", "5xx")), 0),
            ("switchyard_upstream_errors_total", V1, None, 0),
        ],
    );
    let (status, version, _) = env.get("/services/hello/").await;
    assert_eq!((status, version.as_str()), (200, "1.0.0"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_body_gets_408_and_frees_its_upstream_connection() {
    let env = Env::start_with(&["--client-body-min-rate", "100/1s"]).await;
    env.deploy("hello", "1.0.0", &[], &[]).await.ok();

    // Ten bytes of a hundred thousand, then nothing.
    refused(
        &env,
        &partial_upload("slow"),
        408,
        "slow-body",
        "--client-body-min-rate",
    )
    .await;

    assert_counts(
        &metrics(&env).await,
        &[
            (
                "switchyard_client_faults_total",
                V1,
                Some(("fault", "slow_body")),
                1,
            ),
            (
                "switchyard_requests_in_flight",
                V1,
                Some(("role", "main")),
                0,
            ),
            ("switchyard_requests_total", V1, Some(("class", "5xx")), 0),
            (
                "switchyard_upstream_timeouts_total",
                V1,
                Some(("phase", "header")),
                0,
            ),
        ],
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upload_longer_than_the_upstream_timeout_lives_while_it_keeps_the_floor() {
    let env =
        Env::start_with(&["--client-body-min-rate", "1/2s", "--upstream-timeout", "1s"]).await;
    env.deploy("hello", "1.0.0", &[], &[]).await.ok();

    let mut conn = send_raw(
        &env,
        b"POST /services/hello/echo HTTP/1.1\r\nHost: hello.test\r\nTransfer-Encoding: chunked\r\n\r\n",
    )
    .await;
    // Three seconds of upload, three times the upstream's time to answer.
    let started = Instant::now();
    let mut sent = 0;
    while started.elapsed() < Duration::from_secs(3) {
        conn.get_mut()
            .write_all(b"3\r\nabc\r\n")
            .await
            .expect("send a chunk");
        sent += 3;
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    conn.get_mut()
        .write_all(b"0\r\n\r\n")
        .await
        .expect("end the upload");
    let response = read_response(&mut conn, false, WAIT).await;
    assert_eq!(
        response.status,
        200,
        "{}",
        String::from_utf8_lossy(&response.body)
    );
    let echo: Value = serde_json::from_slice(&response.body).expect("echo JSON");
    assert_eq!(echo["body_len"], sent);
}

// -------------------------------------------------- the upstream's faults

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_that_stops_mid_body_is_cut_and_counted_against_the_release() {
    let env = Env::start_with(&["--upstream-body-min-rate", "1/1s"]).await;
    env.deploy("hello", "1.0.0", &[], &[]).await.ok();

    // One event at once, the next in ten minutes.
    let response = within(
        WAIT,
        "the stream's headers",
        env.http
            .get(format!(
                "{}/services/hello/sse?n=2&interval_ms=600000",
                env.proxy()
            ))
            .send(),
    )
    .await
    .expect("headers through the proxy");
    assert_eq!(response.status(), 200);
    let body = within(WAIT, "the proxy to cut the stalled body", response.bytes()).await;
    assert!(body.is_err(), "the body was cut, not ended: {body:?}");

    assert_counts(
        &metrics(&env).await,
        &[
            (
                "switchyard_upstream_timeouts_total",
                V1,
                Some(("phase", "body")),
                1,
            ),
            ("switchyard_broken_responses_total", V1, None, 1),
            (
                "switchyard_requests_in_flight",
                V1,
                Some(("role", "main")),
                0,
            ),
        ],
    );
    let status: Value =
        serde_json::from_str(&env.cli(&["status", "hello", "--json"]).await.ok().stdout)
            .expect("status --json is JSON");
    assert_eq!(
        status[0]["last_minute"]["errors"], 1,
        "an error of the release: {status:#}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_that_does_not_answer_gets_504_counted_as_a_header_timeout() {
    let env = Env::start_with(&["--upstream-timeout", "500ms"]).await;
    env.deploy("hello", "1.0.0", &[], &["--latency-ms", "20000"])
        .await
        .ok();

    let (status, _, body) = env.get("/services/hello/").await;
    assert_eq!(status, 504, "{body}");

    assert_counts(
        &metrics(&env).await,
        &[
            (
                "switchyard_upstream_timeouts_total",
                V1,
                Some(("phase", "header")),
                1,
            ),
            ("switchyard_requests_total", V1, Some(("class", "5xx")), 1),
            ("switchyard_upstream_errors_total", V1, None, 1),
        ],
    );
}

// ------------------------------------------- ambiguous requests, headers

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_host_headers_get_400() {
    let env = Env::start().await;
    env.deploy("hello", "1.0.0", &[], &[]).await.ok();

    let mut conn = send_raw(
        &env,
        b"GET /services/hello/ HTTP/1.1\r\nHost: a.example\r\nHost: b.example\r\n\r\n",
    )
    .await;
    let response = read_response(&mut conn, false, WAIT).await;
    assert_eq!(response.status, 400, "{response:?}");
    assert_eq!(response.header("x-switchyard-error"), Some("bad-request"));
    let hint = env
        .hint_for(response.header("x-request-id").unwrap_or_default())
        .await;
    assert!(hint.contains("Host"), "{hint}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_forwarded_and_real_ip_do_not_reach_the_upstream() {
    let env = Env::start().await;
    env.deploy("hello", "1.0.0", &[], &[]).await.ok();

    let reply = support::reply(
        env.http
            .get(format!("{}/services/hello/echo", env.proxy()))
            .header("forwarded", "for=6.6.6.6;proto=https")
            .header("x-real-ip", "6.6.6.6")
            .header("x-forwarded-for", "10.1.2.3"),
        WAIT,
    )
    .await;
    assert_eq!(reply.status, 200, "{}", reply.body);
    let echo = reply.json();
    let headers = &echo["headers"];
    assert!(headers["forwarded"].is_null(), "{echo:#}");
    assert_eq!(headers["x-real-ip"], serde_json::json!(["127.0.0.1"]));
    assert_eq!(
        headers["x-forwarded-for"],
        serde_json::json!(["10.1.2.3, 127.0.0.1"])
    );
}

/// hyper refuses these before Switchyard sees them; this pins it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conflicting_content_lengths_and_folded_header_lines_get_400() {
    let env = Env::start().await;
    env.deploy("hello", "1.0.0", &[], &[]).await.ok();

    for request in [
        &b"POST /services/hello/echo HTTP/1.1\r\nHost: h\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello!"[..],
        b"GET /services/hello/echo HTTP/1.1\r\nHost: h\r\nX-Folded: a\r\n b\r\n\r\n",
    ] {
        let mut conn = send_raw(&env, request).await;
        let response = read_response(&mut conn, false, WAIT).await;
        assert_eq!(
            response.status,
            400,
            "{}: {response:?}",
            String::from_utf8_lossy(request)
        );
        rest_until_closed(&mut conn).await;
    }
    assert_counts(
        &metrics(&env).await,
        &[("switchyard_requests_total", V1, Some(("class", "2xx")), 0)],
    );
}

/// With both, the body is read by its chunks alone and the connection is
/// closed after the answer (RFC 9112 6.3), so no second request hides in
/// the first one's body; hyper does it, this pins it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn content_length_beside_chunked_is_read_as_chunked_and_closes_the_connection() {
    let env = Env::start().await;
    env.deploy("hello", "1.0.0", &[], &[]).await.ok();

    let mut conn = send_raw(
        &env,
        b"POST /services/hello/echo HTTP/1.1\r\nHost: h\r\nContent-Length: 40\r\n\
          Transfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n\
          GET /services/hello/smuggled HTTP/1.1\r\nHost: h\r\n\r\n",
    )
    .await;
    let response = read_response(&mut conn, false, WAIT).await;
    assert_eq!(response.status, 200, "{response:?}");
    let echo: Value = serde_json::from_slice(&response.body).expect("echo JSON");
    assert_eq!(echo["body"], "abc");
    assert!(echo["headers"]["content-length"].is_null(), "{echo:#}");
    let rest = rest_until_closed(&mut conn).await;
    assert!(
        rest.is_empty(),
        "nothing answered the smuggled request: {}",
        String::from_utf8_lossy(&rest)
    );
    assert_counts(
        &metrics(&env).await,
        &[("switchyard_requests_total", V1, Some(("class", "2xx")), 1)],
    );
}
