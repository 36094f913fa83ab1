//! A fleet: several real serves sharing their desired state in a real
//! etcd cluster (3 members on loopback). A change made through any node
//! is routed by every node; a stale base is refused across nodes; the
//! nodes list each other and elect one leader, another when it dies; the
//! loss of one etcd member changes nothing.

mod support;

/// The error `serve --store etcd://…` gives when it cannot use that
/// store: without the feature it says how to build with it; with it, that
/// nothing answers there, naming the store.
#[tokio::test]
async fn serve_refuses_an_etcd_store_it_cannot_use_saying_why() {
    let dir = tempfile::tempdir().expect("temp dir");
    // Nothing listens on port 1.
    let run = support::serves::serve_exits(
        &dir.path().join("state"),
        &["--store", "etcd://127.0.0.1:1/x"],
    )
    .await;
    let run = run.failed();
    if cfg!(feature = "etcd") {
        assert!(
            run.stderr.contains("etcd://127.0.0.1:1/x") && run.stderr.contains("cannot be reached"),
            "{}",
            run.stderr
        );
    } else {
        assert!(
            run.stderr.contains("--features etcd") && run.stderr.contains("protobuf-compiler"),
            "{}",
            run.stderr
        );
    }
}

#[cfg(feature = "etcd")]
mod on_etcd {
    use std::time::Duration;

    use super::support;
    use support::Env;
    use support::etcd::EtcdCluster;
    use support::fleet::{FOLLOW, leader_of, leaders, node, nodes, routes_to};

    /// The service's current revision as `env` has it.
    async fn revision(env: &Env, service: &str) -> u64 {
        let ls = env.ls().await;
        support::listing::service(&ls, service)["revision"]
            .as_u64()
            .expect("a revision number")
    }

