//! What operators of any proxy expect, end to end through the real
//! binary: host names as a setting, request ids, neutral and per-service
//! error pages, the access log, `serve --config`, shell completions and
//! quiet health probes.

mod support;

use std::time::Duration;

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use serde_json::Value;
use support::{Env, Reply, listing, reply};

const WAIT: Duration = Duration::from_secs(30);

async fn get_host(env: &Env, host: &str, path: &str) -> Reply {
    reply(
        env.http
            .get(format!("{}{path}", env.proxy()))
            .header("host", host),
        WAIT,
    )
    .await
}

fn actions(history: &Value) -> Vec<String> {
    history
        .as_array()
        .expect("history")
        .iter()
        .filter_map(|r| r["action"].as_str().map(str::to_owned))
        .collect()
}

// ---------------------------------------------------------------- hosts

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn host_names_are_added_and_removed_without_a_release() {
    let env = Env::start().await;
    env.deploy("hello", "1.0.0", &[], &[]).await.ok();
    env.deploy("other", "2.0.0", &[], &[]).await.ok();
    assert_eq!(
        get_host(&env, "a.test", "/")
            .await
            .header("x-switchyard-error"),
        Some("no-route")
    );

    let run = env.cli(&["host", "add", "hello", "A.Test"]).await.ok();
    assert!(
        run.stdout.contains("add host a.test (revision 2)"),
        "{}",
        run.stdout
    );
    let r = get_host(&env, "a.test:8080", "/").await;
    assert_eq!(
        (r.status, r.header("x-switchyard-version")),
        (200, Some("1.0.0"))
    );
    let ls = env.ls().await;
    assert_eq!(
        listing::service(&ls, "hello")["hosts"],
        serde_json::json!(["a.test"])
    );

    // Another service cannot take it: the owner is named, nothing changes.
    let before = env.history("other").await;
    let run = env.cli(&["host", "add", "other", "a.test"]).await.failed();
    assert!(
        run.stderr.contains("already routes to service hello"),
        "{}",
        run.stderr
    );
    assert_eq!(env.history("other").await, before);
    // Nor is the same host added twice, or a host removed that is not there.
    let run = env.cli(&["host", "add", "hello", "a.test"]).await.failed();
    assert!(run.stderr.contains("nothing to change"), "{}", run.stderr);
    let run = env.cli(&["host", "rm", "hello", "b.test"]).await.failed();
    assert!(run.stderr.contains("its hosts: a.test"), "{}", run.stderr);
    let run = env
        .cli(&["host", "add", "hello", "bad/host"])
        .await
        .failed();
    assert!(run.stderr.contains("invalid host name"), "{}", run.stderr);
    let run = env
        .cli(&["host", "add", "hello", "c.test", "--revision", "1"])
        .await
        .failed();
    assert!(run.stderr.contains("changed meanwhile"), "{}", run.stderr);

    let run = env.cli(&["host", "rm", "hello", "a.test"]).await.ok();
    assert!(
        run.stdout.contains("remove host a.test (revision 3)"),
        "{}",
        run.stdout
    );
    assert_eq!(
        get_host(&env, "a.test", "/")
            .await
            .header("x-switchyard-error"),
        Some("no-route")
    );
    // Now free, the other service may have it.
    env.cli(&["host", "add", "other", "a.test"]).await.ok();
    let r = get_host(&env, "a.test", "/").await;
    assert_eq!(
        (r.status, r.header("x-switchyard-version")),
        (200, Some("2.0.0"))
    );
    assert_eq!(
        actions(&env.history("hello").await)[..2],
        [
            "remove host a.test".to_owned(),
            "add host a.test".to_owned()
        ]
    );
}

// ---------------------------------------------------------------- request ids

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_ids_are_passed_to_the_upstream_and_back() {
    let env = Env::start().await;
    env.deploy("hello", "1.0.0", &[], &[]).await.ok();
    let url = format!("{}/services/hello/echo", env.proxy());

    let r = reply(
        env.http.get(&url).header("x-request-id", "order-42.a:b"),
        WAIT,
    )
    .await;
    assert_eq!(r.header("x-request-id"), Some("order-42.a:b"));
    assert_eq!(
        r.json()["headers"]["x-request-id"],
        serde_json::json!(["order-42.a:b"])
    );

    // An id that is no sane value is replaced, the same one both ways.
    for odd in ["has space", "", "<b>markup</b>", &"x".repeat(200)] {
        let r = reply(env.http.get(&url).header("x-request-id", odd), WAIT).await;
        let id = r.header("x-request-id").expect("an id").to_owned();
        assert!(
            id.len() == 32 && id.bytes().all(|b| b.is_ascii_hexdigit()),
            "{odd:?} → {id}"
        );
        assert_eq!(r.json()["headers"]["x-request-id"], serde_json::json!([id]));
    }
    let one = reply(env.http.get(&url), WAIT).await;
    let two = reply(env.http.get(&url), WAIT).await;
    assert_ne!(one.header("x-request-id"), two.header("x-request-id"));
}

