//! Safety end to end: what must never reach traffic (crash loops, releases
//! that are not healthy yet or any more), what keeps running (restarts),
//! and what must change nothing (bad input, missing or wrong token, stale
//! revisions), through the real binary, real sockets and real processes.

mod support;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use support::http1::Http1;
use support::listing::release;
use support::{Env, HELLO, Run};

/// Generous bound for anything that should happen within a second or two.
const WAIT: Duration = Duration::from_secs(30);

/// What a user can observe of a service: `ls --json`, `history NAME --json`
/// (or how it failed) and where `/services/NAME/` goes.
#[derive(Debug, PartialEq)]
struct Snapshot {
    ls: Value,
    history: (i32, String),
    main: (u16, String),
}

async fn snapshot(env: &Env, service: &str) -> Snapshot {
    let ls = env.ls().await;
    let history = env.cli(&["history", service, "--json"]).await;
    let (status, version, _) = env.get(&format!("/services/{service}/")).await;
    Snapshot {
        ls,
        history: (history.code, history.stdout),
        main: (status, version),
    }
}

fn instance(ls: &Value, service: &str, version: &str, slot: usize) -> Value {
    release(ls, service, version)["instances"][slot].clone()
}

/// PIDs of every instance of every release in `ls --json`.
fn listed_pids(ls: &Value) -> Vec<u32> {
    let mut pids = Vec::new();
    for service in ls.as_array().into_iter().flatten() {
        for release in service["releases"].as_array().into_iter().flatten() {
            for instance in release["instances"].as_array().into_iter().flatten() {
                if let Some(pid) = instance["pid"].as_u64() {
                    pids.push(u32::try_from(pid).expect("pid fits u32"));
                }
            }
        }
    }
    pids.sort_unstable();
    pids
}

/// A GET through the proxy: status, `x-served-by` (set by hello-server) and
/// `x-switchyard-error` (set when the proxy answered itself).
async fn probe(env: &Env, path: &str) -> (u16, String, String) {
    let response = env
        .http
        .get(format!("{}{path}", env.proxy()))
        .send()
        .await
        .unwrap_or_else(|e| panic!("GET {path} through the proxy failed: {e}"));
    let header = |name: &str| {
        response
            .headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_owned()
    };
    (
        response.status().as_u16(),
        header("x-served-by"),
        header("x-switchyard-error"),
    )
}

/// A raw admin API request, with the client header as the CLI sends it (a
/// change without a body needs it); answers the status and the JSON body.
async fn admin(
    env: &Env,
    method: reqwest::Method,
    path: &str,
    body: Option<Value>,
    token: Option<&str>,
) -> (u16, Value) {
    let mut request = env
        .http
        .request(method, format!("{}{path}", env.admin()))
        .header("x-switchyard-client", "tests");
    if let Some(body) = body {
        request = request.json(&body);
    }
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    let response = request.send().await.expect("admin API reachable");
    let status = response.status().as_u16();
    let text = response
        .text()
        .await
        .unwrap_or_else(|e| panic!("{path}: the body of a {status} was cut short: {e}"));
    let body = serde_json::from_str(&text).unwrap_or(Value::String(text));
    (status, body)
}

/// What a deploy of hello-server through the raw API looks like.
fn deploy_body(env: &Env, version: &str, base_revision: Option<u64>) -> Value {
    json!({
        "version": version,
        "spec": {
            "run": {
                "kind": "process",
                "command": [HELLO, "--port", "{port}", "--version", version],
                "cwd": env.dir.path(),
            },
            "replicas": 1,
            "health": { "path": "/healthz" },
            "ready_timeout_ms": 60_000,
        },
        "base_revision": base_revision,
    })
}

/// The lines hello-server and switchyard wrote to one instance's log file.
fn log_file(env: &Env, service: &str, version: &str, slot: u32) -> Vec<String> {
    let path = env
        .state_dir
        .join("logs")
        .join(service)
        .join(version)
        .join(format!("instance-{slot}.log"));
    std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()))
        .lines()
        .map(str::to_owned)
        .collect()
}

/// A request line of hello-server's own log (`GET /x -> 200`) that is not a health check.
fn is_traffic(line: &str) -> bool {
    let Some((method, rest)) = line.split_once(' ') else {
        return false;
    };
    method.chars().all(|c| c.is_ascii_uppercase())
        && rest.starts_with('/')
        && rest.contains(" -> ")
        && !rest.starts_with("/healthz ")
}

fn assert_mentions(run: &Run, fragments: &[&str]) {
    for fragment in fragments {
        assert!(
            run.stderr.contains(fragment),
            "stderr should mention {fragment:?}:\nstdout: {}\nstderr: {}",
            run.stdout,
            run.stderr
        );
    }
}

