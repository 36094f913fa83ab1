//! Readiness across a fleet: real serves on a real etcd cluster (3
//! members on loopback). A deploy through one node returns only once every
//! live node has the release ready and routes by it; a release that fails
//! on one node only fails the deploy naming that node, with its log lines;
//! a node killed with `kill -9` drops out within its lease and is no
//! longer waited for; a rollout whose candidate fails on another node rolls
//! back; status adds up every node's traffic; an external upstream is
//! health-checked and routed by every node.

#![cfg(feature = "etcd")]

mod support;

use support::etcd::EtcdCluster;
use support::fleet::{FOLLOW, node, node_with, nodes, reported, wait_for_nodes};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deploy_through_one_node_returns_once_every_node_has_it_ready() {
    let Some(etcd) = EtcdCluster::start("fleet_ready_deploy", 3) else {
        return;
    };
    let url = etcd.url("/ready");
    let one = node(&url, "one").await;
    let two = node(&url, "two").await;
    wait_for_nodes(&one, &["one", "two"]).await;

    one.deploy("hello", "1.0.0", &["--replicas", "2"], &[])
        .await
        .ok();
    // At the moment deploy returns, node two has both instances healthy
    // and routes by the new revision.
    let listed = nodes(&two).await;
    assert_eq!(
        reported(&listed, "two", "hello", "1.0.0"),
        Some((2, 2, "ready".to_owned())),
        "{listed:#?}"
    );
    let (status, served, _) = two.get("/services/hello/").await;
    assert_eq!((status, served.as_str()), (200, "1.0.0"));
    let table = one.cli(&["nodes"]).await.ok().stdout;
    assert!(table.contains("hello@1.0.0 2/2"), "{table}");

    // An emergency release straight to main: on a fleet it waits as
    // standby until every node has it ready, then becomes main.
    one.deploy("hello", "2.0.0", &["--promote"], &[]).await.ok();
    let (status, served, _) = two.get("/services/hello/").await;
    assert_eq!((status, served.as_str()), (200, "2.0.0"));
    let history = support::listing::numbered_actions(&two.history("hello").await);
    let actions: Vec<&str> = history.iter().map(|(_, a)| a.as_str()).collect();
    assert_eq!(
        actions[..2],
        [
            "assign 2.0.0 as main (was 1.0.0)",
            "deploy 2.0.0 as standby"
        ],
        "{history:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_release_that_crash_loops_on_one_node_fails_the_deploy_naming_that_node() {
    let Some(etcd) = EtcdCluster::start("fleet_ready_crash_loop", 3) else {
        return;
    };
    let url = etcd.url("/crash");
    let one = node(&url, "one").await;
    // Only node two's instances lack their database.
    let two = node_with(&url, "two", &[], &[("HELLO_DATABASE_MISSING", "/srv/db")]).await;
    wait_for_nodes(&one, &["one", "two"]).await;
    one.deploy("hello", "1.0.0", &[], &[]).await.ok();

    let script = format!(
        "if [ -n \"$HELLO_DATABASE_MISSING\" ]; then echo \"no database at $HELLO_DATABASE_MISSING\"; exit 3; fi; exec {} --port \"$PORT\" --version 2.0.0",
        support::HELLO
    );
    let failed = one
        .cli(&[
            "deploy", "hello", "2.0.0", "--health", "/healthz", "--", "sh", "-c", &script,
        ])
        .await
        .failed();
    assert!(
        failed.stderr.contains("failed on node two")
            && failed.stderr.contains("crash loop")
            && failed.stderr.contains("no database at /srv/db"),
        "{}",
        failed.stderr
    );
    // The release is taken back on every node; main stays.
    for env in [&one, &two] {
        env.eventually("2.0.0 is gone from every node", FOLLOW, || async {
            let listed = nodes(env).await;
            ["one", "two"]
                .iter()
                .all(|n| reported(&listed, n, "hello", "2.0.0").is_none())
        })
        .await;
        let (status, served, _) = env.get("/services/hello/").await;
        assert_eq!((status, served.as_str()), (200, "1.0.0"));
    }
    let history = support::listing::numbered_actions(&one.history("hello").await);
    assert!(history[0].1.starts_with("withdraw 2.0.0"), "{history:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_killed_drops_out_within_its_lease_and_deploys_stop_waiting_for_it() {
    let Some(etcd) = EtcdCluster::start("fleet_ready_node_dies", 3) else {
        return;
    };
    let url = etcd.url("/dies");
    let one = node(&url, "one").await;
    let two = node(&url, "two").await;
    let mut three = node(&url, "three").await;
    wait_for_nodes(&one, &["one", "three", "two"]).await;
    one.deploy("hello", "1.0.0", &[], &[]).await.ok();
    let listed = nodes(&one).await;
    assert_eq!(
        reported(&listed, "three", "hello", "1.0.0"),
        Some((1, 1, "ready".to_owned())),
        "{listed:#?}"
    );

    three.kill9().await;
    for pid in three.instance_pids() {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(pid as i32),
            nix::sys::signal::Signal::SIGKILL,
        );
    }
    wait_for_nodes(&one, &["one", "two"]).await;

    // A deploy now waits for the two live nodes only: were it waiting for
    // node three, it would fail after its ready timeout naming it.
    one.deploy("hello", "2.0.0", &["--ready-timeout", "5s"], &[])
        .await
        .ok();
    let listed = nodes(&two).await;
    assert_eq!(
        reported(&listed, "two", "hello", "2.0.0"),
        Some((1, 1, "ready".to_owned())),
        "{listed:#?}"
    );
    two.cli(&["assign", "hello", "2.0.0", "-y"]).await.ok();
    one.eventually("node one routes to 2.0.0", FOLLOW, || async {
        let (status, served, _) = one.get("/services/hello/").await;
        status == 200 && served == "2.0.0"
    })
    .await;
}

/// `status hello --json` through `env`: (node, requests of its last
/// minute) of release `version`, and the fleet's total.
async fn minute_requests(env: &support::Env, version: &str) -> (Vec<(String, u64)>, u64) {
    let run = env.cli(&["status", "hello", "--json"]).await.ok();
    let releases: Vec<serde_json::Value> =
        serde_json::from_str(&run.stdout).expect("status --json is JSON");
    let release = releases
        .iter()
        .find(|r| r["version"] == version)
        .unwrap_or_else(|| panic!("{version} not in status: {releases:#?}"));
    let mut nodes: Vec<(String, u64)> = release["nodes"]
        .as_array()
        .expect("nodes")
        .iter()
        .map(|n| {
            (
                n["node"].as_str().unwrap_or_default().to_owned(),
                n["last_minute"]["requests"].as_u64().unwrap_or_default(),
            )
        })
        .collect();
    nodes.sort();
    let total = release["last_minute"]["requests"]
        .as_u64()
        .unwrap_or_default();
    (nodes, total)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_shows_each_nodes_traffic_and_the_fleet_total_as_their_sum() {
    let Some(etcd) = EtcdCluster::start("fleet_ready_status", 3) else {
        return;
    };
    let url = etcd.url("/status");
    let one = node(&url, "one").await;
    let two = node(&url, "two").await;
    wait_for_nodes(&one, &["one", "two"]).await;
    one.deploy("hello", "1.0.0", &[], &[]).await.ok();

    for _ in 0..5 {
        assert_eq!(one.get("/services/hello/").await.0, 200);
    }
    for _ in 0..3 {
        assert_eq!(two.get("/services/hello/").await.0, 200);
    }
    // Each node reports its traffic every few seconds; either node's
    // status shows both, and the total is their sum.
    for env in [&one, &two] {
        env.eventually("status shows both nodes' requests", FOLLOW, || async {
            minute_requests(env, "1.0.0").await
                == (vec![("one".to_owned(), 5), ("two".to_owned(), 3)], 8)
        })
        .await;
    }
    let table = one.cli(&["status", "hello", "--nodes"]).await.ok().stdout;
    assert!(
        table.contains("NODE")
            && table.contains("one")
            && table.contains("two")
            && table.contains("fleet"),
        "{table}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_release_not_ready_in_time_on_one_node_fails_the_deploy_naming_that_node() {
    let Some(etcd) = EtcdCluster::start("fleet_ready_timeout", 3) else {
        return;
    };
    let url = etcd.url("/timeout");
    let one = node(&url, "one").await;
    let two = node_with(&url, "two", &[], &[("HELLO_WAITS_FOR", "a database")]).await;
    wait_for_nodes(&one, &["one", "two"]).await;

    // On node two the instance runs but never answers its health check.
    let script = format!(
        "if [ -n \"$HELLO_WAITS_FOR\" ]; then echo \"waiting for $HELLO_WAITS_FOR\"; exec sleep 600; fi; exec {} --port \"$PORT\" --version 1.0.0",
        support::HELLO
    );
    let failed = one
        .cli(&[
            "deploy",
            "hello",
            "1.0.0",
            "--health",
            "/healthz",
            "--ready-timeout",
            "3s",
            "--",
            "sh",
            "-c",
            &script,
        ])
        .await
        .failed();
    assert!(
        failed.stderr.contains("failed on node two")
            && failed
                .stderr
                .contains("not healthy within its ready timeout of 3s")
            && failed.stderr.contains("waiting for a database"),
        "{}",
        failed.stderr
    );
    // Withdrawn from both nodes: no node runs it or routes to it.
    for env in [&one, &two] {
        env.eventually("1.0.0 is gone from every node", FOLLOW, || async {
            let listed = nodes(env).await;
            ["one", "two"]
                .iter()
                .all(|n| reported(&listed, n, "hello", "1.0.0").is_none())
        })
        .await;
        assert_eq!(env.get("/services/hello/").await.0, 503);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rollout_whose_candidate_fails_on_another_node_rolls_back_naming_it() {
    let Some(etcd) = EtcdCluster::start("fleet_ready_rollout", 3) else {
        return;
    };
    let url = etcd.url("/rollout");
    let crash_fast = ["--crash-limit", "2"];
    // Node one campaigns first, so it leads and drives the rollout.
    let one = node_with(&url, "one", &crash_fast, &[]).await;
    one.eventually("node one leads", FOLLOW, || async {
        nodes(&one)
            .await
            .iter()
            .any(|n| n["name"] == "one" && n["leader"] == true)
    })
    .await;
    // On node two the candidate's instances exit a few seconds after
    // they start, again and again.
    let two = node_with(&url, "two", &crash_fast, &[("HELLO_EXIT_AFTER", "10")]).await;
    wait_for_nodes(&one, &["one", "two"]).await;
    one.deploy("hello", "1.0.0", &[], &[]).await.ok();
    let script = format!(
        "exec {} --port \"$PORT\" --version 2.0.0 ${{HELLO_EXIT_AFTER:+--exit-after $HELLO_EXIT_AFTER}}",
        support::HELLO
    );
    one.cli(&[
        "deploy", "hello", "2.0.0", "--health", "/healthz", "--", "sh", "-c", &script,
    ])
    .await
    .ok();
    one.cli(&[
        "rollout",
        "hello",
        "2.0.0",
        "--steps",
        "20,100",
        "--interval",
        "60s",
    ])
    .await
    .ok();

    let status = || async {
        let run = one
            .cli(&["rollout", "status", "hello", "--json"])
            .await
            .ok();
        let view: serde_json::Value =
            serde_json::from_str(&run.stdout).expect("rollout status --json is JSON");
        (
            view["state"]["status"]["state"]
                .as_str()
                .unwrap_or_default()
                .to_owned(),
            view["state"]["status"]["reason"]
                .as_str()
                .unwrap_or_default()
                .to_owned(),
        )
    };
    // Two exits, ten seconds apart, make the crash loop.
    one.eventually("the rollout rolls back", 2 * FOLLOW, || async {
        status().await.0 == "failed"
    })
    .await;
    let reason = status().await.1;
    assert!(
        reason.contains("2.0.0 failed on node two") && reason.contains("crash loop"),
        "{reason}"
    );
    for env in [&one, &two] {
        env.eventually("main answers through every node", FOLLOW, || async {
            let (status, served, _) = env.get("/services/hello/").await;
            status == 200 && served == "1.0.0"
        })
        .await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rollback_to_a_stopped_release_returns_once_every_node_routes_it() {
    let Some(etcd) = EtcdCluster::start("fleet_ready_rollback", 3) else {
        return;
    };
    let url = etcd.url("/rollback");
    let one = node(&url, "one").await;
    let two = node(&url, "two").await;
    wait_for_nodes(&one, &["one", "two"]).await;

    one.deploy("hello", "1.0.0", &[], &[]).await.ok();
    one.deploy("hello", "2.0.0", &["--promote"], &[]).await.ok();
    // 1.0.0 leaves every node: a rollback to it starts it again everywhere.
    one.cli(&["kill", "hello", "1.0.0"]).await.ok();
    two.eventually("node two stops 1.0.0", FOLLOW, || async {
        reported(&nodes(&two).await, "two", "hello", "1.0.0").is_none()
    })
    .await;
    let history = support::listing::numbered_actions(&one.history("hello").await);
    let (first, _) = *history.last().expect("the first revision is listed");

    one.cli(&["rollback", "hello", &first.to_string()])
        .await
        .ok();
    // When the rollback returns, node two has started 1.0.0 again, made it
    // ready and routes by the rollback's revision.
    let (status, served, _) = two.get("/services/hello/").await;
    assert_eq!((status, served.as_str()), (200, "1.0.0"));
    assert_eq!(
        reported(&nodes(&two).await, "two", "hello", "1.0.0").map(|r| r.2),
        Some("ready".to_owned())
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_external_upstream_is_health_checked_and_routed_by_every_node() {
    let Some(etcd) = EtcdCluster::start("fleet_ready_external", 1) else {
        return;
    };
    let url = etcd.url("/external");
    let one = node(&url, "one").await;
    let two = node(&url, "two").await;
    wait_for_nodes(&one, &["one", "two"]).await;
    let wait = std::time::Duration::from_secs(10);
    let mut own = support::own_server::OwnServer::start("1.0.0", 0, wait).await;

    one.deploy_external("ext", "1.0.0", &[own.addr], &["--health-interval", "200ms"])
        .await
        .ok();
    // Deploy returned: node two checked the address itself and routes it.
    let listed = nodes(&two).await;
    assert_eq!(
        reported(&listed, "two", "ext", "1.0.0"),
        Some((1, 1, "ready".to_owned())),
        "{listed:#?}"
    );
    let (status, served, _) = two.get("/services/ext/").await;
    assert_eq!((status, served.as_str()), (200, "1.0.0"));

    // The address goes away: each node finds it by its own checks.
    own.kill().await;
    for name in ["one", "two"] {
        two.eventually(&format!("node {name} finds ext down"), FOLLOW, || async {
            reported(&nodes(&two).await, name, "ext", "1.0.0")
                .is_some_and(|(healthy, _, _)| healthy == 0)
        })
        .await;
    }
    // It answers again at the same address: both nodes route to it again.
    let _back = support::own_server::OwnServer::start("1.0.0", own.addr.port(), wait).await;
    for env in [&one, &two] {
        env.eventually("the address is routed to again", FOLLOW, || async {
            env.get("/services/ext/").await.0 == 200
        })
        .await;
    }
}
