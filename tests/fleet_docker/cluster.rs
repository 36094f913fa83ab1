//! A fleet in containers for `tests/fleet_docker.rs`: 3 etcd members and
//! serve nodes on a private Docker network the test creates, built from
//! local files (`FROM scratch` with the binaries and the libraries `ldd`
//! lists; the engine has no registry). Each node is also on an access
//! network of its own, where its proxy and admin ports are published on
//! 127.0.0.1 only, so the test reaches a node that is cut off from the
//! fleet. [`ContainerFleet`] removes every container, network and image it
//! made when dropped, pass or fail.

use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use switchyard::runtime::docker::{Engine, build_image};

use crate::fixture::{copy_with_libraries, unique};
use crate::support::{self, Run, SWITCHYARD};

/// The bearer token of every node's admin API (it listens on every
/// address of its container, which needs one).
const TOKEN: &str = "fleet-in-containers";

/// How long etcd members and nodes may take to start and find each other.
const START: Duration = Duration::from_secs(60);

/// One serve node: its container and its ports published on 127.0.0.1.
pub struct Node {
    pub name: String,
    container: String,
    /// `127.0.0.1:PORT` of its proxy.
    pub proxy: String,
    /// `http://127.0.0.1:PORT` of its admin API.
    pub admin: String,
}

/// What the test made on the engine, removed when dropped.
pub struct ContainerFleet {
    dir: tempfile::TempDir,
    engine: Engine,
    pub http: reqwest::Client,
    /// The private network of the etcd members and the nodes.
    fleet_net: String,
    /// The image every node runs.
    node_image: String,
    /// Networks, containers and images, in the order they were made.
    networks: Vec<String>,
    containers: Vec<String>,
    images: Vec<String>,
    pub nodes: Vec<Node>,
}

/// Runs the docker CLI; panics with what it said when it fails.
pub async fn docker(args: &[&str]) -> String {
    let out = tokio::process::Command::new("docker")
        .args(args)
        .stdin(Stdio::null())
        .output()
        .await
        .unwrap_or_else(|e| panic!("cannot run `docker`: {e}"));
    let run = Run::from(out);
    assert_eq!(
        run.code,
        0,
        "docker {} failed: {}",
        args.join(" "),
        run.stderr
    );
    run.stdout.trim().to_owned()
}

/// The same, blocking, for the drop guard; errors are ignored (what is
/// already gone stays gone).
fn docker_quietly(args: &[&str]) {
    let _ = std::process::Command::new("docker")
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
}

impl ContainerFleet {
    /// Builds the images, makes the fleet's network and starts 3 etcd
    /// members on it, waiting until each serves clients.
    pub async fn start(engine: Engine) -> ContainerFleet {
        let prefix = unique("sy-fleet");
        let mut fleet = ContainerFleet {
            dir: tempfile::tempdir().expect("temp dir"),
            engine,
            http: support::http_client().build().expect("http client"),
            fleet_net: format!("{prefix}-net"),
            node_image: String::new(),
            networks: Vec::new(),
            containers: Vec::new(),
            images: Vec::new(),
            nodes: Vec::new(),
        };
        let etcd_image = fleet.image(&prefix, "etcd", &["/usr/bin/etcd"]).await;
        fleet.node_image = fleet
            .image(&prefix, "node", &[SWITCHYARD, support::HELLO])
            .await;
        let net = fleet.fleet_net.clone();
        fleet.network(&net, true).await;

        let cluster = (0..3)
            .map(|i| format!("m{i}=http://etcd{i}:2380"))
            .collect::<Vec<_>>()
            .join(",");
        for i in 0..3 {
            let container = format!("{prefix}-etcd{i}");
            let alias = format!("etcd{i}");
            let client = format!("http://{alias}:2379");
            let peer = format!("http://{alias}:2380");
            let name = format!("m{i}");
            fleet.containers.push(container.clone());
            docker(&[
                "run",
                "-d",
                "--name",
                &container,
                "--network",
                &net,
                "--network-alias",
                &alias,
                &etcd_image,
                "/etcd",
                "--name",
                &name,
                "--data-dir",
                "/data",
                "--listen-client-urls",
                "http://0.0.0.0:2379",
                "--advertise-client-urls",
                &client,
                "--listen-peer-urls",
                "http://0.0.0.0:2380",
                "--initial-advertise-peer-urls",
                &peer,
                "--initial-cluster",
                &cluster,
                "--initial-cluster-state",
                "new",
                "--initial-cluster-token",
                &prefix,
                "--heartbeat-interval",
                "50",
                "--election-timeout",
                "500",
            ])
            .await;
        }
        for i in 0..3 {
            let container = format!("{prefix}-etcd{i}");
            // etcd says this once it has joined a cluster with a leader.
            fleet
                .wait_log(&container, "ready to serve client requests")
                .await;
        }
        fleet
    }

