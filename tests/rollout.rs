//! Progressive delivery end to end: rollouts through the real binary that
//! step a sticky canary up, analyse the candidate's own traffic, promote a
//! healthy candidate and roll back a bad one; progress that survives a
//! `kill -9` of serve; events through the API, the CLI and webhooks; and
//! the per-release metrics behind it all.

mod support;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::post;
use serde_json::Value;
use support::Env;
use support::http1::Http1;
use support::listing::{pair, roles, service};
use support::load::{Answer, Clients, Load};
use tokio::net::TcpListener;

/// The bound on every wait: generous, so a slow machine only slows tests.
const WAIT: Duration = Duration::from_secs(30);
/// The bound on a whole rollout of a few short intervals.
const ROLLOUT_WAIT: Duration = Duration::from_secs(60);
/// Distinct clients (`x-user-id`) the traffic cycles through.
const USERS: usize = 200;
/// Time between two requests of one traffic worker.
const PACE: Duration = Duration::from_millis(10);

// ---------------------------------------------------------------- helpers

/// One answer through the proxy.
#[derive(Debug, Clone)]
struct Sample {
    user: String,
    /// 0 when the request got no answer at all.
    status: u16,
    /// `x-switchyard-version`: the release that answered.
    version: String,
    error: Option<String>,
}

/// Clients with distinct `x-user-id` keys calling the service without a
/// break until stopped, each on a connection of its own that never sends
/// a request twice, recording every answer.
fn start_traffic(env: &Env, workers: usize) -> Load<Sample> {
    let conns = Clients::new(env.proxy(), workers);
    Load::start(workers, move |worker, n| {
        let user = format!("user-{}", (n * workers + worker) % USERS);
        let conns = conns.clone();
        async move {
            let answer = conns
                .get_with(worker, "/services/hello/", &[("x-user-id", &user)])
                .await;
            // Paced: a rollout's analysis wants a steady trickle.
            tokio::time::sleep(PACE).await;
            sample(user, answer)
        }
    })
}

/// A [`Sample`] of what `user` got.
fn sample(user: String, answer: Answer) -> Sample {
    match answer {
        Ok((status, version, _)) => Sample {
            user,
            status,
            version,
            error: None,
        },
        Err(e) => Sample {
            user,
            status: 0,
            version: String::new(),
            error: Some(e),
        },
    }
}

/// `count` requests from distinct users, after the traffic above.
async fn burst(env: &Env, count: usize) -> Vec<Sample> {
    let mut client = Http1::new(env.proxy());
    let mut samples = Vec::new();
    for i in 0..count {
        let user = format!("user-{}", i % USERS);
        let answer = client
            .get_with("/services/hello/", &[("x-user-id", &user)])
            .await;
        samples.push(sample(user, answer));
    }
    samples
}

/// How many answers came from each (version, status).
fn tally(samples: &[Sample]) -> std::collections::BTreeMap<(String, u16), usize> {
    let mut counts = std::collections::BTreeMap::new();
    for s in samples {
        *counts.entry((s.version.clone(), s.status)).or_default() += 1;
    }
    counts
}

/// Every answer from `main` was a 200, nothing went unanswered, and any
/// other answer came from `candidate`.
fn assert_main_never_failed(samples: &[Sample], main: &str, candidate: &str) {
    assert!(!samples.is_empty(), "the traffic got no answer at all");
    let unanswered: Vec<(&str, &str)> = samples
        .iter()
        .filter(|s| s.status == 0)
        .map(|s| (s.user.as_str(), s.error.as_deref().unwrap_or("no error")))
        .collect();
    assert!(
        unanswered.is_empty(),
        "requests went unanswered: {:?}",
        &unanswered[..unanswered.len().min(5)]
    );
    let from_main_failed: Vec<&Sample> = samples
        .iter()
        .filter(|s| s.version == main && s.status != 200)
        .collect();
    assert!(
        from_main_failed.is_empty(),
        "clients on main {main} saw failures: {:?}",
        &from_main_failed[..from_main_failed.len().min(5)]
    );
    let strangers: Vec<&Sample> = samples
        .iter()
        .filter(|s| s.version != main && s.version != candidate)
        .collect();
    assert!(
        strangers.is_empty(),
        "answers from neither release: {:?}",
        &strangers[..strangers.len().min(5)]
    );
}

/// `rollout status hello --json` parsed.
async fn rollout_view(env: &Env) -> Value {
    rollout_view_of(env, "hello").await
}

/// `rollout status SERVICE --json` parsed.
async fn rollout_view_of(env: &Env, service: &str) -> Value {
    let run = env
        .cli(&["rollout", "status", service, "--json"])
        .await
        .ok();
    serde_json::from_str(&run.stdout).expect("rollout status --json is JSON")
}

/// A rollout of `service` 2.0.0 to 30% with 1 s intervals, which pauses
/// after its first interval when nobody sends it requests.
async fn start_unjudged_rollout(env: &Env, service: &str) {
    env.cli(&[
        "rollout",
        service,
        "2.0.0",
        "--steps",
        "30",
        "--interval",
        "1s",
        "--min-requests",
        "5",
    ])
    .await
    .ok();
}

/// The rollout's state: `running`, `paused`, `succeeded`, `failed`, `aborted`.
fn state_of(view: &Value) -> &str {
    view["state"]["status"]["state"]
        .as_str()
        .unwrap_or_default()
}