// ---------------------------------------------------------------- crash loops

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crash_looping_first_release_fails_fast_and_leaves_nothing_behind() {
    let env = Env::start().await;
    let before = snapshot(&env, "hello").await;
    assert_eq!(before.ls, json!([]));

    let run = env
        .deploy(
            "hello",
            "1.0.0",
            &[],
            &["--exit-immediately", "--exit-code", "7"],
        )
        .await
        .failed();
    // Called a crash loop, not left to the 60 s ready timeout.
    assert!(
        !run.stderr.contains("did not become healthy within"),
        "{}",
        run.stderr
    );
    assert_mentions(
        &run,
        &[
            "crash loop",
            "code 7",
            "hello-server: exiting at once as asked (--exit-immediately)",
        ],
    );

    assert_eq!(snapshot(&env, "hello").await, before, "nothing may change");
    let (status, _, error) = probe(&env, "/services/hello_1.0.0/").await;
    assert_eq!((status, error.as_str()), (404, "unknown-service"));
    assert_eq!(
        env.instance_pids(),
        Vec::<u32>::new(),
        "no instance may be left running"
    );
    assert_no_more_starts(&env, "hello", "1.0.0").await;

    // Nothing was registered: the same version can be deployed once fixed.
    env.deploy("hello", "1.0.0", &[], &[]).await.ok();
    assert_eq!(env.get("/services/hello/").await.0, 200);
}

/// The supervisor of a failed release is gone: serve logged its instance
/// stopped for good, and the instance was not started again after its
/// last exit.
async fn assert_no_more_starts(env: &Env, service: &str, version: &str) {
    let stopped = format!("instance stopped service={service} version={version} slot=0");
    // serve logged it before the failed deploy answered; the harness reads
    // serve's log through a pipe, so it may take a moment to show here.
    env.eventually(&format!("serve to log: {stopped}"), WAIT, || async {
        env.serve_log().contains(&stopped)
    })
    .await;
    let starts = log_file(env, service, version, 0)
        .iter()
        .filter(|l| l.starts_with("--- switchyard: starting instance"))
        .count();
    let exits = restart_delays(&env.serve_log(), service, version).len();
    assert!(starts > 0);
    assert_eq!(
        starts, exits,
        "the failed release was started again after its last exit"
    );
}

