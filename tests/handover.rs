//! Self-upgrade: a running serve hands its sockets and instances over to a
//! new serve process while clients keep sending requests.

mod support;

use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use serde_json::Value;
use support::load::{CountingLoad, counting_gets};
use support::{Env, pid_alive, serve_pids};

const WAIT: Duration = Duration::from_secs(30);

/// Waits until `load` has had `more` answers beyond what it has now.
async fn answers(load: &CountingLoad, more: u64) {
    let target = load.ok() + more;
    let deadline = Instant::now() + WAIT;
    while load.ok() < target {
        assert!(Instant::now() < deadline, "the load got no answers");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Runs `handover` through `env` while `load` runs, and waits until the
/// old serve has exited; returns the handover's report and the new pid.
async fn hand_over_under(env: &Env, load: &CountingLoad, old_pid: u32) -> (Value, u32) {
    answers(load, 200).await;
    let run = env.cli(&["handover", "--json"]).await.ok();
    let report: Value = serde_json::from_str(&run.stdout).expect("handover --json is JSON");
    let new_pid = u32::try_from(report["new_pid"].as_u64().expect("new pid")).expect("pid");
    assert_ne!(new_pid, old_pid);
    env.eventually("the old serve exits", WAIT, || async {
        !pid_alive(old_pid)
    })
    .await;
    (report, new_pid)
}

/// Lets `load` have more answers from the new serve, stops it and checks
/// that none of its requests failed.
async fn no_request_failed(env: &Env, load: CountingLoad) {
    answers(&load, 500).await;
    let (answered, failures) = load.finish().await;
    assert!(
        failures.is_empty(),
        "{} of {} requests failed during the handover, e.g. {:?}\nserve log:\n{}",
        failures.len(),
        answered + failures.len() as u64,
        &failures[..failures.len().min(5)],
        env.serve_log()
    );
}

/// Instance pids by release, from `ls --json`.
async fn pids_by_release(env: &Env) -> Vec<(String, Value)> {
    let ls = env.ls().await;
    let mut pids = Vec::new();
    for service in ls.as_array().expect("services") {
        for release in service["releases"].as_array().expect("releases") {
            for instance in release["instances"].as_array().expect("instances") {
                pids.push((
                    format!("{} {}", service["name"], release["version"]),
                    instance["pid"].clone(),
                ));
            }
        }
    }
    pids.sort_by(|a, b| a.0.cmp(&b.0).then(a.1.to_string().cmp(&b.1.to_string())));
    pids
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn handover_under_load_fails_no_request_and_keeps_the_instances() {
    let env = Env::start().await;
    env.deploy("hello", "1.0.0", &["--replicas", "2"], &[])
        .await
        .ok();
    env.deploy("hello", "2.0.0", &[], &[]).await.ok(); // a shadow: mirrored
    let old_pid = env.serve_pid();
    let pids_before = env.instance_pids();
    let ls_before = pids_by_release(&env).await;
    assert_eq!(pids_before.len(), 3, "{ls_before:?}");

    let load = counting_gets(env.proxy(), "/services/hello/", 8);
    let (report, new_pid) = hand_over_under(&env, &load, old_pid).await;
    assert_eq!(report["old_pid"], old_pid, "{report}");

    // The old serve drained and exited on its own; the new one answers.
    assert!(
        pid_alive(new_pid),
        "the new serve is gone:\n{}",
        env.serve_log()
    );
    assert_eq!(serve_pids(&env.state_dir), [new_pid]);
    no_request_failed(&env, load).await;

    // Same instance processes, now managed by the new serve.
    assert_eq!(env.instance_pids(), pids_before);
    assert_eq!(pids_by_release(&env).await, ls_before);
    let (status, version, _) = env.get("/services/hello/").await;
    assert_eq!((status, version.as_str()), (200, "1.0.0"));

    // The new serve makes changes and keeps instances running.
    env.cli(&["assign", "hello", "2.0.0", "--yes"]).await.ok();
    let (status, version, _) = env.get("/services/hello/").await;
    assert_eq!((status, version.as_str()), (200, "2.0.0"));
    let victim = pids_before[0];
    let _ = kill(Pid::from_raw(victim as i32), Signal::SIGKILL);
    env.eventually("the new serve restarts a killed instance", WAIT, || async {
        let pids = env.instance_pids();
        pids.len() == 3 && !pids.contains(&victim)
    })
    .await;
}

/// With several workers, each accepts on the same listening socket: the
/// handover passes it once, and neither serve's workers lose a request.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn handover_with_two_workers_under_load_fails_no_request() {
    let env = Env::start_with(&["--workers", "2"]).await;
    env.deploy("hello", "1.0.0", &["--replicas", "2"], &[])
        .await
        .ok();
    let old_pid = env.serve_pid();
    let pids_before = env.instance_pids();

    let load = counting_gets(env.proxy(), "/services/hello/", 8);
    let (_, new_pid) = hand_over_under(&env, &load, old_pid).await;
    assert_eq!(serve_pids(&env.state_dir), [new_pid]);
    no_request_failed(&env, load).await;
    assert_eq!(env.instance_pids(), pids_before);
    let (status, version, _) = env.get("/services/hello/").await;
    assert_eq!((status, version.as_str()), (200, "1.0.0"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigusr2_hands_over_to_the_binary_serve_was_started_from() {
    let env = Env::start().await;
    env.deploy("hello", "1.0.0", &[], &[]).await.ok();
    let old_pid = env.serve_pid();
    let pids_before = env.instance_pids();

    kill(Pid::from_raw(old_pid as i32), Signal::SIGUSR2).expect("SIGUSR2");
    env.eventually("the old serve exits", WAIT, || async {
        !pid_alive(old_pid)
    })
    .await;
    // Its log comes through a pipe: the line may take a moment to arrive.
    env.eventually("the handover in the log", WAIT, || async {
        env.serve_log().contains("handed over on SIGUSR2")
    })
    .await;
    let log = env.serve_log();
    let new_pid: u32 = log
        .lines()
        .find(|l| l.contains("handed over on SIGUSR2"))
        .and_then(|l| l.split("new_pid=").nth(1))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|pid| pid.parse().ok())
        .unwrap_or_else(|| panic!("no new pid in the log:\n{log}"));
    assert!(pid_alive(new_pid));
    assert_eq!(serve_pids(&env.state_dir), [new_pid]);
    let (status, version, _) = env.get("/services/hello/").await;
    assert_eq!((status, version.as_str()), (200, "1.0.0"));
    assert_eq!(env.instance_pids(), pids_before);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_handover_leaves_the_old_serve_in_charge_without_a_failed_request() {
    let env = Env::start().await;
    env.deploy("hello", "1.0.0", &["--replicas", "2"], &[])
        .await
        .ok();
    let pids_before = env.instance_pids();
    let load = counting_gets(env.proxy(), "/services/hello/", 4);
    answers(&load, 100).await;

    // A "new binary" that exits at once.
    let run = env
        .cli(&["handover", "--binary", "/bin/false"])
        .await
        .failed();
    assert!(
        run.stderr.contains("did not take over") && run.stderr.contains("carries on"),
        "{}",
        run.stderr
    );
    answers(&load, 300).await;
    let (answered, failures) = load.finish().await;
    assert!(
        failures.is_empty(),
        "{} of {} requests failed, e.g. {:?}",
        failures.len(),
        answered + failures.len() as u64,
        &failures[..failures.len().min(5)]
    );

    // Still in charge: same instances, changes go through, and a killed
    // instance is restarted.
    assert!(pid_alive(env.serve_pid()));
    assert_eq!(env.instance_pids(), pids_before);
    env.deploy("hello", "2.0.0", &[], &[]).await.ok();
    let victim = pids_before[0];
    let _ = kill(Pid::from_raw(victim as i32), Signal::SIGKILL);
    env.eventually("the old serve restarts a killed instance", WAIT, || async {
        let pids = env.instance_pids();
        pids.len() == 3 && !pids.contains(&victim)
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pinned_address_is_served_by_the_new_serve_after_a_handover() {
    let env = Env::start().await;
    env.deploy("hub", "1.0.0", &[], &[]).await.ok();
    env.deploy("hub", "2.0.0", &["--standby"], &[]).await.ok();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port");
    env.cli(&["pin", "hub", "2.0.0", "--port", &port.to_string()])
        .await
        .ok();
    let old_pid = env.serve_pid();
    env.cli(&["handover"]).await.ok();
    env.eventually("the old serve exits", WAIT, || async {
        !pid_alive(old_pid)
    })
    .await;
    let pinned = format!("127.0.0.1:{port}");
    let answer = support::http1::Http1::new(&pinned)
        .get("/")
        .await
        .unwrap_or_else(|e| panic!("the pinned address answers: {e}\n{}", env.serve_log()));
    assert_eq!(answer.1, "2.0.0");
}
