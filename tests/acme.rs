//! ACME through the real binary and a real CA (pebble): `switchyard tls
//! acme` orders a certificate that pebble validates over HTTP-01 against
//! serve's own cleartext listener, serve stores it and serves it by SNI
//! at once; short-lived certificates are renewed by serve with no request
//! failed; with the CA down the old certificate is kept and the failure is
//! shown by `tls ls` and /metrics. TLS-ALPN-01 is answered by the TLS
//! listener; a service marked with `https NAME --acme on` gets a
//! certificate for each host name as it is added; `tls rm` cancels an
//! order under way.

mod support;

use std::time::{Duration, Instant};

use support::Env;
use support::http1::Http1;
use support::load::failures;
use support::pebble::{Pebble, acme_orders as orders};
use support::tls::{https_load, https1};

const WAIT: Duration = Duration::from_secs(60);

/// A serve with a TLS listener, checking ACME renewals every second, and
/// hello deployed for app.test.
async fn acme_env() -> Env {
    let env = Env::start_with(&["--tls-listen", "127.0.0.1:0", "--acme-renew-check", "1s"]).await;
    env.deploy("hello", "1.0.0", &["--host", "app.test"], &[])
        .await
        .ok();
    env
}

async fn order(env: &Env, pebble: &Pebble) -> support::Run {
    order_with(env, pebble, &[]).await
}

async fn order_with(env: &Env, pebble: &Pebble, extra: &[&str]) -> support::Run {
    let ca = pebble.directory_ca.display().to_string();
    let mut args = vec![
        "tls",
        "acme",
        "app.test",
        "--email",
        "ops@app.test",
        "--directory",
        &pebble.directory,
        "--directory-ca",
        &ca,
    ];
    args.extend_from_slice(extra);
    env.cli(&args).await
}

/// A port where nothing listens.
fn closed_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port()
}

/// The kinds and messages of hello's events (the service of app.test).
async fn events(env: &Env) -> Vec<(String, String)> {
    let run = env.cli(&["events", "hello", "--json"]).await.ok();
    let list: serde_json::Value = serde_json::from_str(&run.stdout).expect("events JSON");
    list.as_array()
        .expect("a list")
        .iter()
        .map(|e| {
            (
                e["kind"].as_str().unwrap_or_default().to_owned(),
                e["message"].as_str().unwrap_or_default().to_owned(),
            )
        })
        .collect()
}

async fn certificate(env: &Env) -> serde_json::Value {
    certificate_of(env, "app.test").await
}