/// (when, restart_in_ms) of every `instance exited` serve logged for slot
/// 0 of a release, in order.
fn restart_delays(log: &str, service: &str, version: &str) -> Vec<(std::time::SystemTime, u64)> {
    let instance = format!("service={service} version={version} slot=0 ");
    log.lines()
        .filter(|l| l.contains("instance exited") && l.contains(&instance))
        .map(|l| {
            let at = l
                .split_whitespace()
                .next()
                .and_then(|t| humantime::parse_rfc3339(t).ok())
                .unwrap_or_else(|| panic!("no time on {l:?}"));
            let delay = l
                .split("restart_in_ms=")
                .nth(1)
                .and_then(|rest| rest.split_whitespace().next())
                .and_then(|ms| ms.parse().ok())
                .unwrap_or_else(|| panic!("no restart_in_ms on {l:?}"));
            (at, delay)
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crash_looping_later_release_never_disturbs_the_main() {
    let env = Env::start().await;
    env.deploy("hello", "1.0.0", &[], &[]).await.ok();
    let before = snapshot(&env, "hello").await;
    let main_pids = listed_pids(&before.ls);
    assert_eq!(main_pids.len(), 1);
    assert_eq!(env.instance_pids(), main_pids);

    // Clients of the main, all through the failed deploy.
    let stop = tokio_util::sync::CancellationToken::new();
    let clients = {
        let (mut client, stop) = (Http1::new(env.proxy()), stop.clone());
        tokio::spawn(async move {
            let mut answers = BTreeMap::<String, usize>::new();
            while !stop.is_cancelled() {
                let answer = match client.get("/services/hello/").await {
                    Ok((status, _, _)) => status.to_string(),
                    Err(e) => format!("error: {e}"),
                };
                *answers.entry(answer).or_default() += 1;
                // Paced, to leave the machine to the deploy.
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            answers
        })
    };
    let run = env
        .deploy(
            "hello",
            "2.0.0",
            &[],
            &["--exit-immediately", "--exit-code", "7"],
        )
        .await
        .failed();
    stop.cancel();
    let answers = clients.await.expect("client task");
    assert_mentions(&run, &["crash loop", "code 7", "exiting at once as asked"]);
    assert_eq!(
        answers.keys().collect::<Vec<_>>(),
        vec!["200"],
        "{answers:?}"
    );

    assert_eq!(snapshot(&env, "hello").await, before, "nothing may change");
    let (status, _, error) = probe(&env, "/services/hello_2.0.0/").await;
    assert_eq!((status, error.as_str()), (404, "unknown-release"));
    assert_eq!(
        env.instance_pids(),
        main_pids,
        "only the main may still run"
    );
    assert_no_more_starts(&env, "hello", "2.0.0").await;

    // Nothing was registered: the same version can be deployed once fixed.
    env.deploy("hello", "2.0.0", &[], &[]).await.ok();
    assert_eq!(release(&env.ls().await, "hello", "2.0.0")["role"], "shadow");
}

// ---------------------------------------------------------------- readiness

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn release_gets_no_traffic_until_it_is_healthy() {
    let env = Env::start().await;
    env.deploy("hello", "1.0.0", &[], &[]).await.ok();

    let started = Instant::now();
    let done = tokio_util::sync::CancellationToken::new();
    let deploy = async {
        let run = env
            .deploy("hello", "2.0.0", &[], &["--fail-health-for", "3"])
            .await;
        done.cancel();
        run
    };
    let watch = async {
        // (time since the deploy began when the answer arrived, answer)
        let mut seen = Vec::new();
        let mut main = BTreeMap::<u16, usize>::new();
        while !done.is_cancelled() {
            let answer = probe(&env, "/services/hello_2.0.0/").await;
            seen.push((started.elapsed(), answer));
            *main
                .entry(probe(&env, "/services/hello/").await.0)
                .or_default() += 1;
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        (seen, main)
    };
    let (run, (seen, main)) = tokio::join!(deploy, watch);
    run.ok();
    assert_eq!(main.keys().collect::<Vec<_>>(), vec![&200], "{main:?}");

    // Its health fails for 3 s after it starts, which is after the deploy
    // began: whatever was answered before 2.5 s came from switchyard itself
    // (404 while it is not routed, or 503 for no healthy instance).
    let early: Vec<_> = seen
        .iter()
        .filter(|(at, _)| *at < Duration::from_millis(2500))
        .collect();
    assert!(!early.is_empty(), "no request made while it was starting");
    for (at, (status, served_by, error)) in &early {
        assert!(
            matches!(
                (*status, error.as_str()),
                (404, "unknown-release") | (503, "no-healthy-instance")
            ) && served_by.is_empty(),
            "at {at:?} the starting release answered {status} {served_by:?} {error:?}"
        );
    }
    for (at, (status, served_by, error)) in &seen {
        assert!(
            !error.is_empty() || (*status == 200 && served_by == "hello/2.0.0/0"),
            "at {at:?}: {status} {served_by:?} {error:?}"
        );
    }

    let (status, served_by, _) = probe(&env, "/services/hello_2.0.0/").await;
    assert_eq!((status, served_by.as_str()), (200, "hello/2.0.0/0"));

    // hello-server's own log (a health probe is logged when its answer
    // changes): no request but health checks until they began to pass.
    let lines = log_file(&env, "hello", "2.0.0", 0);
    let healthy_at = lines
        .iter()
        .position(|l| l == "GET /healthz -> 200")
        .unwrap_or_else(|| panic!("never healthy:\n{}", lines.join("\n")));
    assert!(
        lines[..healthy_at]
            .iter()
            .any(|l| l == "GET /healthz -> 503"),
        "its health never failed:\n{}",
        lines.join("\n")
    );
    let first_request = lines
        .iter()
        .position(|l| is_traffic(l))
        .unwrap_or_else(|| panic!("no request reached it:\n{}", lines.join("\n")));
    assert!(
        first_request > healthy_at,
        "a request reached it before it was healthy:\n{}",
        lines.join("\n")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn release_not_healthy_within_ready_timeout_fails_and_changes_nothing() {
    let env = Env::start().await;
    env.deploy("hello", "1.0.0", &[], &[]).await.ok();
    let before = snapshot(&env, "hello").await;
    let main_pids = env.instance_pids();

    // Its health fails for 10 s: the deploy fails on its 1 s ready timeout
    // (had it waited for the health, it would have succeeded).
    let run = env
        .deploy(
            "hello",
            "2.0.0",
            &["--ready-timeout", "1s"],
            &["--fail-health-for", "10"],
        )
        .await
        .failed();
    assert_mentions(
        &run,
        &[
            "did not become healthy within 1s",
            "GET /healthz",
            "starting",
        ],
    );

    assert_eq!(snapshot(&env, "hello").await, before, "nothing may change");
    let (status, _, error) = probe(&env, "/services/hello_2.0.0/").await;
    assert_eq!((status, error.as_str()), (404, "unknown-release"));
    assert_eq!(env.instance_pids(), main_pids);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn second_deploy_of_a_version_being_deployed_is_refused() {
    let env = Env::start().await;
    env.deploy("hello", "1.0.0", &[], &[]).await.ok();
    let first = env.deploy("hello", "2.0.0", &[], &["--fail-health-for", "5"]);
    let second = async {
        // Once its instance has started, the first deploy is under way
        // (and waits about 5 s more for it to become healthy).
        let log = env.state_dir.join("logs/hello/2.0.0/instance-0.log");
        env.eventually("the first deploy to start its instance", WAIT, || async {
            std::fs::read_to_string(&log).is_ok_and(|l| l.contains("listening on"))
        })
        .await;
        let run = env.deploy("hello", "2.0.0", &[], &[]).await;
        let starts = std::fs::read_to_string(&log)
            .expect("the instance's log")
            .matches("--- switchyard: starting instance")
            .count();
        (run, starts)
    };
    let (first, (second, starts)) = tokio::join!(first, second);
    let second = second.failed();
    assert_mentions(&second, &["hello 2.0.0 is being deployed right now"]);
    assert_eq!(starts, 1, "the refused deploy started an instance");
    first.ok();
    let ls = env.ls().await;
    assert_eq!(release(&ls, "hello", "2.0.0")["status"], "ready");
    assert_eq!(ls[0]["revision"], 2);
    let (status, served_by, _) = probe(&env, "/services/hello_2.0.0/").await;
    assert_eq!((status, served_by.as_str()), (200, "hello/2.0.0/0"));
}

// ---------------------------------------------------------------- health

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn instance_failing_health_leaves_rotation_and_returns_when_healthy() {
    let env = Env::start().await;
    env.deploy(
        "hello",
        "1.0.0",
        &["--replicas", "2", "--health-interval", "200ms"],
        &[],
    )
    .await
    .ok();
    let ls = env.ls().await;
    let sick = instance(&ls, "hello", "1.0.0", 0);
    let addr = sick["addr"].as_str().expect("instance 0 has an address");
    let pid = sick["pid"].clone();

    let (status, _) = post_to_instance(&env, &format!("http://{addr}/control/health/fail")).await;
    assert_eq!(status, 200);
    env.eventually("instance 0 to be unhealthy", WAIT, || async {
        instance(&env.ls().await, "hello", "1.0.0", 0)["health"] == "unhealthy"
    })
    .await;
    let ls = env.ls().await;
    assert_eq!(release(&ls, "hello", "1.0.0")["status"], "degraded");
    for _ in 0..20 {
        let (status, served_by, _) = probe(&env, "/services/hello/").await;
        assert_eq!((status, served_by.as_str()), (200, "hello/1.0.0/1"));
    }

    let (status, _) = post_to_instance(&env, &format!("http://{addr}/control/health/ok")).await;
    assert_eq!(status, 200);
    env.eventually("instance 0 to be healthy again", WAIT, || async {
        instance(&env.ls().await, "hello", "1.0.0", 0)["health"] == "healthy"
    })
    .await;
    env.eventually("instance 0 to get requests again", WAIT, || async {
        probe(&env, "/services/hello/").await.1 == "hello/1.0.0/0"
    })
    .await;
    // Failing health takes an instance out of rotation; it does not restart it.
    let again = instance(&env.ls().await, "hello", "1.0.0", 0);
    assert_eq!(
        (again["pid"].clone(), again["restarts"].clone()),
        (pid, json!(0))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sole_instance_failing_health_answers_503_until_it_recovers() {
    let env = Env::start().await;
    env.deploy("hello", "1.0.0", &["--health-interval", "200ms"], &[])
        .await
        .ok();
    let ls = env.ls().await;
    let addr = instance(&ls, "hello", "1.0.0", 0)["addr"]
        .as_str()
        .expect("address")
        .to_owned();

    let (status, _) = post_to_instance(&env, &format!("http://{addr}/control/health/fail")).await;
    assert_eq!(status, 200);
    env.eventually("the release to answer 503", WAIT, || async {
        probe(&env, "/services/hello/").await == (503, String::new(), "no-healthy-instance".into())
    })
    .await;
    assert_eq!(
        release(&env.ls().await, "hello", "1.0.0")["status"],
        "unhealthy"
    );

    let (status, _) = post_to_instance(&env, &format!("http://{addr}/control/health/ok")).await;
    assert_eq!(status, 200);
    env.eventually("the release to answer 200 again", WAIT, || async {
        probe(&env, "/services/hello/").await.0 == 200
    })
    .await;
    assert_eq!(
        release(&env.ls().await, "hello", "1.0.0")["status"],
        "ready"
    );
}

/// A POST straight to an instance (not through the proxy).
async fn post_to_instance(env: &Env, url: &str) -> (u16, String) {
    let response = env.http.post(url).send().await.expect("instance reachable");
    let status = response.status().as_u16();
    let body = response
        .text()
        .await
        .unwrap_or_else(|e| panic!("POST {url}: the body was cut short: {e}"));
    (status, body)
}

// ---------------------------------------------------------------- restarts

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exited_instance_is_restarted_with_a_new_pid() {
    let env = Env::start_with(&["--crash-limit", "10"]).await;
    env.deploy("hello", "1.0.0", &[], &["--exit-after", "2"])
        .await
        .ok();
    let first = instance(&env.ls().await, "hello", "1.0.0", 0);
    let first_pid = first["pid"].as_u64().expect("a pid");
    assert_eq!(first["restarts"], 0);

    let mut pids = vec![first_pid];
    for restarts in 1..=2 {
        env.eventually(&format!("restart {restarts}"), WAIT, || async {
            let now = instance(&env.ls().await, "hello", "1.0.0", 0);
            now["restarts"].as_u64() >= Some(restarts)
                && now["pid"].as_u64().is_some_and(|p| !pids.contains(&p))
        })
        .await;
        let now = instance(&env.ls().await, "hello", "1.0.0", 0);
        pids.push(now["pid"].as_u64().expect("a pid"));
    }
    let now = instance(&env.ls().await, "hello", "1.0.0", 0);
    let exits = now["last_exits"].to_string();
    assert!(exits.contains("code 3"), "{now:#}");
    let running: Vec<u64> = env.instance_pids().into_iter().map(u64::from).collect();
    assert!(
        !running.contains(&first_pid),
        "the exited process still runs"
    );
    assert!(
        log_file(&env, "hello", "1.0.0", 0)
            .iter()
            .any(|l| l == "exiting after 2 s")
    );
    env.eventually("the restarted instance to serve", WAIT, || async {
        probe(&env, "/services/hello/").await.0 == 200
    })
    .await;
    assert_ne!(
        release(&env.ls().await, "hello", "1.0.0")["status"],
        "crash-loop"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restarts_back_off_exponentially() {
    let env = Env::start_with(&["--crash-limit", "5"]).await;
    let run = env
        .deploy("hello", "1.0.0", &[], &["--exit-immediately"])
        .await
        .failed();
    assert_mentions(&run, &["crash loop"]);
    assert_eq!(run.stderr.matches("code 1").count(), 5, "{}", run.stderr);
    // The delays serve chose, exit by exit: 100 ms, doubling (the 30 s cap
    // and the reset after a long run are the backoff's unit tests').
    env.eventually("five exits in serve's log", WAIT, || async {
        restart_delays(&env.serve_log(), "hello", "1.0.0").len() >= 5
    })
    .await;
    let exits = restart_delays(&env.serve_log(), "hello", "1.0.0");
    let delays: Vec<u64> = exits.iter().map(|(_, delay)| *delay).collect();
    assert_eq!(delays, [100, 200, 400, 800, 1_600], "{}", env.serve_log());
    // And it waited them out: an exit comes at least the previous one's
    // delay after it (a busy machine only makes the gap longer).
    for pair in exits.windows(2) {
        let ((before, delay), (after, _)) = (pair[0], pair[1]);
        let gap = after.duration_since(before).expect("exits in order");
        assert!(
            gap >= Duration::from_millis(delay),
            "restarted {gap:?} after an exit that was to wait {delay} ms"
        );
    }
    assert_no_more_starts(&env, "hello", "1.0.0").await;
}

// ---------------------------------------------------------------- bad input

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_is_refused_clearly_and_changes_nothing() {
    let env = Env::start().await;
    env.deploy("hello", "1.0.0", &[], &[]).await.ok();
    env.deploy("hello", "2.0.0", &[], &[]).await.ok();
    let before = snapshot(&env, "hello").await;
    assert_eq!(before.main, (200, "1.0.0".to_owned()));
    let pids = env.instance_pids();
    assert_eq!(pids.len(), 2);

    let hello = |version: &'static str| -> Vec<&'static str> {
        vec!["--", HELLO, "--port", "{port}", "--version", version]
    };
    let cases: Vec<(Vec<&str>, Vec<&str>)> = vec![
        (
            [vec!["deploy", "Bad_Name", "3.0.0"], hello("3.0.0")].concat(),
            vec!["invalid service name `Bad_Name`"],
        ),
        (
            [vec!["deploy", "hello", "1.0"], hello("1.0")].concat(),
            vec!["invalid version `1.0`", "1.0.0"],
        ),
        (
            [
                vec!["deploy", "hello", "1.0.0", "--health", "/healthz"],
                hello("1.0.0"),
            ]
            .concat(),
            vec!["hello 1.0.0 already exists"],
        ),
        (
            [
                vec!["deploy", "hello", "2.0.0", "--health", "/healthz"],
                hello("2.0.0"),
            ]
            .concat(),
            vec!["hello 2.0.0 already exists"],
        ),
        (
            vec!["assign", "hello", "9.9.9", "--yes"],
            vec!["hello has no release 9.9.9"],
        ),
        (
            vec!["kill", "hello", "9.9.9"],
            vec!["hello has no release 9.9.9"],
        ),
        (vec!["kill", "hello", "1.0"], vec!["invalid version `1.0`"]),
        (
            vec!["assign", "nope", "1.0.0", "--yes"],
            vec!["unknown service `nope`"],
        ),
        (
            vec!["kill", "nope", "1.0.0"],
            vec!["unknown service `nope`"],
        ),
        (
            vec!["kill", "nope", "--all", "--yes"],
            vec!["unknown service `nope`"],
        ),
        (vec!["history", "nope"], vec!["unknown service `nope`"]),
        (vec!["rollback", "nope"], vec!["unknown service `nope`"]),
        (vec!["logs", "nope", "1.0.0"], vec!["nope", "1.0.0"]),
        (
            vec![
                "deploy",
                "hello",
                "3.0.0",
                "--health",
                "/healthz",
                "--",
                "./does-not-exist",
            ],
            vec![
                "could not start hello 3.0.0",
                "does-not-exist",
                "No such file",
            ],
        ),
        (
            vec!["deploy", "hello", "3.0.0", "--health", "/healthz"],
            vec!["nothing to run", "--"],
        ),
        (
            [
                vec!["deploy", "hello", "3.0.0", "--env", "FOO"],
                hello("3.0.0"),
            ]
            .concat(),
            vec!["--env takes KEY=VALUE", "FOO"],
        ),
        (
            [
                vec!["deploy", "hello", "3.0.0", "--replicas", "0"],
                hello("3.0.0"),
            ]
            .concat(),
            vec!["replicas must be between 1 and"],
        ),
        (vec!["kill", "hello"], vec!["which release?", "--all"]),
        (
            vec!["kill", "hello", "2.0.0", "--all"],
            vec!["either a VERSION or --all"],
        ),
        (
            vec!["kill", "hello", "1.0.0"],
            vec!["cannot kill hello 1.0.0: it is main"],
        ),
        (
            vec!["assign", "hello", "1.0.0", "--yes"],
            vec!["already main"],
        ),
        (
            vec!["rollback", "hello", "7"],
            vec!["hello has no revision 7"],
        ),
    ];
    for (args, expected) in cases {
        let run = env.cli(&args).await;
        assert_eq!(run.code, 1, "`{}`: {run:?}", args.join(" "));
        for fragment in expected {
            assert!(
                run.stderr.contains(fragment),
                "`{}` should say {fragment:?}: {}",
                args.join(" "),
                run.stderr
            );
        }
        assert_eq!(
            snapshot(&env, "hello").await,
            before,
            "`{}` changed something",
            args.join(" ")
        );
        assert_eq!(env.instance_pids(), pids, "`{}`", args.join(" "));
    }

    // Unknown flags are the argument parser's (exit code 2).
    for args in [
        [
            vec!["deploy", "hello", "3.0.0", "--frobnicate"],
            hello("3.0.0"),
        ]
        .concat(),
        vec!["ls", "--frobnicate"],
        vec!["kill", "hello", "2.0.0", "--frobnicate"],
    ] {
        let run = env.cli(&args).await;
        assert_eq!(run.code, 2, "`{}`: {run:?}", args.join(" "));
        assert!(run.stderr.contains("--frobnicate"), "{}", run.stderr);
    }
    assert_eq!(snapshot(&env, "hello").await, before);
    assert_eq!(env.instance_pids(), pids);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn names_and_versions_cannot_redirect_cli_requests() {
    let env = Env::start().await;
    env.deploy("hello", "1.0.0", &[], &[]).await.ok();
    let before = snapshot(&env, "hello").await;

    // Each would reach another resource if pasted into the URL as is:
    // `kill hello ../../hello` is `DELETE /v1/services/hello` (kill --all,
    // unconfirmed) and `hello/releases/1.0.0#` kills 1.0.0.
    let cases: [(&[&str], &str); 6] = [
        (
            &["kill", "hello", "../../hello"],
            "invalid version `../../hello`",
        ),
        (
            &["kill", "hello/releases/1.0.0#", "9.9.9"],
            "invalid service name",
        ),
        (
            &["kill", "hello/releases/1.0.0?", "--all", "--yes"],
            "invalid service name",
        ),
        (&["history", "hello?limit=1"], "invalid service name"),
        (&["logs", "hello", "1.0.0/../../.."], "invalid version"),
        (&["ls", "../v1/services"], "invalid service name"),
    ];
    for (args, expected) in cases {
        let run = env.cli(args).await;
        assert_eq!(run.code, 1, "`{}`: {run:?}", args.join(" "));
        assert!(
            run.stderr.contains(expected),
            "`{}`: {}",
            args.join(" "),
            run.stderr
        );
        assert_eq!(
            snapshot(&env, "hello").await,
            before,
            "`{}`",
            args.join(" ")
        );
    }

    // The API checks names itself too.
    let (status, body) = admin(
        &env,
        reqwest::Method::GET,
        "/v1/services/Bad_Name",
        None,
        None,
    )
    .await;
    assert_eq!(status, 400, "{body}");
    assert!(
        body["error"]
            .as_str()
            .unwrap_or("")
            .contains("invalid service name")
    );
}

// ---------------------------------------------------------------- auth

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn token_file_requires_the_bearer_token_on_every_request() {
    let secrets = tempfile::tempdir().expect("temp dir");
    let token_file = secrets.path().join("token");
    std::fs::write(&token_file, "s3cret-t0ken-for-tests\n").expect("write token");
    let token_arg = token_file.to_str().expect("utf-8 path");
    let mut env = Env::start_with(&["--token-file", token_arg]).await;

    // The CLI without a token.
    let run = env.deploy("hello", "1.0.0", &[], &[]).await.failed();
    assert_mentions(&run, &["token", "SWITCHYARD_TOKEN"]);
    assert_eq!(env.instance_pids(), Vec::<u32>::new(), "nothing may start");
    let run = env.cli(&["ls"]).await.failed();
    assert_mentions(&run, &["token"]);
    // With the wrong one.
    let run = env
        .cli(&["ls", "--token", "s3cret-t0ken-for-test"])
        .await
        .failed();
    assert_mentions(&run, &["token"]);

    // Raw HTTP without, with a wrong and with a malformed Authorization.
    for token in [None, Some("wrong"), Some("")] {
        let (status, body) = admin(&env, reqwest::Method::GET, "/v1/services", None, token).await;
        assert_eq!(status, 401, "{token:?}: {body}");
        assert!(
            body["error"].as_str().unwrap_or("").contains("token"),
            "{body}"
        );
        let (status, _) = admin(
            &env,
            reqwest::Method::POST,
            "/v1/services/hello/releases",
            Some(deploy_body(&env, "1.0.0", None)),
            token,
        )
        .await;
        assert_eq!(status, 401);
    }
    let response = env
        .http
        .get(format!("{}/v1/services", env.admin()))
        .header("authorization", "s3cret-t0ken-for-tests")
        .send()
        .await
        .expect("admin reachable");
    assert_eq!(
        response.status().as_u16(),
        401,
        "the Bearer scheme is required"
    );
    assert!(
        response.headers().contains_key("www-authenticate"),
        "a 401 says how to authenticate"
    );
    assert_eq!(env.instance_pids(), Vec::<u32>::new(), "nothing may start");

    // With SWITCHYARD_TOKEN (the file's newline is not part of the token).
    env.token = Some("s3cret-t0ken-for-tests".into());
    assert_eq!(env.ls().await, json!([]), "nothing was deployed");
    env.deploy("hello", "1.0.0", &[], &[]).await.ok();
    assert_eq!(env.ls().await[0]["main"], "1.0.0");
    let (status, _) = admin(
        &env,
        reqwest::Method::GET,
        "/v1/services/hello",
        None,
        Some("s3cret-t0ken-for-tests"),
    )
    .await;
    assert_eq!(status, 200);
    let response = env
        .http
        .get(format!("{}/v1/services", env.admin()))
        .header("authorization", "bearer s3cret-t0ken-for-tests")
        .send()
        .await
        .expect("admin reachable");
    assert_eq!(
        response.status().as_u16(),
        200,
        "the scheme is case-insensitive"
    );
    // The token guards the admin API only, not client traffic.
    assert_eq!(env.get("/services/hello/").await.0, 200);

    // A change without the token changes nothing.
    let before = snapshot(&env, "hello").await;
    env.token = None;
    env.cli(&["kill", "hello", "--all", "--yes"]).await.failed();
    let (status, _) = admin(
        &env,
        reqwest::Method::DELETE,
        "/v1/services/hello",
        None,
        None,
    )
    .await;
    assert_eq!(status, 401);
    env.token = Some("s3cret-t0ken-for-tests".into());
    assert_eq!(snapshot(&env, "hello").await, before);
}

/// Runs `switchyard serve` in a fresh state directory expecting it to
/// refuse to start.
async fn serve_refuses(extra: &[&str]) -> Run {
    let dir = tempfile::tempdir().expect("temp dir");
    support::serves::serve_exits(&dir.path().join("state"), extra).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn non_loopback_admin_without_token_file_refuses_to_start() {
    for admin in ["0.0.0.0:0", "[::]:0"] {
        let run = serve_refuses(&["--admin", admin]).await.failed();
        assert_mentions(&run, &["--token-file", "without a token"]);
        assert!(
            !run.stdout.contains("listening"),
            "serve bound something: {}",
            run.stdout
        );
    }
    // An empty token file is no token either.
    let secrets = tempfile::tempdir().expect("temp dir");
    let empty = secrets.path().join("token");
    std::fs::write(&empty, "\n").expect("write");
    let run = serve_refuses(&[
        "--admin",
        "127.0.0.1:0",
        "--token-file",
        empty.to_str().expect("utf-8"),
    ])
    .await
    .failed();
    assert_mentions(&run, &["token file is empty"]);
    let run = serve_refuses(&[
        "--admin",
        "127.0.0.1:0",
        "--token-file",
        "/nonexistent/token",
    ])
    .await
    .failed();
    assert_mentions(&run, &["cannot read the token file", "/nonexistent/token"]);
}

// ---------------------------------------------------------------- revisions

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stale_base_revision_gets_409_with_the_current_revision() {
    let env = Env::start().await;
    env.deploy("hello", "1.0.0", &[], &[]).await.ok();
    env.deploy("hello", "2.0.0", &[], &[]).await.ok();
    let before = snapshot(&env, "hello").await;
    assert_eq!(before.ls[0]["revision"], 2);
    let pids = env.instance_pids();

    use reqwest::Method;
    let changes = [
        (
            Method::DELETE,
            "/v1/services/hello/releases/2.0.0?base_revision=1".to_owned(),
            None,
        ),
        (
            Method::DELETE,
            "/v1/services/hello?base_revision=1".to_owned(),
            None,
        ),
        (
            Method::POST,
            "/v1/services/hello/assign".to_owned(),
            Some(json!({"version": "2.0.0", "base_revision": 1})),
        ),
        (
            Method::POST,
            "/v1/services/hello/rollback".to_owned(),
            Some(json!({"revision": 1, "base_revision": 1})),
        ),
        (
            Method::POST,
            "/v1/services/hello/releases".to_owned(),
            Some(deploy_body(&env, "3.0.0", Some(1))),
        ),
    ];
    for (method, path, body) in changes {
        let (status, answer) = admin(&env, method.clone(), &path, body, None).await;
        assert_eq!(status, 409, "{method} {path}: {answer}");
        assert_eq!(answer["current_revision"], 2, "{method} {path}: {answer}");
        let error = answer["error"].as_str().unwrap_or("");
        assert!(
            error.contains("revision 1") && error.contains("current one is 2"),
            "{method} {path}: {answer}"
        );
        assert_eq!(snapshot(&env, "hello").await, before, "{method} {path}");
        assert_eq!(env.instance_pids(), pids, "{method} {path}");
    }

    // The current revision is accepted.
    let (status, answer) = admin(
        &env,
        Method::DELETE,
        "/v1/services/hello/releases/2.0.0?base_revision=2",
        None,
        None,
    )
    .await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["revision"]["number"], 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cli_change_based_on_an_old_revision_says_the_revision_moved() {
    let env = Env::start().await;
    env.deploy("hello", "1.0.0", &[], &[]).await.ok();
    env.deploy("hello", "2.0.0", &[], &[]).await.ok();
    env.deploy("hello", "3.0.0", &["--standby"], &[]).await.ok();
    let before = snapshot(&env, "hello").await;
    let pids = env.instance_pids();

    let run = env
        .cli(&["kill", "hello", "2.0.0", "--revision", "1"])
        .await
        .failed();
    assert_mentions(
        &run,
        &[
            "changed meanwhile",
            "based this on revision 1",
            "current one is 3",
        ],
    );
    let run = env
        .deploy("hello", "4.0.0", &["--revision", "2"], &[])
        .await
        .failed();
    assert_mentions(
        &run,
        &["changed meanwhile", "revision 2", "current one is 3"],
    );
    assert_eq!(snapshot(&env, "hello").await, before);
    assert_eq!(env.instance_pids(), pids, "4.0.0 must not start");

    env.cli(&["kill", "hello", "2.0.0", "--revision", "3"])
        .await
        .ok();
}

// ---------------------------------------------------------------- logs

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logs_show_the_last_lines_of_each_instance() {
    let env = Env::start().await;
    // Health checks every minute once healthy, so that no probe lands in
    // the logs while the test reads them.
    env.deploy(
        "hello",
        "1.0.0",
        &["--replicas", "2", "--health-interval", "60s"],
        &[],
    )
    .await
    .ok();
    for i in 0..12 {
        assert_eq!(
            env.get(&format!("/services/hello/echo/marker-{i}")).await.0,
            200
        );
    }

    let run = env.cli(&["logs", "hello", "1.0.0", "-n", "5"]).await.ok();
    let mut by_slot = BTreeMap::<u32, Vec<String>>::new();
    for line in run.stdout.lines() {
        let (slot, text) = line
            .strip_prefix('[')
            .and_then(|l| l.split_once("] "))
            .unwrap_or_else(|| panic!("line without its instance: {line:?}"));
        by_slot
            .entry(slot.parse().expect("slot number"))
            .or_default()
            .push(text.to_owned());
    }
    assert_eq!(
        by_slot.keys().copied().collect::<Vec<_>>(),
        vec![0, 1],
        "{}",
        run.stdout
    );
    for (slot, lines) in &by_slot {
        let file = log_file(&env, "hello", "1.0.0", *slot);
        assert!(file.len() >= 4, "instance {slot} logged only {file:?}");
        assert_eq!(
            lines,
            &file[file.len().saturating_sub(5)..],
            "instance {slot}"
        );
    }
    assert!(
        run.stdout.contains("GET /echo/marker-11 -> 200"),
        "the last request is missing:\n{}",
        run.stdout
    );

    // Everything, from the start.
    let run = env
        .cli(&["logs", "hello", "1.0.0", "-n", "1000"])
        .await
        .ok();
    for expected in [
        "[0] --- switchyard: starting instance 0 of hello 1.0.0",
        "[1] hello-server 1.0.0 listening on 127.0.0.1:",
        "GET /echo/marker-0 -> 200",
    ] {
        assert!(
            run.stdout.contains(expected),
            "{expected:?} missing:\n{}",
            run.stdout
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logs_follow_prints_new_lines_as_they_come() {
    use tokio::io::AsyncBufReadExt;

    let env = Env::start().await;
    env.deploy("hello", "1.0.0", &["--health-interval", "60s"], &[])
        .await
        .ok();
    let mut follow = env
        .cli_command(&["logs", "hello", "1.0.0", "-n", "1", "-f"])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("start logs -f");
    let mut lines = tokio::io::BufReader::new(follow.stdout.take().expect("stdout")).lines();
    let mut next_line = async || {
        tokio::time::timeout(WAIT, lines.next_line())
            .await
            .expect("a line within the bound")
            .expect("read stdout")
            .expect("logs -f is still running")
    };
    let first = next_line().await;
    assert_eq!(first, "GET /healthz -> 200", "the one last line first");

    for i in 0..3 {
        env.get(&format!("/services/hello/echo/followed-{i}")).await;
        assert_eq!(next_line().await, format!("GET /echo/followed-{i} -> 200"));
    }
    follow.start_kill().expect("stop logs -f");
    let _ = follow.wait().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_api_answers_every_error_in_json() {
    use reqwest::Method;
    let env = Env::start().await;
    env.deploy("hello", "1.0.0", &[], &[]).await.ok();
    let before = snapshot(&env, "hello").await;

    let cases = [
        (
            Method::DELETE,
            "/v1/services/hello/releases/1.0.0?base_revision=abc",
            400,
            "base_revision",
        ),
        (
            Method::DELETE,
            "/v1/services/hello?base_revision=-1",
            400,
            "base_revision",
        ),
        (
            Method::GET,
            "/v1/services/hello/history?limit=lots",
            400,
            "limit",
        ),
        (
            Method::GET,
            "/v1/services/hello/releases/1.0.0/logs?lines=x",
            400,
            "lines",
        ),
        (
            Method::GET,
            "/v1/services/hello/releases/1.0.0/logs?after=0",
            400,
            "SLOT:OFFSET",
        ),
        (
            Method::POST,
            "/v1/services/hello/assign",
            400,
            "invalid request body",
        ),
        (
            Method::GET,
            "/v1/services/Hello",
            400,
            "invalid service name",
        ),
        (Method::GET, "/v1/services/nope", 404, "unknown service"),
        (Method::GET, "/v1/no/such/thing", 404, "/v1/no/such/thing"),
        (Method::PUT, "/v1/services/hello", 405, "PUT"),
    ];
    for (method, path, status, fragment) in cases {
        let response = env
            .http
            .request(method.clone(), format!("{}{path}", env.admin()))
            .header("x-switchyard-client", "tests")
            .send()
            .await
            .expect("admin API reachable");
        assert_eq!(response.status().as_u16(), status, "{method} {path}");
        let allow = response.headers().get("allow").cloned();
        let text = response
            .text()
            .await
            .unwrap_or_else(|e| panic!("{method} {path}: the body was cut short: {e}"));
        let body: Value = serde_json::from_str(&text)
            .unwrap_or_else(|_| panic!("{method} {path} answered no JSON: {text:?}"));
        let error = body["error"].as_str().unwrap_or("");
        assert!(error.contains(fragment), "{method} {path}: {body}");
        if status == 405 {
            assert!(allow.is_some(), "{method} {path}: no Allow header");
        }
    }
    assert_eq!(snapshot(&env, "hello").await, before);
}
