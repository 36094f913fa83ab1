//! A fleet when things go wrong: a leader that lost its election while it
//! went on (its writes are fenced), nodes cut off from etcd (their reads
//! answer from what they have and say it may be stale), a watch that
//! missed compacted changes; certificates changed through one node,
//! which every node's TLS listener must serve without a restart; and
//! events recorded on any node, which the leader posts to the webhooks
//! once each, a new leader going on after the one killed.

mod support;

#[cfg(feature = "etcd")]
mod on_etcd {
    use std::time::Duration;

    use super::support;
    use support::etcd::EtcdCluster;
    use support::fleet::{
        FOLLOW, events_of, leader_of, leaders, node, node_with, nodes, rollout_status, routes_to,
    };
    use support::webhooks::WebhookReceiver;

    /// GET `path` of `env`'s admin API.
    async fn admin_get(env: &support::Env, path: &str) -> support::Reply {
        support::reply(
            env.http.get(format!("{}{path}", env.admin())),
            Duration::from_secs(30),
        )
        .await
    }

    /// The admin API reads a node answers while it may be stale.
    const READS: [&str; 5] = [
        "/v1/status",
        "/v1/services",
        "/v1/nodes",
        "/v1/services/hello/history",
        "/v1/services/hello/events",
    ];

    /// A rollout of hello to 2.0.0 through `env`: 30%, a timed pause of
    /// `pause` seconds, 100%.
    async fn rollout_with_pause(env: &support::Env, pause: u64) {
        let plan = env.dir.path().join("plan.toml");
        std::fs::write(
            &plan,
            format!(
                r#"
                version = "2.0.0"
                steps = [
                    {{ step = "set-weight", percent = 30 }},
                    {{ step = "pause", seconds = {pause} }},
                    {{ step = "set-weight", percent = 100 }},
                ]
                "#
            ),
        )
        .expect("write the plan");
        let plan = plan.display().to_string();
        env.cli(&["rollout", "hello", "2.0.0", "--plan", &plan])
            .await
            .ok();
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_leader_whose_election_key_is_gone_writes_no_step_and_the_next_leader_finishes_once()
    {
        let Some(etcd) = EtcdCluster::start("fleet_outage_fence", 3) else {
            return;
        };
        let url = etcd.url("/fence");
        let envs = [node(&url, "one").await, node(&url, "two").await];
        let lead = leader_of(&envs).await;
        let next = 1 - lead;
        envs[lead].deploy("hello", "1.0.0", &[], &[]).await.ok();
        envs[lead].deploy("hello", "2.0.0", &[], &[]).await.ok();
        rollout_with_pause(&envs[lead], 8).await;
        envs[next]
            .eventually("the rollout is in its pause step", FOLLOW, || async {
                rollout_status(&envs[next], "hello").await["state"]["step"] == 1
            })
            .await;

        // The leader's election key goes (as when its lease expires while
        // it is paused); it does not notice, and its rollout driver goes
        // on when the pause ends: each of its writes must be refused.
        support::fleet::delete_election_key(&etcd, "/fence");
        let survivor = if next == 0 { "one" } else { "two" };
        envs[next]
            .eventually("the other node leads", FOLLOW, || async {
                leaders(&nodes(&envs[next]).await) == [survivor]
            })
            .await;
        envs[next]
            .eventually("the rollout succeeds", FOLLOW, || async {
                rollout_status(&envs[next], "hello").await["state"]["status"]["state"]
                    == "succeeded"
            })
            .await;
        envs[lead]
            .eventually("the old leader's write was refused", FOLLOW, || async {
                envs[lead]
                    .serve_log()
                    .contains("does not hold the fleet's election any more")
            })
            .await;

        // Each step was recorded once, by one leader, and nothing rolled back.
        let mut steps = events_of(&envs[next], "hello", "step").await;
        steps.sort();
        assert_eq!(steps.len(), 3, "{steps:?}");
        for (i, step) in steps.iter().enumerate() {
            assert!(
                step.starts_with(&format!("step {} done", i + 1)),
                "{steps:?}"
            );
        }
        assert_eq!(events_of(&envs[next], "hello", "promoted").await.len(), 1);
        assert!(
            events_of(&envs[next], "hello", "rolled-back")
                .await
                .is_empty()
        );
        // The rollout's revisions: 30% once, 100% once, the promotion once.
        let history = envs[next].history("hello").await;
        let actors: Vec<String> = history
            .as_array()
            .expect("history is a list")
            .iter()
            .filter(|r| r["actor"] == "rollout")
            .filter_map(|r| r["action"].as_str().map(str::to_owned))
            .collect();
        assert_eq!(actors.len(), 3, "{history}");

        // The old leader joins again, with a new lease, as a follower.
        envs[next]
            .eventually("both nodes listed, one leading", FOLLOW, || async {
                let listed = nodes(&envs[next]).await;
                listed.len() == 2 && leaders(&listed) == [survivor]
            })
            .await;
        let refused = envs[lead]
            .cli(&["rollout", "hello", "1.0.0", "--steps", "50"])
            .await
            .failed();
        assert!(
            refused.stderr.contains(&format!("{survivor} (admin API")),
            "{}",
            refused.stderr
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn without_an_etcd_quorum_reads_answer_the_last_state_saying_it_may_be_stale() {
        let Some(mut etcd) = EtcdCluster::start("fleet_outage_stale_reads", 3) else {
            return;
        };
        let url = etcd.url("/stale-reads");
        let envs = [node(&url, "one").await, node(&url, "two").await];
        envs[0].deploy("hello", "1.0.0", &[], &[]).await.ok();
        routes_to(&envs[1], "hello", "1.0.0").await;
        let mut before = Vec::new();
        for env in &envs {
            env.eventually("both nodes listed", FOLLOW, || async {
                nodes(env).await.len() == 2
            })
            .await;
            let mut answers = Vec::new();
            for path in READS {
                let reply = admin_get(env, path).await;
                assert_eq!(reply.status, 200, "{path}: {}", reply.body);
                assert_eq!(reply.header("x-switchyard-stale"), None, "{path}");
                answers.push(reply.json());
            }
            before.push(answers);
            env.cli(&["history", "hello"]).await.ok();
        }

        etcd.stop_member(0);
        etcd.stop_member(1);
        for (env, before) in envs.iter().zip(&before) {
            // Once the node finds the store gone, every read answers what it
            // had, saying so.
            env.eventually("the node says the store is unreachable", FOLLOW, || async {
                admin_get(env, "/v1/status")
                    .await
                    .header("x-switchyard-stale")
                    .is_some()
            })
            .await;
            for (path, was) in READS.iter().zip(before) {
                let reply = admin_get(env, path).await;
                assert_eq!(reply.status, 200, "{path}: {}", reply.body);
                let stale = reply.header("x-switchyard-stale").unwrap_or_default();
                assert!(
                    stale.starts_with("store unreachable since ") && stale.contains("may be stale"),
                    "{path}: {stale:?}"
                );
                if path.ends_with("history") || path.ends_with("events") {
                    assert_eq!(&reply.json(), was, "{path}");
                }
            }
            let nodes = admin_get(env, "/v1/nodes").await.json();
            assert_eq!(nodes.as_array().map(Vec::len), Some(2), "{nodes}");
            // The CLI prints what it got, and a warning line on stderr.
            let run = env.cli(&["history", "hello"]).await.ok();
            assert!(run.stdout.contains("deploy"), "{}", run.stdout);
            assert!(
                run.stderr.contains("answered from the last state it has")
                    && run.stderr.contains("store unreachable since"),
                "{}",
                run.stderr
            );
            // A change is refused, naming the store.
            let reply = support::reply(
                env.http
                    .post(format!("{}/v1/services/hello/hosts", env.admin()))
                    .json(&serde_json::json!({ "host": "a.test" })),
                Duration::from_secs(30),
            )
            .await;
            assert_eq!(reply.status, 503, "{}", reply.body);
            assert!(
                reply.json()["error"]
                    .as_str()
                    .is_some_and(|e| e.contains("/stale-reads") && e.contains("cannot be reached")),
                "{}",
                reply.body
            );
            let (status, served, _) = env.get("/services/hello/").await;
            assert_eq!((status, served.as_str()), (200, "1.0.0"));
        }

        // With the quorum back, answers are fresh again.
        etcd.restart_member(0);
        etcd.restart_member(1);
        for env in &envs {
            env.eventually("the node answers fresh again", FOLLOW, || async {
                let reply = admin_get(env, "/v1/services/hello/history").await;
                reply.status == 200 && reply.header("x-switchyard-stale").is_none()
            })
            .await;
        }
    }

    /// Sends `signal` to `env`'s serve.
    fn signal(env: &support::Env, signal: nix::sys::signal::Signal) {
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(env.serve_pid() as i32), signal)
            .expect("signal serve");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_node_paused_while_etcd_compacted_the_changes_it_missed_catches_up() {
        let Some(etcd) = EtcdCluster::start("fleet_outage_compacted", 3) else {
            return;
        };
        let url = etcd.url("/compacted");
        let one = node(&url, "one").await;
        let two = node(&url, "two").await;
        one.deploy("hello", "1.0.0", &[], &[]).await.ok();
        routes_to(&two, "hello", "1.0.0").await;

        // Node two stops running (past its lease) while node one changes
        // hello several times and etcd compacts every revision before now.
        signal(&two, nix::sys::signal::Signal::SIGSTOP);
        for host in ["a.test", "b.test", "c.test"] {
            one.cli(&["host", "add", "hello", host]).await.ok();
        }
        one.deploy("hello", "2.0.0", &["--promote"], &[]).await.ok();
        // Enough under the fleet's prefix that node two's watch falls
        // behind (its stream is full while it does not read): etcd then
        // ends the watch once the revisions it still has to send are
        // compacted.
        let big = "x".repeat(100_000);
        for i in 0..40 {
            etcd.etcdctl(&["put", &format!("/compacted/noise/big{i}"), &big]);
        }
        for i in 0..300 {
            etcd.etcdctl(&["put", &format!("/compacted/noise/small{i}"), "x"]);
        }
        let status = etcd.etcdctl(&["endpoint", "status", "--write-out=json"]);
        let status: serde_json::Value = serde_json::from_str(&status).expect("etcd status JSON");
        let revision = status[0]["Status"]["header"]["revision"]
            .as_i64()
            .expect("etcd's revision");
        etcd.etcdctl(&["compact", &revision.to_string(), "--physical"]);
        let wanted = support::listing::numbered_actions(&one.history("hello").await);

        signal(&two, nix::sys::signal::Signal::SIGCONT);
        routes_to(&two, "hello", "2.0.0").await;
        two.eventually("node two has hello's last revision", FOLLOW, || async {
            support::listing::numbered_actions(&two.history("hello").await) == wanted
                && support::listing::service(&two.ls().await, "hello")["revision"]
                    == wanted.len() as u64
        })
        .await;
        assert!(
            two.serve_log()
                .contains("etcd ended the watch on the fleet's services"),
            "{}",
            two.serve_log()
        );
        // And follows what comes after.
        one.cli(&["host", "add", "hello", "d.test"]).await.ok();
        two.eventually("node two follows the next change", FOLLOW, || async {
            support::listing::service(&two.ls().await, "hello")["revision"]
                == wanted.len() as u64 + 1
        })
        .await;
    }

    /// The certificate `env`'s TLS listener presents for `name`.
    async fn served(env: &support::Env, ca: &support::tls::TestCa, name: &str) -> Option<Vec<u8>> {
        let stream =
            support::tls::handshake(env.tls_addr(), name, ca.client_config(&[b"http/1.1"]))
                .await
                .ok()?;
        Some(support::tls::peer_certificate(&stream))
    }

    /// `tls add HOST --cert … --key …` through `env`.
    async fn tls_add(env: &support::Env, host: &str, issued: &support::tls::Issued) {
        let (cert, key) = (
            issued.cert_file.display().to_string(),
            issued.key_file.display().to_string(),
        );
        env.cli(&["tls", "add", host, "--cert", &cert, "--key", &key])
            .await
            .ok();
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_certificate_added_or_renewed_through_one_node_is_served_by_every_node() {
        let Some(etcd) = EtcdCluster::start("fleet_outage_certificates", 3) else {
            return;
        };
        let url = etcd.url("/certificates");
        let tls = ["--tls-listen", "127.0.0.1:0"];
        let one = support::fleet::node_with(&url, "one", &tls, &[]).await;
        let two = support::fleet::node_with(&url, "two", &tls, &[]).await;
        let ca = support::tls::TestCa::new("Switchyard Fleet CA");

        let first = ca.issue(&["app.test"], one.dir.path(), "first");
        tls_add(&one, "app.test", &first).await;
        let want = support::tls::der_of(&first.cert_pem);
        two.eventually("node two serves the new certificate", FOLLOW, || async {
            served(&two, &ca, "app.test").await.as_ref() == Some(&want)
        })
        .await;

        // Renewed through node two: node one serves the new one.
        let second = ca.issue(&["app.test"], two.dir.path(), "second");
        tls_add(&two, "app.test", &second).await;
        let want = support::tls::der_of(&second.cert_pem);
        one.eventually(
            "node one serves the renewed certificate",
            FOLLOW,
            || async { served(&one, &ca, "app.test").await.as_ref() == Some(&want) },
        )
        .await;
        let listed = one.cli(&["tls", "ls"]).await.ok().stdout;
        assert!(listed.contains("app.test"), "{listed}");
    }

    /// The ids of `service`'s events stored in the fleet, oldest first.
    async fn stored_event_ids(env: &support::Env, service: &str) -> Vec<u64> {
        let run = env.cli(&["events", service, "--json"]).await.ok();
        let events: Vec<serde_json::Value> =
            serde_json::from_str(&run.stdout).expect("events --json is JSON");
        let mut ids: Vec<u64> = events.iter().filter_map(|e| e["id"].as_u64()).collect();
        ids.sort_unstable();
        ids
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn events_of_every_node_are_posted_once_by_the_leader_and_by_the_next_after_a_kill() {
        let Some(etcd) = EtcdCluster::start("fleet_outage_webhooks", 3) else {
            return;
        };
        let url = etcd.url("/webhooks");
        let receiver = WebhookReceiver::start().await;
        let webhook = ["--webhook", receiver.url.as_str()];
        let mut envs = [
            node_with(&url, "one", &webhook, &[]).await,
            node_with(&url, "two", &webhook, &[]).await,
        ];
        let lead = leader_of(&envs).await;
        let follower = 1 - lead;
        let survivor = if follower == 0 { "one" } else { "two" };

        // An event recorded through the node that does not lead.
        envs[follower].deploy("hello", "1.0.0", &[], &[]).await.ok();
        envs[follower].cli(&["pause", "hello"]).await.ok();
        assert_eq!(
            events_of(&envs[follower], "hello", "traffic-paused")
                .await
                .len(),
            1
        );
        envs[follower]
            .eventually("every stored event is posted", FOLLOW, || async {
                let stored = stored_event_ids(&envs[follower], "hello").await;
                !stored.is_empty() && receiver.event_ids("hello") == stored
            })
            .await;
        let before_kill = receiver.event_ids("hello");

        // The leader dies; the survivor leads and records more events.
        envs[lead].kill9().await;
        envs[follower]
            .eventually("the survivor leads", FOLLOW, || async {
                leaders(&nodes(&envs[follower]).await) == [survivor]
            })
            .await;
        envs[follower].cli(&["resume", "hello"]).await.ok();
        envs[follower].cli(&["pause", "hello"]).await.ok();
        envs[follower]
            .eventually("the new events are posted", FOLLOW, || async {
                let stored = stored_event_ids(&envs[follower], "hello").await;
                let mut received = receiver.event_ids("hello");
                received.dedup();
                stored.len() > before_kill.len() && received == stored
            })
            .await;

        // In the order recorded; the only event that may come twice is the
        // last one posted before the kill (posted, not yet noted as such).
        let received = receiver.event_ids("hello");
        assert!(received.is_sorted(), "{received:?}");
        let last = before_kill.last().copied();
        let mut twice: Vec<u64> = received
            .windows(2)
            .filter(|w| w[0] == w[1])
            .map(|w| w[0])
            .collect();
        twice.dedup();
        assert!(
            twice.is_empty() || twice == [last.expect("events before the kill")],
            "posted more than once: {twice:?} of {received:?}"
        );
        assert!(
            received.iter().filter(|id| Some(**id) == last).count() <= 2,
            "{received:?}"
        );
    }
}
