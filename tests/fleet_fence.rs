//! A fleet leader's operator commands are fenced like its drivers: a
//! rollout's pause (and the other rollout verbs) and an upgrade's
//! `--continue` and `--abort` run as the leader's work, so a node whose election key
//! is gone — it has not noticed yet — refuses them with 409, names what
//! happened and what to do, and writes nothing. Through the node that
//! leads, the same commands work as on a single serve.

mod support;

#[cfg(feature = "etcd")]
mod on_etcd {
    use serde_json::{Value, json};

    use super::support;
    use support::Env;
    use support::etcd::EtcdCluster;
    use support::fleet::{
        FOLLOW, admin_post, delete_election_key, events_of, leader_of, leaders, node, nodes,
        rollout_status, stored,
    };

    /// A rollout of hello to 2.0.0 through `env`: 30%, `pauses` timed
    /// pauses of an hour (it stays in them, writing nothing meanwhile),
    /// 100%.
    async fn rollout_with_long_pauses(env: &Env, pauses: usize) {
        let plan = env.dir.path().join("plan.toml");
        let pause = r#"{ step = "pause", seconds = 3600 },"#;
        std::fs::write(
            &plan,
            format!(
                r#"
                version = "2.0.0"
                steps = [
                    {{ step = "set-weight", percent = 30 }},
                    {}
                    {{ step = "set-weight", percent = 100 }},
                ]
                "#,
                pause.repeat(pauses)
            ),
        )
        .expect("write the plan");
        let plan = plan.display().to_string();
        env.cli(&["rollout", "hello", "2.0.0", "--plan", &plan])
            .await
            .ok();
    }

    /// The state of hello's rollout as `env` tells it: `running`, …
    async fn rollout_state(env: &Env) -> Value {
        rollout_status(env, "hello").await["state"].clone()
    }