// ---------------------------------------------------------------- error pages

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_service_error_page_replaces_the_neutral_one() {
    let env = Env::start().await;
    env.deploy("hello", "1.0.0", &[], &[]).await.ok();
    env.deploy("other", "1.0.0", &[], &[]).await.ok();
    let page = env.dir.path().join("sorry.html");
    std::fs::write(
        &page,
        "<h1>{status} {reason}</h1><p>Quote {request_id} to support.</p>\n",
    )
    .expect("write the page");
    let page = page.display().to_string();
    let run = env
        .cli(&["error-page", "hello", "--file", &page])
        .await
        .ok();
    assert!(run.stdout.contains("error page"), "{}", run.stdout);

    let r = reply(
        env.http
            .get(format!("{}/services/hello_9.9.9/", env.proxy()))
            .header("x-request-id", "ticket-7"),
        WAIT,
    )
    .await;
    assert_eq!(r.status, 404);
    assert_eq!(r.header("x-switchyard-error"), Some("unknown-release"));
    assert_eq!(r.header("content-type"), Some("text/html; charset=utf-8"));
    assert_eq!(
        r.body,
        "<h1>404 Not Found</h1><p>Quote ticket-7 to support.</p>\n"
    );
    // The operator's hint is in serve's log under the same id.
    let hint = env.hint_for("ticket-7").await;
    assert!(
        hint.contains("9.9.9") && hint.contains("switchyard ls"),
        "{hint}"
    );

    // Another service keeps the neutral page; so does an unknown one.
    for path in ["/services/other_9.9.9/", "/services/nope/"] {
        let r = reply(env.http.get(format!("{}{path}", env.proxy())), WAIT).await;
        assert!(r.body.starts_with("404 Not Found\n"), "{path}: {}", r.body);
        assert_eq!(r.header("content-type"), Some("text/plain; charset=utf-8"));
    }

    // Too large a page is refused and changes nothing.
    let big = env.dir.path().join("big.html");
    std::fs::write(&big, "x".repeat(70 * 1024)).expect("write");
    let run = env
        .cli(&["error-page", "hello", "--file", &big.display().to_string()])
        .await
        .failed();
    assert!(run.stderr.contains("at most 65536"), "{}", run.stderr);
    let shown = env.cli(&["error-page", "hello"]).await.ok();
    assert!(
        shown.stdout.contains("Quote {request_id}"),
        "{}",
        shown.stdout
    );

    env.cli(&["error-page", "hello", "--off"]).await.ok();
    let r = reply(
        env.http
            .get(format!("{}/services/hello_9.9.9/", env.proxy())),
        WAIT,
    )
    .await;
    assert!(r.body.starts_with("404 Not Found\n"), "{}", r.body);
}

// ---------------------------------------------------------------- access log

/// The access log's lines so far, parsed.
fn lines(text: &str) -> Vec<Value> {
    text.lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect()
}

