//! A fleet in containers: 3 etcd members and 3 serve nodes on a private
//! Docker network, built from local files. One node is cut off the
//! network with `docker network disconnect`: it keeps routing what it
//! had, the others go on (a deploy and a switch through another node stop
//! waiting for it once its lease lapses), and once connected again it
//! converges on the new main. A missing Docker Engine fails the test,
//! unless `SWITCHYARD_TEST_SKIP` names `docker`.

mod support;

#[path = "docker/fixture.rs"]
#[allow(dead_code)]
mod fixture;

#[cfg(feature = "etcd")]
#[path = "fleet_docker/cluster.rs"]
mod cluster;

#[cfg(feature = "etcd")]
mod in_containers {
    use std::time::Duration;

    use super::cluster::ContainerFleet;
    use super::{fixture, support};

    /// How long a node may take to follow a change (starting the
    /// release's instances first) or to see another's lease lapse.
    const FOLLOW: Duration = Duration::from_secs(60);

    /// The names in a `/v1/nodes` answer.
    fn names(nodes: &[serde_json::Value]) -> Vec<String> {
        nodes
            .iter()
            .filter_map(|n| n["name"].as_str().map(str::to_owned))
            .collect()
    }

    /// Waits until node `i` lists exactly `expected` (sorted names).
    async fn lists(fleet: &ContainerFleet, i: usize, expected: &[&str]) {
        fleet
            .eventually(
                &format!("node {} lists {expected:?}", fleet.nodes[i].name),
                FOLLOW,
                || async {
                    fleet
                        .nodes_seen_by(&fleet.nodes[i])
                        .await
                        .is_some_and(|nodes| names(&nodes) == expected)
                },
            )
            .await;
    }

    /// Waits until node `i`'s proxy answers hello from `version`.
    async fn routes(fleet: &ContainerFleet, i: usize, version: &str) {
        fleet
            .eventually(
                &format!("node {} routes hello to {version}", fleet.nodes[i].name),
                FOLLOW,
                || async {
                    fleet.served(&fleet.nodes[i], "hello").await.as_deref() == Some(version)
                },
            )
            .await;
    }

    /// `deploy hello VERSION [extra…]` through node `i`, the instances
    /// being `/hello-server` inside each node's container, run in its
    /// `/state` (the default, the CLI's own folder, is not in there).
    async fn deploy(fleet: &ContainerFleet, i: usize, version: &str, extra: &[&str]) {
        let mut args = vec![
            "deploy", "hello", version, "--health", "/healthz", "--cwd", "/state",
        ];
        args.extend_from_slice(extra);
        args.extend_from_slice(&[
            "--",
            "/hello-server",
            "--port",
            "{port}",
            "--version",
            version,
        ]);
        fleet.cli(i, &args).await.ok();
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_node_cut_off_the_network_keeps_routing_the_others_switch_without_it_and_it_converges_when_back()
     {
        let Some(engine) = fixture::engine("fleet_in_containers").await else {
            return;
        };
        let mut fleet = ContainerFleet::start(engine).await;
        for name in ["one", "three", "two"] {
            fleet.start_node(name).await;
        }
        // nodes[0] = one, nodes[1] = three, nodes[2] = two.
        let (one, three, two) = (0, 1, 2);
        for i in 0..3 {
            lists(&fleet, i, &["one", "three", "two"]).await;
        }
        let leaders: Vec<String> = fleet
            .nodes_seen_by(&fleet.nodes[two])
            .await
            .expect("node two answers")
            .iter()
            .filter(|n| n["leader"] == true)
            .filter_map(|n| n["name"].as_str().map(str::to_owned))
            .collect();
        assert_eq!(leaders.len(), 1, "{leaders:?}");

        deploy(&fleet, one, "1.0.0", &[]).await;
        for i in 0..3 {
            routes(&fleet, i, "1.0.0").await;
        }

        // Clients that never retry, through the two nodes that stay.
        let loads = [
            support::load::counting_gets(&fleet.nodes[one].proxy, "/services/hello/", 2),
            support::load::counting_gets(&fleet.nodes[two].proxy, "/services/hello/", 2),
        ];

        fleet.cut_off(three).await;
        // The others drop it once its lease lapses; it still answers on
        // its own address, routing what it had.
        lists(&fleet, one, &["one", "two"]).await;
        lists(&fleet, two, &["one", "two"]).await;
        routes(&fleet, three, "1.0.0").await;

        // A deploy (which waits for every live node to run it ready) and
        // a switch through node two complete without the cut-off node.
        deploy(&fleet, two, "2.0.0", &["--standby"]).await;
        fleet
            .cli(two, &["assign", "hello", "2.0.0", "-y"])
            .await
            .ok();
        routes(&fleet, one, "2.0.0").await;
        routes(&fleet, two, "2.0.0").await;
        // The cut-off node never heard of it and keeps its last state.
        assert_eq!(
            fleet.served(&fleet.nodes[three], "hello").await.as_deref(),
            Some("1.0.0")
        );
        for load in loads {
            load.finish_without_failures(20, FOLLOW).await;
        }

        // Back on the network, it catches up: it starts 2.0.0 and routes
        // it, and every node lists it again.
        fleet.reconnect(three).await;
        routes(&fleet, three, "2.0.0").await;
        for i in 0..3 {
            lists(&fleet, i, &["one", "three", "two"]).await;
        }
        let ls = fleet.cli(three, &["ls", "--json"]).await.ok();
        let ls: serde_json::Value = serde_json::from_str(&ls.stdout).expect("ls --json is JSON");
        assert!(
            support::listing::roles(&ls, "hello")
                .contains(&support::listing::pair("2.0.0", "main")),
            "{ls}"
        );
    }
}