    /// A node's name by its index in a fleet of `one` and `two`.
    fn name(i: usize) -> &'static str {
        if i == 0 { "one" } else { "two" }
    }

    /// Asserts that `reply` is the fence's refusal: 409, saying this
    /// node does not lead any more (naming the election key), that
    /// nothing was written and where to look.
    fn assert_fenced(reply: &support::Reply, key: &str) {
        assert_eq!(reply.status, 409, "{}", reply.body);
        let error = reply.json()["error"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        for part in [
            "does not lead the fleet any more",
            key,
            "nothing was written",
            "`switchyard nodes`",
        ] {
            assert!(error.contains(part), "{part:?} missing from: {error}");
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_leader_whose_election_key_is_gone_refuses_a_rollout_pause_and_writes_nothing() {
        let Some(etcd) = EtcdCluster::start("fleet_fence_rollout_pause", 3) else {
            return;
        };
        if !support::component::etcdctl("fleet_fence_rollout_pause") {
            return;
        }
        let url = etcd.url("/fence-pause");
        let envs = [node(&url, "one").await, node(&url, "two").await];
        let lead = leader_of(&envs).await;
        let next = 1 - lead;
        envs[lead].deploy("hello", "1.0.0", &[], &[]).await.ok();
        envs[lead].deploy("hello", "2.0.0", &[], &[]).await.ok();
        rollout_with_long_pauses(&envs[lead], 1).await;
        envs[next]
            .eventually("the rollout is in its long pause", FOLLOW, || async {
                let state = rollout_state(&envs[next]).await;
                state["step"] == 1 && state["status"]["state"] == "running"
            })
            .await;
        let rollout_key = "/fence-pause/rollout/hello";
        let before = stored(&etcd, rollout_key);

        // The leader's election key goes. The old leader is not told: in
        // its pause its rollout writes nothing, and a leading node does
        // not watch the key it won; the other node wins the election.
        let key = delete_election_key(&etcd, "/fence-pause");
        envs[next]
            .eventually("the other node leads", FOLLOW, || async {
                leaders(&nodes(&envs[next]).await) == [name(next)]
            })
            .await;

        // The old leader still takes itself for the leader: its pause is
        // refused by the fence, with nothing written.
        let refused = admin_post(&envs[lead], "/v1/services/hello/rollout/pause", json!({})).await;
        assert_fenced(&refused, &key);
        assert_eq!(stored(&etcd, rollout_key), before);
        assert!(events_of(&envs[next], "hello", "paused").await.is_empty());

        // The refusal made it step down: it refuses as a follower now,
        // naming the node that leads, and still nothing is written.
        envs[lead]
            .eventually("the old leader refuses as a follower", FOLLOW, || async {
                let reply =
                    admin_post(&envs[lead], "/v1/services/hello/rollout/pause", json!({})).await;
                assert_eq!(reply.status, 409, "{}", reply.body);
                reply.body.contains(&format!("{} (admin API", name(next)))
            })
            .await;
        assert_eq!(stored(&etcd, rollout_key), before);

        // The node that leads now pauses it.
        envs[next].cli(&["rollout", "pause", "hello"]).await.ok();
        let state = stored(&etcd, rollout_key);
        assert_eq!(state["status"]["state"], "paused", "{state}");
        assert_eq!(state["status"]["by_hand"], true, "{state}");
        assert_eq!(events_of(&envs[next], "hello", "paused").await.len(), 1);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn through_the_leader_a_rollout_pauses_resumes_and_promotes_and_a_follower_refuses() {
        let Some(etcd) = EtcdCluster::start("fleet_fence_rollout_verbs", 3) else {
            return;
        };
        if !support::component::etcdctl("fleet_fence_rollout_verbs") {
            return;
        }
        let url = etcd.url("/fence-verbs");
        let envs = [node(&url, "one").await, node(&url, "two").await];
        let lead = leader_of(&envs).await;
        let follower = 1 - lead;
        envs[lead].deploy("hello", "1.0.0", &[], &[]).await.ok();
        envs[lead].deploy("hello", "2.0.0", &[], &[]).await.ok();
        rollout_with_long_pauses(&envs[lead], 2).await;
        envs[follower]
            .eventually("the rollout is in its long pause", FOLLOW, || async {
                let state = rollout_state(&envs[follower]).await;
                state["step"] == 1 && state["status"]["state"] == "running"
            })
            .await;
        let rollout_key = "/fence-verbs/rollout/hello";

        // A follower refuses each verb, naming the leader, writing nothing.
        let before = stored(&etcd, rollout_key);
        for verb in [
            &["pause"][..],
            &["promote"],
            &["promote", "--full"],
            &["abort"],
        ] {
            let mut args = vec!["rollout"];
            args.extend_from_slice(verb);
            args.push("hello");
            let refused = envs[follower].cli(&args).await.failed();
            assert!(
                refused
                    .stderr
                    .contains(&format!("{} (admin API", name(lead))),
                "{args:?}: {}",
                refused.stderr
            );
        }
        assert_eq!(stored(&etcd, rollout_key), before);

        // Through the leader: pause, resume (the step runs again), skip
        // the pause, then make the candidate main.
        envs[lead].cli(&["rollout", "pause", "hello"]).await.ok();
        let state = stored(&etcd, rollout_key);
        assert_eq!(state["status"]["state"], "paused", "{state}");
        assert_eq!(state["step"], 1, "{state}");

        envs[lead].cli(&["resume", "hello"]).await.ok();
        let state = stored(&etcd, rollout_key);
        assert_eq!(state["status"]["state"], "running", "{state}");
        assert_eq!(state["step"], 1, "{state}");

        envs[lead].cli(&["rollout", "promote", "hello"]).await.ok();
        let state = stored(&etcd, rollout_key);
        assert_eq!(state["status"]["state"], "running", "{state}");
        assert_eq!(state["step"], 2, "{state}");
        assert_eq!(
            events_of(&envs[follower], "hello", "skipped").await.len(),
            1
        );

        envs[lead]
            .cli(&["rollout", "promote", "hello", "--full"])
            .await
            .ok();
        let state = stored(&etcd, rollout_key);
        assert_eq!(state["status"]["state"], "promoted-by-hand", "{state}");
        support::fleet::routes_to(&envs[follower], "hello", "2.0.0").await;
    }

    /// Manifests of hub releases that all serve v1 and need no schema.
    fn write_hub(env: &Env, versions: &[&str]) -> Vec<String> {
        versions
            .iter()
            .map(|version| {
                let folder = env.dir.path().join(format!("hub-{version}"));
                std::fs::create_dir_all(&folder).expect("release folder");
                let manifest = format!(
                    r#"name = "hub"
version = "{version}"
command = ["{}", "--port", "{{port}}", "--version", "{version}"]
api_versions = ["v1"]
[health]
path = "/healthz"
interval = "200ms"
"#,
                    support::HELLO
                );
                let path = folder.join("switchyard.toml");
                std::fs::write(&path, manifest).expect("write manifest");
                path.display().to_string()
            })
            .collect()
    }

    /// On a fleet of one node under `prefix` (no other node takes the
    /// lead and marks the upgrade interrupted before the command reaches
    /// it), an upgrade of hub waits after its first step; the node's
    /// election key goes; `upgrade --VERB` through it is refused by the
    /// fence, and the upgrade never goes on: its event `event` is not
    /// recorded, its steps stay as they were, hub's main stays, and the
    /// node, leading again under a new key, finds it cut off and marks it
    /// interrupted, naming the command that plans again.
    async fn upgrade_command_is_fenced(test: &str, prefix: &str, verb: &str, event: &str) {
        let Some(etcd) = EtcdCluster::start(test, 3) else {
            return;
        };
        if !support::component::etcdctl(test) {
            return;
        }
        let url = etcd.url(prefix);
        let env = node(&url, "one").await;
        env.eventually("the node leads", FOLLOW, || async {
            leaders(&nodes(&env).await) == ["one"]
        })
        .await;
        let manifests = write_hub(&env, &["1.0.0", "1.1.0", "1.2.0"]);
        env.cli(&["deploy", "hub", "1.0.0", "--manifest", &manifests[0]])
            .await
            .ok();
        for manifest in &manifests[1..] {
            env.cli(&["release", "add", manifest]).await.ok();
        }
        // It waits after its first step for `--continue`.
        env.cli(&["upgrade", "hub", "--to", "1.2.0", "--approve"])
            .await
            .ok();
        let upgrade_key = format!("{prefix}/upgrade/hub");
        let before = stored(&etcd, &upgrade_key);
        assert_eq!(before["status"], "waiting", "{before}");
        assert_eq!(before["steps"].as_array().map(Vec::len), Some(1));

        let key = delete_election_key(&etcd, prefix);
        let path = format!("/v1/services/hub/upgrade/{verb}");
        let refused = admin_post(&env, &path, json!({})).await;
        assert_fenced(&refused, &key);

        env.eventually("the upgrade is marked interrupted", FOLLOW, || async {
            stored(&etcd, &upgrade_key)["status"] == "interrupted"
        })
        .await;
        let after = stored(&etcd, &upgrade_key);
        assert_eq!(after["steps"], before["steps"], "{after}");
        let error = after["error"].as_str().unwrap_or_default();
        assert!(
            error.contains("`switchyard upgrade hub --to 1.2.0` plans again"),
            "{after}"
        );
        assert!(events_of(&env, "hub", event).await.is_empty());
        let ls = env.ls().await;
        assert_eq!(
            support::listing::service(&ls, "hub")["main"],
            "1.1.0",
            "{ls}"
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_leader_whose_election_key_is_gone_refuses_an_upgrade_continue_and_writes_nothing() {
        upgrade_command_is_fenced(
            "fleet_fence_upgrade_continue",
            "/fence-continue",
            "continue",
            "upgrade-continued",
        )
        .await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_leader_whose_election_key_is_gone_refuses_an_upgrade_abort_and_writes_nothing() {
        upgrade_command_is_fenced(
            "fleet_fence_upgrade_abort",
            "/fence-abort",
            "abort",
            "upgrade-abort-asked",
        )
        .await;
    }
}
