//! The admin API against what a web page can make a browser send: DNS
//! rebinding (a foreign name in `Host`), requests from pages of other
//! origins, cross-site form posts, and bodies past the limit. Each request
//! is sent raw, with exactly the headers a browser would send.

mod support;

use std::path::Path;
use std::time::Duration;

use serde_json::{Value, json};
use support::raw_http::read_response;
use support::{Env, HELLO};
use tokio::io::{AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

const WAIT: Duration = Duration::from_secs(30);

/// Sends one HTTP/1.1 request to the admin API with exactly `headers`
/// (plus its length and `Connection: close`), checks that it is answered
/// with `status`, and returns the answer's body.
async fn expect(
    env: &Env,
    status: u16,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> String {
    let mut stream = TcpStream::connect(&env.serve().admin_addr)
        .await
        .expect("connect to the admin API");
    let mut head = format!("{method} {path} HTTP/1.1\r\n");
    for (name, value) in headers {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    head.push_str(&format!(
        "content-length: {}\r\nconnection: close\r\n\r\n",
        body.len()
    ));
    stream.write_all(head.as_bytes()).await.expect("send head");
    stream.write_all(body).await.expect("send body");
    // A deploy answers once the release is ready.
    let response = read_response(&mut BufReader::new(stream), false, Duration::from_secs(90)).await;
    let text = String::from_utf8_lossy(&response.body).into_owned();
    assert_eq!(
        response.status, status,
        "{method} {path} {headers:?}: {text}"
    );
    text
}

/// The `error` of a JSON error answer.
fn error_of(body: &str) -> String {
    let body: Value =
        serde_json::from_str(body).unwrap_or_else(|e| panic!("not JSON ({e}): {body}"));
    body["error"].as_str().unwrap_or_default().to_owned()
}

/// A deploy of `name` 1.0.0 whose command first creates `marker`: it shows
/// whether the admin API ran it.
fn deploy_creating(marker: &Path) -> Vec<u8> {
    let script = format!(
        "touch '{}' && exec '{HELLO}' --port \"$PORT\" --version 1.0.0",
        marker.display()
    );
    json!({
        "version": "1.0.0",
        "spec": {
            "run": { "kind": "process", "command": ["/bin/sh", "-c", script], "cwd": "/" },
            "replicas": 1,
            "health": { "path": "/healthz" },
            "ready_timeout_ms": 60_000,
        },
    })
    .to_string()
    .into_bytes()
}

/// `host:port` of the admin API under another name.
fn named(env: &Env, name: &str) -> String {
    let port = env.serve().admin_addr.rsplit(':').next().expect("port");
    format!("{name}:{port}")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dns_rebinding_request_is_refused_and_runs_nothing() {
    let env = Env::start().await;
    let marker = env.dir.path().join("pwned");
    let body = deploy_creating(&marker);
    // A page on attacker.example whose name now resolves to 127.0.0.1:
    // same origin for the browser, so it sends JSON without asking.
    let rebound = named(&env, "attacker.example");
    let origin = format!("http://{rebound}");
    let page = [("host", rebound.as_str()), ("origin", &origin)];
    let deploy = [page[0], page[1], ("content-type", "application/json")];
    let error = error_of(
        &expect(
            &env,
            403,
            "POST",
            "/v1/services/pwned/releases",
            &deploy,
            &body,
        )
        .await,
    );
    assert!(
        error.contains("attacker.example") && error.contains("--admin-host"),
        "{error}"
    );
    // Reads are refused as well: the page must not see the state either.
    expect(&env, 403, "GET", "/v1/services", &page, b"").await;
    assert!(!marker.exists(), "the command ran");
    assert_eq!(env.ls().await, json!([]), "nothing committed");
    assert_eq!(env.instance_pids(), Vec::<u32>::new(), "nothing started");

    // The same request addressed to the admin API itself does deploy: the
    // refusal above was the Host's doing, not the body's.
    let admin = env.serve().admin_addr.clone();
    let direct = [
        ("host", admin.as_str()),
        ("content-type", "application/json"),
    ];
    expect(
        &env,
        200,
        "POST",
        "/v1/services/pwned/releases",
        &direct,
        &body,
    )
    .await;
    assert!(marker.exists());
}

/// `rollout status hello --json`: its state (`running`, `paused`, …).
async fn rollout_state(env: &Env) -> String {
    let run = env
        .cli(&["rollout", "status", "hello", "--json"])
        .await
        .ok();
    let view: Value = serde_json::from_str(&run.stdout).expect("JSON");
    view["state"]["status"]["state"]
        .as_str()
        .unwrap_or_default()
        .to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cross_site_form_post_cannot_abort_a_rollout() {
    let env = Env::start().await;
    env.deploy("hello", "1.0.0", &[], &[]).await.ok();
    env.deploy("hello", "2.0.0", &[], &[]).await.ok();
    let plan = env.dir.path().join("plan.toml");
    std::fs::write(
        &plan,
        "version = \"2.0.0\"\nsteps = [\n    { step = \"set-weight\", percent = 20 },\n    { step = \"pause\" },\n]\n",
    )
    .expect("write the plan");
    let plan = plan.to_str().expect("utf-8");
    env.cli(&["rollout", "hello", "2.0.0", "--plan", plan])
        .await
        .ok();
    env.eventually("the rollout pauses", WAIT, || async {
        rollout_state(&env).await == "paused"
    })
    .await;
    let before = env.ls().await;

    // What `<form method=post action=http://127.0.0.1:PORT/…>` on another
    // site sends: the admin API's own Host, a form body, and the page's
    // Origin (a browser of today) or none (an older one).
    let admin = env.serve().admin_addr.clone();
    let host = ("host", admin.as_str());
    let form = ("content-type", "application/x-www-form-urlencoded");
    let abort = "/v1/services/hello/rollout/abort";
    for origin in ["http://evil.example", "null"] {
        expect(
            &env,
            403,
            "POST",
            abort,
            &[host, form, ("origin", origin)],
            b"x=1",
        )
        .await;
    }
    for content_type in [form, ("content-type", "text/plain")] {
        let error =
            error_of(&expect(&env, 415, "POST", abort, &[host, content_type], b"x=1").await);
        assert!(
            error.contains("application/json") && error.contains("x-switchyard-client"),
            "{error}"
        );
    }
    // A change without a body needs the client header as well.
    expect(
        &env,
        415,
        "DELETE",
        "/v1/services/hello/releases/2.0.0",
        &[host],
        b"",
    )
    .await;

    assert_eq!(rollout_state(&env).await, "paused", "the rollout goes on");
    assert_eq!(env.ls().await, before, "nothing changed");

    // The CLI still aborts it (it sends the client header).
    env.cli(&["rollout", "abort", "hello"]).await.ok();
    assert_eq!(rollout_state(&env).await, "aborted");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn page_of_another_origin_is_refused_but_the_admin_apis_own_pages_pass() {
    let env = Env::start().await;
    let marker = env.dir.path().join("from-a-page");
    let body = deploy_creating(&marker);
    let admin = env.serve().admin_addr.clone();
    let host = ("host", admin.as_str());
    let json_type = ("content-type", "application/json");
    let deploy = "/v1/services/pwned/releases";
    // The Host is right (the page posts to 127.0.0.1:PORT); the Origin is
    // a page elsewhere, or the proxy's pages on the same address.
    let proxy_origin = format!("http://{}", env.serve().proxy_addr);
    for origin in ["http://evil.example", "null", &proxy_origin] {
        let from = ("origin", origin);
        let error =
            error_of(&expect(&env, 403, "POST", deploy, &[host, from, json_type], &body).await);
        assert!(error.contains(origin), "{error}");
        expect(&env, 403, "GET", "/v1/services", &[host, from], b"").await;
    }
    assert!(!marker.exists(), "the command ran");
    assert_eq!(env.ls().await, json!([]), "nothing committed");

    // A page the admin API served itself (the dashboard) is let through,
    // under its address or as localhost.
    let localhost = named(&env, "localhost");
    let local_origin = format!("http://{localhost}");
    let local = [("host", localhost.as_str()), ("origin", &local_origin)];
    expect(&env, 200, "GET", "/v1/services", &local, b"").await;
    let own = format!("http://{admin}");
    expect(
        &env,
        200,
        "POST",
        deploy,
        &[host, ("origin", &own), json_type],
        &body,
    )
    .await;
    assert!(marker.exists());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_host_lets_a_named_host_in() {
    let env = Env::start_with(&["--admin-host", "switchyard.test"]).await;
    let marker = env.dir.path().join("named");
    let host = named(&env, "switchyard.test");
    let origin = format!("http://{host}");
    let page = [
        ("host", host.as_str()),
        ("origin", &origin),
        ("content-type", "application/json"),
    ];
    expect(
        &env,
        200,
        "POST",
        "/v1/services/named/releases",
        &page,
        &deploy_creating(&marker),
    )
    .await;
    assert!(marker.exists());
    // Without a port (a proxy in front on its own port) too.
    expect(
        &env,
        200,
        "GET",
        "/v1/services",
        &[("host", "switchyard.test")],
        b"",
    )
    .await;

    // Another name is still refused, and says how to let it in.
    let other = named(&env, "other.test");
    let error = error_of(&expect(&env, 403, "GET", "/v1/services", &[("host", &other)], b"").await);
    assert!(
        error.contains("switchyard.test") && error.contains("--admin-host"),
        "{error}"
    );

    // The CLI through localhost, a name a loopback admin API answers to.
    let url = format!("http://{}", named(&env, "localhost"));
    let run = env
        .cli_with(&[("SWITCHYARD_ADMIN", &url)], &["ls", "--json"])
        .await
        .ok();
    assert!(run.stdout.contains("named"), "{}", run.stdout);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn token_protected_admin_api_applies_the_same_rules() {
    let token = "t0ken-of-the-browser-user";
    let env = Env::start_with_token(token).await;
    env.deploy("hello", "1.0.0", &[], &[]).await.ok();
    let before = env.ls().await;
    let pids = env.instance_pids();

    // Holding the token (a browser that was given it, say) is no way past.
    let bearer = format!("Bearer {token}");
    let auth = ("authorization", bearer.as_str());
    let marker = env.dir.path().join("pwned");
    let rebound = named(&env, "attacker.example");
    let origin = format!("http://{rebound}");
    let page = [
        ("host", rebound.as_str()),
        ("origin", &origin),
        ("content-type", "application/json"),
        auth,
    ];
    expect(
        &env,
        403,
        "POST",
        "/v1/services/pwned/releases",
        &page,
        &deploy_creating(&marker),
    )
    .await;
    let admin = env.serve().admin_addr.clone();
    let host = ("host", admin.as_str());
    let kill = "/v1/services/hello/releases/1.0.0";
    let client = ("x-switchyard-client", "script");
    expect(
        &env,
        403,
        "DELETE",
        kill,
        &[host, auth, client, ("origin", "http://evil.example")],
        b"",
    )
    .await;
    expect(&env, 415, "DELETE", kill, &[host, auth], b"").await;
    assert!(!marker.exists());
    assert_eq!(env.ls().await, before, "nothing changed");
    assert_eq!(env.instance_pids(), pids);

    // The same kill with the client header goes through.
    expect(&env, 200, "DELETE", kill, &[host, auth, client], b"").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_body_over_the_limit_gets_413() {
    let env = Env::start().await;
    let limit = 2 * 1024 * 1024;
    // One byte past the limit, so that the admin API reads the body whole.
    let mut body = br#"{"version": "1.0.0", "padding": ""#.to_vec();
    body.resize(limit - 1, b'x');
    body.extend_from_slice(br#""}"#);
    assert_eq!(body.len(), limit + 1);
    let admin = env.serve().admin_addr.clone();
    let headers = [
        ("host", admin.as_str()),
        ("content-type", "application/json"),
    ];
    let error = error_of(
        &expect(
            &env,
            413,
            "POST",
            "/v1/services/hello/releases",
            &headers,
            &body,
        )
        .await,
    );
    assert!(error.contains(&limit.to_string()), "{error}");
    assert_eq!(env.ls().await, json!([]), "nothing committed");
}
