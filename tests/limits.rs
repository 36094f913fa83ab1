//! Clients that try to exhaust or hold serve's connections: slowloris
//! heads, idle keep-alive connections, floods at a low file limit, one
//! address taking too much, a full file table. Each attack is performed
//! against the real binary; normal clients and the admin API must get
//! through meanwhile.

mod support;

use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::Empty;
use hyper_util::rt::{TokioExecutor, TokioIo};
use regex::Regex;
use support::Env;
use support::abuse::{
    assert_closed_at_once, connect_from, hold_streams, loopback, metric, read_until_closed,
    slowloris,
};
use support::raw_http::{connect, read_response};
use tokio::io::AsyncWriteExt;

/// The generous bound on anything the test waits for.
const WAIT: Duration = Duration::from_secs(30);
/// A slowloris client's pace: one byte of its request head per this.
const TRICKLE: Duration = Duration::from_millis(200);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slowloris_connections_are_closed_with_408_while_a_normal_client_is_served() {
    let env = Env::start_with(&["--header-timeout", "2s"]).await;
    env.deploy("hello", "1.0.0", &[], &[]).await.ok();
    let proxy = env.serve().proxy_addr.clone();
    let attackers: Vec<_> = (0..5)
        .map(|_| tokio::spawn(slowloris_owned(proxy.clone())))
        .collect();

    let mut served = 0;
    while attackers.iter().any(|a| !a.is_finished()) {
        let (status, version, body) = env.get("/services/hello/").await;
        assert_eq!((status, version.as_str()), (200, "1.0.0"), "{body}");
        served += 1;
    }
    assert!(served > 0, "no request was served while the attack ran");
    for attacker in attackers {
        assert_answered_408(&attacker.await.expect("the slowloris client ran"));
    }
    assert!(counter(&env, "header_timeouts", "proxy").await >= 5);
}

async fn slowloris_owned(addr: String) -> Vec<u8> {
    slowloris(&addr, TRICKLE, WAIT).await
}

/// Asserts that a slowloris client was answered 408 with the code of a
/// header timeout (the body is in neutral words for end users).
fn assert_answered_408(got: &[u8]) {
    let got = String::from_utf8_lossy(got);
    assert!(got.starts_with("HTTP/1.1 408 "), "answered {got:?}");
    assert!(got.contains("x-switchyard-error: header-timeout"), "{got}");
    assert!(!got.contains("switchyard:"), "no operator hint: {got}");
}