    /// Builds `FROM scratch` with `binaries` at `/` and their libraries.
    async fn image(&mut self, prefix: &str, what: &str, binaries: &[&str]) -> String {
        let context = self.dir.path().join(what);
        let root = context.join("root");
        std::fs::create_dir_all(root.join("tmp")).expect("context folder");
        std::fs::create_dir_all(root.join("state")).expect("context folder");
        let mut dockerfile = String::from("FROM scratch\nCOPY root/ /\n");
        for binary in binaries {
            let path = Path::new(binary);
            copy_with_libraries(path, &root);
            let name = path.file_name().expect("a file name");
            std::fs::copy(path, root.join(name)).expect("copy a binary");
        }
        std::fs::write(root.join("token"), TOKEN).expect("write the token");
        // Its own layer: no other test's image shares it (see hello_context).
        std::fs::write(root.join(".context"), context.display().to_string())
            .expect("write the context's mark");
        dockerfile.push_str("WORKDIR /state\n");
        std::fs::write(context.join("Dockerfile"), dockerfile).expect("write Dockerfile");
        let tag = format!("switchyard-test/{prefix}-{what}");
        self.images.push(tag.clone());
        let mut output = String::new();
        build_image(&self.engine, &context, &tag, |line| output.push_str(line))
            .await
            .unwrap_or_else(|e| panic!("building {tag} failed: {e}\n{output}"));
        tag
    }

    /// A bridge network; `--internal` for the fleet's own, which reaches
    /// nothing outside and never carries a node's published ports (the
    /// engine publishes them on a container's gateway network, and an
    /// internal one is never that), so they stay put when a node is cut
    /// off it and connected again.
    async fn network(&mut self, name: &str, internal: bool) {
        self.networks.push(name.to_owned());
        let mut args = vec!["network", "create", "--driver", "bridge"];
        if internal {
            args.push("--internal");
        }
        args.push(name);
        docker(&args).await;
    }

