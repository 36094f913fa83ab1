//! The data plane end to end: a real serve proxying to real hello-server
//! instances, driven by reqwest (HTTP/1.1 and HTTP/2) and raw TCP.

mod support;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use serde_json::Value;
use support::own_server::OwnServer;
use support::raw_http::{connect, read_response};
use support::{Env, Reply, within};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpListener;

/// The bound on every wait: generous, so a slow machine only slows tests.
const WAIT: Duration = Duration::from_secs(30);

// ---------------------------------------------------------------- helpers

impl Reply {
    /// Asserts that the proxy itself answered with this error: the end
    /// user sees a neutral page (the status and the request's id, no
    /// operator hint), and serve's log names the cause under that id.
    async fn assert_proxy_error(&self, env: &Env, status: u16, code: &str, names: &[&str]) {
        assert_eq!(self.status, status, "body: {}", self.body);
        assert_eq!(
            self.header("x-switchyard-error"),
            Some(code),
            "body: {}",
            self.body
        );
        let id = self.header("x-request-id").unwrap_or_default();
        assert!(
            self.body.starts_with(&format!("{status} "))
                && self.body.contains(&format!("Request id: {id}\n")),
            "the page shows the status and the request id: {:?}",
            self.body
        );
        let hint = env.hint_for(id).await;
        for word in names {
            assert!(
                !self.body.contains(word),
                "the end user's page should not name `{word}`: {:?}",
                self.body
            );
            assert!(
                hint.contains(word),
                "serve's log should name `{word}` for request {id}: {hint}"
            );
        }
        assert!(
            !self.body.contains("switchyard"),
            "no operator hint for end users: {:?}",
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

/// Values of one header as hello-server's /echo saw them.
fn seen(echo: &Value, name: &str) -> Vec<String> {
    echo["headers"][name]
        .as_array()
        .map(|values| {
            values
                .iter()
                .map(|v| v.as_str().unwrap_or_default().to_owned())
                .collect()
        })
        .unwrap_or_default()
}

/// The instance named in hello-server's `x-served-by: hello/VERSION/INSTANCE`.
/// A client that speaks HTTP/2 from the first byte (no upgrade).
fn http2_client() -> reqwest::Client {
    support::http_client()
        .no_proxy()
        .http2_prior_knowledge()
        .build()
        .expect("HTTP/2 client")
}

fn served_by(headers: &reqwest::header::HeaderMap) -> String {
    headers
        .get("x-served-by")
        .and_then(|v| v.to_str().ok())
        .expect("x-served-by from hello-server")
        .to_owned()
}

/// Instances of the first release of the first service, from `ls --json`.
async fn instances(env: &Env) -> Vec<Value> {
    env.ls().await[0]["releases"][0]["instances"]
        .as_array()
        .cloned()
        .unwrap_or_default()
}

/// Sockets in /proc/net/tcp whose remote end is 127.0.0.1:`port`, in any
/// state (TIME_WAIT included): connections opened to that port lately.
fn connections_to(port: u16) -> usize {
    let table = std::fs::read_to_string("/proc/net/tcp").expect("read /proc/net/tcp");
    let wanted = format!("0100007F:{port:04X}");
    table
        .lines()
        .skip(1)
        .filter(|line| line.split_whitespace().nth(2) == Some(wanted.as_str()))
        .count()
}

/// An upstream that answers the first request on each connection (keeping
/// it open) and closes the connection, unanswered, when a second request
/// other than `/healthz` arrives on it: a server closing an idle
/// connection just as a request comes in. Returns its address and its
/// log, one `METHOD PATH answered|dropped` line per request.
async fn closes_reused_connections() -> (SocketAddr, Arc<Mutex<Vec<String>>>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("local addr");
    let log = Arc::new(Mutex::new(Vec::new()));
    let sink = Arc::clone(&log);
    // Runs until the test's runtime shuts down.
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let sink = Arc::clone(&sink);
            tokio::spawn(async move {
                let mut conn = BufReader::new(stream);
                let mut served = 0;
                loop {
                    let mut request_line = String::new();
                    if conn.read_line(&mut request_line).await.unwrap_or(0) == 0 {
                        return;
                    }
                    loop {
                        let mut line = String::new();
                        if conn.read_line(&mut line).await.unwrap_or(0) == 0 {
                            return;
                        }
                        if line.trim_end().is_empty() {
                            break;
                        }
                    }
                    let mut words = request_line.split_whitespace();
                    let (method, path) = (words.next().unwrap_or(""), words.next().unwrap_or(""));
                    if path != "/healthz" {
                        served += 1;
                        if served > 1 {
                            sink.lock()
                                .expect("log")
                                .push(format!("{method} {path} dropped"));
                            return;
                        }
                        sink.lock()
                            .expect("log")
                            .push(format!("{method} {path} answered"));
                    }
                    let answer = b"HTTP/1.1 200 OK\r\ncontent-length: 3\r\n\r\nok\n";
                    if conn.get_mut().write_all(answer).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    (addr, log)
}

/// An upstream that answers every request with the same bytes, `answer`
/// (read from the request: its head, and its body by `content-length`),
/// and with `close` shuts each connection right after its first answer,
/// without saying so. Returns its address, how many connections carried a
/// request other than `/healthz`, and one `METHOD PATH` line per request.
async fn scripted_upstream(
    answer: &'static [u8],
    close: bool,
) -> (SocketAddr, Arc<AtomicUsize>, Arc<Mutex<Vec<String>>>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("local addr");
    let connections = Arc::new(AtomicUsize::new(0));
    let log = Arc::new(Mutex::new(Vec::new()));
    let (counter, sink) = (Arc::clone(&connections), Arc::clone(&log));
    // Runs until the test's runtime shuts down.
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let (counter, sink) = (Arc::clone(&counter), Arc::clone(&sink));
            tokio::spawn(async move {
                let mut conn = BufReader::new(stream);
                let mut counted = false;
                loop {
                    let mut request_line = String::new();
                    if conn.read_line(&mut request_line).await.unwrap_or(0) == 0 {
                        return;
                    }
                    let mut length = 0;
                    loop {
                        let mut line = String::new();
                        if conn.read_line(&mut line).await.unwrap_or(0) == 0 {
                            return;
                        }
                        let line = line.trim_end();
                        if line.is_empty() {
                            break;
                        }
                        if let Some((name, value)) = line.split_once(':') {
                            if name.eq_ignore_ascii_case("content-length") {
                                length = value.trim().parse().unwrap_or(0);
                            }
                        }
                    }
                    let mut body = vec![0; length];
                    if conn.read_exact(&mut body).await.is_err() {
                        return;
                    }
                    let mut words = request_line.split_whitespace();
                    let (method, path) = (words.next().unwrap_or(""), words.next().unwrap_or(""));
                    if path != "/healthz" {
                        if !counted {
                            counted = true;
                            counter.fetch_add(1, Ordering::SeqCst);
                        }
                        sink.lock().expect("log").push(format!("{method} {path}"));
                    }
                    if conn.get_mut().write_all(answer).await.is_err() || close {
                        return;
                    }
                }
            });
        }
    });
    (addr, connections, log)
}

// ---------------------------------------------------------- forwarding

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forwarding_strips_the_prefix_keeps_the_query_and_sets_forwarded_headers() {
    let env = Env::start().await;
    env.deploy("hello", "1.0.0", &[], &[]).await.ok();
    let proxy_addr = env.serve().proxy_addr.clone();

    let r = reply(
        env.http
            .post(format!(
                "{}/services/hello/echo/a/b?x=1&y=two%20words",
                env.proxy()
            ))
            .header("x-forwarded-for", "10.1.2.3")
            .header("x-custom", "one")
            .header("content-type", "text/plain")
            .body("the body"),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.body);
    let echo = r.json();
    assert_eq!(echo["method"], "POST");
    assert_eq!(echo["path"], "/echo/a/b?x=1&y=two%20words");
    assert_eq!(echo["body"], "the body");
    assert_eq!(echo["body_len"], 8);
    assert_eq!(seen(&echo, "x-custom"), ["one"]);
    assert_eq!(seen(&echo, "content-type"), ["text/plain"]);
    assert_eq!(seen(&echo, "x-forwarded-for"), ["10.1.2.3, 127.0.0.1"]);
    assert_eq!(seen(&echo, "x-forwarded-proto"), ["http"]);
    assert_eq!(seen(&echo, "x-forwarded-host"), [proxy_addr.as_str()]);
    assert_eq!(seen(&echo, "x-forwarded-prefix"), ["/services/hello"]);
    assert_eq!(seen(&echo, "host"), [proxy_addr.as_str()]);

    // A release by version, and a client that sent no X-Forwarded-For.
    let r = reply(
        env.http
            .put(format!("{}/services/hello_1.0.0/echo?q=%2F", env.proxy())),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.body);
    let echo = r.json();
    assert_eq!(echo["method"], "PUT");
    assert_eq!(echo["path"], "/echo?q=%2F");
    assert_eq!(echo["body_len"], 0);
    assert_eq!(seen(&echo, "x-forwarded-for"), ["127.0.0.1"]);
    assert_eq!(seen(&echo, "x-forwarded-prefix"), ["/services/hello_1.0.0"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forwarded_for_appends_to_every_incoming_value() {
    let env = Env::start().await;
    env.deploy("hello", "1.0.0", &[], &[]).await.ok();
    // Two header lines are one list (RFC 9110 5.3): none may be dropped.
    let r = reply(
        env.http
            .get(format!("{}/services/hello/echo", env.proxy()))
            .header("x-forwarded-for", "10.1.2.3")
            .header("x-forwarded-for", "10.4.5.6, 10.7.8.9"),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(
        seen(&r.json(), "x-forwarded-for"),
        ["10.1.2.3, 10.4.5.6, 10.7.8.9, 127.0.0.1"]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hop_by_hop_headers_are_not_forwarded() {
    let env = Env::start().await;
    env.deploy("hello", "1.0.0", &[], &[]).await.ok();
    let mut conn = connect(&env, WAIT).await;
    conn.write_all(
        b"GET /services/hello/echo HTTP/1.1\r\n\
          Host: h.test\r\n\
          Connection: close, x-hop\r\n\
          X-Hop: secret\r\n\
          Keep-Alive: timeout=5\r\n\
          Proxy-Connection: keep-alive\r\n\
          X-Kept: yes\r\n\
          \r\n",
    )
    .await
    .expect("send request");
    let response = read_response(&mut conn, false, WAIT).await;
    assert_eq!(response.status, 200, "{response:?}");
    let echo: Value = serde_json::from_slice(&response.body).expect("echo JSON");
    let names: Vec<&String> = echo["headers"]
        .as_object()
        .expect("headers")
        .keys()
        .collect();
    for hop in ["x-hop", "keep-alive", "proxy-connection"] {
        assert!(
            !names.iter().any(|n| n.as_str() == hop),
            "{hop} reached the upstream: {names:?}"
        );
    }
    assert!(
        seen(&echo, "connection")
            .iter()
            .all(|v| !v.contains("x-hop")),
        "the client's Connection header reached the upstream: {echo}"
    );
    assert_eq!(seen(&echo, "x-kept"), ["yes"]);
    assert_eq!(seen(&echo, "host"), ["h.test"]);
    assert_eq!(seen(&echo, "x-forwarded-host"), ["h.test"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn host_routing_sends_the_whole_path_to_main_without_a_prefix() {
    let env = Env::start().await;
    env.deploy("hello", "1.0.0", &["--host", "hello.example.com"], &[])
        .await
        .ok();

    let r = reply(
        env.http
            .get(format!("{}/echo/a?z=1", env.proxy()))
            .header("host", "hello.example.com")
            .header("x-forwarded-prefix", "/forged"),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.header("x-switchyard-version"), Some("1.0.0"));
    let echo = r.json();
    assert_eq!(echo["path"], "/echo/a?z=1");
    assert!(
        seen(&echo, "x-forwarded-prefix").is_empty(),
        "no prefix was stripped: {echo}"
    );
    assert_eq!(seen(&echo, "host"), ["hello.example.com"]);
    assert_eq!(seen(&echo, "x-forwarded-host"), ["hello.example.com"]);

    // Host names match without case and port; the path is not stripped even
    // when it looks like a service path (hello-server has no such route).
    let r = reply(
        env.http
            .get(format!("{}/services/hello/echo", env.proxy()))
            .header("host", "HELLO.Example.com:8080"),
    )
    .await;
    assert_eq!(r.status, 404, "{}", r.body);
    assert_eq!(r.body, "not found\n");
    assert_eq!(served_by(&r.headers), "hello/1.0.0/0");

    // Any other host still routes by path.
    let r = reply(
        env.http
            .get(format!("{}/services/hello/echo", env.proxy()))
            .header("host", "other.example.com"),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(seen(&r.json(), "x-forwarded-prefix"), ["/services/hello"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_connections_are_kept_alive_across_requests() {
    let env = Env::start().await;
    env.deploy("hello", "1.0.0", &[], &[]).await.ok();
    let mut conn = connect(&env, WAIT).await;
    for i in 0..3 {
        let request = format!("GET /services/hello/echo/{i} HTTP/1.1\r\nHost: h.test\r\n\r\n");
        conn.write_all(request.as_bytes()).await.expect("send");
        let response = read_response(&mut conn, false, WAIT).await;
        assert_eq!(response.status, 200, "{response:?}");
        let echo: Value = serde_json::from_slice(&response.body).expect("echo JSON");
        assert_eq!(echo["path"], format!("/echo/{i}"));
    }
    // Pipelined: both requests written before either answer is read.
    conn.write_all(
        b"GET /services/hello/echo/p1 HTTP/1.1\r\nHost: h.test\r\n\r\n\
          GET /services/hello/echo/p2 HTTP/1.1\r\nHost: h.test\r\n\r\n",
    )
    .await
    .expect("send pipelined");
    for path in ["/echo/p1", "/echo/p2"] {
        let response = read_response(&mut conn, false, WAIT).await;
        assert_eq!(response.status, 200, "{response:?}");
        let echo: Value = serde_json::from_slice(&response.body).expect("echo JSON");
        assert_eq!(echo["path"], path);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_connections_are_reused_across_requests() {
    let env = Env::start().await;
    env.deploy("hello", "1.0.0", &[], &[]).await.ok();
    let port = instances(&env).await[0]["addr"]
        .as_str()
        .and_then(|a| a.parse::<SocketAddr>().ok())
        .expect("instance address")
        .port();
    let before = connections_to(port);
    for path in ["/services/hello/", "/services/hello/status/204"] {
        for _ in 0..30 {
            let r = get(&env, path).await;
            assert!(r.status == 200 || r.status == 204, "{}", r.body);
        }
    }
    // Closed connections linger in TIME_WAIT, so a proxy that opened one
    // per request leaves dozens behind; a pooling one a handful at most.
    let opened = connections_to(port).saturating_sub(before);
    assert!(
        opened < 10,
        "60 sequential requests opened {opened} connections to the instance"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_statuses_pass_through_untouched() {
    let env = Env::start().await;
    env.deploy("hello", "1.0.0", &[], &[]).await.ok();
    for code in [201u16, 404, 418, 500, 502, 503] {
        let r = get(&env, &format!("/services/hello/status/{code}")).await;
        assert_eq!(r.status, code, "{}", r.body);
        assert_eq!(r.body, format!("status {code}\n"));
        assert_eq!(
            r.header("x-switchyard-error"),
            None,
            "an upstream's own {code} is not a proxy error"
        );
    }
    let r = get(&env, "/services/hello/status/204").await;
    assert_eq!((r.status, r.body.as_str()), (204, ""));
}

// ---------------------------------------------------------------- errors

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_services_and_versions_get_404_naming_them() {
    let env = Env::start().await;
    env.deploy("hello", "1.0.0", &[], &[]).await.ok();
    get(&env, "/services/nope/x")
        .await
        .assert_proxy_error(&env, 404, "unknown-service", &["nope"])
        .await;
    get(&env, "/services/hello_9.9.9/")
        .await
        .assert_proxy_error(&env, 404, "unknown-release", &["hello", "9.9.9"])
        .await;
    get(&env, "/elsewhere")
        .await
        .assert_proxy_error(&env, 404, "no-route", &["/services/"])
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_upstream_gets_504_after_the_upstream_timeout() {
    let env = Env::start_with(&["--upstream-timeout", "500ms"]).await;
    env.deploy("hello", "1.0.0", &[], &["--latency-ms", "5000"])
        .await
        .ok();
    let r = get(&env, "/services/hello/").await;
    r.assert_proxy_error(&env, 504, "upstream-timeout", &["hello 1.0.0", "500ms"])
        .await;
    // A request that may become a tunnel has the same time to answer.
    let r = reply(
        env.http
            .get(format!("{}/services/hello/", env.proxy()))
            .header("connection", "upgrade")
            .header("upgrade", "websocket"),
    )
    .await;
    r.assert_proxy_error(&env, 504, "upstream-timeout", &["hello 1.0.0", "500ms"])
        .await;
    // The timeout is per response: a quick answer from the same instance passes.
    let r = get(&env, "/services/hello/healthz").await;
    assert_eq!((r.status, r.body.as_str()), (200, "ok\n"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn release_whose_instances_are_gone_gets_502_then_503_and_recovers() {
    let env = Env::start().await;
    let mut own = OwnServer::start("1.0.0", 0, WAIT).await;
    let upstream = own.addr.to_string();
    // Health checks 2 s apart, 3 failures to leave the rotation: for 4 s
    // after the kill only the proxy's own failure to connect can take the
    // instance out.
    env.deploy_external("ext", "1.0.0", &[own.addr], &["--health-interval", "2s"])
        .await
        .ok();
    let r = get(&env, "/services/ext/").await;
    assert_eq!(r.status, 200, "{}", r.body);

    own.kill().await;
    // The first request finds the instance gone: 502, and the instance
    // leaves the rotation at once...
    let r = get(&env, "/services/ext/").await;
    r.assert_proxy_error(&env, 502, "connect-failed", &["ext 1.0.0", &upstream])
        .await;
    // ...so the next one finds no healthy instance: 503.
    let r = get(&env, "/services/ext/").await;
    r.assert_proxy_error(&env, 503, "no-healthy-instance", &["ext 1.0.0"])
        .await;

    // The same address answers again: health checks put it back.
    let _own = OwnServer::start("1.0.0", own.addr.port(), WAIT).await;
    env.eventually("the upstream is routed to again", WAIT, || async {
        get(&env, "/services/ext/").await.status == 200
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn service_without_releases_gets_503_no_main() {
    let env = Env::start().await;
    env.deploy("hello", "1.0.0", &[], &[]).await.ok();
    env.cli(&["kill", "hello", "--all", "--yes"]).await.ok();
    get(&env, "/services/hello/")
        .await
        .assert_proxy_error(&env, 503, "no-main", &["hello"])
        .await;
}

// -------------------------------------------------------- version header

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn version_header_is_added_unless_turned_off() {
    let env = Env::start().await;
    env.deploy("hello", "1.0.0", &[], &[]).await.ok();
    for path in ["/services/hello/", "/services/hello_1.0.0/echo"] {
        let r = get(&env, path).await;
        assert_eq!(r.status, 200, "{}", r.body);
        assert_eq!(r.header("x-switchyard-version"), Some("1.0.0"), "{path}");
    }
    drop(env);

    let env = Env::start_with(&["--no-version-header"]).await;
    env.deploy("hello", "1.0.0", &[], &[]).await.ok();
    for path in ["/services/hello/", "/services/hello_1.0.0/echo"] {
        let r = get(&env, path).await;
        assert_eq!(r.status, 200, "{}", r.body);
        assert_eq!(served_by(&r.headers), "hello/1.0.0/0");
        assert_eq!(r.header("x-switchyard-version"), None, "{path}");
    }
}

/// The answer's fields reach the client as the instance sent them, once
/// each, over HTTP/1.1 (written from the answer's bytes, by host name and
/// under the prefix, where the links are rewritten) and HTTP/2 (from its
/// map) alike; those the proxy sets replace the instance's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn answer_fields_pass_through_once_and_the_proxys_own_replace_the_instances() {
    let env = Env::start().await;
    let answer: &[u8] = b"HTTP/1.1 200 OK\r\nServer: scripted\r\nX-Request-Id: theirs\r\n\
        Date: Mon, 30 Nov 2026 10:00:00 GMT\r\nX-Switchyard-Version: forged\r\n\
        Set-Cookie: a=1\r\nSet-Cookie: b=2\r\nKeep-Alive: timeout=5\r\nLocation: /next\r\n\
        Content-Length: 2\r\n\r\nok";
    let (addr, _, _) = scripted_upstream(answer, false).await;
    env.deploy_external("fields", "1.0.0", &[addr], &["--host", "fields.test"])
        .await
        .ok();

    let mut conn = connect(&env, WAIT).await;
    for (host, path) in [
        ("fields.test", "/one"),
        ("other.test", "/services/fields/two"),
        ("fields.test", "/three"),
    ] {
        within(
            WAIT,
            "send a request",
            conn.get_mut()
                .write_all(format!("GET {path} HTTP/1.1\r\nHost: {host}\r\n\r\n").as_bytes()),
        )
        .await
        .expect("write");
        let response = read_response(&mut conn, false, WAIT).await;
        assert_eq!((response.status, &response.body[..]), (200, &b"ok"[..]));
        let values = |name: &str| -> Vec<&str> {
            response
                .headers
                .iter()
                .filter(|(n, _)| n.eq_ignore_ascii_case(name))
                .map(|(_, v)| v.as_str())
                .collect()
        };
        assert_eq!(values("server"), ["scripted"], "{response:?}");
        assert_eq!(values("date"), ["Mon, 30 Nov 2026 10:00:00 GMT"]);
        assert_eq!(values("set-cookie"), ["a=1", "b=2"]);
        let location = if path.starts_with("/services/") {
            // The link rewritten to the prefix.
            "/services/fields/next"
        } else {
            "/next"
        };
        assert_eq!(values("location"), [location]);
        assert_eq!(values("content-length"), ["2"]);
        assert_eq!(values("x-switchyard-version"), ["1.0.0"]);
        assert_eq!(values("keep-alive"), Vec::<&str>::new(), "hop-by-hop");
        let ids = values("x-request-id");
        assert!(ids.len() == 1 && ids[0] != "theirs", "{ids:?}");
    }

    let h2 = http2_client();
    let response = within(
        WAIT,
        "h2 response",
        h2.get(format!("{}/services/fields/h2", env.proxy())).send(),
    )
    .await
    .expect("h2 request");
    assert_eq!(response.version(), reqwest::Version::HTTP_2);
    let values = |name: &str| -> Vec<String> {
        response
            .headers()
            .get_all(name)
            .iter()
            .map(|v| v.to_str().expect("text").to_owned())
            .collect()
    };
    assert_eq!(values("server"), ["scripted"]);
    assert_eq!(values("set-cookie"), ["a=1", "b=2"]);
    assert_eq!(values("location"), ["/services/fields/next"]);
    assert_eq!(values("x-switchyard-version"), ["1.0.0"]);
    let ids = values("x-request-id");
    assert!(ids.len() == 1 && ids[0] != "theirs", "{ids:?}");
}

// ------------------------------------------------------------- streaming

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_sent_events_stream_through_as_they_are_sent() {
    let env = Env::start().await;
    env.deploy("hello", "1.0.0", &[], &[]).await.ok();
    let mut response = within(
        WAIT,
        "SSE response head",
        env.http
            .get(format!(
                "{}/services/hello/sse?n=5&interval_ms=300",
                env.proxy()
            ))
            .send(),
    )
    .await
    .expect("SSE request");
    assert_eq!(response.status(), 200);
    assert_eq!(
        response
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok()),
        Some("text/event-stream")
    );
    let mut chunks: Vec<String> = Vec::new();
    while let Some(chunk) = within(WAIT, "next SSE chunk", response.chunk())
        .await
        .expect("read SSE chunk")
    {
        chunks.push(String::from_utf8_lossy(&chunk).into_owned());
    }
    let all: String = chunks.concat();
    assert_eq!(
        all,
        "data: 1\n\ndata: 2\n\ndata: 3\n\ndata: 4\n\ndata: 5\n\n"
    );
    // A buffering proxy hands the client everything at once, after the
    // last event; a streaming one delivers the first while later ones are
    // still to be sent (the server spaces them 300 ms apart).
    assert!(chunks.len() >= 2, "one chunk only: {chunks:?}");
    assert!(
        !chunks[0].contains("data: 5"),
        "the first chunk waited for the last event: {chunks:?}"
    );

    // Causally, with no tight timing: the second event is sent a minute
    // after the first, yet the first arrives within the (shorter) wait.
    let mut response = within(
        WAIT,
        "SSE response head",
        env.http
            .get(format!(
                "{}/services/hello/sse?n=2&interval_ms=60000",
                env.proxy()
            ))
            .send(),
    )
    .await
    .expect("SSE request");
    let first = within(
        WAIT,
        "the first event, long before the second is sent",
        response.chunk(),
    )
    .await
    .expect("read SSE chunk");
    assert_eq!(first.as_deref(), Some(&b"data: 1\n\n"[..]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_uploads_arrive_whole_with_and_without_a_length() {
    const MIB: usize = 1 << 20;
    let env = Env::start().await;
    env.deploy("hello", "1.0.0", &[], &[]).await.ok();
    let url = format!("{}/services/hello/echo", env.proxy());

    let r = reply(env.http.post(&url).body(vec![b'u'; 8 * MIB])).await;
    assert_eq!(r.status, 200, "{}", &r.body[..r.body.len().min(200)]);
    assert_eq!(r.json()["body_len"], 8 * MIB);

    // Streamed: chunked transfer encoding, length unknown in advance.
    let chunk = Bytes::from(vec![b's'; MIB]);
    let stream =
        futures_util::stream::iter((0..8).map(move |_| Ok::<_, std::io::Error>(chunk.clone())));
    let r = reply(env.http.post(&url).body(reqwest::Body::wrap_stream(stream))).await;
    assert_eq!(r.status, 200, "{}", &r.body[..r.body.len().min(200)]);
    let echo = r.json();
    assert_eq!(echo["body_len"], 8 * MIB);
    assert!(
        echo["body"]
            .as_str()
            .is_some_and(|b| b.bytes().all(|c| c == b's'))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expect_continue_uploads_get_their_body_through() {
    let env = Env::start().await;
    env.deploy("hello", "1.0.0", &[], &[]).await.ok();
    let mut conn = connect(&env, WAIT).await;
    conn.write_all(
        b"POST /services/hello/echo HTTP/1.1\r\n\
          Host: h.test\r\n\
          Content-Length: 5\r\n\
          Expect: 100-continue\r\n\
          \r\n",
    )
    .await
    .expect("send head");
    let interim = read_response(&mut conn, true, WAIT).await;
    assert_eq!(interim.status, 100, "{interim:?}");
    conn.write_all(b"hello").await.expect("send body");
    let response = read_response(&mut conn, false, WAIT).await;
    assert_eq!(response.status, 200, "{response:?}");
    let echo: Value = serde_json::from_slice(&response.body).expect("echo JSON");
    assert_eq!(echo["body"], "hello");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_downloads_arrive_whole() {
    let env = Env::start().await;
    env.deploy("hello", "1.0.0", &[], &[]).await.ok();
    let response = within(
        WAIT,
        "download head",
        env.http
            .get(format!("{}/services/hello/bytes?n=8388608", env.proxy()))
            .send(),
    )
    .await
    .expect("download");
    assert_eq!(response.status(), 200);
    let body = within(WAIT, "download body", response.bytes())
        .await
        .expect("download body");
    assert_eq!(body.len(), 8 * 1024 * 1024);
    assert!(body.iter().all(|b| *b == b'x'));
}

// ---------------------------------------------------------------- upgrade

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn websocket_upgrade_tunnels_bytes_both_ways() {
    let env = Env::start().await;
    env.deploy("hello", "1.0.0", &[], &[]).await.ok();
    let mut conn = connect(&env, WAIT).await;
    conn.write_all(
        b"GET /services/hello/ws HTTP/1.1\r\n\
          Host: h.test\r\n\
          Connection: Upgrade\r\n\
          Upgrade: websocket\r\n\
          X-Forwarded-For: 10.9.9.9\r\n\
          X-Request-Id: ws-1\r\n\
          \r\n",
    )
    .await
    .expect("send upgrade");
    let response = read_response(&mut conn, true, WAIT).await;
    assert_eq!(response.status, 101, "{response:?}");
    assert_eq!(response.header("upgrade"), Some("websocket"));
    // The tunnel's request carried the proxy's forwarding fields, once.
    assert_eq!(
        response.header("x-seen-forwarded-for"),
        Some("10.9.9.9, 127.0.0.1")
    );
    assert_eq!(
        response.header("x-seen-forwarded-prefix"),
        Some("/services/hello")
    );
    assert_eq!(response.header("x-seen-request-id"), Some("ws-1"));
    assert!(
        response
            .header("connection")
            .is_some_and(|c| c.eq_ignore_ascii_case("upgrade")),
        "{response:?}"
    );
    assert_eq!(response.header("x-switchyard-version"), Some("1.0.0"));

    for message in [&b"ping 1"[..], b"\x00\x01binary\xff", &[b'z'; 100_000][..]] {
        conn.write_all(message)
            .await
            .expect("write into the tunnel");
        let mut back = vec![0; message.len()];
        within(WAIT, "the echo", conn.read_exact(&mut back))
            .await
            .expect("read from the tunnel");
        assert!(back == message, "the tunnel changed the bytes");
    }
    // Closing our side closes theirs.
    conn.get_mut().shutdown().await.expect("shutdown");
    let mut rest = Vec::new();
    within(WAIT, "the tunnel to close", conn.read_to_end(&mut rest))
        .await
        .expect("read to EOF");
    assert!(rest.is_empty());

    // An upgrade the upstream declines is an ordinary response.
    let mut conn = connect(&env, WAIT).await;
    conn.write_all(
        b"GET /services/hello/echo HTTP/1.1\r\n\
          Host: h.test\r\n\
          Connection: Upgrade\r\n\
          Upgrade: websocket\r\n\
          \r\n",
    )
    .await
    .expect("send upgrade");
    let response = read_response(&mut conn, false, WAIT).await;
    assert_eq!(response.status, 200, "{response:?}");
    let echo: Value = serde_json::from_slice(&response.body).expect("echo JSON");
    assert_eq!(echo["path"], "/echo");
}

// ---------------------------------------------------------------- HTTP/2

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http2_clients_reach_main_over_http1_with_a_host_header() {
    let env = Env::start().await;
    env.deploy("hello", "1.0.0", &[], &[]).await.ok();
    let proxy_addr = env.serve().proxy_addr.clone();
    let h2 = http2_client();

    let response = within(
        WAIT,
        "h2 response",
        h2.get(format!("{}/services/hello/echo/h2?x=1", env.proxy()))
            .send(),
    )
    .await
    .expect("h2 request");
    assert_eq!(response.version(), reqwest::Version::HTTP_2);
    assert_eq!(response.status(), 200);
    assert_eq!(
        response
            .headers()
            .get("x-switchyard-version")
            .and_then(|v| v.to_str().ok()),
        Some("1.0.0")
    );
    let echo: Value = response.json().await.expect("echo JSON");
    assert_eq!(echo["path"], "/echo/h2?x=1");
    assert_eq!(seen(&echo, "host"), [proxy_addr.as_str()]);
    assert_eq!(seen(&echo, "x-forwarded-host"), [proxy_addr.as_str()]);
    assert_eq!(seen(&echo, "x-forwarded-prefix"), ["/services/hello"]);

    // Bodies, and many streams at once on the one connection.
    let posts = (0..16).map(|i| {
        let h2 = h2.clone();
        let url = format!("{}/services/hello/echo", env.proxy());
        async move {
            let r = reply(h2.post(url).body(format!("body {i}"))).await;
            assert_eq!(r.status, 200, "{}", r.body);
            assert_eq!(r.json()["body"], format!("body {i}"));
        }
    });
    futures_util::future::join_all(posts).await;
}

// ------------------------------------------------------ instances, retries

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_move_to_a_live_instance_when_one_dies_and_it_is_restarted() {
    let env = Env::start().await;
    env.deploy("hello", "1.0.0", &["--replicas", "2"], &[])
        .await
        .ok();
    let url = format!("{}/services/hello/", env.proxy());

    // Fill the pool with idle connections to both instances.
    let warm = (0..16).map(|_| reply(env.http.get(&url)));
    for r in futures_util::future::join_all(warm).await {
        assert_eq!(r.status, 200, "{}", r.body);
    }

    let before = instances(&env).await;
    let victim = before[0]["pid"].as_u64().expect("instance 0 pid") as u32;
    let survivor = before[1]["pid"].as_u64().expect("instance 1 pid") as u32;
    assert!(
        env.instance_pids().contains(&victim),
        "pid {victim} is not an instance of this serve"
    );
    kill(Pid::from_raw(victim as i32), Signal::SIGKILL).expect("SIGKILL instance 0");

    let mut failures = Vec::new();
    for round in 0..25 {
        let batch = (0..8).map(|_| reply(env.http.get(&url)));
        for r in futures_util::future::join_all(batch).await {
            if r.status != 200 {
                failures.push(format!("round {round}: {} {}", r.status, r.body));
            } else {
                assert_ne!(r.json()["pid"], victim, "answered by a killed process");
            }
        }
    }
    assert!(failures.is_empty(), "failed requests: {failures:#?}");

    env.eventually("instance 0 restarted and healthy", WAIT, || async {
        let now = instances(&env).await;
        let pid = now[0]["pid"].as_u64().map(|p| p as u32);
        pid.is_some_and(|p| p != victim) && now[0]["health"] == "healthy"
    })
    .await;
    let now = instances(&env).await;
    assert_eq!(now[1]["pid"], survivor);
    assert!(now[0]["restarts"].as_u64() >= Some(1), "{now:?}");
    // Traffic reaches the new instance too.
    env.eventually("the restarted instance answers", WAIT, || async {
        let r = get(&env, "/services/hello/").await;
        r.status == 200 && r.json()["pid"] == now[0]["pid"]
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn least_busy_instance_gets_the_next_requests() {
    let env = Env::start().await;
    env.deploy("hello", "1.0.0", &["--replicas", "2"], &[])
        .await
        .ok();
    // A stream that stays open keeps one instance busy...
    let busy = within(
        WAIT,
        "SSE head",
        env.http
            .get(format!(
                "{}/services/hello/sse?n=2&interval_ms=60000",
                env.proxy()
            ))
            .send(),
    )
    .await
    .expect("SSE request");
    assert_eq!(busy.status(), 200);
    let busy_instance = served_by(busy.headers());
    // ...so every request meanwhile goes to the other one, where
    // round-robin alone would alternate.
    for _ in 0..10 {
        let r = get(&env, "/services/hello/").await;
        assert_eq!(r.status, 200, "{}", r.body);
        assert_ne!(served_by(&r.headers), busy_instance);
    }
    drop(busy);
    // Once the stream is gone, both instances share the load again.
    env.eventually("the formerly busy instance answers", WAIT, || async {
        served_by(&get(&env, "/services/hello/").await.headers) == busy_instance
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_to_an_instance_refusing_connections_are_retried_on_another() {
    let env = Env::start().await;
    let mut doomed = OwnServer::start("1.0.0", 0, WAIT).await;
    let alive = OwnServer::start("1.0.0", 0, WAIT).await;
    // Health checks far apart: only the proxy can notice the dead instance.
    env.deploy_external(
        "ext",
        "1.0.0",
        &[doomed.addr, alive.addr],
        &["--health-interval", "60s"],
    )
    .await
    .ok();
    let mut pids = std::collections::BTreeSet::new();
    for _ in 0..6 {
        let r = get(&env, "/services/ext/").await;
        assert_eq!(r.status, 200, "{}", r.body);
        pids.insert(r.json()["pid"].as_u64().expect("pid"));
    }
    assert_eq!(pids.len(), 2, "both instances take traffic: {pids:?}");

    doomed.kill().await;
    for _ in 0..10 {
        let r = get(&env, "/services/ext/").await;
        assert_eq!(r.status, 200, "{}", r.body);
        assert_eq!(r.json()["pid"], alive.pid);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn safe_requests_are_sent_again_when_a_reused_connection_breaks() {
    let env = Env::start().await;
    let (addr, log) = closes_reused_connections().await;
    env.deploy_external("flaky", "1.0.0", &[addr], &[])
        .await
        .ok();

    // The second GET goes out on the first one's pooled connection, which
    // the upstream closes unanswered: a GET is safe to send again.
    for path in ["/one", "/two", "/three"] {
        let r = get(&env, &format!("/services/flaky{path}")).await;
        assert_eq!((r.status, r.body.as_str()), (200, "ok\n"), "{path}");
    }
    let seen = log.lock().expect("log").clone();
    assert!(
        seen.iter().any(|l| l.ends_with("dropped")),
        "no connection was reused, so nothing was tested: {seen:?}"
    );

    // A POST may have had effects: it is never sent twice.
    let r = reply(
        env.http
            .post(format!("{}/services/flaky/pay", env.proxy()))
            .body("once"),
    )
    .await;
    r.assert_proxy_error(&env, 502, "upstream-failed", &["flaky 1.0.0"])
        .await;
    let posts = log
        .lock()
        .expect("log")
        .iter()
        .filter(|l| l.starts_with("POST"))
        .count();
    assert_eq!(posts, 1, "{:?}", log.lock().expect("log"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chunked_answers_with_trailers_after_an_early_hint_arrive_whole_on_one_connection() {
    let env = Env::start().await;
    let answer: &[u8] = b"HTTP/1.1 103 Early Hints\r\nlink: </style.css>; rel=preload\r\n\r\n\
        HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\ntrailer: x-checksum\r\n\r\n\
        6\r\nhello \r\n6\r\nworld\n\r\n0\r\nx-checksum: 12\r\n\r\n";
    let (addr, connections, log) = scripted_upstream(answer, false).await;
    env.deploy_external("chunky", "1.0.0", &[addr], &[])
        .await
        .ok();

    for path in ["/one", "/two", "/three"] {
        let r = get(&env, &format!("/services/chunky{path}")).await;
        assert_eq!(
            (r.status, r.body.as_str()),
            (200, "hello world\n"),
            "{path}"
        );
    }
    // Each answer (hint, chunks, trailer) was read to its very end, or
    // the connection could not have carried the next request.
    assert_eq!(
        connections.load(Ordering::SeqCst),
        1,
        "one upstream connection for all: {:?}",
        log.lock().expect("log")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_the_instance_closes_after_answering_cost_no_request() {
    let env = Env::start().await;
    let (addr, connections, log) =
        scripted_upstream(b"HTTP/1.1 200 OK\r\ncontent-length: 3\r\n\r\nok\n", true).await;
    env.deploy_external("closer", "1.0.0", &[addr], &[])
        .await
        .ok();

    // Every connection is closed by the instance once it answered, without
    // a word: a POST must still go out once, on a live connection.
    for (i, post) in [false, true, false, true, true].into_iter().enumerate() {
        let url = format!("{}/services/closer/{i}", env.proxy());
        let request = if post {
            env.http.post(url).body("once")
        } else {
            env.http.get(url)
        };
        let r = reply(request).await;
        assert_eq!((r.status, r.body.as_str()), (200, "ok\n"), "request {i}");
    }
    let seen = log.lock().expect("log").clone();
    assert_eq!(
        seen.len(),
        5,
        "each request reached the instance once: {seen:?}"
    );
    assert_eq!(connections.load(Ordering::SeqCst), 5, "{seen:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn answers_that_end_when_the_instance_closes_arrive_whole() {
    let env = Env::start().await;
    let (addr, _, log) = scripted_upstream(
        b"HTTP/1.1 200 OK\r\nconnection: close\r\n\r\nread until the end\n",
        true,
    )
    .await;
    env.deploy_external("until", "1.0.0", &[addr], &[])
        .await
        .ok();

    for path in ["/one", "/two"] {
        let r = get(&env, &format!("/services/until{path}")).await;
        assert_eq!(
            (r.status, r.body.as_str()),
            (200, "read until the end\n"),
            "{path}"
        );
    }
    assert_eq!(log.lock().expect("log").len(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn answers_the_instance_cuts_short_break_the_client_response_and_are_not_sent_again() {
    let env = Env::start().await;
    let (addr, connections, log) = scripted_upstream(
        b"HTTP/1.1 200 OK\r\ncontent-length: 100\r\n\r\nonly part of it",
        true,
    )
    .await;
    env.deploy_external("cut", "1.0.0", &[addr], &[]).await.ok();

    for path in ["/one", "/two"] {
        // The client never gets a whole answer: the proxy cuts its
        // connection (before the head if the head had not gone out yet).
        let sent = within(
            WAIT,
            "the answer",
            env.http
                .get(format!("{}/services/cut{path}", env.proxy()))
                .send(),
        )
        .await;
        if let Ok(response) = sent {
            assert_eq!(response.status(), 200, "{path}");
            let body = within(WAIT, "the cut body", response.bytes()).await;
            assert!(
                body.is_err(),
                "{path}: the body was cut, not ended: {body:?}"
            );
        }
    }
    // The answer had begun: a GET is not sent again, and each request
    // needed a connection of its own (a broken one is never reused).
    let seen = log.lock().expect("log").clone();
    assert_eq!(seen, ["GET /one", "GET /two"]);
    assert_eq!(connections.load(Ordering::SeqCst), 2, "{seen:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn answer_heads_too_large_get_502_naming_the_limit() {
    let env = Env::start().await;
    static HUGE: std::sync::LazyLock<&'static [u8]> = std::sync::LazyLock::new(|| {
        let mut answer = b"HTTP/1.1 200 OK\r\nx-big: ".to_vec();
        answer.resize(200 * 1024, b'a');
        answer.extend_from_slice(b"\r\ncontent-length: 0\r\n\r\n");
        answer.leak()
    });
    let (addr, _, _) = scripted_upstream(*HUGE, false).await;
    env.deploy_external("big", "1.0.0", &[addr], &[]).await.ok();

    let r = get(&env, "/services/big/").await;
    r.assert_proxy_error(&env, 502, "upstream-failed", &["big 1.0.0", "larger than"])
        .await;
}

// ---------------------------------------------------------------- external

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn external_release_is_routed_to_but_never_stopped() {
    let env = Env::start().await;
    let mut own = OwnServer::start("1.0.0", 0, WAIT).await;
    let upstream = own.addr.to_string();
    env.deploy_external("ext", "1.0.0", &[own.addr], &[])
        .await
        .ok();

    let r = get(&env, "/services/ext/").await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.header("x-switchyard-version"), Some("1.0.0"));
    assert_eq!(r.json()["pid"], own.pid);
    let r = get(&env, "/services/ext_1.0.0/echo/x").await;
    assert_eq!(r.json()["path"], "/echo/x");

    let ls = env.ls().await;
    let release = &ls[0]["releases"][0];
    assert_eq!(release["kind"], "external");
    assert_eq!(release["instances"][0]["addr"], upstream.as_str());
    assert!(release["instances"][0]["pid"].is_null(), "{release}");

    env.cli(&["kill", "ext", "1.0.0"]).await.ok();
    get(&env, "/services/ext/")
        .await
        .assert_proxy_error(&env, 503, "no-main", &["ext"])
        .await;
    // kill returns once the release is stopped: had it stopped the
    // process, it would be gone by now.
    assert!(own.is_running(), "kill stopped an external process");
    let direct = reply(env.http.get(format!("http://{upstream}/healthz"))).await;
    assert_eq!((direct.status, direct.body.as_str()), (200, "ok\n"));
}

/// Requests sent back to back on one connection, before any answer, are
/// answered in order, each by its own path.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pipelined_requests_on_one_connection_are_answered_in_order() {
    let env = Env::start().await;
    env.deploy("hello", "1.0.0", &[], &[]).await.ok();
    let mut conn = connect(&env, WAIT).await;
    let mut burst = Vec::new();
    for n in 1..=3 {
        burst.extend_from_slice(
            format!("GET /services/hello/echo/{n} HTTP/1.1\r\nHost: hello.test\r\n\r\n").as_bytes(),
        );
    }
    burst.extend_from_slice(
        b"POST /services/hello/echo/4 HTTP/1.1\r\nHost: hello.test\r\n\
          Transfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n",
    );
    within(WAIT, "send the burst", conn.get_mut().write_all(&burst))
        .await
        .expect("write");
    for n in 1..=4 {
        let response = read_response(&mut conn, false, WAIT).await;
        assert_eq!(response.status, 200, "{response:?}");
        let echo: Value = serde_json::from_slice(&response.body).expect("echo JSON");
        assert_eq!(echo["path"], format!("/echo/{n}"), "answer {n} in order");
        if n == 4 {
            assert_eq!(echo["body"], "abcde", "the chunked body arrived whole");
        }
    }
}

/// A connection whose next request is one the listener leaves to hyper
/// (here HTTP/1.0, read ahead with the request before it) goes on with
/// that request answered, the bytes already read included.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_after_which_the_connection_changes_server_loses_no_byte() {
    let env = Env::start().await;
    env.deploy("hello", "1.0.0", &[], &[]).await.ok();
    let mut conn = connect(&env, WAIT).await;
    within(
        WAIT,
        "send both requests",
        conn.get_mut().write_all(
            b"GET /services/hello/echo/first HTTP/1.1\r\nHost: hello.test\r\n\r\n\
              POST /services/hello/echo/second HTTP/1.0\r\nHost: hello.test\r\n\
              Content-Length: 5\r\n\r\nhello",
        ),
    )
    .await
    .expect("write");
    let first = read_response(&mut conn, false, WAIT).await;
    assert_eq!(first.status, 200, "{first:?}");
    let echo: Value = serde_json::from_slice(&first.body).expect("echo JSON");
    assert_eq!(echo["path"], "/echo/first");
    let second = read_response(&mut conn, false, WAIT).await;
    assert_eq!(second.status, 200, "{second:?}");
    let echo: Value = serde_json::from_slice(&second.body).expect("echo JSON");
    assert_eq!(
        (&echo["path"], &echo["body"]),
        (&Value::from("/echo/second"), &Value::from("hello"))
    );
    // An upgrade after plain requests is tunnelled as on a new connection.
    let mut conn = connect(&env, WAIT).await;
    within(
        WAIT,
        "send a request, then an upgrade",
        conn.get_mut().write_all(
            b"GET /services/hello/echo/plain HTTP/1.1\r\nHost: hello.test\r\n\r\n\
              GET /services/hello/ws HTTP/1.1\r\nHost: hello.test\r\nConnection: Upgrade\r\n\
              Upgrade: websocket\r\nSec-WebSocket-Version: 13\r\n\
              Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n",
        ),
    )
    .await
    .expect("write");
    assert_eq!(read_response(&mut conn, false, WAIT).await.status, 200);
    let switched = read_response(&mut conn, true, WAIT).await;
    assert_eq!(switched.status, 101, "{switched:?}");
}

/// The proxy answers an upload it will not forward (no such service)
/// before reading its body: the client gets the whole answer, then the
/// connection closes, however much of the body it still sends.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_answer_before_the_body_was_read_reaches_the_client_whole_then_the_connection_closes() {
    let env = Env::start().await;
    let mut conn = connect(&env, WAIT).await;
    within(
        WAIT,
        "send the head and some of the body",
        conn.get_mut().write_all(
            b"POST /services/nothing-here/upload HTTP/1.1\r\nHost: x.test\r\n\
              Content-Length: 10000000\r\n\r\nfirst bytes",
        ),
    )
    .await
    .expect("write");
    let response = read_response(&mut conn, false, WAIT).await;
    assert_eq!(response.status, 404, "{response:?}");
    assert_eq!(response.header("connection"), Some("close"));
    assert!(response.header("date").is_some(), "{response:?}");
    let text = String::from_utf8_lossy(&response.body);
    assert!(text.contains("404 Not Found"), "{text}");
    // More of the body is read and dropped; then the end of the stream.
    let more = vec![b'x'; 64 * 1024];
    let _ = conn.get_mut().write_all(&more).await;
    let mut rest = Vec::new();
    let _ = within(WAIT, "the close", conn.read_to_end(&mut rest)).await;
    assert!(rest.is_empty(), "{}", String::from_utf8_lossy(&rest));
}

/// A small body the proxy did not need (it answered without forwarding)
/// is taken from what was already read, and the connection carries the
/// next request.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_whose_small_body_went_unread_carries_the_next_request() {
    let env = Env::start().await;
    env.deploy("hello", "1.0.0", &[], &[]).await.ok();
    let mut conn = connect(&env, WAIT).await;
    within(
        WAIT,
        "send an upload nothing reads, then a request",
        conn.get_mut().write_all(
            b"POST /services/nothing-here/upload HTTP/1.1\r\nHost: x.test\r\n\
              Content-Length: 5\r\n\r\nhello\
              GET /services/hello/echo/next HTTP/1.1\r\nHost: hello.test\r\n\r\n",
        ),
    )
    .await
    .expect("write");
    let refused = read_response(&mut conn, false, WAIT).await;
    assert_eq!(refused.status, 404, "{refused:?}");
    assert_eq!(refused.header("connection"), None, "kept: {refused:?}");
    let next = read_response(&mut conn, false, WAIT).await;
    assert_eq!(next.status, 200, "{next:?}");
    let echo: Value = serde_json::from_slice(&next.body).expect("echo JSON");
    assert_eq!(echo["path"], "/echo/next");
}
