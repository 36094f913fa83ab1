//! ACME on a fleet, with a real CA (pebble) and real etcd: one issuer.
//! Only the leading node orders, also what is asked through another node
//! or what a service marked for automatic certificates needs; the CA
//! validates HTTP-01 through a node that does not order (every node
//! answers the leader's challenges, kept in etcd while the order runs);
//! every node serves the certificate. TLS-ALPN-01, which only the
//! ordering node could answer, is refused on a fleet with the way out.

mod support;

#[cfg(feature = "etcd")]
mod on_etcd {
    use std::time::Duration;

    use super::support;
    use support::Env;
    use support::etcd::EtcdCluster;
    use support::fleet::{FOLLOW, events_of, leader_of, node_with};
    use support::pebble::{Pebble, acme_orders as orders};
    use support::tls::https1;

    /// Two nodes with TLS listeners checking ACME every second, hello
    /// deployed for app.test, and pebble validating HTTP-01 through the
    /// node that does not lead (the leader's challenges must be answered
    /// there). `None` when etcd or pebble is missing (and the run allows
    /// it).
    struct PebbleFleet {
        etcd: EtcdCluster,
        nodes: [Env; 2],
        leader: usize,
        pebble: Pebble,
    }

    impl PebbleFleet {
        async fn start(test: &str, prefix: &str) -> Option<PebbleFleet> {
            let etcd = EtcdCluster::start(test, 1)?;
            if !Pebble::available(test) {
                return None;
            }
            let url = etcd.url(prefix);
            let args = ["--tls-listen", "127.0.0.1:0", "--acme-renew-check", "1s"];
            let nodes = [
                node_with(&url, "one", &args, &[]).await,
                node_with(&url, "two", &args, &[]).await,
            ];
            let leader = leader_of(&nodes).await;
            nodes[0]
                .deploy("hello", "1.0.0", &["--host", "app.test"], &[])
                .await
                .ok();
            let follower = &nodes[1 - leader];
            let pebble = Pebble::start(
                follower.dir.path(),
                follower.proxy_port(),
                Duration::from_secs(3600),
            )
            .await;
            Some(PebbleFleet {
                etcd,
                nodes,
                leader,
                pebble,
            })
        }

        fn follower(&self) -> &Env {
            &self.nodes[1 - self.leader]
        }

        /// `ARGS… --email … --directory … --directory-ca …` through the
        /// follower.
        async fn ask_follower(&self, args: &[&str]) -> support::Run {
            let ca = self.pebble.directory_ca.display().to_string();
            let mut all = args.to_vec();
            all.extend_from_slice(&[
                "--email",
                "ops@app.test",
                "--directory",
                &self.pebble.directory,
                "--directory-ca",
                &ca,
            ]);
            self.follower().cli(&all).await
        }
    }

    /// The source of the certificate `env` lists for `host`, if any.
    async fn source_of(env: &Env, host: &str) -> Option<String> {
        let run = env.cli(&["tls", "ls", "--json"]).await.ok();
        let list: serde_json::Value = serde_json::from_str(&run.stdout).expect("tls ls JSON");
        list.as_array()?
            .iter()
            .find(|c| c["host"] == host)
            .and_then(|c| c["source"].as_str().map(str::to_owned))
    }

    /// Whether `env`'s TLS listener serves `host` a certificate pebble
    /// issued (an HTTPS request trusting only pebble's root succeeds).
    async fn serves(env: &Env, host: &str, pebble: &Pebble) -> bool {
        let mut client = https1(env.tls_addr(), host, &pebble.root_pem);
        matches!(client.get("/echo").await, Ok((200, _, _)))
    }

