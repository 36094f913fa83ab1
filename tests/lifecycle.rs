//! The release lifecycle through the real binary: blue/green switches under
//! load, in-flight requests across a switch, kill rules and draining,
//! history and rollback, and a `kill -9` of serve with adoption on restart.

mod support;

use std::time::{Duration, Instant};

use serde_json::Value;
use support::listing::{numbered_actions, release, service};
use support::load::{Answer, Clients, Load, failures, spawn_get};
use support::{Env, now_millis, pid_alive};

/// The bound on every wait: generous, so a slow machine only slows tests.
const WAIT: Duration = Duration::from_secs(30);

/// PIDs of a release's instances in `ls --json`.
fn pids(ls: &Value, name: &str, version: &str) -> Vec<u64> {
    let pids: Vec<u64> = release(ls, name, version)["instances"]
        .as_array()
        .map(|instances| instances.iter().filter_map(|i| i["pid"].as_u64()).collect())
        .unwrap_or_default();
    assert!(
        !pids.is_empty(),
        "{name} {version} has no PID in ls: {ls:#}"
    );
    pids
}

/// (version, role, status) of every release of a service, in ls order.
fn roles(ls: &Value, name: &str) -> Vec<(String, String, String)> {
    service(ls, name)["releases"]
        .as_array()
        .map(|releases| {
            releases
                .iter()
                .map(|r| {
                    (
                        r["version"].as_str().unwrap_or_default().to_owned(),
                        r["role"].as_str().unwrap_or_default().to_owned(),
                        r["status"].as_str().unwrap_or_default().to_owned(),
                    )
                })
                .collect()
        })
        .unwrap_or_default()
}

fn triple(version: &str, role: &str, status: &str) -> (String, String, String) {
    (version.to_owned(), role.to_owned(), status.to_owned())
}

/// version → role of a revision in `history --json`.
fn release_roles(revision: &Value) -> Vec<(String, String)> {
    revision["state"]["releases"]
        .as_object()
        .map(|releases| {
            releases
                .iter()
                .map(|(v, e)| (v.clone(), e["role"].as_str().unwrap_or_default().to_owned()))
                .collect()
        })
        .unwrap_or_default()
}

/// One request of a load run.
struct Sample {
    start: Instant,
    end: Instant,
    result: Answer,
}

/// Clients sending GET `path` back to back, each on a connection of its
/// own that never sends a request twice, timing every request.
fn start_load(env: &Env, path: &str, clients: usize) -> Load<Sample> {
    let (conns, path) = (Clients::new(env.proxy(), clients), path.to_owned());
    Load::start(clients, move |client, _| {
        let (conns, path) = (conns.clone(), path.clone());
        async move {
            let start = Instant::now();
            let result = conns.get(client, &path).await;
            Sample {
                start,
                end: Instant::now(),
                result,
            }
        }
    })
}

