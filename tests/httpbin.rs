//! A real third-party application behind the proxy: httpbin (Flask, from
//! PyPI) under gunicorn, reached through its path prefix
//! (`/services/httpbin/`, `/services/httpbin_1.0.0/`) and through a host
//! name. Redirect chains end on 200, a cookie set through the prefix comes
//! back, streams, gzip, 10 MB bodies and HEAD pass intact.

mod support;

use std::net::SocketAddr;
use std::time::Duration;

use serde_json::Value;
use support::{Env, Reply, httpbin, reply};

const WAIT: Duration = Duration::from_secs(60);
const HOST: &str = "httpbin.test";

/// An env running httpbin 1.0.0, routed to by prefix and by `HOST`
/// (added after the deploy, as a setting), or `None` when skipped.
async fn httpbin_env(test: &str) -> Option<Env> {
    let command = httpbin::command(test)?;
    let env = Env::start().await;
    let mut args = vec![
        "deploy",
        "httpbin",
        "1.0.0",
        "--health",
        "/status/200",
        "--",
    ];
    args.extend(command.iter().map(String::as_str));
    env.cli(&args).await.ok();
    env.cli(&["host", "add", "httpbin", HOST]).await.ok();
    Some(env)
}

/// A client that follows redirects (at most 10), reaching `HOST` at the
/// proxy's address.
fn following(env: &Env) -> reqwest::Client {
    let proxy: SocketAddr = env.serve().proxy_addr.parse().expect("proxy address");
    support::http_client()
        .no_proxy()
        .resolve(HOST, proxy)
        .build()
        .expect("client")
}

/// A client that shows each redirect instead of following it.
fn not_following(env: &Env) -> reqwest::Client {
    let proxy: SocketAddr = env.serve().proxy_addr.parse().expect("proxy address");
    support::http_client()
        .no_proxy()
        .resolve(HOST, proxy)
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .expect("client")
}

