//! ACME through the real binary and a real CA (pebble): `switchyard tls
//! acme` orders a certificate that pebble validates over HTTP-01 against
//! serve's own cleartext listener, serve stores it and serves it by SNI
//! at once; short-lived certificates are renewed by serve with no request
//! failed; with the CA down the old certificate is kept and the failure is
//! shown by `tls ls` and /metrics.

mod support;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use support::Env;
use support::http1::Http1;
use support::load::{Load, failures};
use support::pebble::Pebble;
use support::tls::client_config_trusting;

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

fn tls_addr(env: &Env) -> SocketAddr {
    env.serve()
        .tls_addr
        .as_deref()
        .expect("serve printed its TLS listener")
        .parse()
        .expect("a socket address")
}

fn proxy_port(env: &Env) -> u16 {
    env.serve()
        .proxy_addr
        .rsplit_once(':')
        .and_then(|(_, port)| port.parse().ok())
        .expect("the proxy's port")
}

async fn order(env: &Env, pebble: &Pebble) -> support::Run {
    let ca = pebble.directory_ca.display().to_string();
    env.cli(&[
        "tls",
        "acme",
        "app.test",
        "--email",
        "ops@app.test",
        "--directory",
        &pebble.directory,
        "--directory-ca",
        &ca,
    ])
    .await
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
    let run = env.cli(&["tls", "ls", "--json"]).await.ok();
    let list: serde_json::Value = serde_json::from_str(&run.stdout).expect("tls ls JSON");
    list.as_array()
        .and_then(|l| l.iter().find(|c| c["host"] == "app.test").cloned())
        .unwrap_or(serde_json::Value::Null)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_acme_certificate_is_validated_over_http01_stored_and_served_by_sni_at_once() {
    if !Pebble::available("acme") {
        return;
    }
    let env = acme_env().await;
    let pebble = Pebble::start(env.dir.path(), proxy_port(&env), Duration::from_secs(3600)).await;

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

    let addr = tls_addr(&env);
    let mut client = Http1::tls(
        &addr.to_string(),
        "app.test",
        client_config_trusting(&pebble.root_pem, &[b"http/1.1"]),
    );
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
    let orders: serde_json::Value = env
        .http
        .get(format!("{}/v1/tls/acme", env.admin()))
        .send()
        .await
        .expect("the admin API answers")
        .json()
        .await
        .expect("orders JSON");
    assert_eq!(orders, serde_json::json!([]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_short_lived_acme_certificate_is_renewed_under_load_with_no_request_failed() {
    if !Pebble::available("acme") {
        return;
    }
    let env = acme_env().await;
    // Renewed when a third is left: some 20s after it is issued.
    let pebble = Pebble::start(env.dir.path(), proxy_port(&env), Duration::from_secs(30)).await;
    order(&env, &pebble).await.ok();
    let first = certificate(&env).await;

    let addr = tls_addr(&env).to_string();
    let config = client_config_trusting(&pebble.root_pem, &[b"http/1.1"]);
    let clients: Vec<_> = (0..4)
        .map(|_| tokio::sync::Mutex::new(Http1::tls(&addr, "app.test", config.clone())))
        .collect();
    let clients = std::sync::Arc::new(clients);
    let load = Load::start_until(4, Instant::now() + Duration::from_secs(180), {
        let clients = clients.clone();
        move |client, _| {
            let clients = clients.clone();
            async move {
                // Every other client makes a new handshake each request.
                let headers: &[(&str, &str)] = if client % 2 == 0 {
                    &[]
                } else {
                    &[("connection", "close")]
                };
                clients[client]
                    .lock()
                    .await
                    .get_with("/echo", headers)
                    .await
            }
        }
    });
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
    let mut pebble = Pebble::start(env.dir.path(), proxy_port(&env), Duration::from_secs(30)).await;
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
    let addr = tls_addr(&env);
    let mut client = Http1::tls(
        &addr.to_string(),
        "app.test",
        client_config_trusting(&pebble.root_pem, &[b"http/1.1"]),
    );
    let (status, _, body) = client.get("/echo").await.expect("HTTPS still answered");
    assert_eq!(status, 200, "{body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_acme_order_with_bad_input_is_refused_and_changes_nothing() {
    let env = acme_env().await;
    for (args, says) in [
        (
            vec!["tls", "acme", "*.app.test", "--email", "ops@app.test"],
            "not a host name HTTP-01 can validate",
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
    let orders: serde_json::Value = env
        .http
        .get(format!("{}/v1/tls/acme", env.admin()))
        .send()
        .await
        .expect("the admin API answers")
        .json()
        .await
        .expect("orders JSON");
    assert_eq!(orders, serde_json::json!([]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_challenge_the_ca_cannot_validate_fails_the_order_with_the_cas_detail() {
    if !Pebble::available("acme") {
        return;
    }
    let env = acme_env().await;
    // Pebble validates HTTP-01 against a port where nothing listens.
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port();
    let pebble = Pebble::start(env.dir.path(), closed, Duration::from_secs(3600)).await;
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
