//! Traffic policy end to end: sticky canary populations, the opt-in
//! header, match rules, validation, weight changes / promote / abort under
//! load, and the emergency release, through the real binary.

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use serde_json::Value;
use support::listing::{actions, numbered_actions, pair, roles, service};
use support::load::{Clients, Load};
use support::{Env, Reply, now_millis};
use switchyard::routing::{bucket, client_token};

/// The bound on every single wait: generous, so a slow machine only slows tests.
const WAIT: Duration = Duration::from_secs(30);

// ---------------------------------------------------------------- helpers

impl Reply {
    /// `x-switchyard-version`, or "" when the proxy answered itself.
    fn version(&self) -> &str {
        self.header("x-switchyard-version").unwrap_or("")
    }

    fn set_cookies(&self) -> Vec<String> {
        self.headers
            .get_all("set-cookie")
            .iter()
            .map(|v| v.to_str().unwrap_or("<not text>").to_owned())
            .collect()
    }
}

/// Sends a request and reads the whole answer; transport errors are `Err`.
async fn try_send(request: reqwest::RequestBuilder) -> Result<Reply, String> {
    support::try_reply(request, WAIT).await
}

async fn send(request: reqwest::RequestBuilder) -> Reply {
    support::reply(request, WAIT).await
}

/// GET `path` through the proxy with extra headers.
async fn get_with(env: &Env, path: &str, headers: &[(&str, &str)]) -> Reply {
    let mut request = env.http.get(format!("{}{path}", env.proxy()));
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    send(request).await
}

/// The release that answered `GET path` with these headers (asserting 200).
async fn version_for(env: &Env, path: &str, headers: &[(&str, &str)]) -> String {
    let r = get_with(env, path, headers).await;
    assert_eq!(r.status, 200, "{path} {headers:?}: {}", r.body);
    r.version().to_owned()
}

/// The release a client of `key` should reach with a canary of `percent`.
fn side(group: &str, key: &str, percent: u32, canary: &str, main: &str) -> String {
    if bucket(group, key) <= percent {
        canary.to_owned()
    } else {
        main.to_owned()
    }
}

/// GETs `path` once per key (sending it in `header`) with `tasks`
/// concurrent clients; returns the version that answered each key, in key
/// order. Any failure or non-200 fails the test.
async fn versions_by_key(
    env: &Env,
    path: &str,
    header: &'static str,
    keys: &[String],
    tasks: usize,
) -> Vec<String> {
    let keys: Arc<Vec<String>> = Arc::new(keys.to_vec());
    let next = Arc::new(AtomicUsize::new(0));
    let url = format!("{}{path}", env.proxy());
    let workers: Vec<_> = (0..tasks)
        .map(|_| {
            let (http, url, keys, next) = (
                env.http.clone(),
                url.clone(),
                Arc::clone(&keys),
                Arc::clone(&next),
            );
            tokio::spawn(async move {
                let mut out = Vec::new();
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    let Some(key) = keys.get(i) else {
                        return out;
                    };
                    let r = try_send(http.get(&url).header(header, key.as_str())).await;
                    out.push((i, r.map(|r| (r.status, r.version().to_owned(), r.body))));
                }
            })
        })
        .collect();
    let mut versions = vec![String::new(); keys.len()];
    for worker in workers {
        for (i, result) in worker.await.expect("request task") {
            match result {
                Ok((200, version, _)) => versions[i] = version,
                Ok((status, version, body)) => {
                    panic!("key {}: {status} from `{version}`: {body}", keys[i])
                }
                Err(e) => panic!("key {}: {e}", keys[i]),
            }
        }
    }
    versions
}

/// `routes NAME` as printed.
async fn routes(env: &Env, name: &str) -> String {
    env.cli(&["routes", name]).await.ok().stdout
}

/// `routes NAME --json` as (matches, target) pairs.
async fn routes_json(env: &Env, name: &str) -> Vec<(String, String)> {
    let run = env.cli(&["routes", name, "--json"]).await.ok();
    let lines: Value = serde_json::from_str(&run.stdout).expect("routes --json is JSON");
    lines
        .as_array()
        .expect("a list")
        .iter()
        .map(|l| {
            (
                l["matches"].as_str().unwrap_or_default().to_owned(),
                l["target"].as_str().unwrap_or_default().to_owned(),
            )
        })
        .collect()
}

/// A key (of the form `{prefix}{n}`) whose bucket in `group` is inside
/// (`want_in`) or outside a canary of `percent`.
fn key_on_side(group: &str, prefix: &str, percent: u32, want_in: bool) -> String {
    (0..10_000)
        .map(|n| format!("{prefix}{n}"))
        .find(|k| (bucket(group, k) <= percent) == want_in)
        .expect("some key on each side")
}