async fn certificate_of(env: &Env, host: &str) -> serde_json::Value {
    let run = env.cli(&["tls", "ls", "--json"]).await.ok();
    let list: serde_json::Value = serde_json::from_str(&run.stdout).expect("tls ls JSON");
    list.as_array()
        .and_then(|l| l.iter().find(|c| c["host"] == host).cloned())
        .unwrap_or(serde_json::Value::Null)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_acme_certificate_is_validated_over_http01_stored_and_served_by_sni_at_once() {
    if !Pebble::available("acme") {
        return;
    }
    let env = acme_env().await;
    let pebble = Pebble::start(env.dir.path(), env.proxy_port(), Duration::from_secs(3600)).await;

    let run = order(&env, &pebble).await;
    assert_eq!(
        run.code,
        0,
        "tls acme failed:\n{}\n{}\npebble:\n{}\nserve:\n{}",
        run.stdout,
        run.stderr,
        pebble.log(),
        env.serve_log()
    );
    assert!(
        run.stdout.contains("certificate for app.test stored"),
        "{}",
        run.stdout
    );
    assert!(
        run.stderr.contains("waiting for the CA to validate"),
        "progress is shown: {}",
        run.stderr
    );
    let stored = certificate(&env).await;
    assert_eq!(stored["source"], "acme", "{stored}");
    assert_eq!(stored["names"], serde_json::json!(["app.test"]), "{stored}");
    let events = events(&env).await;
    assert!(
        events.iter().any(|(kind, _)| kind == "certificate-issued"),
        "{events:?}"
    );

    let addr = env.tls_addr();
    let mut client = https1(addr, "app.test", &pebble.root_pem);
    let (status, version, body) = client
        .get("/echo")
        .await
        .expect("an HTTPS answer trusting pebble's root");
    assert_eq!((status, version.as_str()), (200, "1.0.0"), "{body}");

    // Only tokens of pending orders are answered: now there is none, and
    // the path is routed like any other.
    let (status, _, _) = Http1::new(&env.serve().proxy_addr)
        .get_with(
            "/.well-known/acme-challenge/made-up",
            &[("host", "other.test")],
        )
        .await
        .expect("an answer");
    assert_eq!(status, 404);

    // A removed ACME certificate is not renewed: its order goes with it.
    env.cli(&["tls", "rm", "app.test"]).await.ok();
    assert_eq!(orders(&env).await, serde_json::json!([]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_short_lived_acme_certificate_is_renewed_under_load_with_no_request_failed() {
    if !Pebble::available("acme") {
        return;
    }
    let env = acme_env().await;
    // Renewed when a third is left: some 20s after it is issued.
    let pebble = Pebble::start(env.dir.path(), env.proxy_port(), Duration::from_secs(30)).await;
    order(&env, &pebble).await.ok();
    let first = certificate(&env).await;

    let (load, _clients) = https_load(
        env.tls_addr(),
        "app.test",
        &pebble.root_pem,
        4,
        Instant::now() + Duration::from_secs(180),
    );
    load.run_for(20, WAIT).await;
    let first_updated = first["updated_at"].clone();
    env.eventually(
        "serve renews the certificate",
        Duration::from_secs(90),
        || async {
            let now = certificate(&env).await;
            now["updated_at"] != first_updated && now["source"] == "acme"
        },
    )
    .await;
    load.run_for(40, WAIT).await;
    let answers = load.finish().await;
    let failed = failures(&answers);
    assert!(
        failed.is_empty(),
        "{} of {} requests failed: {:?}",
        failed.len(),
        answers.len(),
        &failed[..failed.len().min(5)]
    );
    let renewed = certificate(&env).await;
    assert!(
        renewed["not_after"].as_i64() > first["not_after"].as_i64(),
        "the renewed certificate lasts longer: {first} then {renewed}"
    );
    assert!(
        env.serve_log().contains("renewing the ACME certificate"),
        "{}",
        env.serve_log()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_the_ca_down_a_renewal_fails_keeps_the_old_certificate_and_says_why() {
    if !Pebble::available("acme") {
        return;
    }
    let env = acme_env().await;
    let mut pebble = Pebble::start(env.dir.path(), env.proxy_port(), Duration::from_secs(30)).await;
    order(&env, &pebble).await.ok();
    let before = certificate(&env).await;
    pebble.kill();

    env.eventually(
        "the failed renewal is shown by tls ls",
        Duration::from_secs(90),
        || async { certificate(&env).await["last_error"].is_string() },
    )
    .await;
    let after = certificate(&env).await;
    let error = after["last_error"].as_str().unwrap_or_default().to_owned();
    assert!(
        error.contains("cannot reach the ACME CA"),
        "the error says what failed: {error}"
    );
    assert_eq!(
        after["updated_at"], before["updated_at"],
        "the old one is kept"
    );
    assert_eq!(after["not_after"], before["not_after"]);

    let table = env.cli(&["tls", "ls"]).await.ok();
    assert!(table.stdout.contains("LAST ERROR"), "{}", table.stdout);
    assert!(
        table.stdout.contains("cannot reach the ACME CA"),
        "{}",
        table.stdout
    );
    let events = events(&env).await;
    assert!(
        events
            .iter()
            .any(|(kind, message)| kind == "certificate-failed"
                && message.contains("cannot reach the ACME CA")),
        "{events:?}"
    );
    let metrics = env.metrics().await;
    let failures_total = metrics
        .lines()
        .find_map(|l| l.strip_prefix("switchyard_tls_acme_failures_total "))
        .and_then(|v| v.trim().parse::<u64>().ok())
        .unwrap_or(0);
    assert!(failures_total >= 1, "{metrics}");
    assert!(
        metrics.contains("switchyard_tls_certificate_expiry_seconds{host=\"app.test\"}"),
        "{metrics}"
    );

    // Still served, with the old certificate.
    let addr = env.tls_addr();
    let mut client = https1(addr, "app.test", &pebble.root_pem);
    let (status, _, body) = client.get("/echo").await.expect("HTTPS still answered");
    assert_eq!(status, 200, "{body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_acme_order_with_bad_input_is_refused_and_changes_nothing() {
    let env = acme_env().await;
    for (args, says) in [
        (
            vec!["tls", "acme", "*.app.test", "--email", "ops@app.test"],
            "not a host name HTTP-01 or TLS-ALPN-01 can validate",
        ),
        (
            vec!["tls", "acme", "app.test", "--email", "nobody"],
            "not an email address",
        ),
        (
            vec![
                "tls",
                "acme",
                "app.test",
                "--email",
                "ops@app.test",
                "--directory",
                "ftp://ca.test/dir",
            ],
            "not an https:// directory URL",
        ),
    ] {
        let run = env.cli(&args).await.failed();
        assert!(run.stderr.contains(says), "{args:?}: {}", run.stderr);
    }
    assert_eq!(orders(&env).await, serde_json::json!([]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_challenge_the_ca_cannot_validate_fails_the_order_with_the_cas_detail() {
    if !Pebble::available("acme") {
        return;
    }
    let env = acme_env().await;
    // Pebble validates HTTP-01 against a port where nothing listens.
    let pebble = Pebble::start(env.dir.path(), closed_port(), Duration::from_secs(3600)).await;
    let run = order(&env, &pebble).await.failed();
    assert!(
        run.stderr
            .contains("the CA could not validate app.test over HTTP-01"),
        "{}",
        run.stderr
    );
    assert!(
        run.stderr.contains("connection refused") || run.stderr.contains("Connection refused"),
        "the CA's own detail is given: {}",
        run.stderr
    );
    assert_eq!(
        certificate(&env).await,
        serde_json::Value::Null,
        "nothing stored"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_alpn01_is_answered_by_the_tls_listener_alone_and_only_during_the_order() {
    if !Pebble::available("acme") {
        return;
    }
    let env = acme_env().await;
    // Pebble validates HTTP-01 where nothing listens and TLS-ALPN-01 on
    // serve's TLS listener: only the latter can pass.
    let pebble = Pebble::start_validating(
        env.dir.path(),
        closed_port(),
        env.tls_addr().port(),
        Duration::from_secs(3600),
    )
    .await;
    let validator = support::tls::client_config_trusting(&pebble.root_pem, &[b"acme-tls/1"]);
    assert!(
        support::tls::handshake(env.tls_addr(), "app.test", validator.clone())
            .await
            .is_err(),
        "no order runs: a TLS-ALPN-01 handshake gets no certificate"
    );

    let run = order_with(&env, &pebble, &["--challenge", "tls-alpn-01"]).await;
    assert_eq!(
        run.code,
        0,
        "tls acme failed:\n{}\n{}\npebble:\n{}\nserve:\n{}",
        run.stdout,
        run.stderr,
        pebble.log(),
        env.serve_log()
    );
    let stored = certificate(&env).await;
    assert_eq!(stored["source"], "acme", "{stored}");
    // (HTTP-01 could not have passed: nothing listens where pebble
    // would look for it.)
    assert_eq!(orders(&env).await[0]["request"]["challenge"], "tls-alpn-01");

    // Ordinary clients get the issued certificate (the challenge one is
    // self-signed and would fail verification against pebble's root).
    let mut client = https1(env.tls_addr(), "app.test", &pebble.root_pem);
    let (status, version, body) = client.get("/echo").await.expect("an HTTPS answer");
    assert_eq!((status, version.as_str()), (200, "1.0.0"), "{body}");
    assert!(
        support::tls::handshake(env.tls_addr(), "app.test", validator)
            .await
            .is_err(),
        "the order is over: no challenge certificate any more"
    );

    // TLS-ALPN-01 needs a TLS listener: a serve without one refuses.
    let cleartext = Env::start().await;
    let run = cleartext
        .cli(&[
            "tls",
            "acme",
            "app.test",
            "--email",
            "ops@app.test",
            "--challenge",
            "tls-alpn-01",
        ])
        .await
        .failed();
    assert!(
        run.stderr.contains("no TLS listener to answer TLS-ALPN-01"),
        "{}",
        run.stderr
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_service_marked_for_acme_gets_a_certificate_for_each_host_name_as_it_is_added() {
    if !Pebble::available("acme") {
        return;
    }
    let env = acme_env().await;
    let pebble = Pebble::start(env.dir.path(), env.proxy_port(), Duration::from_secs(3600)).await;
    let ca = pebble.directory_ca.display().to_string();

    let refused = env.cli(&["https", "hello", "--acme", "on"]).await.failed();
    assert!(refused.stderr.contains("--email"), "{}", refused.stderr);
    let refused = env
        .cli(&["https", "hello", "--acme", "on", "--email", "nobody"])
        .await
        .failed();
    assert!(
        refused.stderr.contains("not an email address"),
        "{}",
        refused.stderr
    );
    assert_eq!(orders(&env).await, serde_json::json!([]), "nothing changed");

    env.cli(&[
        "https",
        "hello",
        "--acme",
        "on",
        "--email",
        "ops@app.test",
        "--directory",
        &pebble.directory,
        "--directory-ca",
        &ca,
    ])
    .await
    .ok();
    let shown = env.cli(&["https", "hello"]).await.ok().stdout;
    assert!(shown.contains("certificates from"), "{shown}");
    // The host name it has gets one.
    env.eventually(
        "app.test gets a certificate",
        Duration::from_secs(90),
        || async { certificate_of(&env, "app.test").await["source"] == "acme" },
    )
    .await;

    // And one added later gets its own.
    env.cli(&["host", "add", "hello", "www.app.test"])
        .await
        .ok();
    env.eventually(
        "www.app.test gets a certificate",
        Duration::from_secs(90),
        || async { certificate_of(&env, "www.app.test").await["source"] == "acme" },
    )
    .await;
    let mut client = https1(env.tls_addr(), "www.app.test", &pebble.root_pem);
    let (status, _, body) = client.get("/echo").await.expect("an HTTPS answer");
    assert_eq!(status, 200, "{body}");
    let events = events(&env).await;
    assert!(
        events
            .iter()
            .any(|(kind, message)| kind == "certificate-issued" && message.contains("www.app.test")),
        "{events:?}"
    );

    // Turned off, no more are ordered; the stored ones stay.
    env.cli(&["https", "hello", "--acme", "off"]).await.ok();
    let shown = env.cli(&["https", "hello"]).await.ok().stdout;
    assert!(!shown.contains("certificates from"), "{shown}");
    assert_eq!(certificate_of(&env, "app.test").await["source"], "acme");
}

/// A TCP port that holds each connection until opened, then passes it
/// to `to`: a CA's validation request is held while the test acts.
struct Gate {
    port: u16,
    arrived: std::sync::Arc<std::sync::atomic::AtomicUsize>,
    open: tokio::sync::watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
}

impl Gate {
    async fn start(to: String) -> Gate {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let port = listener.local_addr().expect("address").port();
        let arrived = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let (open, opened) = tokio::sync::watch::channel(false);
        let count = arrived.clone();
        let task = tokio::spawn(async move {
            while let Ok((mut client, _)) = listener.accept().await {
                count.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                let mut opened = opened.clone();
                let to = to.clone();
                tokio::spawn(async move {
                    if opened.wait_for(|open| *open).await.is_err() {
                        return;
                    }
                    if let Ok(mut upstream) = tokio::net::TcpStream::connect(&to).await {
                        let _ = tokio::io::copy_bidirectional(&mut client, &mut upstream).await;
                    }
                });
            }
        });
        Gate {
            port,
            arrived,
            open,
            task,
        }
    }
}

impl Drop for Gate {
    fn drop(&mut self) {
        self.task.abort();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_rm_during_an_order_cancels_it_and_nothing_is_stored_after() {
    if !Pebble::available("acme") {
        return;
    }
    let env = acme_env().await;
    let gate = Gate::start(env.serve().proxy_addr.clone()).await;
    let pebble = Pebble::start(env.dir.path(), gate.port, Duration::from_secs(3600)).await;
    order_with(&env, &pebble, &["--no-wait"]).await.ok();
    env.eventually(
        "pebble's validation request arrives (held)",
        WAIT,
        || async { gate.arrived.load(std::sync::atomic::Ordering::SeqCst) > 0 },
    )
    .await;
    assert_eq!(orders(&env).await[0]["state"], "ordering");

    let run = env.cli(&["tls", "rm", "app.test"]).await.ok();
    assert!(
        run.stdout.contains("ACME order for app.test forgotten"),
        "{}",
        run.stdout
    );
    env.eventually("the cancelled order ends", WAIT, || async {
        env.serve_log()
            .contains("the cancelled ACME order ended; nothing kept of it")
    })
    .await;
    // The CA's request goes through now: the answer is no longer there.
    let _ = gate.open.send(true);
    assert_eq!(orders(&env).await, serde_json::json!([]));
    assert_eq!(certificate(&env).await, serde_json::Value::Null);
    let (status, _, _) = Http1::new(&env.serve().proxy_addr)
        .get_with("/.well-known/acme-challenge/any", &[("host", "app.test")])
        .await
        .expect("an answer");
    assert_ne!(status, 200, "no challenge is answered any more");

    // A removed host without an order or a certificate is an error still.
    let run = env.cli(&["tls", "rm", "app.test"]).await.failed();
    assert!(
        run.stderr.contains("no certificate for app.test"),
        "{}",
        run.stderr
    );
}