/// The base URLs of the three ways in: the service's prefix, the
/// release's prefix and the host name.
fn bases(env: &Env) -> [String; 3] {
    let port = env
        .serve()
        .proxy_addr
        .rsplit_once(':')
        .expect("port")
        .1
        .to_owned();
    [
        format!("{}/services/httpbin", env.proxy()),
        format!("{}/services/httpbin_1.0.0", env.proxy()),
        format!("http://{HOST}:{port}"),
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn httpbin_redirect_chains_end_on_200_through_prefixes_and_host() {
    let Some(env) =
        httpbin_env("httpbin_redirect_chains_end_on_200_through_prefixes_and_host").await
    else {
        return;
    };
    let client = following(&env);
    for base in bases(&env) {
        for path in [
            "/redirect/3",
            "/relative-redirect/2",
            "/absolute-redirect/2",
        ] {
            let response = client
                .get(format!("{base}{path}"))
                .send()
                .await
                .unwrap_or_else(|e| panic!("{base}{path}: {e}"));
            let url = response.url().to_string();
            let status = response.status().as_u16();
            let body = response.text().await.expect("body");
            assert_eq!(status, 200, "{base}{path} ended at {url}: {body}");
            assert_eq!(url, format!("{base}/get"), "{base}{path}");
            let get: Value = serde_json::from_str(&body).expect("httpbin's /get is JSON");
            assert!(get["headers"].is_object(), "{body}");
        }
    }
    // Each hop through the prefix stays in it: the Location the client sees.
    let client = not_following(&env);
    let [service, _, _] = bases(&env);
    let r = reply(client.get(format!("{service}/relative-redirect/2")), WAIT).await;
    assert_eq!(r.status, 302, "{}", r.body);
    assert_eq!(
        r.header("location"),
        Some("/services/httpbin/relative-redirect/1")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn httpbin_cookie_set_through_the_prefix_comes_back() {
    let Some(env) = httpbin_env("httpbin_cookie_set_through_the_prefix_comes_back").await else {
        return;
    };
    let client = not_following(&env);
    let [service, release, host] = bases(&env);
    for (base, prefix) in [
        (&service, "/services/httpbin"),
        (&release, "/services/httpbin_1.0.0"),
        (&host, ""),
    ] {
        let set = reply(
            client.get(format!("{base}/cookies/set?session=s3cret")),
            WAIT,
        )
        .await;
        assert_eq!(set.status, 302, "{}", set.body);
        let (cookie, path) = cookie_and_path(&set);
        assert_eq!(cookie, "session=s3cret");
        let wanted_path = if prefix.is_empty() { "/" } else { prefix };
        assert_eq!(path, wanted_path, "{base}: {:?}", set.header("set-cookie"));
        let location = set.header("location").expect("a redirect");
        assert_eq!(location, format!("{prefix}/cookies"));
        // A browser sends the cookie wherever its path matches.
        assert!(
            path_matches(&path, location),
            "{path} must cover {location}"
        );
        let origin = base
            .strip_suffix(prefix)
            .expect("base ends with its prefix");
        let shown = reply(
            client
                .get(format!("{origin}{location}"))
                .header("cookie", &cookie),
            WAIT,
        )
        .await;
        assert_eq!(shown.status, 200, "{}", shown.body);
        assert_eq!(
            shown.json()["cookies"]["session"],
            "s3cret",
            "{}",
            shown.body
        );
    }
    // The cookie of one prefix is not sent to another service.
    let (_, path) =
        cookie_and_path(&reply(client.get(format!("{service}/cookies/set?a=1")), WAIT).await);
    assert!(!path_matches(&path, "/services/other/"), "{path}");
    assert!(!path_matches(&path, "/services/httpbin_1.0.0/"), "{path}");
}

/// `name=value` and the `Path` attribute of the one `Set-Cookie`.
fn cookie_and_path(reply: &Reply) -> (String, String) {
    let header = reply.header("set-cookie").expect("a Set-Cookie header");
    let mut parts = header.split(';').map(str::trim);
    let cookie = parts.next().expect("name=value").to_owned();
    let path = parts
        .find_map(|p| {
            p.get(..5)
                .filter(|k| k.eq_ignore_ascii_case("path="))
                .map(|_| p[5..].to_owned())
        })
        .unwrap_or_default();
    (cookie, path)
}

/// RFC 6265 5.1.4: whether a cookie of `cookie_path` goes with `request`.
fn path_matches(cookie_path: &str, request: &str) -> bool {
    let request = request.split(['?', '#']).next().unwrap_or("");
    request == cookie_path
        || (request.starts_with(cookie_path)
            && (cookie_path.ends_with('/') || request[cookie_path.len()..].starts_with('/')))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn httpbin_streams_gzip_large_bodies_and_head_pass_intact() {
    let Some(env) = httpbin_env("httpbin_streams_gzip_large_bodies_and_head_pass_intact").await
    else {
        return;
    };
    let client = following(&env);
    let direct = instance_address(&env).await;
    let expected_bytes = support::http_client()
        .build()
        .expect("http client")
        .get(format!("http://{direct}/bytes/102400?seed=7"))
        .send()
        .await
        .expect("httpbin directly")
        .bytes()
        .await
        .expect("bytes");
    assert_eq!(expected_bytes.len(), 102_400);
    let upload: Vec<u8> = (0..10 * 1024 * 1024u32)
        .map(|i| b"abcdefghijklmnopqrstuvwxyz0123456789"[(i % 36) as usize])
        .collect();
    for base in bases(&env) {
        // Streaming: 20 JSON lines, chunked.
        let stream = reply(client.get(format!("{base}/stream/20")), WAIT).await;
        assert_eq!(stream.status, 200);
        let ids: Vec<u64> = stream
            .body
            .lines()
            .map(|l| {
                serde_json::from_str::<Value>(l).expect("a JSON line")["id"]
                    .as_u64()
                    .expect("id")
            })
            .collect();
        assert_eq!(ids, (0..20).collect::<Vec<_>>(), "{base}");

        // gzip: passed through encoded, and it decodes.
        let gz = client
            .get(format!("{base}/gzip"))
            .header("accept-encoding", "gzip")
            .send()
            .await
            .expect("gzip");
        assert_eq!(gz.headers()["content-encoding"], "gzip");
        let decoded = gunzip(&gz.bytes().await.expect("gzip body"));
        let decoded: Value = serde_json::from_slice(&decoded).expect("gzip JSON");
        assert_eq!(decoded["gzipped"], true, "{base}");

        // Bytes as the application made them.
        let bytes = client
            .get(format!("{base}/bytes/102400?seed=7"))
            .send()
            .await
            .expect("bytes")
            .bytes()
            .await
            .expect("bytes body");
        assert!(
            bytes == expected_bytes,
            "{base}: /bytes differs from the instance's"
        );

        // 10 MB up, and the same 10 MB back inside httpbin's JSON.
        let echoed = client
            .post(format!("{base}/anything"))
            .header("content-type", "application/octet-stream")
            .body(upload.clone())
            .send()
            .await
            .expect("POST /anything");
        assert_eq!(echoed.status(), 200);
        let echoed: Value = serde_json::from_slice(&echoed.bytes().await.expect("body"))
            .expect("httpbin's /anything is JSON");
        let data = echoed["data"].as_str().expect("data");
        assert_eq!(data.len(), upload.len(), "{base}");
        assert!(
            data.as_bytes() == upload.as_slice(),
            "{base}: the echo differs"
        );

        // HEAD: the headers of a GET, no body.
        let head = client
            .head(format!("{base}/bytes/1024"))
            .send()
            .await
            .expect("HEAD");
        assert_eq!(head.status(), 200, "{base}");
        assert_eq!(head.headers()["content-length"], "1024", "{base}");
        assert!(head.bytes().await.expect("HEAD body").is_empty());
    }
}

/// The address of httpbin's one instance, from `ls --json`.
async fn instance_address(env: &Env) -> String {
    let ls = env.ls().await;
    let release = support::listing::release(&ls, "httpbin", "1.0.0");
    release["instances"][0]["addr"]
        .as_str()
        .unwrap_or_else(|| panic!("no instance address: {release}"))
        .to_owned()
}

/// Decompresses with Python's gzip module (the venv's python).
fn gunzip(bytes: &[u8]) -> Vec<u8> {
    use std::io::Write;
    let mut child = std::process::Command::new(httpbin::python())
        .args([
            "-c",
            "import gzip,sys; sys.stdout.buffer.write(gzip.decompress(sys.stdin.buffer.read()))",
        ])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("python3");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(bytes)
        .expect("write");
    let out = child.wait_with_output().expect("gunzip");
    assert!(out.status.success(), "not gzip");
    out.stdout
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rewrite_off_passes_links_through_as_written() {
    let Some(env) = httpbin_env("rewrite_off_passes_links_through_as_written").await else {
        return;
    };
    let client = not_following(&env);
    let [service, _, _] = bases(&env);
    let location = |r: &Reply| r.header("location").map(str::to_owned);

    let run = env.cli(&["rewrite", "httpbin", "--off"]).await.ok();
    assert!(run.stdout.contains("prefix rewrite off"), "{}", run.stdout);
    let r = reply(client.get(format!("{service}/relative-redirect/2")), WAIT).await;
    assert_eq!(location(&r).as_deref(), Some("/relative-redirect/1"));
    let r = reply(client.get(format!("{service}/cookies/set?k=v")), WAIT).await;
    assert_eq!(cookie_and_path(&r).1, "/");
    let shown = env.cli(&["rewrite", "httpbin"]).await.ok();
    assert!(shown.stdout.contains("off"), "{}", shown.stdout);

    env.cli(&["rewrite", "httpbin", "--on"]).await.ok();
    let r = reply(client.get(format!("{service}/relative-redirect/2")), WAIT).await;
    assert_eq!(
        location(&r).as_deref(),
        Some("/services/httpbin/relative-redirect/1")
    );
    // Each change is a revision, so a rollback turns it off again.
    let history = env.history("httpbin").await;
    let actions: Vec<&str> = history
        .as_array()
        .expect("history")
        .iter()
        .filter_map(|r| r["action"].as_str())
        .collect();
    assert!(
        actions.starts_with(&[
            "prefix rewrite on",
            "prefix rewrite off",
            "add host httpbin.test"
        ]),
        "{actions:?}"
    );
    env.cli(&["rollback", "httpbin"]).await.ok();
    let r = reply(client.get(format!("{service}/relative-redirect/2")), WAIT).await;
    assert_eq!(location(&r).as_deref(), Some("/relative-redirect/1"));
}