async fn wait_for_lines(env: &Env, read: impl Fn() -> String, n: usize) -> Vec<Value> {
    env.eventually(&format!("{n} access-log lines"), WAIT, || {
        let count = read().lines().count();
        async move { count >= n }
    })
    .await;
    lines(&read())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn access_log_has_a_json_line_per_request_and_reopens_on_sighup() {
    let logs = tempfile::tempdir().expect("tempdir");
    let file = logs.path().join("access.log");
    let env = Env::start_with(&["--access-log", &file.display().to_string()]).await;
    env.deploy("hello", "1.0.0", &[], &[]).await.ok();
    let read = || std::fs::read_to_string(&file).unwrap_or_default();

    let get = reply(
        env.http
            .get(format!("{}/services/hello/echo?x=1", env.proxy()))
            .header("x-request-id", "req-get"),
        WAIT,
    )
    .await;
    let post = reply(
        env.http
            .post(format!("{}/services/hello/echo", env.proxy()))
            .header("x-request-id", "req-post")
            .body(vec![b'a'; 1000]),
        WAIT,
    )
    .await;
    let missing = reply(
        env.http
            .get(format!("{}/services/nope/", env.proxy()))
            .header("x-request-id", "req-404"),
        WAIT,
    )
    .await;
    let entries = wait_for_lines(&env, read, 3).await;
    let by_id = |id: &str| {
        entries
            .iter()
            .find(|l| l["request_id"] == id)
            .unwrap_or_else(|| panic!("no line for {id}: {entries:?}"))
            .clone()
    };
    let instance =
        listing::release(&env.ls().await, "hello", "1.0.0")["instances"][0]["addr"].clone();

    let g = by_id("req-get");
    assert_eq!(g["service"], "hello");
    assert_eq!(g["release"], "1.0.0");
    assert_eq!(g["instance"], instance);
    assert_eq!(g["method"], "GET");
    assert_eq!(g["path"], "/services/hello/echo?x=1");
    assert_eq!(g["status"], 200);
    assert_eq!(g["bytes_in"], 0);
    assert_eq!(g["bytes_out"], get.body.len());
    assert!(
        g["client"]
            .as_str()
            .is_some_and(|c| c.starts_with("127.0.0.1:")),
        "{g}"
    );
    assert!(g["duration_ms"].as_f64().is_some_and(|d| d >= 0.0), "{g}");
    assert!(g["time"].as_str().is_some_and(|t| t.ends_with('Z')), "{g}");

    let p = by_id("req-post");
    assert_eq!(
        (p["method"].as_str(), p["bytes_in"].as_u64()),
        (Some("POST"), Some(1000))
    );
    assert_eq!(p["bytes_out"], post.body.len());

    let m = by_id("req-404");
    assert_eq!(m["status"], 404);
    assert_eq!(m["error"], "unknown-service");
    assert_eq!(m["service"], Value::Null);
    assert_eq!(m["bytes_out"], missing.body.len());

    // logrotate's `create`: the file is moved away, SIGHUP, a new file.
    let rotated = logs.path().join("access.log.1");
    std::fs::rename(&file, &rotated).expect("rotate");
    kill(Pid::from_raw(env.serve_pid() as i32), Signal::SIGHUP).expect("SIGHUP");
    env.eventually("the access log is reopened", WAIT, || {
        let reopened = env.serve_log().contains("access log reopened");
        async move { reopened }
    })
    .await;
    reply(
        env.http
            .get(format!("{}/services/hello/", env.proxy()))
            .header("x-request-id", "after-rotation"),
        WAIT,
    )
    .await;
    let fresh = wait_for_lines(&env, read, 1).await;
    assert_eq!(fresh.len(), 1, "{fresh:?}");
    assert_eq!(fresh[0]["request_id"], "after-rotation");
    let old = std::fs::read_to_string(&rotated).expect("the rotated file");
    assert!(!old.contains("after-rotation"), "{old}");
    assert_eq!(
        counter(&env.metrics().await, "switchyard_access_log_lines_total"),
        4
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn access_log_to_stdout_and_an_unwritable_log_never_hold_requests() {
    let env = Env::start_with(&["--access-log", "-"]).await;
    env.deploy("hello", "1.0.0", &[], &[]).await.ok();
    reply(
        env.http
            .get(format!("{}/services/hello/", env.proxy()))
            .header("x-request-id", "to-stdout"),
        WAIT,
    )
    .await;
    let entries = wait_for_lines(
        &env,
        || {
            env.serve_stdout()
                .lines()
                .filter(|l| l.starts_with('{'))
                .map(|l| format!("{l}\n"))
                .collect()
        },
        1,
    )
    .await;
    assert_eq!(entries[0]["request_id"], "to-stdout");
    drop(env);

    // A log that cannot be written: every request is answered, and the
    // lines lost are counted.
    let env = Env::start_with(&["--access-log", "/dev/full"]).await;
    env.deploy("hello", "1.0.0", &[], &[]).await.ok();
    for _ in 0..5 {
        let r = reply(
            env.http.get(format!("{}/services/hello/", env.proxy())),
            WAIT,
        )
        .await;
        assert_eq!(r.status, 200);
    }
    env.eventually("5 dropped lines counted", WAIT, || async {
        counter(&env.metrics().await, "switchyard_access_log_dropped_total") >= 5
    })
    .await;
    assert!(env.serve_log().contains("cannot write the access log"));
}

/// The value of a series without labels.
fn counter(metrics: &str, series: &str) -> u64 {
    metrics
        .lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
        .unwrap_or_else(|| panic!("no {series}:\n{metrics}"))
        .trim()
        .parse()
        .expect("a count")
}

// ---------------------------------------------------------------- config file

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_reads_its_flags_from_a_config_file_and_the_command_line_wins() {
    let dir = tempfile::tempdir().expect("tempdir");
    let log = dir.path().join("access.log");
    let config = dir.path().join("serve.toml");
    std::fs::write(
        &config,
        format!(
            "# serve's settings\n\
             no-version-header = true\n\
             access-log = \"{}\"\n\
             upstream-timeout = \"20s\"\n\
             admin-host = [\"ops.example\"]\n\
             admin = \"10.255.255.1:8081\"\n",
            log.display()
        ),
    )
    .expect("write the config");
    let config_arg = config.display().to_string();
    // `admin` in the file would need a token; the command line's wins.
    let env = Env::start_with(&["--config", &config_arg]).await;
    env.deploy("hello", "1.0.0", &[], &[]).await.ok();
    let r = reply(
        env.http.get(format!("{}/services/hello/", env.proxy())),
        WAIT,
    )
    .await;
    assert_eq!(r.status, 200);
    assert_eq!(
        r.header("x-switchyard-version"),
        None,
        "no-version-header from the file"
    );
    env.eventually("the file's access log has the request", WAIT, || {
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        async move { text.contains("/services/hello/") }
    })
    .await;
    // admin-host from the file: the admin API answers to that name.
    let r = reply(
        env.http
            .get(format!("{}/v1/services", env.admin()))
            .header("host", "ops.example"),
        WAIT,
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.body);
    drop(env);

    for (text, named) in [
        (
            "listen = \"127.0.0.1:0\"\nlisten-address = \"x\"\n",
            "unknown key `listen-address`",
        ),
        ("drain-timeout = \"soon\"\n", "key `drain-timeout`"),
        (
            "no-version-header = \"yes\"\n",
            "key `no-version-header`: is a switch",
        ),
        ("workers = [1, 2]\n", "key `workers`: takes one value"),
        ("listen = \n", "is not valid TOML"),
    ] {
        std::fs::write(&config, text).expect("write");
        let out = tokio::process::Command::new(support::SWITCHYARD)
            .args(["serve", "--config", &config_arg, "--state-dir"])
            .arg(dir.path().join("state"))
            .output()
            .await
            .expect("run serve");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{text:?} was accepted");
        assert!(stderr.contains(named), "{text:?}: {stderr}");
        assert!(
            !dir.path().join("state").exists(),
            "serve started: {text:?}"
        );
    }
}

// ---------------------------------------------------------------- completions

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn completions_are_printed_for_each_shell() {
    let run = |shell: &'static str| async move {
        let out = tokio::process::Command::new(support::SWITCHYARD)
            .args(["completions", shell])
            .output()
            .await
            .expect("run completions");
        support::Run::from(out)
    };
    let bash = run("bash").await.ok();
    for verb in ["deploy", "host", "rewrite", "error-page", "--access-log"] {
        assert!(bash.stdout.contains(verb), "bash completions lack {verb}");
    }
    // bash takes the script and completes the verbs with it.
    let dir = tempfile::tempdir().expect("tempdir");
    let script = dir.path().join("switchyard.bash");
    std::fs::write(&script, &bash.stdout).expect("write");
    let probe = format!(
        "source {}; COMP_WORDS=(switchyard ho); COMP_CWORD=1; COMP_LINE='switchyard ho'; COMP_POINT=13; \
         _switchyard switchyard ho switchyard; echo \"${{COMPREPLY[@]}}\"",
        script.display()
    );
    let out = std::process::Command::new("bash")
        .args(["-c", &probe])
        .output()
        .expect("bash");
    let words = String::from_utf8_lossy(&out.stdout);
    assert!(
        words.split_whitespace().any(|w| w == "host"),
        "bash offered {words:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    for shell in ["zsh", "fish", "elvish", "powershell"] {
        assert!(
            run(shell).await.ok().stdout.contains("switchyard"),
            "{shell}"
        );
    }
    let bad = run("tcsh").await.failed();
    assert!(bad.stderr.contains("possible values"), "{}", bad.stderr);
}

// ---------------------------------------------------------------- hello-server

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hello_server_logs_a_health_probe_only_when_its_answer_changes() {
    let env = Env::start().await;
    env.deploy("hello", "1.0.0", &["--health-interval", "100ms"], &[])
        .await
        .ok();
    let addr = listing::release(&env.ls().await, "hello", "1.0.0")["instances"][0]["addr"]
        .as_str()
        .expect("addr")
        .to_owned();
    let health = |wanted: &'static str| {
        let env = &env;
        async move {
            env.eventually(&format!("the instance is {wanted}"), WAIT, || async {
                listing::release(&env.ls().await, "hello", "1.0.0")["instances"][0]["health"]
                    == wanted
            })
            .await;
        }
    };
    let control = |action: &'static str| {
        let url = format!("http://{addr}/control/health/{action}");
        async move {
            let r = reply(
                support::http_client()
                    .build()
                    .expect("http client")
                    .post(url),
                WAIT,
            )
            .await;
            assert_eq!(r.status, 200);
        }
    };
    // Three failing probes take it out of the rotation, two passing ones
    // bring it back: five probes or more, two changes.
    control("fail").await;
    health("unhealthy").await;
    control("ok").await;
    health("healthy").await;

    let path = env.state_dir.join("logs/hello/1.0.0/instance-0.log");
    let log = std::fs::read_to_string(&path).expect("the instance's log");
    let probes: Vec<&str> = log
        .lines()
        .filter(|l| l.starts_with("GET /healthz"))
        .collect();
    assert_eq!(
        probes,
        [
            "GET /healthz -> 200",
            "GET /healthz -> 503",
            "GET /healthz -> 200"
        ],
        "{log}"
    );
}