/// Polls `rollout status` until the rollout is in `state`; returns that view.
async fn wait_for_state(env: &Env, state: &str, timeout: Duration) -> Value {
    let deadline = Instant::now() + timeout;
    loop {
        let view = rollout_view(env).await;
        if state_of(&view) == state {
            return view;
        }
        if Instant::now() > deadline {
            panic!(
                "the rollout did not reach `{state}` within {timeout:?}: {view:#}\nevents: {:#}\nserve log:\n{}",
                Value::Array(events(env).await),
                env.serve_log()
            );
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// `events hello --json`, oldest first.
async fn events(env: &Env) -> Vec<Value> {
    let run = env.cli(&["events", "hello", "--json"]).await.ok();
    let mut events: Vec<Value> =
        serde_json::from_str(&run.stdout).expect("events --json is a JSON list");
    events.reverse();
    events
}

fn kinds(events: &[Value]) -> Vec<String> {
    events
        .iter()
        .map(|e| e["kind"].as_str().unwrap_or_default().to_owned())
        .collect()
}

fn count(kinds: &[String], kind: &str) -> usize {
    kinds.iter().filter(|k| *k == kind).count()
}

/// The check `name` of a rollout view.
fn check<'a>(view: &'a Value, name: &str) -> &'a Value {
    view["state"]["checks"]
        .as_array()
        .and_then(|checks| checks.iter().find(|c| c["name"] == name))
        .unwrap_or_else(|| panic!("no check `{name}` in {view:#}"))
}

/// The numbers in a text, e.g. `64.5ms vs main 21.0ms` → [64.5, 21.0].
fn numbers(text: &str) -> Vec<f64> {
    text.split(|c: char| !(c.is_ascii_digit() || c == '.'))
        .filter_map(|word| word.parse().ok())
        .collect()
}

/// Main 1.0.0 and a standby candidate 2.0.0 with its own server flags.
async fn main_and_candidate(env: &Env, main_args: &[&str], candidate_args: &[&str]) {
    env.deploy("hello", "1.0.0", &[], main_args).await.ok();
    env.deploy("hello", "2.0.0", &["--standby"], candidate_args)
        .await
        .ok();
}

/// What a webhook receiver was sent and how it answers.
#[derive(Default)]
struct Received {
    /// Every POSTed body, in arrival order, with the status it was answered.
    bodies: Vec<(Value, u16)>,
}

/// An axum app served on 127.0.0.1:0; stops when dropped.
struct Served {
    url: String,
    task: tokio::task::JoinHandle<()>,
}

impl Served {
    async fn start(app: axum::Router) -> Served {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let url = format!("http://{}/", listener.local_addr().expect("local addr"));
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Served { url, task }
    }
}

impl Drop for Served {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// A tiny HTTP server on 127.0.0.1:0 recording JSON POSTs to `/`; it
/// answers 500 to the first `fail_first` of them, and always 500 when
/// `always_fail` is set. Stops when dropped.
struct Receiver {
    url: String,
    received: Arc<Mutex<Received>>,
    _server: Served,
}

#[derive(Clone)]
struct ReceiverState {
    received: Arc<Mutex<Received>>,
    posts: Arc<AtomicUsize>,
    fail_first: usize,
    always_fail: bool,
}

async fn receive(State(state): State<ReceiverState>, Json(body): Json<Value>) -> StatusCode {
    let n = state.posts.fetch_add(1, Ordering::SeqCst);
    let status = if state.always_fail || n < state.fail_first {
        StatusCode::INTERNAL_SERVER_ERROR
    } else {
        StatusCode::OK
    };
    state
        .received
        .lock()
        .expect("receiver lock")
        .bodies
        .push((body, status.as_u16()));
    status
}

impl Receiver {
    async fn start(fail_first: usize, always_fail: bool) -> Receiver {
        let received = Arc::new(Mutex::new(Received::default()));
        let app = axum::Router::new()
            .route("/", post(receive))
            .with_state(ReceiverState {
                received: Arc::clone(&received),
                posts: Arc::new(AtomicUsize::new(0)),
                fail_first,
                always_fail,
            });
        let server = Served::start(app).await;
        Receiver {
            url: server.url.clone(),
            received,
            _server: server,
        }
    }

    /// Bodies answered with a 2xx, in arrival order.
    fn delivered(&self) -> Vec<Value> {
        self.received
            .lock()
            .expect("receiver lock")
            .bodies
            .iter()
            .filter(|(_, status)| *status < 300)
            .map(|(body, _)| body.clone())
            .collect()
    }

    fn refused(&self) -> usize {
        self.received
            .lock()
            .expect("receiver lock")
            .bodies
            .iter()
            .filter(|(_, status)| *status >= 300)
            .count()
    }
}

// ---------------------------------------------------------------- rollback on bad metrics

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn candidate_failing_a_fifth_of_requests_is_rolled_back_and_main_never_fails() {
    let env = Env::start().await;
    main_and_candidate(&env, &[], &["--fail-rate", "0.2"]).await;
    let traffic = start_traffic(&env, 2);

    env.cli(&[
        "rollout",
        "hello",
        "2.0.0",
        "--steps",
        "20,50,100",
        "--interval",
        "2s",
        "--failure-limit",
        "2",
        "--min-requests",
        "10",
        "--sticky-header",
        "x-user-id",
    ])
    .await
    .ok();
    let view = wait_for_state(&env, "failed", ROLLOUT_WAIT).await;
    let during = traffic.finish_within(WAIT).await;

    // Clients on main never saw a failure; the canary's 500s were its own.
    assert_main_never_failed(&during, "1.0.0", "2.0.0");
    let counts = tally(&during);
    assert!(
        counts.get(&("2.0.0".into(), 500)).copied().unwrap_or(0) > 0,
        "some clients were on the failing canary: {counts:?}"
    );
    let on_canary: std::collections::BTreeSet<&str> = during
        .iter()
        .filter(|s| s.version == "2.0.0")
        .map(|s| s.user.as_str())
        .collect();
    assert!(
        on_canary.len() < USERS / 2,
        "only a share of the clients reach a 20% canary: {}",
        on_canary.len()
    );

    // The reason names the error rate; the rollback came after the
    // configured number of failed intervals, at the first weight.
    let reason = view["state"]["status"]["reason"]
        .as_str()
        .unwrap_or_default();
    assert!(reason.contains("error rate"), "{view:#}");
    assert!(reason.contains("2 failed analyses in a row"), "{view:#}");
    let error_rate = check(&view, "error rate");
    assert_eq!(error_rate["verdict"], "fail", "{view:#}");
    let measured = numbers(error_rate["measured"].as_str().unwrap_or_default());
    assert!(
        measured.first().is_some_and(|r| (10.0..=30.0).contains(r)),
        "about 20% errors measured: {error_rate}"
    );
    assert_eq!(error_rate["threshold"], "at most 1%", "{error_rate}");
    let status_text = env.cli(&["rollout", "status", "hello"]).await.ok().stdout;
    assert!(
        status_text.contains("failed") && status_text.contains("error rate"),
        "{status_text}"
    );

    let events = events(&env).await;
    let kinds = kinds(&events);
    assert_eq!(kinds.first().map(String::as_str), Some("rollout-started"));
    assert_eq!(
        kinds.last().map(String::as_str),
        Some("rolled-back"),
        "{kinds:?}"
    );
    assert_eq!(count(&kinds, "analysis"), 2, "{kinds:?}");
    assert_eq!(count(&kinds, "step"), 1, "only the first weight: {kinds:?}");
    assert_eq!(count(&kinds, "promoted"), 0, "{kinds:?}");

    // History: the rollback is a revision of its own, every client on main.
    let history = env.history("hello").await;
    let last = &history[0];
    assert!(
        last["action"]
            .as_str()
            .is_some_and(|a| a.starts_with("rollback of 2.0.0") && a.contains("error rate")),
        "{last:#}"
    );
    assert_eq!(last["actor"], "rollout");
    assert!(last["state"]["policy"]["canary"].is_null(), "{last:#}");
    let ls = env.ls().await;
    assert_eq!(service(&ls, "hello")["main"], "1.0.0");
    assert_eq!(
        roles(&ls, "hello"),
        vec![pair("1.0.0", "main"), pair("2.0.0", "standby")]
    );

    // Afterwards every client is answered by main.
    let after = burst(&env, 100).await;
    assert!(
        after
            .iter()
            .all(|s| s.status == 200 && s.version == "1.0.0"),
        "{:?}",
        tally(&after)
    );
}

// ---------------------------------------------------------------- promotion

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn healthy_candidate_walks_every_step_and_becomes_main() {
    let env = Env::start().await;
    main_and_candidate(&env, &["--latency-ms", "5"], &["--latency-ms", "5"]).await;
    let traffic = start_traffic(&env, 2);

    let started = env
        .cli(&[
            "rollout",
            "hello",
            "2.0.0",
            "--steps",
            "20,50,100",
            "--interval",
            "1s",
            "--min-requests",
            "5",
            // Both answer alike; the check is here to be seen running at
            // 100%, so its bound is far from anything a busy machine does.
            "--max-relative-p99",
            "1000",
            "--sticky-header",
            "x-user-id",
        ])
        .await
        .ok();
    assert!(
        started.stdout.contains("rollout of hello 2.0.0 started"),
        "{}",
        started.stdout
    );
    // A second rollout of the service is refused while this one runs.
    let again = env
        .cli(&["rollout", "hello", "2.0.0", "--steps", "50"])
        .await
        .failed();
    assert!(again.stderr.contains("2.0.0"), "{}", again.stderr);

    let view = wait_for_state(&env, "succeeded", ROLLOUT_WAIT).await;
    let during = traffic.finish_within(WAIT).await;

    // Nobody saw a failure on the way, and both sides answered.
    assert!(
        during.iter().all(|s| s.status == 200),
        "every request answered 200: {:?}",
        tally(&during)
    );
    let counts = tally(&during);
    assert!(
        counts.contains_key(&("1.0.0".into(), 200)) && counts.contains_key(&("2.0.0".into(), 200)),
        "{counts:?}"
    );

    assert_eq!(view["state"]["step"], 6, "{view:#}");
    // At 100% main serves nobody: the last analysis compared the candidate
    // with main's last minute instead of pausing as inconclusive.
    let relative = check(&view, "p99 relative to main");
    assert!(
        relative["measured"]
            .as_str()
            .is_some_and(|m| m.contains("vs main's last minute")),
        "{relative}"
    );
    assert_eq!(view["current"], "done", "{view:#}");
    assert!(
        view["state"]["checks"]
            .as_array()
            .is_some_and(|checks| checks.iter().all(|c| c["verdict"] == "pass")),
        "{view:#}"
    );

    let ls = env.ls().await;
    assert_eq!(service(&ls, "hello")["main"], "2.0.0");
    assert_eq!(
        roles(&ls, "hello"),
        vec![pair("1.0.0", "standby"), pair("2.0.0", "main")]
    );
    assert!(
        service(&ls, "hello")["policy"]["canary"].is_null(),
        "{ls:#}"
    );

    // Events, through the CLI and the API alike: started, each step and
    // analysis in order, then the promotion.
    let events = events(&env).await;
    let kinds = kinds(&events);
    let expected: Vec<String> = std::iter::once("rollout-started")
        .chain(std::iter::repeat_n(["step", "analysis", "step"], 3).flatten())
        .chain(std::iter::once("promoted"))
        .map(str::to_owned)
        .collect();
    assert_eq!(kinds, expected, "{events:#?}");
    assert!(
        events
            .iter()
            .filter(|e| e["kind"] == "analysis")
            .all(|e| e["message"].as_str().is_some_and(|m| m.contains("passed"))),
        "{events:#?}"
    );
    let ids: Vec<u64> = events.iter().filter_map(|e| e["id"].as_u64()).collect();
    assert!(ids.windows(2).all(|w| w[0] < w[1]), "{ids:?}");
    let api: Vec<Value> = env
        .http
        .get(format!("{}/v1/services/hello/events", env.admin()))
        .send()
        .await
        .expect("events API")
        .json()
        .await
        .expect("events API is JSON");
    assert_eq!(api.len(), events.len());
    assert_eq!(api[0]["kind"], "promoted");
    let text = env.cli(&["events", "hello"]).await.ok().stdout;
    assert!(
        text.contains("promoted") && text.contains("2.0.0 is main"),
        "{text}"
    );

    let after = burst(&env, 50).await;
    assert!(
        after
            .iter()
            .all(|s| s.status == 200 && s.version == "2.0.0"),
        "{:?}",
        tally(&after)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn interval_with_too_few_requests_pauses_until_resumed() {
    let env = Env::start().await;
    main_and_candidate(&env, &[], &[]).await;
    // No traffic at all: the analysis cannot judge.
    start_unjudged_rollout(&env, "hello").await;
    let view = wait_for_state(&env, "paused", WAIT).await;
    let reason = view["state"]["status"]["reason"]
        .as_str()
        .unwrap_or_default();
    assert!(
        reason.contains("inconclusive") && reason.contains("resume"),
        "{view:#}"
    );
    let requests = check(&view, "requests");
    assert_eq!(requests["verdict"], "inconclusive", "{view:#}");
    assert_eq!(requests["measured"], "0");
    assert_eq!(requests["threshold"], "at least 5");
    assert!(view["next_in_seconds"].is_null(), "{view:#}");
    // It stays paused, the canary in place: another rollout started now,
    // with the same 1 s interval, gets to its own analysis (the
    // controller's clock has run past this one's next interval) and
    // pauses too, while this one has not moved.
    env.deploy("other", "1.0.0", &[], &[]).await.ok();
    env.deploy("other", "2.0.0", &["--standby"], &[]).await.ok();
    start_unjudged_rollout(&env, "other").await;
    env.eventually("the other rollout analyses and pauses", WAIT, || async {
        state_of(&rollout_view_of(&env, "other").await) == "paused"
    })
    .await;
    let view = rollout_view(&env).await;
    assert_eq!(state_of(&view), "paused", "{view:#}");
    assert_eq!(
        service(&env.ls().await, "hello")["policy"]["canary"]["percent"],
        30
    );

    env.cli(&["resume", "hello"]).await.ok();
    wait_for_state(&env, "succeeded", WAIT).await;
    assert_eq!(service(&env.ls().await, "hello")["main"], "2.0.0");
    let kinds = kinds(&events(&env).await);
    assert!(
        kinds.contains(&"paused".to_owned()) && kinds.contains(&"resumed".to_owned()),
        "{kinds:?}"
    );
    // Nothing is left to resume.
    env.cli(&["resume", "hello"]).await.failed();
}

// ---------------------------------------------------------------- relative latency

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn candidate_far_slower_than_main_fails_the_relative_latency_check() {
    let env = Env::start().await;
    // 400 ms against a main that answers at once: only a main p99 past
    // 266 ms, an overloaded machine, would make this pass.
    main_and_candidate(&env, &[], &["--latency-ms", "400"]).await;
    let traffic = start_traffic(&env, 3);

    env.cli(&[
        "rollout",
        "hello",
        "2.0.0",
        "--steps",
        "25,50,100",
        "--interval",
        "2s",
        "--max-relative-p99",
        "1.5",
        "--min-requests",
        "5",
        "--failure-limit",
        "2",
        "--sticky-header",
        "x-user-id",
    ])
    .await
    .ok();
    let view = wait_for_state(&env, "failed", ROLLOUT_WAIT).await;
    let during = traffic.finish_within(WAIT).await;
    assert_main_never_failed(&during, "1.0.0", "2.0.0");
    assert!(
        during.iter().all(|s| s.status == 200),
        "{:?}",
        tally(&during)
    );

    let reason = view["state"]["status"]["reason"]
        .as_str()
        .unwrap_or_default();
    assert!(reason.contains("p99 relative to main"), "{view:#}");
    let relative = check(&view, "p99 relative to main");
    assert_eq!(relative["verdict"], "fail", "{relative}");
    assert_eq!(relative["threshold"], "at most 1.5× main", "{relative}");
    let measured = relative["measured"].as_str().expect("what was measured");
    assert!(measured.contains("vs main"), "{relative}");
    let p99s = numbers(measured);
    assert_eq!(p99s.len(), 2, "both p99s: {relative}");
    let (candidate, main) = (p99s[0], p99s[1]);
    assert!(
        candidate >= 400.0,
        "the candidate sleeps 400 ms: {relative}"
    );
    assert!(
        candidate > 1.5 * main,
        "the verdict fits the numbers: {relative}"
    );
    // The error rate passed: latency alone failed it.
    assert_eq!(check(&view, "error rate")["verdict"], "pass", "{view:#}");

    let ls = env.ls().await;
    assert_eq!(service(&ls, "hello")["main"], "1.0.0");
    assert!(service(&ls, "hello")["policy"]["canary"].is_null());
    assert_eq!(
        kinds(&events(&env).await).last().map(String::as_str),
        Some("rolled-back")
    );
}

// ---------------------------------------------------------------- restart of serve

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_killed_mid_rollout_resumes_at_the_same_step() {
    let mut env = Env::start().await;
    main_and_candidate(&env, &[], &[]).await;
    let plan = env.dir.path().join("plan.toml");
    std::fs::write(
        &plan,
        r#"
version = "2.0.0"
sticky_header = "x-user-id"
steps = [
    { step = "set-weight", percent = 20 },
    { step = "pause" },
    { step = "set-weight", percent = 50 },
    { step = "pause", seconds = 1 },
]
[analysis]
interval_seconds = 1
"#,
    )
    .expect("write the plan");
    let plan = plan.to_str().expect("utf-8 path");
    env.cli(&["rollout", "hello", "2.0.0", "--plan", plan])
        .await
        .ok();
    let before = wait_for_state(&env, "paused", WAIT).await;
    assert_eq!(before["state"]["step"], 1, "{before:#}");
    assert_eq!(before["current"], "pause until resumed");
    let ls = env.ls().await;
    assert_eq!(service(&ls, "hello")["policy"]["canary"]["percent"], 20);
    assert_eq!(
        service(&ls, "hello")["policy"]["sticky"]["header"],
        "x-user-id"
    );

    let (proxy_addr, admin_addr) = (
        env.serve().proxy_addr.clone(),
        env.serve().admin_addr.clone(),
    );
    env.kill9().await;
    env.launch(&proxy_addr, &admin_addr).await;

    let after = rollout_view(&env).await;
    assert_eq!(
        after["state"], before["state"],
        "the stored progress is kept"
    );
    assert_eq!(after["current"], "pause until resumed");
    let text = env.cli(&["rollout", "status", "hello"]).await.ok().stdout;
    assert!(
        text.contains("paused") && text.contains("step 2 of 4: pause until resumed"),
        "{text}"
    );
    assert_eq!(
        service(&env.ls().await, "hello")["policy"]["canary"]["percent"],
        20
    );
    // The canary still routes after the restart.
    let samples = burst(&env, 100).await;
    let counts = tally(&samples);
    assert!(
        counts.contains_key(&("2.0.0".into(), 200)) && counts.contains_key(&("1.0.0".into(), 200)),
        "{counts:?}"
    );

    let resumed = env.cli(&["resume", "hello"]).await.ok();
    assert!(
        resumed.stdout.contains("resumed at step 3 of 4"),
        "{}",
        resumed.stdout
    );
    let done = wait_for_state(&env, "succeeded", WAIT).await;
    assert_eq!(done["state"]["step"], 4, "{done:#}");
    let ls = env.ls().await;
    assert_eq!(service(&ls, "hello")["main"], "2.0.0");
    assert_eq!(
        roles(&ls, "hello"),
        vec![pair("1.0.0", "standby"), pair("2.0.0", "main")]
    );
    let kinds = kinds(&events(&env).await);
    assert_eq!(
        kinds,
        [
            "rollout-started",
            "step",
            "paused",
            "resumed",
            "step",
            "step",
            "promoted"
        ],
        "one event per move, none repeated by the restart"
    );
}

// ---------------------------------------------------------------- webhooks

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn webhooks_get_every_event_through_retries_and_a_failing_webhook_check_rolls_back() {
    let receiver = Receiver::start(0, false).await;
    let flaky = Receiver::start(2, false).await;
    let check_hook = Receiver::start(0, true).await;
    let env = Env::start_with(&["--webhook", &receiver.url, "--webhook", &flaky.url]).await;
    main_and_candidate(&env, &[], &[]).await;
    env.deploy("hello", "3.0.0", &["--standby"], &[]).await.ok();
    let traffic = start_traffic(&env, 2);

    // A rollout that promotes: its events reach both receivers.
    env.cli(&[
        "rollout",
        "hello",
        "2.0.0",
        "--steps",
        "50",
        "--interval",
        "1s",
        "--min-requests",
        "5",
        "--sticky-header",
        "x-user-id",
    ])
    .await
    .ok();
    wait_for_state(&env, "succeeded", ROLLOUT_WAIT).await;
    let recorded = events(&env).await;
    let expected = ["rollout-started", "step", "analysis", "step", "promoted"];
    assert_eq!(kinds(&recorded), expected);
    for (who, hook) in [("receiver", &receiver), ("flaky receiver", &flaky)] {
        env.eventually(&format!("the {who} gets every event"), WAIT, || async {
            hook.delivered().len() >= expected.len()
        })
        .await;
        // The same events as recorded, in order, as JSON.
        assert_eq!(hook.delivered(), recorded, "{who}");
    }
    assert_eq!(flaky.refused(), 2, "the flaky receiver refused twice");
    let started = &receiver.delivered()[0];
    assert_eq!(started["service"], "hello");
    assert_eq!(started["kind"], "rollout-started");
    assert_eq!(started["detail"]["version"], "2.0.0");
    let analysis = &receiver.delivered()[2];
    assert!(
        analysis["detail"]
            .as_array()
            .is_some_and(|checks| checks.iter().any(|c| c["name"] == "error rate")),
        "the analysis event carries its checks: {analysis:#}"
    );

    // A rollout whose webhook check answers 500 fails its analysis.
    env.cli(&[
        "rollout",
        "hello",
        "3.0.0",
        "--steps",
        "50",
        "--interval",
        "1s",
        "--min-requests",
        "5",
        "--failure-limit",
        "1",
        "--webhook",
        &check_hook.url,
        "--sticky-header",
        "x-user-id",
    ])
    .await
    .ok();
    let view = wait_for_state(&env, "failed", ROLLOUT_WAIT).await;
    let during = traffic.finish_within(WAIT).await;
    assert!(
        during.iter().all(|s| s.status == 200),
        "{:?}",
        tally(&during)
    );

    let webhook = check(&view, "webhook");
    assert_eq!(webhook["verdict"], "fail", "{view:#}");
    assert_eq!(webhook["measured"], "answered 500", "{view:#}");
    let reason = view["state"]["status"]["reason"]
        .as_str()
        .unwrap_or_default();
    assert!(reason.contains("webhook"), "{view:#}");
    let contexts: Vec<Value> = check_hook
        .received
        .lock()
        .expect("receiver lock")
        .bodies
        .iter()
        .map(|(body, _)| body.clone())
        .collect();
    assert_eq!(contexts.len(), 1, "one analysis, one POST: {contexts:#?}");
    assert_eq!(contexts[0]["service"], "hello");
    assert_eq!(contexts[0]["version"], "3.0.0");
    assert!(contexts[0]["requests"].as_u64().is_some_and(|n| n >= 5));
    assert_eq!(service(&env.ls().await, "hello")["main"], "2.0.0");

    env.eventually("the receiver gets the rollback", WAIT, || async {
        receiver
            .delivered()
            .last()
            .is_some_and(|e| e["kind"] == "rolled-back")
    })
    .await;
    let rolled_back = receiver.delivered().last().cloned().unwrap_or_default();
    assert_eq!(rolled_back["detail"]["version"], "3.0.0");
    assert!(
        rolled_back["detail"]["reason"]
            .as_str()
            .is_some_and(|r| r.contains("webhook")),
        "{rolled_back:#}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_analyses_roll_back_only_when_in_a_row() {
    // The check answers fail, pass, fail, pass…: never two failures in a
    // row, so a failure limit of 2 never rolls back.
    let posts = Arc::new(AtomicUsize::new(0));
    let counter = Arc::clone(&posts);
    let app = axum::Router::new().route(
        "/",
        post(move || {
            let n = counter.fetch_add(1, Ordering::SeqCst);
            async move {
                if n % 2 == 0 {
                    StatusCode::INTERNAL_SERVER_ERROR
                } else {
                    StatusCode::OK
                }
            }
        }),
    );
    let server = Served::start(app).await;
    let url = &server.url;

    let env = Env::start().await;
    main_and_candidate(&env, &[], &[]).await;
    let plan = env.dir.path().join("plan.toml");
    std::fs::write(
        &plan,
        format!(
            r#"
version = "2.0.0"
steps = [
    {{ step = "set-weight", percent = 10 }},
    {{ step = "analysis" }},
    {{ step = "analysis" }},
]
[analysis]
interval_seconds = 1
min_requests = 0
failure_limit = 2
webhook = "{url}"
"#
        ),
    )
    .expect("write the plan");
    env.cli(&[
        "rollout",
        "hello",
        "2.0.0",
        "--plan",
        plan.to_str().expect("utf-8 path"),
    ])
    .await
    .ok();
    let view = wait_for_state(&env, "succeeded", WAIT).await;
    assert_eq!(posts.load(Ordering::SeqCst), 4, "{view:#}");
    let kinds = kinds(&events(&env).await);
    assert_eq!(count(&kinds, "analysis"), 4, "{kinds:?}");
    assert_eq!(service(&env.ls().await, "hello")["main"], "2.0.0");
}

// ---------------------------------------------------------------- crash loop

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn candidate_crashing_during_a_rollout_is_rolled_back_without_waiting_for_the_interval() {
    let env = Env::start_with(&["--crash-limit", "2", "--crash-window", "60s"]).await;
    main_and_candidate(&env, &[], &["--exit-after", "5"]).await;
    let traffic = start_traffic(&env, 1);
    env.cli(&[
        "rollout",
        "hello",
        "2.0.0",
        "--steps",
        "20,100",
        "--interval",
        "60s",
        "--sticky-header",
        "x-user-id",
    ])
    .await
    .ok();
    // No interval ended on the way: no analysis event, still at step 1
    // (checked below).
    let view = wait_for_state(&env, "failed", WAIT).await;
    let during = traffic.finish_within(WAIT).await;
    // Clients on main are never hurt; those on the candidate may see the
    // proxy's own error while it is down.
    assert!(
        during
            .iter()
            .filter(|s| s.version == "1.0.0")
            .all(|s| s.status == 200),
        "{:?}",
        tally(&during)
    );

    let reason = view["state"]["status"]["reason"]
        .as_str()
        .unwrap_or_default();
    assert!(
        reason.contains("crash loop") || reason.contains("no healthy instance"),
        "{view:#}"
    );
    assert_eq!(
        view["state"]["step"], 1,
        "still in the first analysis: {view:#}"
    );
    let ls = env.ls().await;
    assert_eq!(service(&ls, "hello")["main"], "1.0.0");
    assert!(service(&ls, "hello")["policy"]["canary"].is_null());
    let kinds = kinds(&events(&env).await);
    assert_eq!(
        kinds.last().map(String::as_str),
        Some("rolled-back"),
        "{kinds:?}"
    );
    assert_eq!(count(&kinds, "analysis"), 0, "{kinds:?}");

    let after = burst(&env, 50).await;
    assert!(
        after
            .iter()
            .all(|s| s.status == 200 && s.version == "1.0.0"),
        "{:?}",
        tally(&after)
    );
}

// ---------------------------------------------------------------- metrics

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_count_requests_by_release_and_class_with_latency() {
    let env = Env::start().await;
    env.deploy("hello", "1.0.0", &[], &["--latency-ms", "2"])
        .await
        .ok();
    let base = format!("{}/services/hello", env.proxy());
    for path in std::iter::repeat_n("/", 30)
        .chain(std::iter::repeat_n("/nowhere", 4))
        .chain(std::iter::repeat_n("/status/503", 3))
    {
        let response = env
            .http
            .get(format!("{base}{path}"))
            .send()
            .await
            .expect("request through the proxy");
        response.bytes().await.expect("body");
    }

    let metrics = env
        .http
        .get(format!("{}/metrics", env.admin()))
        .send()
        .await
        .expect("GET /metrics");
    assert_eq!(metrics.status(), 200);
    let text = metrics.text().await.expect("metrics text");
    for line in [
        r#"switchyard_requests_total{service="hello",version="1.0.0",class="2xx"} 30"#,
        r#"switchyard_requests_total{service="hello",version="1.0.0",class="4xx"} 4"#,
        r#"switchyard_requests_total{service="hello",version="1.0.0",class="5xx"} 3"#,
        r#"switchyard_requests_total{service="hello",version="1.0.0",class="3xx"} 0"#,
        r#"switchyard_upstream_errors_total{service="hello",version="1.0.0"} 0"#,
        r#"switchyard_request_duration_seconds_count{service="hello",version="1.0.0"} 37"#,
        r#"switchyard_request_duration_seconds_bucket{le="+Inf",service="hello",version="1.0.0"} 37"#,
        r#"switchyard_instances_healthy{service="hello",version="1.0.0",role="main"} 1"#,
        r#"switchyard_requests_in_flight{service="hello",version="1.0.0",role="main"} 0"#,
    ] {
        assert!(text.contains(line), "no `{line}` in:\n{text}");
    }
    // Cumulative buckets: nothing answered under 1 ms when it sleeps 2 ms.
    assert!(
        text.contains(
            r#"switchyard_request_duration_seconds_bucket{le="0.001",service="hello",version="1.0.0"} 0"#
        ),
        "{text}"
    );
    let sum: f64 = text
        .lines()
        .find_map(|l| {
            l.strip_prefix(
                r#"switchyard_request_duration_seconds_sum{service="hello",version="1.0.0"} "#,
            )
        })
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("no duration sum in:\n{text}"));
    assert!(sum >= 37.0 * 0.002, "each request sleeps 2 ms: {sum}");

    let run = env.cli(&["status", "hello", "--json"]).await.ok();
    let status: Value = serde_json::from_str(&run.stdout).expect("status --json is JSON");
    let main = status
        .as_array()
        .and_then(|releases| releases.iter().find(|r| r["version"] == "1.0.0"))
        .unwrap_or_else(|| panic!("1.0.0 in {status:#}"));
    assert_eq!(main["role"], "main");
    let window = &main["last_minute"];
    assert_eq!(window["requests"], 37, "{window}");
    assert_eq!(window["errors"], 3, "{window}");
    assert!(
        window["rate_per_second"].as_f64().is_some_and(|r| r > 0.0),
        "{window}"
    );
    let p50 = window["p50_ms"].as_f64().expect("p50");
    let p99 = window["p99_ms"].as_f64().expect("p99");
    assert!(p99 >= 2.0 && p99 >= p50, "{window}");
    assert!(
        window["p999_ms"].as_f64().is_some_and(|p| p >= p99),
        "{window}"
    );
    let text = env.cli(&["status", "hello"]).await.ok().stdout;
    assert!(
        text.contains("P99") && text.contains("1.0.0") && text.contains("main"),
        "{text}"
    );
}

// ---------------------------------------------------------------- judging below the minimum

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn candidate_failing_half_its_few_requests_fails_before_the_minimum_is_reached() {
    let env = Env::start().await;
    main_and_candidate(&env, &[], &["--fail-rate", "0.5"]).await;
    let traffic = start_traffic(&env, 1);
    // A minimum no interval reaches (at most ~100 requests a second in
    // all): only the early rule can fail it.
    env.cli(&[
        "rollout",
        "hello",
        "2.0.0",
        "--steps",
        "50,100",
        "--interval",
        "2s",
        "--min-requests",
        "500",
        "--max-error-rate",
        "1",
        "--max-latency",
        "0.99:5000",
        "--failure-limit",
        "1",
        "--sticky-header",
        "x-user-id",
    ])
    .await
    .ok();
    let view = wait_for_state(&env, "failed", ROLLOUT_WAIT).await;
    traffic.finish_within(WAIT).await;

    let error_rate = check(&view, "error rate");
    assert_eq!(error_rate["verdict"], "fail", "{view:#}");
    let threshold = error_rate["threshold"].as_str().unwrap_or_default();
    assert!(
        threshold.contains("1% of 500 requests")
            && threshold.contains("no outcome of the")
            && threshold.contains("could pass"),
        "the check states the rule: {error_rate}"
    );
    // The other values were measured and shown, but not judged.
    assert_eq!(check(&view, "requests")["verdict"], "inconclusive");
    let latency = check(&view, "latency p99");
    assert_eq!(latency["verdict"], "inconclusive", "{view:#}");
    assert!(
        latency["measured"]
            .as_str()
            .unwrap_or_default()
            .ends_with("ms"),
        "{latency}"
    );
    let reason = view["state"]["status"]["reason"]
        .as_str()
        .unwrap_or_default();
    assert!(reason.contains("no outcome of the"), "{view:#}");
    let kinds = kinds(&events(&env).await);
    assert_eq!(kinds.last().map(String::as_str), Some("rolled-back"));
    assert!(service(&env.ls().await, "hello")["policy"]["canary"].is_null());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_inconclusive_step_shows_every_measured_value() {
    let env = Env::start().await;
    main_and_candidate(&env, &[], &[]).await;
    // A few requests only: measured, but far from the minimum.
    env.cli(&[
        "rollout",
        "hello",
        "2.0.0",
        "--steps",
        "100",
        "--interval",
        "2s",
        "--min-requests",
        "1000",
        "--max-latency",
        "0.99:5000",
        "--max-relative-p99",
        "100",
    ])
    .await
    .ok();
    env.eventually("the analysis begins", WAIT, || async {
        rollout_view(&env).await["state"]["step"] == 1
    })
    .await;
    let mut client = Http1::new(env.proxy());
    let view = loop {
        let answer = client
            .get_with("/services/hello/", &[("x-user-id", "u1")])
            .await
            .expect("an answer");
        assert_eq!((answer.0, answer.1.as_str()), (200, "2.0.0"));
        let view = rollout_view(&env).await;
        if state_of(&view) == "paused" {
            break view;
        }
        assert_eq!(state_of(&view), "running", "{view:#}");
    };
    let requests = check(&view, "requests")["measured"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    assert!(requests.parse::<u64>().is_ok_and(|n| n > 0), "{view:#}");
    for name in [
        "requests",
        "error rate",
        "latency p99",
        "p99 relative to main",
    ] {
        let c = check(&view, name);
        assert_eq!(c["verdict"], "inconclusive", "{name}: {view:#}");
        assert!(!c["measured"].as_str().unwrap_or_default().is_empty());
    }
    assert!(
        check(&view, "error rate")["measured"]
            .as_str()
            .is_some_and(|m| m.starts_with("0.00%")),
        "{view:#}"
    );
    // The CLI's status, the pause's reason and the analysis event carry them all.
    let text = env.cli(&["rollout", "status", "hello"]).await.ok().stdout;
    for name in [
        "requests",
        "error rate",
        "latency p99",
        "p99 relative to main",
    ] {
        assert!(text.contains(name), "{text}");
    }
    let reason = view["state"]["status"]["reason"]
        .as_str()
        .unwrap_or_default();
    assert!(
        reason.contains("error rate 0.00%") && reason.contains("latency p99"),
        "{reason}"
    );
    let events = events(&env).await;
    let analysis = events
        .iter()
        .rev()
        .find(|e| e["kind"] == "analysis")
        .expect("an analysis event");
    let message = analysis["message"].as_str().unwrap_or_default();
    assert!(
        message.contains("inconclusive")
            && message.contains(&format!("error rate 0.00% (0 of {requests} requests)")),
        "{message}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rollout_paused_past_its_stuck_limit_rolls_back() {
    let env = Env::start().await;
    main_and_candidate(&env, &[], &[]).await;
    env.cli(&[
        "rollout",
        "hello",
        "2.0.0",
        "--steps",
        "30",
        "--interval",
        "1s",
        "--min-requests",
        "5",
        "--stuck-limit",
        "2s",
    ])
    .await
    .ok();
    wait_for_state(&env, "paused", WAIT).await;
    assert_eq!(
        service(&env.ls().await, "hello")["policy"]["canary"]["percent"],
        30
    );
    let view = wait_for_state(&env, "failed", WAIT).await;
    let reason = view["state"]["status"]["reason"]
        .as_str()
        .unwrap_or_default();
    assert!(
        reason.contains("paused longer than the stuck limit of 2s")
            && reason.contains("inconclusive"),
        "{view:#}"
    );
    let events = events(&env).await;
    let last = events.last().expect("events");
    assert_eq!(last["kind"], "rolled-back", "{last:#}");
    assert!(
        last["message"]
            .as_str()
            .is_some_and(|m| m.contains("stuck limit")),
        "{last:#}"
    );
    // It really rolled back: every client on main, the candidate standby.
    let ls = env.ls().await;
    assert!(
        service(&ls, "hello")["policy"]["canary"].is_null(),
        "{ls:#}"
    );
    assert_eq!(
        roles(&ls, "hello"),
        vec![pair("1.0.0", "main"), pair("2.0.0", "standby")]
    );
    // A bad limit is refused, with nothing started.
    let refused = env
        .cli(&[
            "rollout",
            "hello",
            "2.0.0",
            "--steps",
            "30",
            "--stuck-limit",
            "30d",
        ])
        .await
        .failed();
    assert!(refused.stderr.contains("stuck limit"), "{}", refused.stderr);
    assert_eq!(state_of(&rollout_view(&env).await), "failed");
}

// ---------------------------------------------------------------- changes by hand

/// A plan that waits for `resume` at 20%, then for ten minutes at 50%.
fn waiting_plan(env: &Env, name: &str) -> String {
    let plan = env.dir.path().join(name);
    std::fs::write(
        &plan,
        r#"
        version = "2.0.0"
        steps = [
            { step = "set-weight", percent = 20 },
            { step = "pause" },
            { step = "set-weight", percent = 50 },
            { step = "pause", seconds = 600 },
            { step = "set-weight", percent = 100 },
        ]
        "#,
    )
    .expect("write the plan");
    plan.to_str().expect("utf-8 path").to_owned()
}

/// `events SERVICE --json`, oldest first.
async fn events_of(env: &Env, name: &str) -> Vec<Value> {
    let run = env.cli(&["events", name, "--json"]).await.ok();
    let mut events: Vec<Value> = serde_json::from_str(&run.stdout).expect("events JSON");
    events.reverse();
    events
}

/// What the CLI said when it refused, which must name `instead`.
async fn refused_with(env: &Env, args: &[&str], instead: &str) {
    let run = env.cli(args).await.failed();
    assert!(
        run.stderr.contains(instead),
        "`{}` is refused naming `{instead}`: {}",
        args.join(" "),
        run.stderr
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verbs_during_a_rollout_are_refused_or_end_it_truthfully() {
    let env = Env::start().await;
    main_and_candidate(&env, &[], &[]).await;
    let plan = waiting_plan(&env, "plan.toml");
    env.cli(&["rollout", "hello", "2.0.0", "--plan", &plan])
        .await
        .ok();
    wait_for_state(&env, "paused", WAIT).await;

    // What would fight the rollout is refused with the command to use.
    refused_with(
        &env,
        &["kill", "hello", "2.0.0"],
        "switchyard rollout abort hello",
    )
    .await;
    refused_with(
        &env,
        &["canary", "hello", "2.0.0", "--percent", "70"],
        "switchyard rollout pause hello",
    )
    .await;
    // A plain deploy enters beside it as shadow; making it main is refused.
    env.deploy("hello", "3.0.0", &[], &[]).await.ok();
    assert!(roles(&env.ls().await, "hello").contains(&pair("3.0.0", "shadow")));
    refused_with(
        &env,
        &["promote", "hello", "3.0.0"],
        "switchyard rollout abort hello",
    )
    .await;
    refused_with(
        &env,
        &["assign", "hello", "3.0.0", "--yes"],
        "rollout promote hello --full",
    )
    .await;
    refused_with(
        &env,
        &["deploy", "hello", "4.0.0", "--promote", "--", "true"],
        "switchyard rollout abort hello",
    )
    .await;
    let view = rollout_view(&env).await;
    assert_eq!(state_of(&view), "paused", "nothing changed: {view:#}");
    assert_eq!(view["state"]["step"], 1);

    // `rollout promote` skips the pause: 50%, then the ten-minute pause.
    env.cli(&["rollout", "promote", "hello"]).await.ok();
    env.eventually("the rollout reaches 50%", WAIT, || async {
        service(&env.ls().await, "hello")["policy"]["canary"]["percent"] == 50
    })
    .await;
    env.eventually("the rollout waits in its timed pause", WAIT, || async {
        let view = rollout_view(&env).await;
        view["state"]["step"] == 3 && state_of(&view) == "running"
    })
    .await;

    // `rollout pause` holds it there; `resume` runs the same step again.
    env.cli(&["rollout", "pause", "hello"]).await.ok();
    let view = rollout_view(&env).await;
    assert_eq!(state_of(&view), "paused", "{view:#}");
    assert_eq!(view["state"]["step"], 3, "{view:#}");
    assert_eq!(view["state"]["status"]["by_hand"], true, "{view:#}");
    refused_with(&env, &["rollout", "pause", "hello"], "paused already").await;
    env.cli(&["resume", "hello"]).await.ok();
    let view = rollout_view(&env).await;
    assert_eq!(state_of(&view), "running", "{view:#}");
    assert_eq!(view["state"]["step"], 3, "the same step: {view:#}");

    // Promoting the candidate by hand ends the rollout as promoted by hand.
    env.cli(&["promote", "hello", "2.0.0"]).await.ok();
    let view = rollout_view(&env).await;
    assert_eq!(state_of(&view), "promoted-by-hand", "{view:#}");
    assert_eq!(service(&env.ls().await, "hello")["main"], "2.0.0");
    let events = events(&env).await;
    let kinds = kinds(&events);
    assert_eq!(count(&kinds, "rolled-back"), 0, "{kinds:?}");
    let last = events.last().expect("events");
    assert_eq!(last["kind"], "promoted", "{last:#}");
    assert!(
        last["message"]
            .as_str()
            .is_some_and(|m| m.contains("promoted by hand (`promote`) at step 4 of 5")),
        "{last:#}"
    );
    assert!(
        kinds.contains(&"skipped".to_owned()) && count(&kinds, "paused") == 2,
        "{kinds:?}"
    );
    // It stays ended: no task of it acts any more.
    refused_with(&env, &["rollout", "retry", "hello"], "nothing to retry").await;
    env.cli(&["canary", "hello", "3.0.0", "--percent", "10"])
        .await
        .ok();
    assert_eq!(state_of(&rollout_view(&env).await), "promoted-by-hand");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_aborted_rollout_is_retried_from_the_start_and_promoted_in_full() {
    let env = Env::start().await;
    main_and_candidate(&env, &[], &[]).await;
    let plan = waiting_plan(&env, "plan.toml");
    env.cli(&["rollout", "hello", "2.0.0", "--plan", &plan])
        .await
        .ok();
    wait_for_state(&env, "paused", WAIT).await;
    env.cli(&["abort", "hello"]).await.ok();
    let view = rollout_view(&env).await;
    assert_eq!(state_of(&view), "aborted", "{view:#}");
    let events = events(&env).await;
    let last = events.last().expect("events");
    assert_eq!(last["kind"], "aborted", "{last:#}");
    assert!(
        last["message"]
            .as_str()
            .is_some_and(|m| m.contains("aborted by hand at step 2 of 5")),
        "{last:#}"
    );
    assert_eq!(count(&kinds(&events), "rolled-back"), 0);

    // Retry: the same plan from its first step.
    env.cli(&["rollout", "retry", "hello"]).await.ok();
    let view = wait_for_state(&env, "paused", WAIT).await;
    assert_eq!(view["state"]["step"], 1, "{view:#}");
    assert_eq!(
        service(&env.ls().await, "hello")["policy"]["canary"]["percent"],
        20
    );
    let started = events_of(&env, "hello").await;
    assert!(
        started.iter().any(|e| e["kind"] == "rollout-started"
            && e["message"].as_str().is_some_and(|m| m.contains("retry"))),
        "{started:#?}"
    );
    refused_with(&env, &["rollout", "retry", "hello"], "rollout abort hello").await;

    // --full: main now, the rollout ends promoted by hand.
    env.cli(&["rollout", "promote", "hello", "--full"])
        .await
        .ok();
    let view = rollout_view(&env).await;
    assert_eq!(state_of(&view), "promoted-by-hand", "{view:#}");
    let ls = env.ls().await;
    assert_eq!(service(&ls, "hello")["main"], "2.0.0");
    assert!(
        service(&ls, "hello")["policy"]["canary"].is_null(),
        "{ls:#}"
    );
    let after = burst(&env, 20).await;
    assert!(
        after
            .iter()
            .all(|s| s.version == "2.0.0" && s.status == 200)
    );
    let last = events_of(&env, "hello").await.pop().expect("events");
    assert!(
        last["message"]
            .as_str()
            .is_some_and(|m| m.contains("promoted by hand (`rollout promote --full`)")),
        "{last:#}"
    );
    // Nothing runs any more to pause or promote.
    refused_with(&env, &["rollout", "pause", "hello"], "has no rollout").await;
}

// ---------------------------------------------------------------- Prometheus analysis

/// Clients calling `path` without a break until stopped.
fn start_traffic_to(env: &Env, path: &'static str, workers: usize) -> Load<Sample> {
    let conns = Clients::new(env.proxy(), workers);
    Load::start(workers, move |worker, n| {
        let user = format!("user-{}", (n * workers + worker) % USERS);
        let conns = conns.clone();
        async move {
            let answer = conns.get_with(worker, path, &[("x-user-id", &user)]).await;
            tokio::time::sleep(PACE).await;
            sample(user, answer)
        }
    })
}

/// The 5xx answers per second of `version` over the last 10 s.
fn errors_per_second(version: &str) -> String {
    format!(
        r#"sum(rate(switchyard_requests_total{{service="hello",version="{version}",class="5xx"}}[10s]))"#
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prometheus_checks_roll_back_a_failing_candidate_pause_on_bad_answers_and_pass_a_good_one()
{
    let test =
        "prometheus_checks_roll_back_a_failing_candidate_pause_on_bad_answers_and_pass_a_good_one";
    let env = Env::start().await;
    let Some(prometheus) = support::prometheus::Prometheus::start(
        test,
        env.dir.path(),
        env.admin().trim_start_matches("http://"),
    )
    .await
    else {
        return;
    };
    main_and_candidate(&env, &[], &["--fail-rate", "0.5"]).await;
    // The candidate's own address gets traffic before the rollout, so
    // Prometheus has its error rate from the first interval on.
    let direct = start_traffic_to(&env, "/services/hello_2.0.0/", 1);
    let traffic = start_traffic(&env, 1);
    let query = errors_per_second("2.0.0");
    env.eventually("Prometheus sees the candidate's errors", WAIT, || async {
        prometheus.value(&query).await.is_some_and(|v| v > 1.0)
    })
    .await;

    // A failing candidate: the query's value is over the bound.
    env.cli(&[
        "rollout",
        "hello",
        "2.0.0",
        "--steps",
        "20",
        "--interval",
        "2s",
        "--min-requests",
        "1",
        "--max-error-rate",
        "100",
        "--failure-limit",
        "1",
        "--check-prometheus",
        &prometheus.url,
        &query,
        "<",
        "1",
    ])
    .await
    .ok();
    let view = wait_for_state(&env, "failed", ROLLOUT_WAIT).await;
    let name = format!("prometheus {query}");
    let judged = check(&view, &name);
    assert_eq!(judged["verdict"], "fail", "{view:#}");
    assert_eq!(judged["threshold"], "< 1", "{view:#}");
    assert!(
        numbers(judged["measured"].as_str().unwrap_or_default())
            .first()
            .is_some_and(|v| *v > 1.0),
        "{judged}"
    );
    assert!(
        view["state"]["status"]["reason"]
            .as_str()
            .is_some_and(|r| r.contains("prometheus")),
        "{view:#}"
    );
    assert!(service(&env.ls().await, "hello")["policy"]["canary"].is_null());

    // Answers that are not one number make the step inconclusive, each
    // with its reason: no series, several series, nobody listening.
    let closed = {
        let held = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        format!("http://{}", held.local_addr().expect("addr"))
    };
    env.cli(&[
        "rollout",
        "hello",
        "2.0.0",
        "--steps",
        "20",
        "--interval",
        "2s",
        "--min-requests",
        "1",
        "--max-error-rate",
        "100",
        "--check-prometheus",
        &prometheus.url,
        "switchyard_no_such_metric",
        "<",
        "1",
        "--check-prometheus",
        &prometheus.url,
        "switchyard_requests_total",
        "<",
        "1",
        "--check-prometheus",
        &closed,
        "up",
        "==",
        "1",
    ])
    .await
    .ok();
    let view = wait_for_state(&env, "paused", ROLLOUT_WAIT).await;
    let reasons = [
        ("prometheus switchyard_no_such_metric", "no data"),
        (
            "prometheus switchyard_requests_total",
            "series; the query must give one",
        ),
        ("prometheus up", "cannot ask"),
    ];
    for (name, reason) in reasons {
        let c = check(&view, name);
        assert_eq!(c["verdict"], "inconclusive", "{name}: {view:#}");
        assert!(
            c["measured"].as_str().is_some_and(|m| m.contains(reason)),
            "{name} says `{reason}`: {c}"
        );
    }
    let status = env.cli(&["rollout", "status", "hello"]).await.ok().stdout;
    assert!(
        status.contains("no data") && status.contains("cannot ask"),
        "{status}"
    );
    env.cli(&["rollout", "abort", "hello"]).await.ok();
    direct.finish_within(WAIT).await;

    // A healthy candidate passes its check and is promoted.
    env.deploy("hello", "3.0.0", &["--standby"], &[]).await.ok();
    env.cli(&[
        "rollout",
        "hello",
        "3.0.0",
        "--steps",
        "50",
        "--interval",
        "2s",
        "--min-requests",
        "1",
        "--sticky-header",
        "x-user-id",
        "--check-prometheus",
        &prometheus.url,
        &format!("{} or vector(0)", errors_per_second("3.0.0")),
        "<=",
        "0.1",
    ])
    .await
    .ok();
    let view = wait_for_state(&env, "succeeded", ROLLOUT_WAIT).await;
    traffic.finish_within(WAIT).await;
    let passed = view["state"]["checks"]
        .as_array()
        .and_then(|checks| {
            checks.iter().find(|c| {
                c["name"]
                    .as_str()
                    .is_some_and(|n| n.starts_with("prometheus"))
            })
        })
        .cloned()
        .unwrap_or_default();
    assert_eq!(passed["verdict"], "pass", "{view:#}");
    assert_eq!(passed["measured"], "0", "{view:#}");
    assert_eq!(service(&env.ls().await, "hello")["main"], "3.0.0");
}