    /// POST a host for `service` through `env`'s admin API, based on `base`.
    async fn add_host(env: &Env, service: &str, host: &str, base: u64) -> (u16, serde_json::Value) {
        let reply = support::reply(
            env.http
                .post(format!("{}/v1/services/{service}/hosts", env.admin()))
                .json(&serde_json::json!({ "host": host, "base_revision": base })),
            Duration::from_secs(30),
        )
        .await;
        (reply.status, reply.json())
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_deploy_through_one_node_and_an_assign_through_another_are_routed_by_every_node() {
        let Some(etcd) = EtcdCluster::start("fleet_routes_every_change", 3) else {
            return;
        };
        let url = etcd.url("/routes");
        let one = node(&url, "one").await;
        let two = node(&url, "two").await;

        one.deploy("hello", "1.0.0", &[], &[]).await.ok();
        routes_to(&one, "hello", "1.0.0").await;
        routes_to(&two, "hello", "1.0.0").await;

        // 2.0.0 enters as a shadow through node one; node two starts its
        // own instances of it, then assigns it.
        one.deploy("hello", "2.0.0", &[], &[]).await.ok();
        two.eventually("node two runs 2.0.0 ready", FOLLOW, || async {
            let ls = two.ls().await;
            support::listing::roles(&ls, "hello")
                .contains(&support::listing::pair("2.0.0", "shadow"))
                && support::listing::all_ready(&ls)
        })
        .await;
        two.cli(&["assign", "hello", "2.0.0", "-y"]).await.ok();
        routes_to(&two, "hello", "2.0.0").await;
        routes_to(&one, "hello", "2.0.0").await;

        // Both nodes tell one history.
        let (h1, h2) = (one.history("hello").await, two.history("hello").await);
        assert_eq!(
            support::listing::numbered_actions(&h1),
            support::listing::numbered_actions(&h2)
        );
        assert_eq!(revision(&one, "hello").await, 3);

        // A pause through node one holds node two's traffic too, and a
        // resume through node two lets node one's go.
        one.cli(&["pause", "hello"]).await.ok();
        two.eventually("node two holds hello's traffic", FOLLOW, || async {
            two.cli(&["ls", "hello"])
                .await
                .ok()
                .stdout
                .contains("paused")
        })
        .await;
        two.cli(&["resume", "hello"]).await.ok();
        one.eventually("node one lets hello's traffic go", FOLLOW, || async {
            !one.cli(&["ls", "hello"])
                .await
                .ok()
                .stdout
                .contains("paused")
        })
        .await;
        routes_to(&one, "hello", "2.0.0").await;

        // A kill through node two stops node one's instances of 1.0.0 too.
        two.cli(&["kill", "hello", "1.0.0", "-y"]).await.ok();
        one.eventually("node one no longer runs 1.0.0", FOLLOW, || async {
            let (status, _, _) = one.get("/services/hello_1.0.0/").await;
            status == 404
        })
        .await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_stale_base_is_refused_across_nodes_and_one_of_two_racing_changes_wins() {
        let Some(etcd) = EtcdCluster::start("fleet_stale_base", 3) else {
            return;
        };
        let url = etcd.url("/stale");
        let one = node(&url, "one").await;
        let two = node(&url, "two").await;
        one.deploy("hello", "1.0.0", &[], &[]).await.ok();
        routes_to(&two, "hello", "1.0.0").await;
        let base = revision(&two, "hello").await;

        let (status, _) = add_host(&two, "hello", "b.test", base).await;
        assert_eq!(status, 200);
        let (status, body) = add_host(&one, "hello", "a.test", base).await;
        assert_eq!(status, 409, "{body}");
        assert_eq!(body["current_revision"], base + 1, "{body}");

        // Two changes on one base through two nodes at once: one wins.
        let base = base + 1;
        let (first, second) = tokio::join!(
            add_host(&one, "hello", "c.test", base),
            add_host(&two, "hello", "d.test", base)
        );
        let mut statuses = [first.0, second.0];
        statuses.sort_unstable();
        assert_eq!(statuses, [200, 409], "{first:?} {second:?}");
        one.eventually("both nodes at the same revision", FOLLOW, || async {
            revision(&one, "hello").await == base + 1 && revision(&two, "hello").await == base + 1
        })
        .await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn nodes_list_each_other_with_one_leader_and_another_leads_when_it_dies() {
        let Some(etcd) = EtcdCluster::start("fleet_nodes_and_leader", 3) else {
            return;
        };
        let url = etcd.url("/nodes");
        let mut envs = [node(&url, "one").await, node(&url, "two").await];
        envs[0]
            .eventually("both nodes listed, one leading", FOLLOW, || async {
                let listed = nodes(&envs[0]).await;
                listed.len() == 2 && leaders(&listed).len() == 1
            })
            .await;
        let listed = nodes(&envs[1]).await;
        let names: Vec<&str> = listed.iter().filter_map(|n| n["name"].as_str()).collect();
        assert_eq!(names, ["one", "two"]);
        let this: Vec<&str> = listed
            .iter()
            .filter(|n| n["this"] == true)
            .filter_map(|n| n["name"].as_str())
            .collect();
        assert_eq!(this, ["two"]);
        assert!(
            listed
                .iter()
                .all(|n| n["version"] == env!("CARGO_PKG_VERSION")),
            "{listed:?}"
        );
        let table = envs[0].cli(&["nodes"]).await.ok().stdout;
        assert!(
            table.contains("leader") && table.contains("(this)"),
            "{table}"
        );

        // The leader refuses nothing; the other refuses a rollout, naming it.
        let leader = leaders(&listed).remove(0);
        let (dead, alive) = if leader == "one" { (0, 1) } else { (1, 0) };
        envs[alive].deploy("hello", "1.0.0", &[], &[]).await.ok();
        envs[alive].deploy("hello", "2.0.0", &[], &[]).await.ok();
        let refused = envs[alive]
            .cli(&["rollout", "hello", "2.0.0", "--steps", "50"])
            .await
            .failed();
        assert!(
            refused.stderr.contains(&format!("{leader} (admin API")),
            "{}",
            refused.stderr
        );

        // The leader dies: within its lease another node leads.
        envs[dead].kill9().await;
        let survivor = if alive == 0 { "one" } else { "two" };
        envs[alive]
            .eventually("the survivor leads alone", FOLLOW, || async {
                let listed = nodes(&envs[alive]).await;
                listed.len() == 1 && leaders(&listed) == [survivor]
            })
            .await;
        // The dead node's instances were orphaned by kill -9.
        for pid in envs[dead].instance_pids() {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid as i32),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn with_one_of_three_etcd_members_stopped_changes_still_work() {
        let Some(mut etcd) = EtcdCluster::start("fleet_one_member_down", 3) else {
            return;
        };
        let url = etcd.url("/quorum");
        let one = node(&url, "one").await;
        let two = node(&url, "two").await;
        one.deploy("hello", "1.0.0", &[], &[]).await.ok();
        routes_to(&two, "hello", "1.0.0").await;

        etcd.stop_member(0);
        one.deploy("hello", "2.0.0", &["--promote"], &[]).await.ok();
        routes_to(&one, "hello", "2.0.0").await;
        routes_to(&two, "hello", "2.0.0").await;

        etcd.restart_member(0);
        two.cli(&["assign", "hello", "1.0.0", "-y"]).await.ok();
        routes_to(&one, "hello", "1.0.0").await;
    }

    /// The rollout of hello's state as `env` tells it: `running`,
    /// `paused`, `succeeded`, …
    async fn rollout_state(env: &Env) -> String {
        support::fleet::rollout_status(env, "hello").await["state"]["status"]["state"]
            .as_str()
            .unwrap_or_default()
            .to_owned()
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_rollout_the_leader_left_is_finished_once_by_the_next_leader() {
        let Some(etcd) = EtcdCluster::start("fleet_rollout_takeover", 3) else {
            return;
        };
        let url = etcd.url("/takeover");
        let mut envs = [node(&url, "one").await, node(&url, "two").await];
        let lead = leader_of(&envs).await;
        let next = 1 - lead;
        envs[lead].deploy("hello", "1.0.0", &[], &[]).await.ok();
        envs[lead].deploy("hello", "2.0.0", &[], &[]).await.ok();

        // A rollout that stops at a pause step, driven by the leader.
        let plan = envs[lead].dir.path().join("plan.toml");
        std::fs::write(
            &plan,
            r#"
            version = "2.0.0"
            steps = [
                { step = "set-weight", percent = 30 },
                { step = "pause" },
                { step = "set-weight", percent = 100 },
            ]
            "#,
        )
        .expect("write the plan");
        let plan = plan.display().to_string();
        envs[lead]
            .cli(&["rollout", "hello", "2.0.0", "--plan", &plan])
            .await
            .ok();
        envs[next]
            .eventually("the rollout waits at its pause", FOLLOW, || async {
                rollout_state(&envs[next]).await == "paused"
            })
            .await;

        // The leader dies in the middle of the rollout.
        envs[lead].kill9().await;
        let survivor = if next == 0 { "one" } else { "two" };
        envs[next]
            .eventually("the other node leads", FOLLOW, || async {
                leaders(&nodes(&envs[next]).await) == [survivor]
            })
            .await;
        envs[next].cli(&["resume", "hello"]).await.ok();
        envs[next]
            .eventually("the rollout succeeds", FOLLOW, || async {
                rollout_state(&envs[next]).await == "succeeded"
            })
            .await;
        routes_to(&envs[next], "hello", "2.0.0").await;

        // Each step ran once, and the promotion happened once.
        let run = envs[next].cli(&["events", "hello", "--json"]).await.ok();
        let events: Vec<serde_json::Value> =
            serde_json::from_str(&run.stdout).expect("events --json is JSON");
        let of = |kind: &str| -> Vec<String> {
            events
                .iter()
                .filter(|e| e["kind"] == kind)
                .filter_map(|e| e["message"].as_str().map(str::to_owned))
                .collect()
        };
        let mut steps = of("step");
        steps.sort();
        assert_eq!(steps.len(), 2, "{steps:?}");
        assert!(
            steps[0].starts_with("step 1 done") && steps[1].starts_with("step 3 done"),
            "{steps:?}"
        );
        assert_eq!(of("promoted").len(), 1, "{events:?}");
        assert_eq!(of("rollout-started").len(), 1, "{events:?}");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn without_an_etcd_quorum_writes_are_refused_naming_the_store_and_every_node_keeps_routing()
     {
        let Some(mut etcd) = EtcdCluster::start("fleet_quorum_lost", 3) else {
            return;
        };
        let url = etcd.url("/lost");
        let one = node(&url, "one").await;
        let two = node(&url, "two").await;
        one.deploy("hello", "1.0.0", &[], &[]).await.ok();
        routes_to(&two, "hello", "1.0.0").await;
        let base = revision(&one, "hello").await;

        etcd.stop_member(0);
        etcd.stop_member(1);
        let (status, body) = add_host(&one, "hello", "a.test", base).await;
        assert_eq!(status, 503, "{body}");
        let error = body["error"].as_str().unwrap_or_default();
        assert!(
            error.contains("/lost") && error.contains("cannot be reached"),
            "{body}"
        );
        // Both nodes still route with what they had.
        for env in [&one, &two] {
            let (status, served, _) = env.get("/services/hello/").await;
            assert_eq!((status, served.as_str()), (200, "1.0.0"));
        }
        assert_eq!(revision(&two, "hello").await, base);

        // With the quorum back, a change through one node reaches the other.
        etcd.restart_member(0);
        etcd.restart_member(1);
        one.eventually("writes work again", FOLLOW, || async {
            add_host(&one, "hello", "a.test", base).await.0 == 200
        })
        .await;
        two.eventually("node two took the change", FOLLOW, || async {
            revision(&two, "hello").await == base + 1
        })
        .await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_node_that_restarts_routes_the_changes_it_missed_from_its_first_answer() {
        let Some(etcd) = EtcdCluster::start("fleet_restart_catches_up", 3) else {
            return;
        };
        let url = etcd.url("/restart");
        let one = node(&url, "one").await;
        let mut two = node(&url, "two").await;
        one.deploy("hello", "1.0.0", &[], &[]).await.ok();
        routes_to(&two, "hello", "1.0.0").await;
        let (proxy, admin) = (
            two.serve().proxy_addr.clone(),
            two.serve().admin_addr.clone(),
        );

        // Node two is down while node one changes the main.
        two.stop().await;
        one.deploy("hello", "2.0.0", &["--promote"], &[]).await.ok();

        // Started again, its very first answers already route by the
        // change it missed.
        two.launch(&proxy, &admin).await;
        let (status, served, _) = two.get("/services/hello/").await;
        assert_eq!(
            (status, served.as_str()),
            (200, "2.0.0"),
            "{}",
            two.serve_log()
        );
        assert_eq!(revision(&two, "hello").await, revision(&one, "hello").await);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn switches_through_either_node_fail_no_request_through_any_node() {
        let Some(etcd) = EtcdCluster::start("fleet_switches_under_load", 3) else {
            return;
        };
        let url = etcd.url("/switches");
        let one = node(&url, "one").await;
        let two = node(&url, "two").await;
        one.deploy("hello", "1.0.0", &[], &[]).await.ok();
        one.deploy("hello", "2.0.0", &["--standby"], &[]).await.ok();
        two.eventually("node two runs both releases ready", FOLLOW, || async {
            let ls = two.ls().await;
            let known = ls
                .as_array()
                .is_some_and(|services| services.iter().any(|s| s["name"] == "hello"));
            known
                && support::listing::roles(&ls, "hello").len() == 2
                && support::listing::all_ready(&ls)
        })
        .await;

        // Clients that never retry, through both nodes, during 100
        // switches made alternately through each node.
        let loads = [
            support::load::counting_gets(one.proxy(), "/services/hello/", 2),
            support::load::counting_gets(two.proxy(), "/services/hello/", 2),
        ];
        let mut number = revision(&one, "hello").await;
        for switch in 0..100 {
            let (through, version) = if switch % 2 == 0 {
                (&two, "2.0.0")
            } else {
                (&one, "1.0.0")
            };
            through
                .eventually("the node took the last switch", FOLLOW, || async {
                    revision(through, "hello").await == number
                })
                .await;
            through.cli(&["assign", "hello", version, "-y"]).await.ok();
            number += 1;
        }
        routes_to(&one, "hello", "1.0.0").await;
        routes_to(&two, "hello", "1.0.0").await;
        let history = support::listing::numbered_actions(&one.history("hello").await);
        assert_eq!(
            history.first().map(|(n, _)| *n),
            Some(number),
            "{history:?}"
        );
        for load in loads {
            load.finish_without_failures(20, Duration::from_secs(30))
                .await;
        }
    }

    /// `switchyard store copy --state-dir DIR --to URL`.
    fn store_copy(state_dir: &std::path::Path, url: &str) -> support::Run {
        let out = std::process::Command::new(support::SWITCHYARD)
            .args(["store", "copy", "--state-dir"])
            .arg(state_dir)
            .args(["--to", url])
            .output()
            .expect("run store copy");
        support::Run::from(out)
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_state_directory_copied_into_etcd_becomes_the_first_node_of_a_fleet() {
        let Some(etcd) = EtcdCluster::start("fleet_store_copy", 1) else {
            return;
        };
        let url = etcd.url("/moved");
        let mut single = Env::start().await;
        single.deploy("hello", "1.0.0", &[], &[]).await.ok();
        single
            .deploy("hello", "2.0.0", &["--standby"], &[])
            .await
            .ok();
        single.cli(&["assign", "hello", "2.0.0", "-y"]).await.ok();
        single.cli(&["pause", "hello"]).await.ok();
        single.cli(&["resume", "hello"]).await.ok();
        let before = support::listing::numbered_actions(&single.history("hello").await);
        single.stop().await;

        let copied = store_copy(&single.state_dir, &url).ok();
        assert!(
            copied
                .stdout
                .contains("copied 1 services (3 revisions, 2 releases"),
            "{}",
            copied.stdout
        );
        // Into a prefix that holds services, nothing is copied.
        let again = store_copy(&single.state_dir, &url).failed();
        assert!(
            again.stderr.contains("holds services already (hello)"),
            "{}",
            again.stderr
        );

        let receiver = support::webhooks::WebhookReceiver::start().await;
        let one = support::fleet::node_with(&url, "one", &["--webhook", &receiver.url], &[]).await;
        routes_to(&one, "hello", "2.0.0").await;
        let (status, served, _) = one.get("/services/hello_1.0.0/").await;
        assert_eq!((status, served.as_str()), (200, "1.0.0"));
        assert_eq!(
            support::listing::numbered_actions(&one.history("hello").await),
            before
        );

        // The copied events were posted by the serve they come from: the
        // fleet's leader posts only what happens after.
        let copied = support::fleet::events_of(&one, "hello", "traffic-resumed").await;
        assert_eq!(copied.len(), 1, "the events are copied: {copied:?}");
        one.cli(&["pause", "hello"]).await.ok();
        one.eventually("the new event is posted", FOLLOW, || async {
            !receiver.bodies().is_empty()
        })
        .await;
        let kinds: Vec<_> = receiver
            .bodies()
            .iter()
            .map(|b| b["kind"].as_str().unwrap_or_default().to_owned())
            .collect();
        assert_eq!(kinds, ["traffic-paused"], "only the new event is posted");
    }
}