// ---------------------------------------------------------------- progress

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deploy_shows_progress_on_a_terminal_and_stays_plain_when_piped() {
    let env = Env::start().await;
    // On a terminal (`script` gives the CLI a pseudo-terminal): a spinner
    // with the elapsed time while the replicas become healthy.
    let command = format!(
        "{} deploy hello 1.0.0 --health /healthz -- {} --port {{port}} --version 1.0.0 --fail-health-for 1",
        support::SWITCHYARD,
        support::HELLO
    );
    let mut script = tokio::process::Command::new("script");
    script
        .args(["-qec", &command, "/dev/null"])
        .current_dir(env.dir.path())
        .env("SWITCHYARD_ADMIN", env.admin())
        .stdin(std::process::Stdio::null());
    let run = support::Run::from(
        tokio::time::timeout(Duration::from_secs(120), script.output())
            .await
            .expect("deploy within the bound")
            .expect("run script (util-linux)"),
    )
    .ok();
    assert!(
        run.stdout
            .contains("starting hello 1.0.0 and waiting until every replica is healthy ("),
        "{}",
        run.stdout
    );
    assert!(
        run.stdout.contains("deployed hello 1.0.0 as main"),
        "{}",
        run.stdout
    );

    // Piped: the same lines as ever, no spinner.
    let run = env.deploy("hello", "2.0.0", &[], &[]).await.ok();
    assert!(!run.stderr.contains("waiting until"), "{}", run.stderr);
    assert!(!run.stdout.contains("waiting until"), "{}", run.stdout);
    assert!(
        run.stdout.starts_with("deployed hello 2.0.0 as shadow"),
        "{}",
        run.stdout
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rollout_status_follow_prints_each_step_until_the_rollout_ends() {
    let env = Env::start().await;
    env.deploy("hello", "1.0.0", &[], &[]).await.ok();
    env.deploy("hello", "2.0.0", &[], &[]).await.ok();
    let run = env
        .cli(&[
            "rollout",
            "hello",
            "2.0.0",
            "--steps",
            "50,100",
            "--interval",
            "1s",
            "--min-requests",
            "0",
        ])
        .await
        .ok();
    assert!(
        run.stdout.contains("rollout status hello --follow"),
        "{}",
        run.stdout
    );
    let run = env
        .cli(&["rollout", "status", "hello", "--follow"])
        .await
        .ok();
    let last = run.stdout.lines().last().unwrap_or_default();
    assert_eq!(
        last, "rollout of hello 2.0.0: succeeded, step 4 of 4: done",
        "{}",
        run.stdout
    );
    assert!(
        !run.stderr.contains("rollout of"),
        "no spinner when piped: {}",
        run.stderr
    );

    // One that is aborted meanwhile ends the follower with an error.
    env.deploy("hello", "3.0.0", &[], &[]).await.ok();
    env.cli(&[
        "rollout",
        "hello",
        "3.0.0",
        "--steps",
        "50",
        "--interval",
        "1h",
    ])
    .await
    .ok();
    let follower = env
        .cli_command(&["rollout", "status", "hello", "--follow"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("follow");
    env.cli(&["rollout", "abort", "hello"]).await.ok();
    let out = support::Run::from(
        tokio::time::timeout(WAIT, follower.wait_with_output())
            .await
            .expect("the follower ends")
            .expect("follow"),
    )
    .failed();
    assert!(
        out.stderr.contains("the rollout was aborted"),
        "{}",
        out.stderr
    );
}
