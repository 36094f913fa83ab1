//! TLS at the edge, through the real binary: certificates stored with
//! `switchyard tls add`, chosen by SNI on `serve --tls-listen`, HTTP/2 by
//! ALPN, `X-Forwarded-Proto: https` upstream, a handshake that stalls cut
//! off by the handshake timeout, certificates replaced under load with no
//! request failed, and the CLI reaching an admin API served over TLS.
//! Certificates come from a CA each test makes with rcgen.

mod support;

use std::time::{Duration, Instant};

use support::http1::Http1;
use support::load::failures;
use support::metrics::Metrics;
use support::tls::{TestCa, der_of, handshake, https_load, https1, peer_certificate};
use support::{Env, Run};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const WAIT: Duration = Duration::from_secs(30);

async fn tls_env() -> Env {
    Env::start_with(&["--tls-listen", "127.0.0.1:0"]).await
}

async fn tls_add(env: &Env, host: &str, issued: &support::tls::Issued) -> Run {
    let (cert, key) = (
        issued.cert_file.display().to_string(),
        issued.key_file.display().to_string(),
    );
    let mut args = vec!["tls", "add"];
    if host == "--default" {
        args.push("--default");
    } else {
        args.push(host);
    }
    args.extend_from_slice(&["--cert", &cert, "--key", &key]);
    env.cli(&args).await
}

/// The certificate the TLS listener presents to a client asking for `name`.
async fn served_certificate(env: &Env, ca: &TestCa, name: &str) -> Result<Vec<u8>, String> {
    let stream = handshake(env.tls_addr(), name, ca.client_config(&[b"http/1.1"])).await?;
    Ok(peer_certificate(&stream))
}