/// Who the CLI says made a change.
fn expected_actor() -> String {
    std::env::var("USER")
        .or_else(|_| std::env::var("LOGNAME"))
        .unwrap_or_else(|_| "cli".into())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn assign_switches_main_under_load_without_failed_requests() {
    let env = Env::start().await;
    env.deploy("hello", "1.0.0", &[], &[]).await.ok();
    env.deploy("hello", "2.0.0", &[], &[]).await.ok();

    // Window 0: 1.0.0 is main from here until the first assign starts.
    let mut switches: Vec<(Instant, Instant, String)> = Vec::new();
    let ready = Instant::now();
    let load = start_load(&env, "/services/hello/", 32);

    let load_for = Duration::from_secs(10);
    let mut next = "2.0.0";
    while switches.len() < 10 || ready.elapsed() < load_for {
        // Every window between two switches gets requests of its own.
        load.run_for(256, WAIT).await;
        let started = Instant::now();
        env.cli(&["assign", "hello", next, "--yes"]).await.ok();
        switches.push((started, Instant::now(), next.to_owned()));
        next = if next == "2.0.0" { "1.0.0" } else { "2.0.0" };
    }
    load.run_for(64, WAIT).await;
    let samples = load.finish().await;

    let failed = failures(samples.iter().map(|s| &s.result));
    assert!(
        failed.is_empty(),
        "{} of {} requests failed, e.g. {:?}",
        failed.len(),
        samples.len(),
        &failed[..failed.len().min(5)]
    );

    // Every request made (started and answered) after an assign returned
    // and before the next one started went to that assign's new main.
    let mut windows = vec![(ready, switches[0].0, "1.0.0".to_owned())];
    for (i, (_, returned, version)) in switches.iter().enumerate() {
        let until = switches.get(i + 1).map_or(Instant::now(), |s| s.0);
        windows.push((*returned, until, version.clone()));
    }
    let mut wrong = Vec::new();
    let mut checked_per_window = vec![0usize; windows.len()];
    for sample in &samples {
        let Ok((_, version, _)) = &sample.result else {
            continue;
        };
        let window = windows
            .iter()
            .position(|(from, until, _)| sample.start >= *from && sample.end < *until);
        if let Some(w) = window {
            checked_per_window[w] += 1;
            if *version != windows[w].2 {
                wrong.push(format!(
                    "window {w}: expected {}, got {version} ({:?} after the switch, took {:?})",
                    windows[w].2,
                    sample.start - windows[w].0,
                    sample.end - sample.start
                ));
            }
        }
    }
    assert!(
        wrong.is_empty(),
        "{} responses came from the wrong release, e.g. {:?}",
        wrong.len(),
        &wrong[..wrong.len().min(5)]
    );
    let covered = checked_per_window.iter().filter(|n| **n > 0).count();
    assert!(
        covered * 2 >= windows.len(),
        "too few windows saw requests to check anything: {checked_per_window:?}"
    );
    for version in ["1.0.0", "2.0.0"] {
        assert!(
            samples
                .iter()
                .any(|s| matches!(&s.result, Ok((_, v, _)) if v == version)),
            "no response came from {version}"
        );
    }
    assert!(switches.len() >= 10);
    let ls = env.ls().await;
    assert_eq!(
        service(&ls, "hello")["main"],
        switches[switches.len() - 1].2
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn in_flight_request_finishes_on_old_main_after_assign() {
    let env = Env::start().await;
    env.deploy("hello", "1.0.0", &[], &["--latency-ms", "3000"])
        .await
        .ok();
    env.deploy("hello", "2.0.0", &[], &[]).await.ok();
    let before = env.ls().await;
    let old_pids = pids(&before, "hello", "1.0.0");

    let slow = spawn_get(env.proxy(), "/services/hello/");
    env.wait_in_flight("hello", "1.0.0", 1).await;
    env.cli(&["assign", "hello", "2.0.0", "--yes"]).await.ok();
    assert_eq!(
        env.in_flight("hello", "1.0.0").await,
        1,
        "the request (3 s long) is still in flight after the switch"
    );
    let (status, version, _) = env.get("/services/hello/").await;
    assert_eq!((status, version.as_str()), (200, "2.0.0"));

    let (status, version, body) = slow
        .await
        .expect("slow request task")
        .expect("slow request");
    assert_eq!((status, version.as_str()), (200, "1.0.0"), "{body}");
    let body: Value = serde_json::from_str(&body).expect("hello-server answers JSON");
    assert_eq!(body["version"], "1.0.0");

    let ls = env.ls().await;
    assert_eq!(service(&ls, "hello")["main"], "2.0.0");
    let old = release(&ls, "hello", "1.0.0");
    assert_eq!(old["role"], "standby", "{ls:#}");
    assert_eq!(old["status"], "ready", "{ls:#}");
    assert_eq!(pids(&ls, "hello", "1.0.0"), old_pids);
    assert!(old_pids.iter().all(|p| pid_alive(*p)));
    let (status, version, _) = env.get("/services/hello_1.0.0/").await;
    assert_eq!((status, version.as_str()), (200, "1.0.0"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn main_cannot_be_killed_while_others_run_but_shadow_standby_and_lone_main_can() {
    let env = Env::start().await;
    env.deploy("hello", "1.0.0", &[], &[]).await.ok();
    env.deploy("hello", "2.0.0", &[], &[]).await.ok();
    env.deploy("hello", "3.0.0", &["--standby"], &[]).await.ok();
    let before = env.ls().await;
    assert_eq!(
        roles(&before, "hello"),
        vec![
            triple("1.0.0", "main", "ready"),
            triple("2.0.0", "shadow", "ready"),
            triple("3.0.0", "standby", "ready"),
        ]
    );

    let refused = env.cli(&["kill", "hello", "1.0.0"]).await.failed();
    assert!(
        refused.stderr.contains("2.0.0") && refused.stderr.contains("3.0.0"),
        "the error should name the other releases: {}",
        refused.stderr
    );
    let after = env.ls().await;
    assert_eq!(
        service(&after, "hello")["revision"],
        service(&before, "hello")["revision"]
    );
    assert_eq!(roles(&after, "hello"), roles(&before, "hello"));
    for version in ["1.0.0", "2.0.0", "3.0.0"] {
        assert_eq!(
            pids(&after, "hello", version),
            pids(&before, "hello", version)
        );
    }
    assert_eq!(env.history("hello").await.as_array().map(Vec::len), Some(3));

    let shadow = pids(&before, "hello", "2.0.0");
    env.cli(&["kill", "hello", "2.0.0"]).await.ok();
    env.eventually(
        "the shadow's processes are gone",
        Duration::from_secs(15),
        || {
            let shadow = shadow.clone();
            async move { shadow.iter().all(|p| !pid_alive(*p)) }
        },
    )
    .await;
    let standby = pids(&before, "hello", "3.0.0");
    env.cli(&["kill", "hello", "3.0.0"]).await.ok();
    env.eventually(
        "the standby's processes are gone",
        Duration::from_secs(15),
        || {
            let standby = standby.clone();
            async move { standby.iter().all(|p| !pid_alive(*p)) }
        },
    )
    .await;
    let ls = env.ls().await;
    assert_eq!(roles(&ls, "hello"), vec![triple("1.0.0", "main", "ready")]);
    let (status, version, _) = env.get("/services/hello/").await;
    assert_eq!((status, version.as_str()), (200, "1.0.0"));
    let (status, _, _) = env.get("/services/hello_2.0.0/").await;
    assert_eq!(status, 404, "a killed release is no longer reachable");

    let main = pids(&ls, "hello", "1.0.0");
    env.cli(&["kill", "hello", "1.0.0"]).await.ok();
    env.eventually(
        "the main's processes are gone",
        Duration::from_secs(15),
        || {
            let main = main.clone();
            async move { main.iter().all(|p| !pid_alive(*p)) }
        },
    )
    .await;
    assert_eq!(env.ls().await, serde_json::json!([]));
    let (status, _, body) = env.get("/services/hello/").await;
    assert_eq!(
        status, 503,
        "a service without releases has no main: {body}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_all_stops_every_release_and_the_service_answers_503() {
    let env = Env::start().await;
    env.deploy("hello", "1.0.0", &[], &[]).await.ok();
    env.deploy("hello", "2.0.0", &[], &[]).await.ok();
    env.deploy("hello", "3.0.0", &["--standby"], &[]).await.ok();
    let before = env.ls().await;
    let all: Vec<u64> = ["1.0.0", "2.0.0", "3.0.0"]
        .iter()
        .flat_map(|v| pids(&before, "hello", v))
        .collect();

    let unconfirmed = env.cli(&["kill", "hello", "--all"]).await.failed();
    assert!(
        unconfirmed.stderr.contains("--yes"),
        "{}",
        unconfirmed.stderr
    );
    assert_eq!(roles(&env.ls().await, "hello"), roles(&before, "hello"));

    env.cli(&["kill", "hello", "--all", "--yes"]).await.ok();
    env.eventually(
        "every release's processes are gone",
        Duration::from_secs(15),
        || {
            let all = all.clone();
            async move { all.iter().all(|p| !pid_alive(*p)) }
        },
    )
    .await;
    assert!(env.instance_pids().is_empty(), "{:?}", env.instance_pids());
    assert_eq!(env.ls().await, serde_json::json!([]));
    let (status, _, body) = env.get("/services/hello/").await;
    assert_eq!(status, 503, "{body}");
    let (status, _, body) = env.get("/services/hello_1.0.0/").await;
    assert_eq!(status, 404, "{body}");
    let history = env.history("hello").await;
    assert_eq!(history[0]["number"], 4);
    assert_eq!(history[0]["action"], "kill --all");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_release_drains_its_in_flight_requests_first() {
    // The instance ignores SIGTERM and serve escalates to SIGKILL quickly,
    // so the request survives only if serve waits for it before stopping.
    let env = Env::start_with(&["--stop-grace", "200ms"]).await;
    env.deploy("hello", "1.0.0", &[], &[]).await.ok();
    env.deploy(
        "hello",
        "2.0.0",
        &[],
        &["--latency-ms", "1500", "--ignore-sigterm"],
    )
    .await
    .ok();
    let doomed = pids(&env.ls().await, "hello", "2.0.0");

    let slow = spawn_get(env.proxy(), "/services/hello_2.0.0/");
    env.wait_in_flight("hello", "2.0.0", 1).await;
    env.cli(&["kill", "hello", "2.0.0"]).await.ok();

    let (status, version, body) = slow
        .await
        .expect("slow request task")
        .expect("slow request");
    assert_eq!((status, version.as_str()), (200, "2.0.0"), "{body}");
    let body: Value = serde_json::from_str(&body).expect("hello-server answers JSON");
    assert_eq!(body["version"], "2.0.0");
    env.eventually(
        "the killed release's processes are gone",
        Duration::from_secs(15),
        || {
            let doomed = doomed.clone();
            async move { doomed.iter().all(|p| !pid_alive(*p)) }
        },
    )
    .await;
    assert_eq!(
        roles(&env.ls().await, "hello"),
        vec![triple("1.0.0", "main", "ready")]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn history_lists_every_change_and_rollback_restores_earlier_revisions() {
    let began = now_millis();
    let env = Env::start().await;
    env.deploy("hello", "1.0.0", &[], &[]).await.ok();
    env.deploy("hello", "2.0.0", &[], &[]).await.ok();
    let killed = pids(&env.ls().await, "hello", "1.0.0");
    env.cli(&["assign", "hello", "2.0.0", "--yes"]).await.ok();
    env.cli(&["kill", "hello", "1.0.0"]).await.ok();
    env.eventually(
        "the killed release's processes are gone",
        Duration::from_secs(15),
        || {
            let killed = killed.clone();
            async move { killed.iter().all(|p| !pid_alive(*p)) }
        },
    )
    .await;

    let history = env.history("hello").await;
    let revisions = history.as_array().expect("history is a list");
    assert_eq!(
        numbered_actions(&history),
        vec![
            (4, "kill 1.0.0".to_owned()),
            (3, "assign 2.0.0 as main (was 1.0.0)".to_owned()),
            (2, "deploy 2.0.0 as shadow".to_owned()),
            (1, "deploy 1.0.0 as main".to_owned()),
        ]
    );
    let mut last_at = u64::MAX;
    for revision in revisions {
        assert_eq!(revision["actor"], expected_actor(), "{revision:#}");
        let at = revision["at"].as_u64().expect("at is unix ms");
        assert!(
            at >= began && at <= now_millis() && at <= last_at,
            "{revision:#}"
        );
        last_at = at;
    }

    // Unknown revisions: refused with a clear error, nothing changes.
    let ls_before = env.ls().await;
    for bad in ["99", "0"] {
        let run = env.cli(&["rollback", "hello", bad]).await.failed();
        assert!(
            run.stderr.contains(&format!("no revision {bad}")),
            "rollback to {bad}: {}",
            run.stderr
        );
    }
    let run = env.cli(&["rollback", "hello", "4"]).await.failed();
    assert!(
        run.stderr.contains("already at revision 4"),
        "{}",
        run.stderr
    );
    assert_eq!(env.history("hello").await, history);
    let ls_after = env.ls().await;
    assert_eq!(roles(&ls_after, "hello"), roles(&ls_before, "hello"));
    assert_eq!(
        pids(&ls_after, "hello", "2.0.0"),
        pids(&ls_before, "hello", "2.0.0")
    );

    // Back to revision 2: 1.0.0 was killed, so it starts again from its
    // stored spec, and is ready before it takes traffic.
    let load = start_load(&env, "/services/hello/", 4);
    load.run_for(32, WAIT).await;
    env.cli(&["rollback", "hello", "2"]).await.ok();
    load.run_for(32, WAIT).await;
    let samples = load.finish().await;
    let failed = failures(samples.iter().map(|s| &s.result));
    assert!(
        failed.is_empty(),
        "{} of {} requests failed during the rollback, e.g. {:?}",
        failed.len(),
        samples.len(),
        &failed[..failed.len().min(5)]
    );

    let ls = env.ls().await;
    assert_eq!(service(&ls, "hello")["revision"], 5);
    assert_eq!(service(&ls, "hello")["main"], "1.0.0");
    assert_eq!(
        roles(&ls, "hello"),
        vec![
            triple("1.0.0", "main", "ready"),
            triple("2.0.0", "shadow", "ready"),
        ]
    );
    let restarted = pids(&ls, "hello", "1.0.0");
    assert!(
        restarted
            .iter()
            .all(|p| !killed.contains(p) && pid_alive(*p)),
        "1.0.0 should run as new processes: was {killed:?}, now {restarted:?}"
    );
    let history = env.history("hello").await;
    assert_eq!(history[0]["number"], 5);
    assert_eq!(history[0]["action"], "rollback to 2");
    assert_eq!(
        release_roles(&history[0]),
        release_roles(&history[3]),
        "revision 5 should route as revision 2: {history:#}"
    );
    let (status, version, _) = env.get("/services/hello/").await;
    assert_eq!((status, version.as_str()), (200, "1.0.0"));
    let (status, version, _) = env.get("/services/hello_2.0.0/").await;
    assert_eq!((status, version.as_str()), (200, "2.0.0"));

    // Plain `rollback` goes back to the revision before the current one
    // (4: 2.0.0 alone), so 1.0.0 is drained and stopped again.
    env.cli(&["rollback", "hello"]).await.ok();
    let ls = env.ls().await;
    assert_eq!(service(&ls, "hello")["revision"], 6);
    assert_eq!(roles(&ls, "hello"), vec![triple("2.0.0", "main", "ready")]);
    let (status, version, _) = env.get("/services/hello/").await;
    assert_eq!((status, version.as_str()), (200, "2.0.0"));
    env.eventually("1.0.0 stopped again", Duration::from_secs(15), || {
        let restarted = restarted.clone();
        async move { restarted.iter().all(|p| !pid_alive(*p)) }
    })
    .await;
    let history = env.history("hello").await;
    assert_eq!(history[0]["action"], "rollback to 4");
    assert_eq!(history.as_array().map(Vec::len), Some(6));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restarted_serve_adopts_running_instances_and_keeps_committed_state() {
    let mut env = Env::start().await;
    env.deploy("hello", "1.0.0", &[], &[]).await.ok();
    env.deploy("hello", "2.0.0", &[], &[]).await.ok();
    env.cli(&["assign", "hello", "2.0.0", "--yes"]).await.ok();
    let (status, version, _) = env.get("/services/hello/").await;
    assert_eq!((status, version.as_str()), (200, "2.0.0"));

    let ls_before = env.ls().await;
    let history_before = env.history("hello").await;
    let pids_before: Vec<(String, Vec<u64>)> = ["1.0.0", "2.0.0"]
        .iter()
        .map(|v| (v.to_string(), pids(&ls_before, "hello", v)))
        .collect();
    let processes_before = env.instance_pids();
    let (proxy_addr, admin_addr) = (
        env.serve().proxy_addr.clone(),
        env.serve().admin_addr.clone(),
    );

    env.kill9().await;
    for (version, pids) in &pids_before {
        assert!(
            pids.iter().all(|p| pid_alive(*p)),
            "{version} should outlive serve: {pids:?}"
        );
    }
    env.launch(&proxy_addr, &admin_addr).await;
    assert_eq!(env.serve().proxy_addr, proxy_addr);

    env.all_ready(Duration::from_secs(30)).await;
    let ls = env.ls().await;
    assert_eq!(roles(&ls, "hello"), roles(&ls_before, "hello"));
    assert_eq!(service(&ls, "hello")["main"], "2.0.0");
    assert_eq!(
        service(&ls, "hello")["revision"],
        service(&ls_before, "hello")["revision"]
    );
    for (version, pids_then) in &pids_before {
        assert_eq!(&pids(&ls, "hello", version), pids_then, "{version}");
        assert!(pids_then.iter().all(|p| pid_alive(*p)));
        let instances = release(&ls, "hello", version)["instances"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        assert!(
            instances
                .iter()
                .all(|i| i["adopted"] == true && i["restarts"] == 0),
            "{version} should be adopted, not restarted: {instances:#?}"
        );
    }
    let processes = env.instance_pids();
    assert_eq!(processes, processes_before, "no instance was started anew");
    assert_eq!(env.history("hello").await, history_before);

    let (status, version, _) = env.get("/services/hello/").await;
    assert_eq!((status, version.as_str()), (200, "2.0.0"));
    let (status, version, _) = env.get("/services/hello_1.0.0/").await;
    assert_eq!((status, version.as_str()), (200, "1.0.0"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn release_started_again_while_its_old_instance_drains_is_adopted_after_restart() {
    let mut env = Env::start().await;
    env.deploy("hello", "1.0.0", &[], &[]).await.ok();
    env.deploy("hello", "2.0.0", &[], &["--latency-ms", "3000"])
        .await
        .ok();
    let old = pids(&env.ls().await, "hello", "2.0.0");

    // Kill 2.0.0 while a request keeps it draining, and meanwhile roll
    // back to revision 2, which starts 2.0.0 again.
    let slow = spawn_get(env.proxy(), "/services/hello_2.0.0/");
    env.wait_in_flight("hello", "2.0.0", 1).await;
    let kill = env.cli(&["kill", "hello", "2.0.0"]);
    let rollback = async {
        env.eventually("the kill is committed", Duration::from_secs(30), || async {
            env.history("hello").await[0]["action"] == "kill 2.0.0"
        })
        .await;
        env.cli(&["rollback", "hello", "2"]).await
    };
    let (kill, rollback) = tokio::join!(kill, rollback);
    kill.ok();
    rollback.ok();
    let (status, version, _) = slow
        .await
        .expect("slow request task")
        .expect("slow request");
    assert_eq!((status, version.as_str()), (200, "2.0.0"));
    env.eventually("the old 2.0.0 is gone", Duration::from_secs(15), || {
        let old = old.clone();
        async move { old.iter().all(|p| !pid_alive(*p)) }
    })
    .await;
    let ls = env.ls().await;
    let new = pids(&ls, "hello", "2.0.0");
    assert!(new.iter().all(|p| !old.contains(p) && pid_alive(*p)));
    let processes_before = env.instance_pids();

    env.kill9_and_restart().await;
    env.all_ready(Duration::from_secs(30)).await;
    let ls = env.ls().await;
    assert_eq!(pids(&ls, "hello", "2.0.0"), new, "2.0.0 should be adopted");
    let processes = env.instance_pids();
    assert_eq!(
        processes, processes_before,
        "no instance started anew or left over"
    );
}