    /// How many lines of `env`'s log say it placed an ACME order.
    fn orders_placed(env: &Env) -> usize {
        env.serve_log().matches("placing the order").count()
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn an_order_asked_through_a_follower_is_made_once_by_the_leader_and_validated_through_the_follower()
     {
        let Some(fleet) = PebbleFleet::start("fleet_acme_order", "/acme").await else {
            return;
        };
        let (nodes, follower, pebble) = (&fleet.nodes, fleet.follower(), &fleet.pebble);

        let refused = fleet
            .ask_follower(&["tls", "acme", "app.test", "--challenge", "tls-alpn-01"])
            .await
            .failed();
        assert!(
            refused.stderr.contains("--challenge http-01"),
            "TLS-ALPN-01 is refused on a fleet, saying what to use: {}",
            refused.stderr
        );
        assert_eq!(source_of(follower, "app.test").await, None);

        let run = fleet.ask_follower(&["tls", "acme", "app.test"]).await;
        assert_eq!(
            run.code,
            0,
            "tls acme through the follower failed:\n{}\n{}\npebble:\n{}\nleader:\n{}",
            run.stdout,
            run.stderr,
            pebble.log(),
            nodes[fleet.leader].serve_log()
        );
        assert!(
            run.stdout.contains("certificate for app.test stored"),
            "{}",
            run.stdout
        );
        for env in nodes {
            env.eventually("every node serves the certificate", FOLLOW, || async {
                serves(env, "app.test", pebble).await
            })
            .await;
            assert_eq!(source_of(env, "app.test").await.as_deref(), Some("acme"));
        }
        assert_eq!(
            orders_placed(&nodes[fleet.leader]),
            1,
            "the leader ordered once"
        );
        assert_eq!(orders_placed(follower), 0, "the follower did not order");
        let issued = events_of(follower, "hello", "certificate-issued").await;
        assert_eq!(issued.len(), 1, "{issued:?}");
        // The answered challenge is gone from the store.
        let pending =
            fleet
                .etcd
                .etcdctl(&["get", "--prefix", "--keys-only", "/acme/acme/challenge/"]);
        assert_eq!(pending.trim(), "", "{pending}");

        // Removed through the follower: no node keeps the order (none
        // renews it) or serves the certificate.
        follower.cli(&["tls", "rm", "app.test"]).await.ok();
        for env in nodes {
            env.eventually("the order and certificate are gone", FOLLOW, || async {
                orders(env).await == serde_json::json!([]) && !serves(env, "app.test", pebble).await
            })
            .await;
        }
    }

    fn signal(env: &Env, signal: nix::sys::signal::Signal) {
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(env.serve_pid() as i32), signal)
            .expect("signal serve");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn an_order_asked_while_the_leader_is_gone_is_kept_and_made_by_the_next_leader() {
        let Some(fleet) = PebbleFleet::start("fleet_acme_next_leader", "/next").await else {
            return;
        };
        let (leader, follower) = (&fleet.nodes[fleet.leader], fleet.follower());
        // The leader stops answering (its lease runs out after 2s).
        signal(leader, nix::sys::signal::Signal::SIGSTOP);
        let run = fleet.ask_follower(&["tls", "acme", "app.test"]).await;
        signal(leader, nix::sys::signal::Signal::SIGCONT);
        assert_eq!(
            run.code,
            0,
            "the order was made:\n{}\n{}\nnode:\n{}",
            run.stdout,
            run.stderr,
            follower.serve_log()
        );
        assert!(
            run.stderr.contains("waiting for the leading node"),
            "the order was kept for the leader: {}",
            run.stderr
        );
        assert_eq!(orders_placed(follower), 1, "the next leader ordered it");
        assert!(serves(follower, "app.test", &fleet.pebble).await);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_service_marked_for_acme_on_a_fleet_gets_each_host_name_certified_once_by_the_leader()
    {
        let Some(fleet) = PebbleFleet::start("fleet_acme_automatic", "/auto").await else {
            return;
        };
        let (leader, follower) = (&fleet.nodes[fleet.leader], fleet.follower());
        fleet
            .ask_follower(&["https", "hello", "--acme", "on"])
            .await
            .ok();
        // A host name added through the follower gets its own, too.
        follower
            .cli(&["host", "add", "hello", "www.app.test"])
            .await
            .ok();
        for host in ["app.test", "www.app.test"] {
            for env in &fleet.nodes {
                env.eventually(
                    &format!("{} serves {host}'s certificate", env.admin()),
                    Duration::from_secs(90),
                    || async { serves(env, host, &fleet.pebble).await },
                )
                .await;
            }
        }
        assert_eq!(orders_placed(follower), 0, "the follower did not order");
        assert_eq!(orders_placed(leader), 2, "one order per host name");
        let issued = events_of(leader, "hello", "certificate-issued").await;
        assert_eq!(issued.len(), 2, "{issued:?}");
    }
}