/// A per-listener counter of serve's `/metrics`.
async fn counter(env: &Env, family: &str, listener: &str) -> u64 {
    metric(
        env,
        &format!(r#"switchyard_{family}_total{{listener="{listener}"}}"#),
    )
    .await
}

/// Connections the proxy closed at once for `reason` (`total_cap`,
/// `client_cap`).
async fn refused(env: &Env, reason: &str) -> u64 {
    let series =
        format!(r#"switchyard_connections_refused_total{{listener="proxy",reason="{reason}"}}"#);
    metric(env, &series).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_keep_alive_connections_are_closed_after_the_idle_timeout() {
    let env = Env::start_with(&["--idle-timeout", "2s"]).await;

    // HTTP/1.1: a request answered, then nothing.
    let mut http1 = connect(&env, WAIT).await;
    http1
        .get_mut()
        .write_all(b"GET /nowhere HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .expect("send a request");
    let answer = read_response(&mut http1, false, WAIT).await;
    assert_eq!(
        answer.status, 404,
        "the proxy answers a path it has no route for"
    );
    assert_eq!(answer.header("connection"), None, "kept alive");
    let mut http1 = http1.into_inner();
    let after = read_until_closed(
        &mut http1,
        WAIT,
        "the idle HTTP/1.1 connection to be closed",
    )
    .await;
    assert!(
        after.is_empty(),
        "an idle connection is closed without an answer: {:?}",
        String::from_utf8_lossy(&after)
    );

    // HTTP/2 (prior knowledge): a stream answered, then nothing.
    let stream = tokio::net::TcpStream::connect(&env.serve().proxy_addr)
        .await
        .expect("connect");
    let (mut sender, connection) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(stream))
            .await
            .expect("HTTP/2 handshake");
    let connection = tokio::spawn(connection);
    let request = http::Request::get(format!("{}/nowhere", env.proxy()))
        .body(Empty::<Bytes>::new())
        .expect("request");
    let response = support::within(WAIT, "an HTTP/2 answer", sender.send_request(request))
        .await
        .expect("HTTP/2 answer");
    assert_eq!(response.status(), 404);
    drop(response);
    // The client keeps its side open (`sender` lives): serve must close it.
    support::within(WAIT, "the idle HTTP/2 connection to be closed", connection)
        .await
        .expect("the connection task ran")
        .expect("closed cleanly (GOAWAY)");
    drop(sender);

    assert!(counter(&env, "idle_timeouts", "proxy").await >= 2);
}

/// An upstream that answers every request with `ok`, keeping the
/// connection open. `open` counts its connections that carried a request
/// other than `/healthz` (the proxy's, not the health checker's) and are
/// still open; `proxied` counts every such connection ever.
struct CountingUpstream {
    addr: std::net::SocketAddr,
    open: tokio::sync::watch::Receiver<usize>,
    proxied: std::sync::Arc<std::sync::atomic::AtomicUsize>,
}

impl CountingUpstream {
    async fn start() -> CountingUpstream {
        use std::sync::atomic::Ordering;
        use tokio::io::AsyncBufReadExt;

        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("local addr");
        let (count, open) = tokio::sync::watch::channel(0usize);
        let count = std::sync::Arc::new(count);
        let proxied = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let all = std::sync::Arc::clone(&proxied);
        // Runs until the test's runtime shuts down.
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let (count, all) = (std::sync::Arc::clone(&count), std::sync::Arc::clone(&all));
                tokio::spawn(async move {
                    let mut conn = tokio::io::BufReader::new(stream);
                    let mut counted = false;
                    loop {
                        let mut head = String::new();
                        loop {
                            let mut line = String::new();
                            if conn.read_line(&mut line).await.unwrap_or(0) == 0 {
                                if counted {
                                    count.send_modify(|n| *n -= 1);
                                }
                                return;
                            }
                            if line.trim_end().is_empty() {
                                break;
                            }
                            head.push_str(&line);
                        }
                        if !counted && !head.contains(" /healthz ") {
                            counted = true;
                            all.fetch_add(1, Ordering::SeqCst);
                            count.send_modify(|n| *n += 1);
                        }
                        let answer = b"HTTP/1.1 200 OK\r\ncontent-length: 3\r\n\r\nok\n";
                        if conn.get_mut().write_all(answer).await.is_err() {
                            return;
                        }
                    }
                });
            }
        });
        CountingUpstream {
            addr,
            open,
            proxied,
        }
    }

    fn proxied(&self) -> usize {
        self.proxied.load(std::sync::atomic::Ordering::SeqCst)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_upstream_connections_are_closed_after_the_upstream_idle_timeout() {
    let idle = Duration::from_millis(500);
    let env = Env::start_with(&["--upstream-idle-timeout", "500ms"]).await;
    let mut upstream = CountingUpstream::start().await;
    env.deploy_external("pooled", "1.0.0", &[upstream.addr], &[])
        .await
        .ok();

    let sent = Instant::now();
    let (status, _, body) = env.get("/services/pooled/one").await;
    assert_eq!((status, body.as_str()), (200, "ok\n"));
    assert_eq!(
        *upstream.open.borrow(),
        1,
        "the request's connection stays open, pooled"
    );
    support::within(
        WAIT,
        "the pooled connection to be closed",
        upstream.open.wait_for(|open| *open == 0),
    )
    .await
    .expect("the upstream runs");
    // Given back after the request was sent, it idled this long at least.
    let closed_after = sent.elapsed();
    assert!(
        closed_after >= idle,
        "closed {closed_after:?} after the request, before it was idle for {idle:?}"
    );

    // The next request opens a new connection and is answered as usual.
    let (status, _, body) = env.get("/services/pooled/two").await;
    assert_eq!((status, body.as_str()), (200, "ok\n"));
    assert_eq!(upstream.proxied(), 2, "a new connection carried it");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http2_clients_get_at_most_the_configured_streams_per_connection() {
    let env = Env::start_with(&["--http2-max-streams", "3"]).await;
    let stream = tokio::net::TcpStream::connect(&env.serve().proxy_addr)
        .await
        .expect("connect");
    let (client, connection) = h2::client::handshake(stream)
        .await
        .expect("HTTP/2 handshake");
    let connection = tokio::spawn(connection);
    let mut client = client.ready().await.expect("ready");
    let request = http::Request::get(format!("{}/nowhere", env.proxy()))
        .body(())
        .expect("request");
    let (answer, _) = client.send_request(request, true).expect("stream");
    // An answer comes after serve's SETTINGS, which carry the limit.
    let answer = support::within(WAIT, "an HTTP/2 answer", answer)
        .await
        .expect("answer");
    assert_eq!(answer.status(), 404);
    assert_eq!(client.current_max_send_streams(), 3);
    drop(client);
    connection.abort();
}

/// `(total, per client)` from serve's startup line.
fn caps(banner: &[String]) -> (usize, usize) {
    let line = banner
        .iter()
        .find(|l| l.contains("proxy at most"))
        .unwrap_or_else(|| panic!("no limits line in {banner:?}"));
    let numbers =
        Regex::new(r"proxy at most (\d+) connections \((\d+) per client address\)").expect("regex");
    let found = numbers
        .captures(line)
        .unwrap_or_else(|| panic!("unexpected limits line {line:?}"));
    (
        found[1].parse().expect("total"),
        found[2].parse().expect("per client"),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn at_a_low_file_limit_a_connection_flood_stops_neither_the_proxy_nor_the_admin_api() {
    // Heads may take long here: every connection that closes is shed or
    // refused, not timed out.
    let mut env = Env::new(&["--header-timeout", "2m", "--drain-timeout", "1s"]);
    let banner = env.launch_with_file_limit(512, 1024).await;
    assert!(
        banner
            .iter()
            .any(|l| l.contains("open files limit 1024 (raised from 512)")),
        "serve says what file limit it got: {banner:?}"
    );
    let (total, per_client) = caps(&banner);
    assert!(
        total * 2 < 1024 && per_client < total,
        "the caps leave files for upstream connections and the rest: {total}, {per_client}"
    );
    assert_eq!(
        metric(
            &env,
            r#"switchyard_connections_max{listener="proxy",scope="total"}"#
        )
        .await,
        total as u64
    );
    env.deploy("hello", "1.0.0", &[], &[]).await.ok();
    let proxy = env.serve().proxy_addr.clone();

    // One address holds as many requests in flight as it may; its next
    // connections are closed at once.
    let mut held = hold_streams(&env, loopback(2), "hello", per_client, WAIT).await;
    for _ in 0..10 {
        assert_closed_at_once(
            loopback(2),
            &proxy,
            WAIT,
            "an excess connection to be closed",
        )
        .await;
    }
    assert_eq!(refused(&env, "client_cap").await, 10);

    // 1,100 idle connections from eleven more addresses: idle ones are
    // shed to make room, and nothing runs out.
    let mut flood = Vec::new();
    for i in 0..1100 {
        flood.push(connect_from(loopback(3 + (i % 11) as u8), &proxy, WAIT).await);
    }
    let answer = support::reply(
        env.http.get(format!("{}/services/hello/", env.proxy())),
        WAIT,
    )
    .await;
    assert_eq!(answer.status, 200, "{}", answer.body);
    let ls = env.ls().await;
    assert_eq!(support::listing::service(&ls, "hello")["name"], "hello");
    let shed = counter(&env, "connections_shed", "proxy").await;
    assert!(
        shed >= (1100 - total) as u64,
        "{shed} idle connections shed to make room for 1,100 under a cap of {total}"
    );
    env.eventually(
        "the open connections to be back under the cap",
        WAIT,
        || async {
            metric(&env, r#"switchyard_connections_open{listener="proxy"}"#).await <= total as u64
        },
    )
    .await;
    for listener in ["proxy", "admin"] {
        assert_eq!(
            counter(&env, "accept_errors", listener).await,
            0,
            "{listener}"
        );
    }

    // The proxy full of requests in flight (idle connections left over
    // are shed for them): a new connection is closed at once, and the
    // admin API still answers.
    drop(flood);
    let mut source = 20;
    while held.len() < total {
        let more = per_client.min(total - held.len());
        held.extend(hold_streams(&env, loopback(source), "hello", more, WAIT).await);
        source += 1;
    }
    assert_closed_at_once(
        loopback(source + 1),
        &proxy,
        WAIT,
        "a connection over the cap to be closed",
    )
    .await;
    assert!(refused(&env, "total_cap").await >= 1);
    let ls = env.ls().await;
    assert_eq!(support::listing::service(&ls, "hello")["name"], "hello");
    drop(held);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_client_address_over_its_cap_is_refused_while_another_is_served() {
    let env = Env::start_with(&["--max-connections-per-client", "4"]).await;
    env.deploy("hello", "1.0.0", &[], &[]).await.ok();
    let held = hold_streams(&env, loopback(2), "hello", 4, WAIT).await;

    assert_closed_at_once(
        loopback(2),
        &env.serve().proxy_addr,
        WAIT,
        "the fifth connection of 127.0.0.2 to be closed",
    )
    .await;

    let other = support::http_client()
        .no_proxy()
        .local_address(loopback(3))
        .build()
        .expect("client");
    let answer = support::reply(other.get(format!("{}/services/hello/", env.proxy())), WAIT).await;
    assert_eq!(answer.status, 200, "{}", answer.body);
    assert_eq!(refused(&env, "client_cap").await, 1);
    drop(held);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_api_closes_a_slowloris_connection_and_stays_reachable_while_the_proxy_is_at_its_cap()
{
    let env = Env::start_with(&[
        "--header-timeout",
        "2s",
        "--max-connections",
        "6",
        "--max-connections-per-client",
        "6",
    ])
    .await;
    env.deploy("hello", "1.0.0", &[], &[]).await.ok();
    let held = hold_streams(&env, loopback(2), "hello", 6, WAIT).await;
    assert_closed_at_once(
        loopback(3),
        &env.serve().proxy_addr,
        WAIT,
        "a connection over the proxy's cap to be closed",
    )
    .await;

    let attack = tokio::spawn(slowloris_owned(env.serve().admin_addr.clone()));
    let ls = env.ls().await;
    assert_eq!(support::listing::service(&ls, "hello")["name"], "hello");
    assert_answered_408(&attack.await.expect("the slowloris client ran"));

    assert!(counter(&env, "header_timeouts", "admin").await >= 1);
    assert!(refused(&env, "total_cap").await >= 1);
    drop(held);
}

/// Failed accepts in serve's log (not the admin API's): per line, how
/// many more it says happened since the line before (`None`: it says not).
fn accept_failure_lines(log: &str) -> Vec<Option<u64>> {
    let colours = Regex::new("\x1b\\[[0-9;]*m").expect("regex");
    let more = Regex::new(r"\((\d+) more failed accepts").expect("regex");
    colours
        .replace_all(log, "")
        .lines()
        .filter(|l| l.contains("accept failed") && !l.contains(r#"listener="admin""#))
        .map(|l| more.captures(l).map(|c| c[1].parse().expect("a count")))
        .collect()
}

/// Failed accepts of the proxy that serve's log accounts for: each line,
/// the counts it gives, and the count it gives once accepting again.
fn accept_failures_logged(log: &str) -> u64 {
    let colours = Regex::new("\x1b\\[[0-9;]*m").expect("regex");
    let again = Regex::new(r"accepting again, after (\d+) more failed accepts").expect("regex");
    let recovered: u64 = colours
        .replace_all(log, "")
        .lines()
        .filter(|l| l.contains(r#"listener="proxy""#))
        .filter_map(|l| {
            again
                .captures(l)
                .map(|c| c[1].parse::<u64>().expect("a count"))
        })
        .sum();
    let lines = accept_failure_lines(log);
    lines.len() as u64 + lines.iter().map(|m| m.unwrap_or(0)).sum::<u64>() + recovered
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn accept_errors_are_logged_at_most_once_a_second_with_a_count() {
    // Caps above what 256 files allow, so that accepts fail.
    let mut env = Env::new(&[
        "--max-connections",
        "5000",
        "--max-connections-per-client",
        "5000",
    ]);
    env.launch_with_file_limit(256, 256).await;
    env.eventually(
        "serve to warn that its cap is above its file limit",
        WAIT,
        || async { env.serve_log().contains("leaves room for about") },
    )
    .await;

    let started = Instant::now();
    let mut flood = Vec::new();
    for i in 0..400 {
        flood.push(connect_from(loopback(2 + (i % 50) as u8), &env.serve().proxy_addr, WAIT).await);
    }
    env.eventually("a second report of failed accepts", WAIT, || async {
        accept_failure_lines(&env.serve_log()).len() >= 2
    })
    .await;
    let lines = accept_failure_lines(&env.serve_log());
    let elapsed = started.elapsed();
    assert!(
        lines.len() as u64 <= elapsed.as_secs() + 1,
        "{} reports of failed accepts in {elapsed:?}: at most one a second\n{}",
        lines.len(),
        env.serve_log()
    );
    assert!(
        lines.iter().all(Option::is_some),
        "each report says how many more failed since the last: {lines:?}"
    );

    // Once the flood is gone, serve accepts again, and every failed
    // accept it counted is accounted for in its log.
    drop(flood);
    env.eventually("the admin API to answer again", WAIT, || async {
        support::try_reply(env.http.get(format!("{}/metrics", env.admin())), WAIT)
            .await
            .is_ok()
    })
    .await;
    let failed = counter(&env, "accept_errors", "proxy").await;
    assert!(
        failed as usize > lines.len(),
        "{failed} failures, {} lines",
        lines.len()
    );
    env.eventually(
        "the log to account for every failed accept",
        WAIT,
        || async { accept_failures_logged(&env.serve_log()) == failed },
    )
    .await;
}