// ---------------------------------------------------------------- canary

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn canary_population_is_sticky_sized_by_percent_and_grows_without_moving_anyone_out() {
    let env = Env::start().await;
    env.deploy("hello", "1.0.0", &[], &[]).await.ok();
    env.deploy("hello", "2.0.0", &[], &[]).await.ok();
    env.cli(&[
        "canary",
        "hello",
        "2.0.0",
        "--percent",
        "10",
        "--sticky-header",
        "x-user-id",
    ])
    .await
    .ok();

    let keys: Vec<String> = (0..10_000).map(|i| format!("user-{i}")).collect();
    let at_10 = versions_by_key(&env, "/services/hello/", "x-user-id", &keys, 32).await;
    let canary_10: BTreeSet<&str> = keys
        .iter()
        .zip(&at_10)
        .filter(|(_, v)| *v == "2.0.0")
        .map(|(k, _)| k.as_str())
        .collect();
    let others: Vec<&String> = at_10
        .iter()
        .filter(|v| *v != "1.0.0" && *v != "2.0.0")
        .collect();
    assert!(
        others.is_empty(),
        "answers from neither release: {others:?}"
    );
    let share = canary_10.len() as f64 / 100.0;
    assert!(
        (8.5..=11.5).contains(&share),
        "10% canary took {share}% of 10,000 keys"
    );
    // Every key is where the Unleash formula puts it (group = service name).
    let misplaced: Vec<String> = keys
        .iter()
        .zip(&at_10)
        .filter(|(k, v)| **v != side("hello", k, 10, "2.0.0", "1.0.0"))
        .map(|(k, v)| format!("{k} (bucket {}) on {v}", bucket("hello", k)))
        .collect();
    assert!(
        misplaced.is_empty(),
        "{} keys off the formula, e.g. {:?}",
        misplaced.len(),
        &misplaced[..misplaced.len().min(5)]
    );
    // A few keys checked one by one, both sides.
    for key in [
        key_on_side("hello", "user-", 10, true),
        key_on_side("hello", "user-", 10, false),
    ] {
        let expected = side("hello", &key, 10, "2.0.0", "1.0.0");
        for _ in 0..3 {
            let got = version_for(&env, "/services/hello/", &[("x-user-id", &key)]).await;
            assert_eq!(got, expected, "{key} (bucket {})", bucket("hello", &key));
        }
    }

    // The same key lands on the same release, request after request.
    let sample: Vec<String> = keys.iter().step_by(50).cloned().collect();
    assert_eq!(sample.len(), 200);
    let first: Vec<String> = sample
        .iter()
        .map(|k| at_10[keys.iter().position(|x| x == k).expect("sampled key")].clone())
        .collect();
    for round in 0..3 {
        let again = versions_by_key(&env, "/services/hello/", "x-user-id", &sample, 16).await;
        for ((key, before), now) in sample.iter().zip(&first).zip(&again) {
            assert_eq!(before, now, "round {round}: {key} moved");
        }
    }

    // Raising to 30% (without repeating --sticky-header) keeps all of the
    // first 10% and adds about 20% more.
    env.cli(&["canary", "hello", "2.0.0", "--percent", "30"])
        .await
        .ok();
    let at_30 = versions_by_key(&env, "/services/hello/", "x-user-id", &keys, 32).await;
    let lost: Vec<&str> = keys
        .iter()
        .zip(&at_30)
        .filter(|(k, v)| canary_10.contains(k.as_str()) && *v != "2.0.0")
        .map(|(k, _)| k.as_str())
        .collect();
    assert!(
        lost.is_empty(),
        "{} keys left the canary when it grew, e.g. {:?}",
        lost.len(),
        &lost[..lost.len().min(5)]
    );
    let share = at_30.iter().filter(|v| *v == "2.0.0").count() as f64 / 100.0;
    assert!(
        (28.5..=31.5).contains(&share),
        "30% canary took {share}% of 10,000 keys"
    );
    let misplaced = keys
        .iter()
        .zip(&at_30)
        .filter(|(k, v)| **v != side("hello", k, 30, "2.0.0", "1.0.0"))
        .count();
    assert_eq!(misplaced, 0, "keys off the formula at 30%");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn browser_without_a_key_gets_a_cookie_and_keeps_its_side() {
    let env = Env::start().await;
    env.deploy("web", "1.0.0", &[], &[]).await.ok();
    env.deploy("web", "2.0.0", &[], &[]).await.ok();
    env.cli(&["canary", "web", "2.0.0", "--percent", "50"])
        .await
        .ok();

    // The first answer sets the cookie: a token of the client's address.
    let token = client_token("127.0.0.1".parse().expect("ip"));
    let mine = side("web", &token, 50, "2.0.0", "1.0.0");
    let first = get_with(&env, "/services/web/", &[]).await;
    assert_eq!(first.status, 200, "{}", first.body);
    assert_eq!(first.version(), mine);
    let cookies = first.set_cookies();
    assert_eq!(cookies.len(), 1, "one Set-Cookie: {cookies:?}");
    let cookie = &cookies[0];
    let (pair, attributes) = cookie.split_once(';').expect("attributes");
    assert_eq!(pair, format!("switchyard-id={token}"));
    for attribute in ["HttpOnly", "SameSite=Lax", "Path=/"] {
        assert!(attributes.contains(attribute), "{attribute} in {cookie}");
    }
    let max_age: u64 = attributes
        .split(';')
        .find_map(|a| a.trim().strip_prefix("Max-Age="))
        .expect("Max-Age")
        .parse()
        .expect("Max-Age is a number");
    assert!(max_age >= 30 * 24 * 3600, "a long-lived cookie: {cookie}");

    // The browser sends it back: same side, no new cookie, 20 times.
    for i in 0..20 {
        let r = get_with(&env, "/services/web/", &[("cookie", pair)]).await;
        assert_eq!((r.status, r.version()), (200, mine.as_str()), "request {i}");
        assert!(
            r.set_cookies().is_empty(),
            "request {i}: {:?}",
            r.set_cookies()
        );
    }
    // A browser whose cookie came from elsewhere keeps the side of that
    // cookie, whatever its address says.
    let other_key = key_on_side("web", "browser-", 50, mine == "1.0.0");
    let other_side = side("web", &other_key, 50, "2.0.0", "1.0.0");
    assert_ne!(other_side, mine);
    let other_cookie = format!("theme=dark; switchyard-id={other_key}");
    for i in 0..20 {
        let r = get_with(&env, "/services/web/", &[("cookie", &other_cookie)]).await;
        assert_eq!(r.version(), other_side, "request {i}");
        assert!(r.set_cookies().is_empty());
    }

    // Key order: the sticky header, then the application cookie, then
    // Switchyard's cookie, then the address.
    env.cli(&[
        "canary",
        "web",
        "2.0.0",
        "--percent",
        "50",
        "--sticky-header",
        "x-user-id",
        "--sticky-cookie",
        "session",
    ])
    .await
    .ok();
    let k_in = key_on_side("web", "k", 50, true);
    let k_out = key_on_side("web", "k", 50, false);
    let both = format!("session={k_out}; switchyard-id={k_in}");
    assert_eq!(
        version_for(
            &env,
            "/services/web/",
            &[("x-user-id", &k_in), ("cookie", &both)]
        )
        .await,
        "2.0.0",
        "the header wins"
    );
    assert_eq!(
        version_for(&env, "/services/web/", &[("cookie", &both)]).await,
        "1.0.0",
        "the application cookie comes before Switchyard's"
    );
    let ours = format!("switchyard-id={k_in}");
    assert_eq!(
        version_for(&env, "/services/web/", &[("cookie", &ours)]).await,
        "2.0.0"
    );

    // A custom cookie name.
    env.cli(&[
        "canary",
        "web",
        "2.0.0",
        "--percent",
        "50",
        "--cookie-name",
        "sid",
    ])
    .await
    .ok();
    let r = get_with(&env, "/services/web/", &[]).await;
    assert_eq!(r.set_cookies().len(), 1);
    assert!(
        r.set_cookies()[0].starts_with(&format!("sid={token};")),
        "{:?}",
        r.set_cookies()
    );
    let sid = format!("sid={other_key}");
    assert_eq!(
        version_for(&env, "/services/web/", &[("cookie", &sid)]).await,
        other_side
    );

    // --no-cookie: never set; the address decides, consistently.
    env.cli(&["canary", "web", "2.0.0", "--percent", "50", "--no-cookie"])
        .await
        .ok();
    for i in 0..20 {
        let r = get_with(&env, "/services/web/", &[]).await;
        assert_eq!((r.status, r.version()), (200, mine.as_str()), "request {i}");
        assert!(
            r.set_cookies().is_empty(),
            "request {i} with --no-cookie: {:?}",
            r.set_cookies()
        );
    }
    let ls = env.ls().await;
    let policy = &service(&ls, "web")["policy"];
    assert_eq!(policy["sticky"]["set_cookie"], "", "{policy:#}");
    assert_eq!(policy["sticky"]["header"], "x-user-id", "kept: {policy:#}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn canary_group_gives_the_population_of_an_unleash_flag() {
    let env = Env::start().await;
    env.deploy("hello", "1.0.0", &[], &[]).await.ok();
    env.deploy("hello", "2.0.0", &[], &[]).await.ok();
    // Unleash's own test vector: group gr1, key 123 → bucket 73.
    assert_eq!(bucket("gr1", "123"), 73);
    for (percent, expected) in [("73", "2.0.0"), ("72", "1.0.0")] {
        env.cli(&[
            "canary",
            "hello",
            "2.0.0",
            "--percent",
            percent,
            "--group",
            "gr1",
            "--sticky-header",
            "x-user-id",
        ])
        .await
        .ok();
        let got = version_for(&env, "/services/hello/", &[("x-user-id", "123")]).await;
        assert_eq!(got, expected, "at {percent}%");
    }
    assert!(
        routes(&env, "hello").await.contains("group gr1"),
        "routes names the group"
    );
}

// ---------------------------------------------------------------- opt-in

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn opt_in_header_and_cookie_reach_the_candidate_blue_reaches_main() {
    let env = Env::start().await;
    for v in ["1.0.0", "2.0.0", "3.0.0"] {
        env.deploy("hello", v, &[], &[]).await.ok();
    }
    let path = "/services/hello/";
    let green = [("x-client-mode", "green")];
    let green_cookie = [("cookie", "a=b; x-client-mode=green")];
    let blue = [("x-client-mode", "blue")];

    // No candidate yet: green is told so, blue and nobody reach main.
    for headers in [&green[..], &green_cookie[..]] {
        let r = get_with(&env, path, headers).await;
        assert_eq!(r.status, 404, "{headers:?}: {}", r.body);
        assert_eq!(r.header("x-switchyard-error"), Some("no-candidate"));
        let hint = env
            .hint_for(r.header("x-request-id").unwrap_or_default())
            .await;
        assert!(
            hint.contains("no candidate") && hint.contains("hello"),
            "{hint}"
        );
        assert_eq!(r.version(), "");
    }
    assert_eq!(version_for(&env, path, &blue).await, "1.0.0");
    assert_eq!(version_for(&env, path, &[]).await, "1.0.0");

    // A canary at 0% is a candidate that only opt-in reaches.
    env.cli(&["canary", "hello", "2.0.0", "--percent", "0"])
        .await
        .ok();
    assert_eq!(version_for(&env, path, &green).await, "2.0.0");
    assert_eq!(version_for(&env, path, &green_cookie).await, "2.0.0");
    assert_eq!(version_for(&env, path, &blue).await, "1.0.0");
    assert_eq!(version_for(&env, path, &[]).await, "1.0.0");

    // At 100% everyone is in, but blue still reaches main.
    env.cli(&["canary", "hello", "2.0.0", "--percent", "100"])
        .await
        .ok();
    assert_eq!(version_for(&env, path, &[]).await, "2.0.0");
    assert_eq!(version_for(&env, path, &blue).await, "1.0.0");
    assert_eq!(
        version_for(&env, path, &[("cookie", "x-client-mode=blue")]).await,
        "1.0.0"
    );

    // A release marked green is the candidate before the canary.
    env.cli(&["green", "hello", "3.0.0"]).await.ok();
    assert_eq!(version_for(&env, path, &green).await, "3.0.0");
    assert_eq!(version_for(&env, path, &green_cookie).await, "3.0.0");
    assert_eq!(version_for(&env, path, &blue).await, "1.0.0");
    assert_eq!(version_for(&env, path, &[]).await, "2.0.0");
    // The header wins over the cookie.
    assert_eq!(
        version_for(
            &env,
            path,
            &[("x-client-mode", "blue"), ("cookie", "x-client-mode=green")]
        )
        .await,
        "1.0.0"
    );
    env.cli(&["green", "hello", "--off"]).await.ok();
    assert_eq!(version_for(&env, path, &green).await, "2.0.0");

    // Opt-in comes before the rules.
    env.cli(&[
        "route",
        "add",
        "hello",
        "--header-present",
        "x-rule",
        "--respond",
        "418",
    ])
    .await
    .ok();
    assert_eq!(get_with(&env, path, &[("x-rule", "1")]).await.status, 418);
    assert_eq!(
        version_for(&env, path, &[("x-rule", "1"), ("x-client-mode", "blue")]).await,
        "1.0.0"
    );
    assert_eq!(
        version_for(&env, path, &[("x-rule", "1"), ("x-client-mode", "green")]).await,
        "2.0.0"
    );

    // No candidate again after abort; green alone is one.
    env.cli(&["abort", "hello"]).await.ok();
    let r = get_with(&env, path, &green).await;
    assert_eq!(r.status, 404, "{}", r.body);
    assert_eq!(r.header("x-switchyard-error"), Some("no-candidate"));
    assert_eq!(version_for(&env, path, &[]).await, "1.0.0");
    env.cli(&["green", "hello", "3.0.0"]).await.ok();
    assert_eq!(version_for(&env, path, &green).await, "3.0.0");
    assert_eq!(version_for(&env, path, &[]).await, "1.0.0");
    let ls = env.ls().await;
    assert_eq!(
        roles(&ls, "hello"),
        vec![
            pair("1.0.0", "main"),
            pair("2.0.0", "standby"),
            pair("3.0.0", "green"),
        ]
    );
    env.cli(&["green", "hello", "--off"]).await.ok();
    let r = get_with(&env, path, &green).await;
    assert_eq!(r.status, 404, "{}", r.body);
}

// ---------------------------------------------------------------- rules

/// A rule that answers with its own name (so a test sees which rule fired).
fn named(body: &'static str, matchers: &[&'static str]) -> Vec<&'static str> {
    let mut args = matchers.to_vec();
    args.extend(["--respond", "200", "--body", body]);
    args
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_matcher_kind_fixed_responses_splits_and_rule_order() {
    let env = Env::start().await;
    env.deploy("shop", "1.0.0", &[], &[]).await.ok();
    env.deploy("shop", "2.0.0", &[], &[]).await.ok();

    let rules: Vec<Vec<&str>> = vec![
        named(
            "header-exact",
            &["--name", "exact", "--header", "x-exact=yes"],
        ),
        named("header-prefix", &["--header-prefix", "x-prefix=ab"]),
        named("header-regex", &["--header-regex", "x-re=^v[0-9]+$"]),
        named("header-present", &["--header-present", "X-Present"]),
        named("cookie", &["--cookie", "flavour=choc"]),
        named("cookie-regex", &["--cookie-regex", "grp=^beta-"]),
        named("host", &["--host", "shop.example.com"]),
        named("host-regex", &["--host-regex", r"^api\."]),
        named("path-exact", &["--path", "/echo/exact"]),
        named("path-prefix", &["--path-prefix", "/echo/pre/"]),
        named("path-regex", &["--path-regex", "^/echo/items/[0-9]+$"]),
        named("method", &["--method", "PUT,delete"]),
        named("query", &["--query", "beta=1"]),
        named("query-regex", &["--query-regex", "tier=^gold"]),
        named(
            "source-10",
            &["--source", "10.0.0.0/8", "--header-present", "x-src"],
        ),
        named(
            "source-127",
            &["--source", "127.0.0.0/8", "--header-present", "x-src"],
        ),
        vec!["--header", "x-to=two", "--to", "2.0.0"],
        vec![
            "--name",
            "teapot",
            "--path",
            "/echo/teapot",
            "--respond",
            "418",
            "--body",
            "{\"tea\":true}",
            "--content-type",
            "application/json",
        ],
        vec![
            "--name",
            "split",
            "--header-present",
            "x-split",
            "--split",
            "1.0.0=70,2.0.0=30",
        ],
        named("first", &["--header-present", "x-order"]),
        named("second", &["--header-present", "x-order"]),
    ];
    for rule in &rules {
        let mut args = vec!["route", "add", "shop"];
        args.extend(rule);
        let run = env.cli(&args).await.ok();
        assert!(run.stdout.contains("revision"), "{}", run.stdout);
    }

    // (method, path, headers, expected): a rule's name, or the release
    // that answered when no rule holds (`@1.0.0`).
    type Case = (
        &'static str,
        &'static str,
        &'static [(&'static str, &'static str)],
        &'static str,
    );
    let cases: &[Case] = &[
        ("GET", "/echo", &[("x-exact", "yes")], "header-exact"),
        ("GET", "/echo", &[("x-exact", "yes2")], "@1.0.0"),
        ("GET", "/echo", &[("x-prefix", "abc")], "header-prefix"),
        ("GET", "/echo", &[("x-prefix", "xab")], "@1.0.0"),
        ("GET", "/echo", &[("x-re", "v12")], "header-regex"),
        ("GET", "/echo", &[("x-re", "v12a")], "@1.0.0"),
        ("GET", "/echo", &[("x-present", "")], "header-present"),
        ("GET", "/echo", &[("x-absent", "1")], "@1.0.0"),
        ("GET", "/echo", &[("cookie", "a=1; flavour=choc")], "cookie"),
        ("GET", "/echo", &[("cookie", "flavour=chocolate")], "@1.0.0"),
        ("GET", "/echo", &[("cookie", "grp=beta-7")], "cookie-regex"),
        ("GET", "/echo", &[("cookie", "grp=alpha")], "@1.0.0"),
        ("GET", "/echo", &[("host", "shop.example.com")], "host"),
        ("GET", "/echo", &[("host", "SHOP.Example.com:8080")], "host"),
        ("GET", "/echo", &[("host", "shop.example.org")], "@1.0.0"),
        ("GET", "/echo", &[("host", "api.example.com")], "host-regex"),
        ("GET", "/echo", &[("host", "API.Example.com")], "host-regex"),
        ("GET", "/echo", &[("host", "www.api.example.com")], "@1.0.0"),
        ("GET", "/echo/exact", &[], "path-exact"),
        ("GET", "/echo/exact/more", &[], "@1.0.0"),
        ("GET", "/echo/exact?q=1", &[], "path-exact"),
        ("GET", "/echo/pre/x", &[], "path-prefix"),
        ("GET", "/echo/prefix", &[], "@1.0.0"),
        ("GET", "/echo/items/42", &[], "path-regex"),
        ("GET", "/echo/items/42x", &[], "@1.0.0"),
        ("PUT", "/echo", &[], "method"),
        ("DELETE", "/echo", &[], "method"),
        ("POST", "/echo", &[], "@1.0.0"),
        ("GET", "/echo?beta=1", &[], "query"),
        ("GET", "/echo?x=2&beta=1", &[], "query"),
        ("GET", "/echo?beta=10", &[], "@1.0.0"),
        ("GET", "/echo?tier=golden", &[], "query-regex"),
        ("GET", "/echo?tier=silver", &[], "@1.0.0"),
        // 10.0.0.0/8 comes first and does not hold; 127.0.0.0/8 does.
        ("GET", "/echo", &[("x-src", "1")], "source-127"),
        ("GET", "/echo", &[("x-to", "two")], "@2.0.0"),
        ("GET", "/echo", &[("x-order", "1")], "first"),
    ];
    for (method, path, headers, expected) in cases {
        let mut request = env.http.request(
            method.parse().expect("method"),
            format!("{}/services/shop{path}", env.proxy()),
        );
        for (name, value) in *headers {
            request = request.header(*name, *value);
        }
        let r = send(request).await;
        let what = format!("{method} {path} {headers:?}");
        match expected.strip_prefix('@') {
            Some(version) => {
                assert_eq!(r.status, 200, "{what}: {}", r.body);
                assert_eq!(r.version(), version, "{what}: {}", r.body);
                let echo: Value = serde_json::from_str(&r.body)
                    .unwrap_or_else(|e| panic!("{what}: not echo JSON ({e}): {}", r.body));
                assert_eq!(echo["version"], version, "{what}");
            }
            None => {
                assert_eq!(
                    (r.status, r.body.as_str()),
                    (200, *expected),
                    "{what} should hit rule {expected}"
                );
                assert_eq!(r.version(), "", "{what}: a rule answered, not a release");
            }
        }
    }

    // A fixed response: status, body and content type as given.
    let r = get_with(&env, "/services/shop/echo/teapot", &[]).await;
    assert_eq!(r.status, 418);
    assert_eq!(r.body, "{\"tea\":true}");
    assert_eq!(r.header("content-type"), Some("application/json"));

    // The split: 70/30 by sticky key, each key where the formula puts it.
    let keys: Vec<String> = (0..2000).map(|i| format!("switchyard-id=s{i}")).collect();
    let url = format!("{}/services/shop/echo", env.proxy());
    let next = Arc::new(AtomicUsize::new(0));
    let keys = Arc::new(keys);
    let workers: Vec<_> = (0..16)
        .map(|_| {
            let (http, url, keys, next) = (
                env.http.clone(),
                url.clone(),
                Arc::clone(&keys),
                Arc::clone(&next),
            );
            tokio::spawn(async move {
                let mut out = Vec::new();
                while let Some(cookie) = keys.get(next.fetch_add(1, Ordering::Relaxed)) {
                    let r = send(
                        http.get(&url)
                            .header("x-split", "1")
                            .header("cookie", cookie),
                    )
                    .await;
                    assert_eq!(r.status, 200, "{cookie}: {}", r.body);
                    out.push((cookie.clone(), r.version().to_owned()));
                }
                out
            })
        })
        .collect();
    let mut twos = 0;
    for worker in workers {
        for (cookie, version) in worker.await.expect("split task") {
            let key = cookie.trim_start_matches("switchyard-id=");
            let expected = if bucket("shop", key) <= 70 {
                "1.0.0"
            } else {
                "2.0.0"
            };
            assert_eq!(version, expected, "{key} (bucket {})", bucket("shop", key));
            twos += usize::from(version == "2.0.0");
        }
    }
    assert!(
        (500..=700).contains(&twos),
        "30% of 2000 keys should be about 600 on 2.0.0, got {twos}"
    );

    // Listings in evaluation order.
    let ls = env.cli(&["route", "ls", "shop"]).await.ok().stdout;
    let lines: Vec<&str> = ls.lines().collect();
    assert_eq!(lines.len(), 1 + rules.len(), "{ls}");
    assert!(
        lines[0].contains("RULE") && lines[0].contains("ACTION"),
        "{ls}"
    );
    for (line, expected) in [
        (1, ["rule 1 (exact)", "header x-exact = yes", "respond 200"]),
        (7, ["rule 7", "host = shop.example.com", "respond 200"]),
        (12, ["rule 12", "method PUT|DELETE", "respond 200"]),
        (
            16,
            ["rule 16", "source 127.0.0.0/8", "header x-src present"],
        ),
        (17, ["rule 17", "header x-to = two", "2.0.0"]),
        (
            18,
            ["rule 18 (teapot)", "path = /echo/teapot", "respond 418"],
        ),
        (
            19,
            [
                "rule 19 (split)",
                "header x-split present",
                "split 1.0.0=70% 2.0.0=30%",
            ],
        ),
    ] {
        for part in expected {
            assert!(lines[line].contains(part), "`{part}` in line {line}:\n{ls}");
        }
    }
    let json: Value = serde_json::from_str(
        &env.cli(&["route", "ls", "shop", "--json"])
            .await
            .ok()
            .stdout,
    )
    .expect("route ls --json");
    assert_eq!(json.as_array().map(Vec::len), Some(rules.len()));
    assert_eq!(
        json[3]["match"][0]["name"], "x-present",
        "header names are lower-cased"
    );
    assert_eq!(json[14]["match"][1]["cidrs"][0], "10.0.0.0/8");
    assert_eq!(json[18]["weights"]["2.0.0"], 30);

    let table = routes_json(&env, "shop").await;
    assert_eq!(table.len(), 2 + rules.len() + 1, "{table:?}");
    assert_eq!(
        table[0],
        (
            "x-client-mode: green (header or cookie)".to_owned(),
            "404 (no candidate)".to_owned()
        )
    );
    assert_eq!(table[1].1, "1.0.0 (main)");
    assert!(table[2].0.starts_with("rule 1 (exact): "), "{table:?}");
    assert_eq!(table[2 + 16].1, "2.0.0");
    assert_eq!(table[2 + 18].1, "1.0.0=70% 2.0.0=30%");
    assert_eq!(
        table.last().cloned(),
        Some(("everything else".to_owned(), "1.0.0 (main)".to_owned()))
    );
    let text = routes(&env, "shop").await;
    assert!(
        text.contains("everything else") && text.contains("rule 18 (teapot)"),
        "{text}"
    );

    // Rule order: the first match wins; --position 1 puts a rule first.
    env.cli(&[
        "route",
        "add",
        "shop",
        "--position",
        "1",
        "--name",
        "top",
        "--header-present",
        "x-order",
        "--respond",
        "200",
        "--body",
        "top",
    ])
    .await
    .ok();
    let order = |env: &Env| {
        let http = env.http.clone();
        let url = format!("{}/services/shop/echo", env.proxy());
        async move { send(http.get(url).header("x-order", "1")).await.body }
    };
    assert_eq!(order(&env).await, "top");
    let ls = env.cli(&["route", "ls", "shop"]).await.ok().stdout;
    assert!(
        ls.lines()
            .nth(1)
            .is_some_and(|l| l.contains("rule 1 (top)")),
        "{ls}"
    );
    assert!(
        ls.lines()
            .nth(2)
            .is_some_and(|l| l.contains("rule 2 (exact)")),
        "{ls}"
    );

    // Removal by name, then by number.
    env.cli(&["route", "rm", "shop", "top"]).await.ok();
    assert_eq!(order(&env).await, "first");
    let first_at = (rules.len() - 1).to_string();
    env.cli(&["route", "rm", "shop", &first_at]).await.ok();
    assert_eq!(order(&env).await, "second");
    // A name with a space (as in the README's policy file) can go by name too.
    env.cli(&[
        "route",
        "add",
        "shop",
        "--position",
        "1",
        "--name",
        "beta testers",
        "--header-present",
        "x-order",
        "--to",
        "2.0.0",
    ])
    .await
    .ok();
    assert_eq!(
        version_for(&env, "/services/shop/echo", &[("x-order", "1")]).await,
        "2.0.0"
    );
    env.cli(&["route", "rm", "shop", "beta testers"]).await.ok();
    assert_eq!(order(&env).await, "second");
    let json: Value = serde_json::from_str(
        &env.cli(&["route", "ls", "shop", "--json"])
            .await
            .ok()
            .stdout,
    )
    .expect("route ls --json");
    let names: Vec<&str> = json
        .as_array()
        .expect("rules")
        .iter()
        .map(|r| r["name"].as_str().unwrap_or_default())
        .collect();
    assert_eq!(names.len(), rules.len() - 1);
    assert!(!names.contains(&"top") && !names.contains(&"beta testers"));
    let history = env.history("shop").await;
    let recent: Vec<String> = actions(&history).into_iter().take(4).collect();
    assert_eq!(
        recent,
        [
            "remove rule beta testers",
            "add rule beta testers",
            &format!("remove rule {first_at}"),
            "remove rule top",
        ]
    );
}

// ---------------------------------------------------------------- validation

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_version_rules_route_by_the_version_a_request_asks_for() {
    let env = Env::start().await;
    env.deploy("shop", "1.0.0", &[], &[]).await.ok();
    env.deploy("shop", "2.0.0", &[], &[]).await.ok();
    env.cli(&[
        "route",
        "add",
        "shop",
        "--name",
        "v2",
        "--api-version",
        "v2",
        "--to",
        "2.0.0",
    ])
    .await
    .ok();
    let asks = |v: &'static str| [("x-api-version", v)];
    assert_eq!(
        version_for(&env, "/services/shop/", &asks("v2")).await,
        "2.0.0"
    );
    assert_eq!(
        version_for(&env, "/services/shop/", &asks("2.1")).await,
        "2.0.0"
    );
    assert_eq!(
        version_for(&env, "/services/shop/", &asks("v1")).await,
        "1.0.0"
    );
    assert_eq!(
        version_for(&env, "/services/shop/", &asks("two")).await,
        "1.0.0"
    );
    assert_eq!(version_for(&env, "/services/shop/", &[]).await, "1.0.0");

    let listed = env.cli(&["route", "ls", "shop"]).await.ok().stdout;
    assert!(
        listed.contains("rule 1 (v2)") && listed.contains("api-version v2"),
        "{listed}"
    );
    assert!(
        routes_json(&env, "shop").await.contains(&(
            "rule 1 (v2): api-version v2 (header x-api-version)".to_owned(),
            "2.0.0".to_owned()
        )),
        "{}",
        routes(&env, "shop").await
    );

    // A bad version is refused, saying how to write one; nothing changes.
    let history = env.history("shop").await;
    let bad = env
        .cli(&[
            "route",
            "add",
            "shop",
            "--api-version",
            "two",
            "--to",
            "2.0.0",
        ])
        .await
        .failed();
    assert!(
        bad.stderr
            .contains("--api-version `two` is not an API version")
            && bad.stderr.contains("v2, v1.1, 2 or 2.0"),
        "{}",
        bad.stderr
    );
    let file = env.dir.path().join("bad-api.toml");
    std::fs::write(
        &file,
        "service = \"shop\"\n[[rules]]\nmatch = [{ on = \"api-version\", version = \"2.x\" }]\naction = \"route\"\nto = \"2.0.0\"\n",
    )
    .expect("write policy file");
    let bad = env
        .cli(&["apply", "-f", file.to_str().expect("utf-8 path")])
        .await
        .failed();
    assert!(
        bad.stderr
            .contains("API version `2.x` is not of the form v2, v1.1, 2 or 2.0"),
        "{}",
        bad.stderr
    );
    assert_eq!(env.history("shop").await, history);

    // From a policy file, with the version read where the service reads it
    // (here the media type's version= parameter).
    let file = env.dir.path().join("api.toml");
    std::fs::write(
        &file,
        "service = \"shop\"\n[[rules]]\nmatch = [{ on = \"api-version\", version = \"1.1\" }]\naction = \"route\"\nto = \"2.0.0\"\n",
    )
    .expect("write policy file");
    env.cli(&["apply", "-f", file.to_str().expect("utf-8 path")])
        .await
        .ok();
    env.cli(&["api-version", "shop", "--media-type"]).await.ok();
    let accept = |v: &'static str| [("accept", v)];
    for (headers, want) in [
        (accept("application/json;version=1.1"), "2.0.0"),
        (accept("application/json; version=1.2"), "1.0.0"),
        (accept("application/json"), "1.0.0"),
        ([("x-api-version", "1.1")], "1.0.0"),
    ] {
        assert_eq!(
            version_for(&env, "/services/shop/", &headers).await,
            want,
            "{headers:?}"
        );
    }
    assert!(
        routes(&env, "shop")
            .await
            .contains("api-version v1.1 (media type version= parameter)"),
        "{}",
        routes(&env, "shop").await
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_policies_are_refused_with_a_clear_error_and_nothing_changes() {
    let env = Env::start().await;
    for v in ["1.0.0", "2.0.0", "3.0.0"] {
        env.deploy("hello", v, &[], &[]).await.ok();
    }
    env.cli(&["canary", "hello", "2.0.0", "--percent", "10"])
        .await
        .ok();
    env.cli(&[
        "route", "add", "hello", "--name", "keep", "--header", "x-keep=1", "--to", "2.0.0",
    ])
    .await
    .ok();

    let write = |name: &str, text: &str| {
        let path = env.dir.path().join(name);
        std::fs::write(&path, text).expect("write policy file");
        path.to_str().expect("utf-8 path").to_owned()
    };
    let not_toml = write(
        "not-toml.toml",
        "service = \"hello\"\nthis is = = not toml\n",
    );
    let unknown_field = write(
        "unknown-field.toml",
        "service = \"hello\"\n[canary]\nversion = \"2.0.0\"\npercent = 10\nspeed = 3\n",
    );
    let unknown_release = write(
        "unknown-release.toml",
        "service = \"hello\"\n[[rules]]\naction = \"route\"\nto = \"9.9.9\"\n",
    );
    let bad_weights = write(
        "bad-weights.toml",
        "[[rules]]\naction = \"split\"\nweights = { \"1.0.0\" = 50, \"2.0.0\" = 40 }\n",
    );
    let bad_regex = write(
        "bad-regex.toml",
        "[[rules]]\nmatch = [{ on = \"path\", regex = \"([a-z\" }]\naction = \"respond\"\nstatus = 404\n",
    );
    let big_percent = write(
        "big-percent.toml",
        "[canary]\nversion = \"2.0.0\"\npercent = 300\n",
    );
    let other_service = write("other.toml", "service = \"other\"\n");
    let canary_on_main = write(
        "canary-main.toml",
        "[canary]\nversion = \"1.0.0\"\npercent = 5\n",
    );

    let before = (
        env.ls().await,
        env.history("hello").await,
        routes(&env, "hello").await,
    );

    let attempts: Vec<(Vec<&str>, Vec<&str>)> = vec![
        (
            vec!["route", "add", "hello", "--header", "x=1", "--to", "9.9.9"],
            vec!["9.9.9", "does not run"],
        ),
        (
            vec![
                "route",
                "add",
                "hello",
                "--path-regex",
                "(",
                "--to",
                "2.0.0",
            ],
            vec!["bad regex", "("],
        ),
        (
            vec![
                "route",
                "add",
                "hello",
                "--header-regex",
                "x-a=[z-a]",
                "--to",
                "2.0.0",
            ],
            vec!["bad regex"],
        ),
        (
            vec!["route", "add", "hello", "--split", "1.0.0=60,2.0.0=50"],
            vec!["110", "not 100"],
        ),
        (
            vec!["route", "add", "hello", "--split", "1.0.0=90,2.0.0=5"],
            vec!["95", "not 100"],
        ),
        (
            vec!["route", "add", "hello", "--split", "1.0.0=90,9.9.9=10"],
            vec!["9.9.9"],
        ),
        (
            vec![
                "route",
                "add",
                "hello",
                "--source",
                "10.0.0.0/33",
                "--to",
                "2.0.0",
            ],
            vec!["10.0.0.0/33", "CIDR"],
        ),
        (
            vec![
                "route",
                "add",
                "hello",
                "--source",
                "not-an-ip",
                "--respond",
                "403",
            ],
            vec!["not-an-ip"],
        ),
        (
            vec!["route", "add", "hello", "--respond", "99"],
            vec!["status 99"],
        ),
        (
            vec!["route", "add", "hello", "--header", "x=1"],
            vec!["--to"],
        ),
        (
            vec!["canary", "hello", "3.0.0", "--percent", "5"],
            vec!["already has canary 2.0.0", "abort"],
        ),
        (
            vec!["canary", "hello", "2.0.0", "--percent", "101"],
            vec!["0 to 100", "101"],
        ),
        (
            vec!["canary", "hello", "9.9.9", "--percent", "5"],
            vec!["9.9.9"],
        ),
        (
            vec![
                "canary",
                "hello",
                "2.0.0",
                "--percent",
                "10",
                "--sticky-header",
                "bad header",
            ],
            vec!["bad header"],
        ),
        (vec!["green", "hello", "9.9.9"], vec!["9.9.9"]),
        (vec!["green", "hello", "1.0.0"], vec!["is main"]),
        (
            vec!["route", "rm", "hello", "nosuch"],
            vec!["no rule `nosuch`"],
        ),
        (vec!["route", "rm", "hello", "7"], vec!["no rule `7`"]),
        (vec!["route", "rm", "hello", ".."], vec![".."]),
        (
            vec!["kill", "hello", "2.0.0"],
            vec!["rule 1 (keep)", "route rm"],
        ),
        (vec!["promote", "hello", "1.0.0"], vec!["already main"]),
        (
            vec!["apply", "-f", not_toml.as_str()],
            vec!["not valid TOML"],
        ),
        (vec!["apply", "-f", unknown_field.as_str()], vec!["speed"]),
        (
            vec!["apply", "-f", unknown_release.as_str()],
            vec!["9.9.9", "does not run"],
        ),
        (
            vec!["apply", "-f", bad_weights.as_str(), "hello"],
            vec!["90", "not 100"],
        ),
        (
            vec!["apply", "-f", bad_regex.as_str(), "hello"],
            vec!["bad regex"],
        ),
        (
            vec!["apply", "-f", big_percent.as_str(), "hello"],
            vec!["percent"],
        ),
        (
            vec!["apply", "-f", other_service.as_str(), "hello"],
            vec!["other"],
        ),
        (
            vec!["apply", "-f", bad_weights.as_str()],
            vec!["which service"],
        ),
        (
            vec!["apply", "-f", canary_on_main.as_str(), "hello"],
            vec!["1.0.0 is main"],
        ),
    ];
    for (args, words) in &attempts {
        let run = env.cli(args).await.failed();
        for word in words {
            assert!(
                run.stderr.contains(word),
                "`switchyard {}` should say `{word}`:\n{}",
                args.join(" "),
                run.stderr
            );
        }
        assert!(
            run.stderr.starts_with("error: "),
            "`switchyard {}`: {}",
            args.join(" "),
            run.stderr
        );
    }

    let after = (
        env.ls().await,
        env.history("hello").await,
        routes(&env, "hello").await,
    );
    assert_eq!(after.0, before.0, "ls --json changed");
    assert_eq!(after.1, before.1, "history changed");
    assert_eq!(after.2, before.2, "routes changed");

    // And a valid file is taken whole: it replaces rules and canary.
    let good = write(
        "good.toml",
        r#"
service = "hello"

[sticky]
header = "x-user-id"

[canary]
version = "3.0.0"
percent = 100

[[rules]]
name = "maintenance"
match = [{ on = "path", prefix = "/maintenance" }]
action = "respond"
status = 503
body = "down for maintenance"
"#,
    );
    env.cli(&["apply", "-f", &good]).await.ok();
    let r = get_with(&env, "/services/hello/maintenance/x", &[]).await;
    assert_eq!((r.status, r.body.as_str()), (503, "down for maintenance"));
    assert_eq!(
        version_for(&env, "/services/hello/", &[("x-keep", "1")]).await,
        "3.0.0"
    );
    let ls = env.ls().await;
    assert_eq!(
        roles(&ls, "hello"),
        vec![
            pair("1.0.0", "main"),
            pair("2.0.0", "standby"),
            pair("3.0.0", "canary"),
        ]
    );
    assert_eq!(
        numbered_actions(&env.history("hello").await)[0],
        (6, "apply policy".to_owned())
    );
    // Now nothing routes to 2.0.0 by rule: it can be killed.
    env.cli(&["kill", "hello", "2.0.0"]).await.ok();
}

// ---------------------------------------------------------------- under load

/// What a window of the load run expects of a client's key.
#[derive(Debug, Clone, Copy)]
enum Expect {
    /// Canary 2.0.0 at this percentage, main 1.0.0.
    Canary(u32),
    /// Everyone on this release.
    All(&'static str),
}

impl Expect {
    fn version(self, key: &str) -> String {
        match self {
            Expect::Canary(p) => side("hello", key, p, "2.0.0", "1.0.0"),
            Expect::All(v) => v.to_owned(),
        }
    }
}

struct Sample {
    start: Instant,
    end: Instant,
    key: String,
    result: Result<(u16, String), String>,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn weight_changes_promote_and_abort_under_load_fail_no_request() {
    let env = Env::start().await;
    env.deploy("hello", "1.0.0", &[], &[]).await.ok();
    env.deploy("hello", "2.0.0", &[], &[]).await.ok();
    // Stickiness first (at 0%: nobody moves yet).
    env.cli(&[
        "canary",
        "hello",
        "2.0.0",
        "--percent",
        "0",
        "--sticky-header",
        "x-user-id",
    ])
    .await
    .ok();

    // Each client on a connection of its own that never sends a request twice.
    let conns = Clients::new(env.proxy(), 16);
    let load = Load::start(16, move |task, n| {
        let key = format!("user-{task}-{}", n % 64);
        let conns = conns.clone();
        async move {
            let start = Instant::now();
            let result = conns
                .get_with(task, "/services/hello/", &[("x-user-id", &key)])
                .await
                .map(|(status, version, _)| (status, version));
            Sample {
                start,
                end: Instant::now(),
                key,
                result,
            }
        }
    });

    let steps: Vec<(Vec<&str>, Expect)> = vec![
        (
            vec!["canary", "hello", "2.0.0", "--percent", "10"],
            Expect::Canary(10),
        ),
        (
            vec!["canary", "hello", "2.0.0", "--percent", "50"],
            Expect::Canary(50),
        ),
        (
            vec!["canary", "hello", "2.0.0", "--percent", "100"],
            Expect::Canary(100),
        ),
        (
            vec!["canary", "hello", "2.0.0", "--percent", "0"],
            Expect::Canary(0),
        ),
        (
            vec!["canary", "hello", "2.0.0", "--percent", "30"],
            Expect::Canary(30),
        ),
        (vec!["abort", "hello"], Expect::All("1.0.0")),
        (
            vec!["canary", "hello", "2.0.0", "--percent", "50"],
            Expect::Canary(50),
        ),
        (vec!["promote", "hello", "2.0.0"], Expect::All("2.0.0")),
    ];
    let began = Instant::now();
    // (from, until, expectation): requests that started in the window.
    let mut windows: Vec<(Instant, Instant, Expect)> = Vec::new();
    let mut window_start = began;
    let mut expect = Expect::Canary(0);
    for (args, next) in &steps {
        // Every window between two changes gets requests of its own.
        load.run_for(400, WAIT).await;
        let started = Instant::now();
        windows.push((window_start, started, expect));
        env.cli(args).await.ok();
        window_start = Instant::now();
        expect = *next;
    }
    load.run_for(400, WAIT).await;
    windows.push((window_start, Instant::now(), expect));
    let samples = load.finish().await;

    let failed: Vec<String> = samples
        .iter()
        .filter_map(|s| match &s.result {
            Ok((200, _)) => None,
            Ok((status, version)) => Some(format!("{status} from `{version}`")),
            Err(e) => Some(e.clone()),
        })
        .collect();
    assert!(
        failed.is_empty(),
        "{} of {} requests failed, e.g. {:?}",
        failed.len(),
        samples.len(),
        &failed[..failed.len().min(5)]
    );

    let mut wrong = Vec::new();
    let mut per_window = vec![0usize; windows.len()];
    for s in &samples {
        let Ok((_, version)) = &s.result else {
            continue;
        };
        let Some(w) = windows
            .iter()
            .position(|(from, until, _)| s.start >= *from && s.end < *until)
        else {
            continue; // in flight across a change: either side is right
        };
        per_window[w] += 1;
        let expected = windows[w].2.version(&s.key);
        if *version != expected {
            wrong.push(format!(
                "window {w} ({:?}): {} got {version}, expected {expected}",
                windows[w].2, s.key
            ));
        }
    }
    assert!(
        wrong.is_empty(),
        "{} responses from the wrong release, e.g. {:?}",
        wrong.len(),
        &wrong[..wrong.len().min(5)]
    );
    assert!(
        per_window.iter().all(|n| *n > 0),
        "every window saw requests: {per_window:?}"
    );
    for version in ["1.0.0", "2.0.0"] {
        assert!(
            samples
                .iter()
                .any(|s| matches!(&s.result, Ok((_, v)) if v == version)),
            "no response came from {version}"
        );
    }

    let ls = env.ls().await;
    assert_eq!(service(&ls, "hello")["main"], "2.0.0");
    assert_eq!(
        roles(&ls, "hello"),
        vec![pair("1.0.0", "standby"), pair("2.0.0", "main")]
    );
    assert_eq!(service(&ls, "hello")["policy"]["canary"], Value::Null);
    let history = env.history("hello").await;
    let recent: Vec<String> = actions(&history).into_iter().take(4).collect();
    assert_eq!(
        recent,
        [
            "assign 2.0.0 as main (was 1.0.0)",
            "canary 2.0.0 at 50%",
            "abort canary 2.0.0",
            "canary 2.0.0 at 30%",
        ]
    );
    let table = routes_json(&env, "hello").await;
    assert!(
        !table.iter().any(|(m, _)| m.starts_with("canary")),
        "{table:?}"
    );
}

// ---------------------------------------------------------------- emergency release

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn emergency_release_becomes_main_once_healthy_and_rollback_restores_earlier_routing() {
    let env = Env::start().await;
    env.deploy("hello", "1.0.0", &[], &[]).await.ok();
    env.deploy("hello", "2.0.0", &[], &[]).await.ok();
    let routes_before_canary = routes_json(&env, "hello").await;
    let policy_before_canary = env.history("hello").await[0]["state"]["policy"].clone();
    env.cli(&[
        "canary",
        "hello",
        "2.0.0",
        "--percent",
        "20",
        "--sticky-header",
        "x-user-id",
    ])
    .await
    .ok();
    env.cli(&[
        "route", "add", "hello", "--name", "beta", "--header", "x-beta=1", "--to", "2.0.0",
    ])
    .await
    .ok();

    // The emergency release starts unhealthy: traffic stays where it was
    // until it is healthy, and no request fails on the way.
    let conns = Clients::new(env.proxy(), 4);
    let load = Load::start(4, move |task, n| {
        let key = format!("user-{task}-{}", n % 32);
        let conns = conns.clone();
        async move {
            let result = conns
                .get_with(task, "/services/hello/", &[("x-user-id", &key)])
                .await
                .map(|(status, version, _)| (status, version));
            (now_millis(), key, result)
        }
    });
    let deploy_started = now_millis();
    let run = env
        .deploy(
            "hello",
            "3.0.0",
            &["--promote"],
            &["--fail-health-for", "2"],
        )
        .await
        .ok();
    assert!(run.stdout.contains("as main"), "{}", run.stdout);
    load.run_for(100, WAIT).await;
    let samples = load.finish().await;
    let history = env.history("hello").await;
    assert_eq!(
        numbered_actions(&history),
        vec![
            (5, "deploy 3.0.0 as main".to_owned()),
            (4, "add rule beta".to_owned()),
            (3, "canary 2.0.0 at 20%".to_owned()),
            (2, "deploy 2.0.0 as shadow".to_owned()),
            (1, "deploy 1.0.0 as main".to_owned()),
        ]
    );
    let switched_at = history[0]["at"].as_u64().expect("at");
    let failed: Vec<_> = samples
        .iter()
        .filter(|(_, _, r)| !matches!(r, Ok((200, _))))
        .collect();
    assert!(
        failed.is_empty(),
        "failed during the emergency release: {failed:?}"
    );
    let early: Vec<_> = samples
        .iter()
        .filter(|(ended, _, _)| *ended >= deploy_started && *ended < switched_at)
        .collect();
    assert!(!early.is_empty(), "requests ran while 3.0.0 got healthy");
    for (_, key, result) in &early {
        let Ok((_, version)) = result else { continue };
        assert_eq!(
            *version,
            side("hello", key, 20, "2.0.0", "1.0.0"),
            "{key}: before 3.0.0 was healthy"
        );
    }

    // 3.0.0 is main, 1.0.0 standby; the canary and the rule still hold.
    let ls = env.ls().await;
    assert_eq!(service(&ls, "hello")["main"], "3.0.0");
    assert_eq!(
        roles(&ls, "hello"),
        vec![
            pair("1.0.0", "standby"),
            pair("2.0.0", "canary"),
            pair("3.0.0", "main"),
        ]
    );
    let keys: Vec<String> = (0..200).map(|i| format!("user-{i}")).collect();
    let got = versions_by_key(&env, "/services/hello/", "x-user-id", &keys, 8).await;
    for (key, version) in keys.iter().zip(&got) {
        assert_eq!(*version, side("hello", key, 20, "2.0.0", "3.0.0"), "{key}");
    }
    assert_eq!(
        version_for(&env, "/services/hello/", &[("x-beta", "1")]).await,
        "2.0.0"
    );
    assert_eq!(
        version_for(&env, "/services/hello_1.0.0/", &[]).await,
        "1.0.0",
        "standby keeps running"
    );

    // Back to the revision before the canary: 1.0.0 main, 2.0.0 a shadow,
    // no canary, no rule; 3.0.0 goes away.
    env.cli(&["rollback", "hello", "2"]).await.ok();
    let ls = env.ls().await;
    assert_eq!(service(&ls, "hello")["main"], "1.0.0");
    assert_eq!(
        roles(&ls, "hello"),
        vec![pair("1.0.0", "main"), pair("2.0.0", "shadow")]
    );
    let got = versions_by_key(&env, "/services/hello/", "x-user-id", &keys, 8).await;
    assert!(
        got.iter().all(|v| v == "1.0.0"),
        "everyone on 1.0.0 after the rollback: {:?}",
        got.iter().collect::<BTreeSet<_>>()
    );
    assert_eq!(
        version_for(&env, "/services/hello/", &[("x-beta", "1")]).await,
        "1.0.0"
    );
    let r = get_with(&env, "/services/hello/", &[("x-client-mode", "green")]).await;
    assert_eq!(r.status, 404, "no candidate after the rollback: {}", r.body);
    assert_eq!(routes_json(&env, "hello").await, routes_before_canary);
    let history = env.history("hello").await;
    assert_eq!(
        numbered_actions(&history)[0],
        (6, "rollback to 2".to_owned())
    );
    assert_eq!(history[0]["state"]["policy"], policy_before_canary);
    env.eventually("3.0.0 is stopped", WAIT, || async {
        let r = get_with(&env, "/services/hello_3.0.0/", &[]).await;
        r.status == 404
    })
    .await;

    // Every change is a revision: rollback again to the emergency release.
    env.cli(&["rollback", "hello", "5"]).await.ok();
    let ls = env.ls().await;
    assert_eq!(service(&ls, "hello")["main"], "3.0.0");
    let counts: BTreeMap<String, usize> =
        versions_by_key(&env, "/services/hello/", "x-user-id", &keys, 8)
            .await
            .into_iter()
            .fold(BTreeMap::new(), |mut m, v| {
                *m.entry(v).or_default() += 1;
                m
            });
    let expected: BTreeMap<String, usize> = keys
        .iter()
        .map(|k| side("hello", k, 20, "2.0.0", "3.0.0"))
        .fold(BTreeMap::new(), |mut m, v| {
            *m.entry(v).or_default() += 1;
            m
        });
    assert_eq!(counts, expected);
}