    /// Waits until `container`'s log has `line`.
    async fn wait_log(&self, container: &str, line: &str) {
        let deadline = Instant::now() + START;
        loop {
            let out = tokio::process::Command::new("docker")
                .args(["logs", container])
                .output()
                .await
                .expect("docker logs");
            let log = format!(
                "{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
            if log.contains(line) {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "{container} did not log `{line}` within {START:?}; its log:\n{log}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Starts node `name`: a serve on the fleet's network (as `name`) and
    /// on an access network of its own, where its ports are published on
    /// 127.0.0.1; returns once its admin API answers.
    pub async fn start_node(&mut self, name: &str) {
        let prefix = self.fleet_net.trim_end_matches("-net").to_owned();
        let container = format!("{prefix}-{name}");
        let access = format!("{prefix}-{name}-access");
        self.network(&access, false).await;
        let image = self.node_image.clone();
        self.containers.push(container.clone());
        docker(&[
            "create",
            "--name",
            &container,
            "--network",
            &access,
            "-p",
            "127.0.0.1::8080",
            "-p",
            "127.0.0.1::8081",
            &image,
            "/switchyard",
            "serve",
            "--listen",
            "0.0.0.0:8080",
            "--admin",
            "0.0.0.0:8081",
            "--admin-host",
            "127.0.0.1",
            "--token-file",
            "/token",
            "--state-dir",
            "/state",
            "--store",
            "etcd://etcd0:2379,etcd1:2379,etcd2:2379/fleet",
            "--node",
            name,
            "--advertise",
            name,
            "--lease-ttl",
            "2s",
        ])
        .await;
        self.connect(name, &container).await;
        docker(&["start", &container]).await;
        let port = |inner: &'static str| {
            let container = container.clone();
            async move {
                let shown = docker(&["port", &container, inner]).await;
                let first = shown.lines().next().unwrap_or_default().to_owned();
                assert!(
                    first.starts_with("127.0.0.1:"),
                    "{container}'s port {inner} is published as `{shown}`, not on 127.0.0.1"
                );
                first
            }
        };
        let node = Node {
            name: name.to_owned(),
            proxy: port("8080/tcp").await,
            admin: format!("http://{}", port("8081/tcp").await),
            container,
        };
        let deadline = Instant::now() + START;
        while self.nodes_seen_by(&node).await.is_none() {
            if Instant::now() > deadline {
                panic!(
                    "node {name} did not answer within {START:?}; its log:\n{}",
                    self.log(&node).await
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        self.nodes.push(node);
    }

    /// Connects the node's container to the fleet's network, as `name`.
    async fn connect(&self, name: &str, container: &str) {
        docker(&[
            "network",
            "connect",
            "--alias",
            name,
            &self.fleet_net,
            container,
        ])
        .await;
    }

    /// Cuts node `i` off the fleet's network (etcd and the other nodes).
    pub async fn cut_off(&self, i: usize) {
        docker(&[
            "network",
            "disconnect",
            &self.fleet_net,
            &self.nodes[i].container,
        ])
        .await;
    }

    /// Connects node `i` to the fleet's network again.
    pub async fn reconnect(&self, i: usize) {
        let node = &self.nodes[i];
        self.connect(&node.name, &node.container).await;
    }

    /// The node's own log (serve's output), for a failure message.
    pub async fn log(&self, node: &Node) -> String {
        let out = tokio::process::Command::new("docker")
            .args(["logs", "--tail", "60", &node.container])
            .output()
            .await
            .expect("docker logs");
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    }

    /// The names of the nodes `node` lists on `GET /v1/nodes`, or `None`
    /// while it does not answer.
    pub async fn nodes_seen_by(&self, node: &Node) -> Option<Vec<serde_json::Value>> {
        let answer = self
            .http
            .get(format!("{}/v1/nodes", node.admin))
            .bearer_auth(TOKEN)
            .timeout(Duration::from_secs(5))
            .send()
            .await
            .ok()?;
        if !answer.status().is_success() {
            return None;
        }
        answer.json().await.ok()
    }

    /// The version that answers `/services/NAME/` on the node's proxy, if
    /// one does (200).
    pub async fn served(&self, node: &Node, service: &str) -> Option<String> {
        let answer = self
            .http
            .get(format!("http://{}/services/{service}/", node.proxy))
            .timeout(Duration::from_secs(5))
            .send()
            .await
            .ok()?;
        (answer.status() == 200).then(|| support::version_header(answer.headers()))
    }

    /// The CLI against node `i`'s admin API (with the token).
    pub async fn cli(&self, i: usize, args: &[&str]) -> Run {
        let out = tokio::process::Command::new(SWITCHYARD)
            .args(args)
            .current_dir(self.dir.path())
            .env("SWITCHYARD_ADMIN", &self.nodes[i].admin)
            .env("SWITCHYARD_TOKEN", TOKEN)
            .stdin(Stdio::null())
            .kill_on_drop(true)
            .output();
        let out = tokio::time::timeout(Duration::from_secs(120), out)
            .await
            .expect("CLI finished within 120 s")
            .expect("run the CLI");
        Run::from(out)
    }

    /// Waits until `check` passes, polling; panics naming `what` with
    /// every node's last log lines.
    pub async fn eventually<F, Fut>(&self, what: &str, timeout: Duration, mut check: F)
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = bool>,
    {
        let deadline = Instant::now() + timeout;
        while !check().await {
            if Instant::now() > deadline {
                let mut logs = String::new();
                for node in &self.nodes {
                    logs.push_str(&format!("--- {}:\n{}\n", node.name, self.log(node).await));
                }
                panic!("timed out waiting for: {what}\n{logs}");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

impl Drop for ContainerFleet {
    fn drop(&mut self) {
        for container in self.containers.iter().rev() {
            docker_quietly(&["rm", "--force", "--volumes", container]);
        }
        for network in self.networks.iter().rev() {
            docker_quietly(&["network", "rm", network]);
        }
        for image in &self.images {
            docker_quietly(&["rmi", "--force", image]);
        }
    }
}
