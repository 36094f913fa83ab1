//! The state directory: one serve at a time (also across a handover), no
//! instance that is not recorded in it, and no lost database taken for a
//! new one.

mod support;

use std::process::Stdio;
use std::time::Duration;

use serde_json::{Value, json};
use support::load::counting_gets;
use support::serves::serve_exits;
use support::tmpfs::Tmpfs;
use support::{Env, HELLO, pid_alive};

const WAIT: Duration = Duration::from_secs(30);

/// The pid written in the state directory's lock file.
fn lock_holder(env: &Env) -> String {
    std::fs::read_to_string(env.state_dir.join("serve.lock"))
        .expect("the lock file")
        .trim()
        .to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn second_serve_on_the_same_state_dir_exits_at_once_naming_the_first() {
    let env = Env::start().await;
    env.deploy("hello", "1.0.0", &[], &[]).await.ok();
    let pids = env.instance_pids();
    let first = env.serve_pid();
    let load = counting_gets(env.proxy(), "/services/hello/", 4);

    let run = serve_exits(&env.state_dir, &["--admin", "127.0.0.1:0"])
        .await
        .failed();
    assert!(
        run.stderr.contains(&format!("pid {first}")) && run.stderr.contains("--state-dir"),
        "{}",
        run.stderr
    );
    assert!(!run.stdout.contains("listening"), "{}", run.stdout);
    assert!(
        !run.stderr.contains("restoring release"),
        "it touched the state before it stopped: {}",
        run.stderr
    );

    let (ok, failures) = load.finish().await;
    assert!(
        failures.is_empty(),
        "the first serve's clients failed: {failures:?}"
    );
    assert!(ok > 0);
    assert_eq!(env.instance_pids(), pids, "its instances are untouched");
    let ls = env.ls().await;
    let instance = &ls[0]["releases"][0]["instances"][0];
    assert_eq!(instance["health"], "healthy", "{ls:#}");
    assert_eq!(lock_holder(&env), first.to_string());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_a_handover_a_third_serve_is_still_refused() {
    let env = Env::start().await;
    env.deploy("hello", "1.0.0", &[], &[]).await.ok();
    let old = env.serve_pid();
    let run = env.cli(&["handover", "--json"]).await.ok();
    let report: Value = serde_json::from_str(&run.stdout).expect("JSON");
    let new = report["new_pid"].as_u64().expect("new pid");
    // The old serve drains and exits: only the lock it passed on remains.
    env.eventually("the old serve exits", WAIT, || async { !pid_alive(old) })
        .await;
    assert_eq!(
        lock_holder(&env),
        new.to_string(),
        "the new serve wrote its pid"
    );

    let run = serve_exits(&env.state_dir, &["--admin", "127.0.0.1:0"])
        .await
        .failed();
    assert!(run.stderr.contains(&format!("pid {new}")), "{}", run.stderr);
    assert_eq!(env.get("/services/hello/").await.0, 200);
    assert_eq!(env.ls().await[0]["main"], "1.0.0");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn instance_that_cannot_be_recorded_is_stopped_and_the_deploy_fails() {
    // Declared first, dropped last: serve and its files go before it.
    let disk = Tmpfs::mount("16m");
    let mut env = Env::new(&[]);
    env.state_dir = disk.path().join("state");
    env.launch("127.0.0.1:0", "127.0.0.1:0").await;
    let filler = disk.fill();

    // An instance that becomes healthy once the test says so (by a file
    // outside the full disk), so that the disk has room again before the
    // deploy could commit: only the instance's record meets a full disk.
    let go = env.dir.path().join("go");
    let script = format!(
        "while [ ! -e '{}' ]; do sleep 0.05; done; exec '{HELLO}' --port \"$PORT\" --version 1.0.0",
        go.display()
    );
    let deploy = env
        .cli_command(&[
            "deploy", "hello", "1.0.0", "--health", "/healthz", "--", "/bin/sh", "-c", &script,
        ])
        .output();
    let deploy = tokio::spawn(deploy);
    env.eventually("the instance's record fails", WAIT, || async {
        env.serve_log().contains("cannot record instance")
    })
    .await;
    std::fs::remove_file(&filler).expect("make room");
    std::fs::write(&go, b"").expect("let the instance start");
    let run = support::Run::from(deploy.await.expect("join").expect("run the CLI")).failed();
    assert!(
        run.stderr.contains(
            "could not be recorded in the state database: state database error: database or disk is full"
        ),
        "{}",
        run.stderr
    );
    assert_eq!(
        env.instance_pids(),
        Vec::<u32>::new(),
        "an instance still runs"
    );
    assert_eq!(env.ls().await, json!([]), "nothing committed");

    // With room the same deploy goes through.
    env.deploy("hello", "1.0.0", &[], &[]).await.ok();
    assert_eq!(env.instance_pids().len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unrecorded_marked_process_left_from_before_a_restart_is_stopped() {
    let mut env = Env::start().await;
    env.deploy("hello", "1.0.0", &[], &[]).await.ok();
    let recorded = env.instance_pids();
    let (proxy, admin) = (
        env.serve().proxy_addr.clone(),
        env.serve().admin_addr.clone(),
    );
    env.kill9().await;
    // An instance the dead serve started but never recorded: the marks
    // every instance gets, in a process group of its own.
    let mut stray = tokio::process::Command::new(HELLO)
        .args(["--port", "0", "--version", "1.0.0"])
        .env("SWITCHYARD_STATE_DIR", &env.state_dir)
        .env("SWITCHYARD_SERVICE", "hello")
        .env("SWITCHYARD_VERSION", "1.0.0")
        .env("SWITCHYARD_INSTANCE", "0")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .process_group(0)
        .kill_on_drop(true)
        .spawn()
        .expect("start the stray");
    let stray_pid = stray.id().expect("stray pid");
    assert!(env.instance_pids().contains(&stray_pid));

    env.launch(&proxy, &admin).await;
    within_wait(&env, "the stray is stopped", || !pid_alive(stray_pid)).await;
    let _ = stray.wait().await;
    assert_eq!(
        env.instance_pids(),
        recorded,
        "the recorded instance is adopted"
    );
    let ls = env.ls().await;
    assert_eq!(
        ls[0]["releases"][0]["instances"][0]["adopted"], true,
        "{ls:#}"
    );
    assert!(
        env.serve_log()
            .contains("stopping an instance process that no record names"),
        "{}",
        env.serve_log()
    );
}

/// Waits until `done` holds, or panics with `what` and serve's log.
async fn within_wait(env: &Env, what: &str, done: impl Fn() -> bool) {
    env.eventually(what, WAIT, || {
        let done = done();
        async move { done }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn zero_length_database_is_refused_unless_the_directory_is_new() {
    // In a new directory an empty file is a new, empty state.
    let mut fresh = Env::new(&[]);
    std::fs::create_dir_all(&fresh.state_dir).expect("state dir");
    std::fs::write(fresh.state_dir.join("switchyard.db"), b"").expect("empty database");
    fresh.launch("127.0.0.1:0", "127.0.0.1:0").await;
    fresh.deploy("hello", "1.0.0", &[], &[]).await.ok();
    drop(fresh);

    // Where a serve ran before, an empty file is lost state.
    let mut env = Env::start().await;
    env.deploy("hello", "1.0.0", &[], &[]).await.ok();
    env.stop().await;
    let db = env.state_dir.join("switchyard.db");
    std::fs::File::create(&db).expect("truncate the database");
    let Err(refused) = env.try_launch("127.0.0.1:0", "127.0.0.1:0").await else {
        panic!("serve started on an emptied database");
    };
    assert!(
        refused.contains("switchyard.db is empty")
            && refused.contains("Restore the file from a backup")
            && refused.contains("remove it"),
        "{refused}"
    );
    assert_eq!(std::fs::metadata(&db).expect("still there").len(), 0);
    assert_eq!(env.instance_pids(), Vec::<u32>::new(), "nothing started");
}