fn forwarded_proto(body: &str) -> String {
    let echo: serde_json::Value = serde_json::from_str(body).expect("echo JSON");
    echo["headers"]["x-forwarded-proto"][0]
        .as_str()
        .unwrap_or("(none)")
        .to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_is_answered_by_sni_over_http2_and_upstreams_are_told_it_was_https() {
    let env = tls_env().await;
    env.deploy("hello", "1.0.0", &["--host", "app.test"], &[])
        .await
        .ok();
    let ca = TestCa::new("Switchyard Test CA");
    let issued = ca.issue(&["app.test"], env.dir.path(), "app");
    tls_add(&env, "app.test", &issued).await.ok();
    let addr = env.tls_addr();

    let client = ca.reqwest("app.test", addr);
    let response = client
        .get(format!("https://app.test:{}/echo", addr.port()))
        .send()
        .await
        .expect("an HTTPS answer");
    assert_eq!(response.version(), http::Version::HTTP_2, "h2 by ALPN");
    assert_eq!(response.status(), 200);
    let body = response.text().await.expect("body");
    assert_eq!(forwarded_proto(&body), "https", "{body}");

    let mut http1 = https1(addr, "app.test", ca.pem());
    let (status, version, body) = http1.get("/echo").await.expect("HTTP/1.1 over TLS");
    assert_eq!((status, version.as_str()), (200, "1.0.0"), "{body}");
    assert_eq!(forwarded_proto(&body), "https", "{body}");

    let (status, _, body) = Http1::new(&env.serve().proxy_addr)
        .get_with("/echo", &[("host", "app.test")])
        .await
        .expect("cleartext answer");
    assert_eq!(status, 200);
    assert_eq!(
        forwarded_proto(&body),
        "http",
        "the cleartext listener says http"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_name_without_a_certificate_fails_the_handshake_unless_a_default_answers() {
    let mut env = tls_env().await;
    let ca = TestCa::new("Switchyard Test CA");
    let dir = env.dir.path().to_owned();
    let app = ca.issue(&["app.test"], &dir, "app");
    // The default need not name every host; this one names other.test
    // too, so that a verifying client can tell it was presented.
    let fallback = ca.issue(&["fallback.test", "other.test"], &dir, "fallback");
    let wildcard = ca.issue(&["*.wild.test"], &dir, "wild");

    let none = served_certificate(&env, &ca, "app.test").await;
    assert!(none.is_err(), "no certificate at all: the handshake fails");
    tls_add(&env, "app.test", &app).await.ok();
    tls_add(&env, "*.wild.test", &wildcard).await.ok();
    assert_eq!(
        served_certificate(&env, &ca, "app.test")
            .await
            .expect("app.test"),
        der_of(&app.cert_pem)
    );
    assert_eq!(
        served_certificate(&env, &ca, "a.wild.test")
            .await
            .expect("a wildcard name"),
        der_of(&wildcard.cert_pem)
    );
    let unknown = served_certificate(&env, &ca, "other.test").await;
    assert!(
        unknown.is_err(),
        "an unknown name without a default fails: {unknown:?}"
    );

    tls_add(&env, "--default", &fallback).await.ok();
    assert_eq!(
        served_certificate(&env, &ca, "other.test")
            .await
            .expect("the default answers a name with no certificate of its own"),
        der_of(&fallback.cert_pem)
    );
    env.kill9_and_restart().await;
    assert_eq!(
        served_certificate(&env, &ca, "app.test")
            .await
            .expect("after a restart"),
        der_of(&app.cert_pem),
        "certificates are kept in the store"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_ls_shows_host_issuer_expiry_and_source_and_rm_removes() {
    let env = tls_env().await;
    let ca = TestCa::new("Listing Test CA");
    let app = ca.issue(&["app.test"], env.dir.path(), "app");
    tls_add(&env, "app.test", &app).await.ok();
    tls_add(&env, "--default", &app).await.ok();

    let text = env.cli(&["tls", "ls"]).await.ok().stdout;
    assert!(text.contains("HOST") && text.contains("EXPIRES"), "{text}");
    let line = text
        .lines()
        .find(|l| l.starts_with("app.test"))
        .unwrap_or_else(|| panic!("a line for app.test in:\n{text}"));
    assert!(
        line.contains("Listing Test CA") && line.contains("file"),
        "{line}"
    );
    assert!(text.contains("* (default)"), "{text}");

    let listed: serde_json::Value =
        serde_json::from_str(&env.cli(&["tls", "ls", "--json"]).await.ok().stdout).expect("JSON");
    let app_entry = listed
        .as_array()
        .expect("a list")
        .iter()
        .find(|c| c["host"] == "app.test")
        .expect("app.test listed");
    assert_eq!(app_entry["issuer"], "Listing Test CA");
    assert_eq!(app_entry["source"], "file");
    assert!(app_entry["not_after"].as_i64().expect("expiry") > support::now_millis() as i64 / 1000);

    env.cli(&["tls", "rm", "app.test"]).await.ok();
    env.cli(&["tls", "rm", "--default"]).await.ok();
    let gone = env.cli(&["tls", "rm", "app.test"]).await.failed();
    assert!(
        gone.stderr.contains("no certificate for app.test"),
        "{}",
        gone.stderr
    );
    let text = env.cli(&["tls", "ls"]).await.ok().stdout;
    assert!(text.contains("no certificates"), "{text}");
    assert!(served_certificate(&env, &ca, "app.test").await.is_err());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn certificates_that_cannot_serve_the_host_are_refused_and_change_nothing() {
    let env = tls_env().await;
    let ca = TestCa::new("Switchyard Test CA");
    let dir = env.dir.path().to_owned();
    let good = ca.issue(&["app.test"], &dir, "good");
    tls_add(&env, "app.test", &good).await.ok();

    let other = ca.issue(&["other.test"], &dir, "other");
    let expired = ca.issue_expired(&["app.test"], &dir, "expired");
    let mut mismatched = ca.issue(&["app.test"], &dir, "mismatched");
    mismatched.key_file = other.key_file.clone();
    let garbage = dir.join("garbage.pem");
    std::fs::write(&garbage, "not a certificate").expect("write");
    let mut not_pem = ca.issue(&["app.test"], &dir, "notpem");
    not_pem.cert_file = garbage.clone();

    for (issued, host, expected) in [
        (&other, "app.test", "is for other.test, not app.test"),
        (&expired, "app.test", "expired"),
        (&mismatched, "app.test", "does not go with the certificate"),
        (&not_pem, "app.test", "no PEM certificate"),
        (&good, "a b", "not a host name"),
        (&good, "*.test", "not a host name"),
    ] {
        let run = tls_add(&env, host, issued).await.failed();
        assert!(
            run.stderr.contains(expected),
            "{host}: expected `{expected}` in: {}",
            run.stderr
        );
    }
    let listed: serde_json::Value =
        serde_json::from_str(&env.cli(&["tls", "ls", "--json"]).await.ok().stdout).expect("JSON");
    assert_eq!(listed.as_array().map(Vec::len), Some(1), "{listed}");
    assert_eq!(
        served_certificate(&env, &ca, "app.test")
            .await
            .expect("still served"),
        der_of(&good.cert_pem),
        "the good certificate is still the one served"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replacing_a_certificate_under_load_fails_no_request() {
    let env = tls_env().await;
    env.deploy("hello", "1.0.0", &["--host", "app.test"], &[])
        .await
        .ok();
    let ca = TestCa::new("Switchyard Test CA");
    let dir = env.dir.path().to_owned();
    tls_add(&env, "app.test", &ca.issue(&["app.test"], &dir, "first"))
        .await
        .ok();
    let (load, clients) = https_load(
        env.tls_addr(),
        "app.test",
        ca.pem(),
        6,
        Instant::now() + Duration::from_secs(120),
    );
    load.run_for(50, WAIT).await;
    let mut last = None;
    for round in 0..5 {
        let issued = ca.issue(&["app.test"], &dir, &format!("round{round}"));
        tls_add(&env, "app.test", &issued).await.ok();
        load.run_for(40, WAIT).await;
        last = Some(issued);
    }
    let answers = load.finish().await;
    let failed = failures(&answers);
    assert!(
        failed.is_empty(),
        "{} of {} requests failed: {:?}",
        failed.len(),
        answers.len(),
        &failed[..failed.len().min(5)]
    );
    let handshakes = clients.connections().await;
    assert!(
        handshakes > 100,
        "new connections made during the replacements: {handshakes}"
    );
    assert_eq!(
        served_certificate(&env, &ca, "app.test")
            .await
            .expect("served"),
        der_of(&last.expect("replaced").cert_pem),
        "new handshakes get the last certificate"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_handshake_is_closed_after_the_handshake_timeout_while_others_are_served() {
    let env = Env::start_with(&[
        "--tls-listen",
        "127.0.0.1:0",
        "--tls-handshake-timeout",
        "2s",
    ])
    .await;
    env.deploy("hello", "1.0.0", &["--host", "app.test"], &[])
        .await
        .ok();
    let ca = TestCa::new("Switchyard Test CA");
    tls_add(
        &env,
        "app.test",
        &ca.issue(&["app.test"], env.dir.path(), "app"),
    )
    .await
    .ok();
    let addr = env.tls_addr();

    // The start of a TLS record (a handshake record of 512 bytes), then
    // nothing more.
    let started = Instant::now();
    let mut stalled = tokio::net::TcpStream::connect(addr).await.expect("connect");
    stalled
        .write_all(&[0x16, 0x03, 0x01, 0x02, 0x00, 0x01])
        .await
        .expect("write the first bytes");

    // Meanwhile another client's handshake and request go through.
    let mut client = https1(addr, "app.test", ca.pem());
    let (status, _, body) = client.get("/echo").await.expect("served meanwhile");
    assert_eq!(status, 200, "{body}");

    let mut buf = [0u8; 64];
    let read = tokio::time::timeout(WAIT, stalled.read(&mut buf))
        .await
        .expect("the stalled connection is closed within the bound");
    let waited = started.elapsed();
    assert!(
        matches!(read, Ok(0) | Err(_)),
        "closed without an answer: {read:?}"
    );
    assert!(
        waited >= Duration::from_millis(1900),
        "closed by the timeout, not at once: {waited:?}"
    );
    let metrics = Metrics::scrape(&env).await;
    assert_eq!(
        metrics.value(
            "switchyard_tls_handshake_timeouts_total",
            &[("listener", "proxy")]
        ),
        1,
        "{}",
        env.serve_log()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cli_reaches_an_https_admin_api_when_it_trusts_the_ca() {
    let certs = tempfile::tempdir().expect("temp dir");
    let ca = TestCa::new("Admin Test CA");
    let issued = ca.issue(&["127.0.0.1", "localhost"], certs.path(), "admin");
    let ca_file = ca.write(certs.path(), "ca.pem");
    let cert = issued.cert_file.display().to_string();
    let key = issued.key_file.display().to_string();
    let env = Env::start_with(&["--admin-tls-cert", &cert, "--admin-tls-key", &key]).await;
    assert!(env.admin().starts_with("https://"), "{}", env.admin());

    let refused = env.cli(&["ls"]).await.failed();
    assert!(
        refused.stderr.contains("--ca FILE or SWITCHYARD_CA"),
        "{}",
        refused.stderr
    );
    let ca_path = ca_file.display().to_string();
    let listed = env.cli(&["ls", "--ca", &ca_path]).await.ok();
    assert!(listed.stdout.contains("no services") || listed.code == 0);
    env.cli_with(&[("SWITCHYARD_CA", &ca_path)], &["ls", "--json"])
        .await
        .ok();
    env.cli_with(
        &[("SWITCHYARD_CA", &ca_path)],
        &[
            "deploy",
            "hello",
            "1.0.0",
            "--health",
            "/healthz",
            "--",
            support::HELLO,
            "--port",
            "{port}",
        ],
    )
    .await
    .ok();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_service_can_send_cleartext_clients_to_https_and_tell_browsers_to_stay() {
    let env = tls_env().await;
    env.deploy("hello", "1.0.0", &["--host", "app.test"], &[])
        .await
        .ok();
    let ca = TestCa::new("Switchyard Test CA");
    tls_add(
        &env,
        "app.test",
        &ca.issue(&["app.test"], env.dir.path(), "app"),
    )
    .await
    .ok();
    let addr = env.tls_addr();
    let plain = support::http_client()
        .no_proxy()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .expect("client");
    let cleartext = || {
        plain
            .get(format!("{}/echo?x=1", env.serve().proxy))
            .header("host", "app.test")
            .send()
    };
    assert_eq!(cleartext().await.expect("answer").status(), 200);

    for (bad, expected) in [
        (&["--redirect", "maybe"][..], "--redirect takes on or off"),
        (&["--hsts", "0s"][..], "--hsts off"),
        (&["--hsts", "soon"][..], "--hsts takes a duration"),
    ] {
        let mut args = vec!["https", "hello"];
        args.extend_from_slice(bad);
        let run = env.cli(&args).await.failed();
        assert!(run.stderr.contains(expected), "{bad:?}: {}", run.stderr);
    }
    env.cli(&["https", "hello", "--redirect", "on", "--hsts", "1y"])
        .await
        .ok();
    let shown = env.cli(&["https", "hello"]).await.ok().stdout;
    assert!(
        shown.contains("redirect to HTTPS on, HSTS max-age 1year"),
        "{shown}"
    );
    let listed = env.ls().await;
    assert_eq!(listed[0]["https"]["redirect"], true, "{listed}");

    let redirected = cleartext().await.expect("answer");
    assert_eq!(redirected.status(), 308);
    assert_eq!(
        redirected.headers()["location"],
        format!("https://app.test:{}/echo?x=1", addr.port()).as_str()
    );
    assert!(
        redirected
            .headers()
            .get("strict-transport-security")
            .is_none()
    );

    let over_tls = ca
        .reqwest("app.test", addr)
        .get(format!("https://app.test:{}/echo", addr.port()))
        .send()
        .await
        .expect("HTTPS answer");
    assert_eq!(over_tls.status(), 200);
    assert_eq!(
        over_tls.headers()["strict-transport-security"],
        "max-age=31557600"
    );

    env.cli(&["https", "hello", "--redirect", "off"]).await.ok();
    assert_eq!(cleartext().await.expect("answer").status(), 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_external_release_over_https_is_verified_health_checked_and_reached_by_name() {
    let env = Env::start().await;
    let ca = TestCa::new("Upstream Test CA");
    let upstream = support::tls::HttpsUpstream::start(&ca, &["localhost"], env.dir.path()).await;
    let address = format!("https://localhost:{}", upstream.addr.port());

    // Without its CA the upstream cannot be verified: never healthy, and
    // the deploy's error gives the verification error and the way out.
    let refused = env
        .cli(&[
            "deploy",
            "ext",
            "1.0.0",
            "--upstream",
            &address,
            "--health",
            "/healthz",
            "--ready-timeout",
            "3s",
        ])
        .await
        .failed();
    assert!(
        refused.stderr.contains("did not become healthy"),
        "{}",
        refused.stderr
    );
    for says in [
        "the upstream's TLS certificate cannot be verified",
        "UnknownIssuer",
        "--upstream-ca FILE",
    ] {
        assert!(refused.stderr.contains(says), "{says}: {}", refused.stderr);
    }

    let bad_ca = env.dir.path().join("not-a-ca.pem");
    std::fs::write(&bad_ca, "nothing here").expect("write");
    let run = env
        .cli(&[
            "deploy",
            "ext",
            "1.0.1",
            "--upstream",
            &address,
            "--upstream-ca",
            &bad_ca.display().to_string(),
        ])
        .await
        .failed();
    assert!(
        run.stderr.contains("holds no PEM certificate"),
        "{}",
        run.stderr
    );

    let ca_file = ca.write(env.dir.path(), "upstream-ca.pem");
    env.cli(&[
        "deploy",
        "ext",
        "1.0.2",
        "--upstream",
        &address,
        "--upstream-ca",
        &ca_file.display().to_string(),
        "--health",
        "/healthz",
    ])
    .await
    .ok();
    let (status, _, body) = env.get("/services/ext/hello").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body, "tls upstream sni=localhost path=/hello");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_handover_passes_the_tls_listener_on_and_fails_no_https_request() {
    let env = tls_env().await;
    env.deploy("hello", "1.0.0", &["--host", "app.test"], &[])
        .await
        .ok();
    let ca = TestCa::new("Switchyard Test CA");
    tls_add(
        &env,
        "app.test",
        &ca.issue(&["app.test"], env.dir.path(), "app"),
    )
    .await
    .ok();
    let (load, _clients) = https_load(
        env.tls_addr(),
        "app.test",
        ca.pem(),
        4,
        Instant::now() + Duration::from_secs(120),
    );
    load.run_for(50, WAIT).await;
    let old_pid = env.serve_pid();
    let run = env.cli(&["handover", "--json"]).await.ok();
    let report: serde_json::Value = serde_json::from_str(&run.stdout).expect("JSON");
    assert_eq!(report["old_pid"], old_pid, "{report}");
    env.eventually("the old serve exits", WAIT, || async {
        !support::pid_alive(old_pid)
    })
    .await;
    load.run_for(100, WAIT).await;
    let answers = load.finish().await;
    let failed = failures(&answers);
    assert!(
        failed.is_empty(),
        "{} of {} requests failed: {:?}",
        failed.len(),
        answers.len(),
        &failed[..failed.len().min(5)]
    );
}
