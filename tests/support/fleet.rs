//! Nodes of a fleet on a real etcd cluster ([`super::etcd`]), and what
//! the fleet's tests read of them through the CLI.

use std::time::Duration;

use super::Env;

/// How long a node may take to follow a change another node made (the
/// release starts and gets ready on it first), or a fleet to elect.
pub const FOLLOW: Duration = Duration::from_secs(30);

/// A serve of the fleet at `url`, named `name`, with a short lease.
pub async fn node(url: &str, name: &str) -> Env {
    node_with(url, name, &[]).await
}

/// Like [`node`], with more arguments to serve.
pub async fn node_with(url: &str, name: &str, extra: &[&str]) -> Env {
    let mut args = vec!["--store", url, "--node", name, "--lease-ttl", "2s"];
    args.extend_from_slice(extra);
    let mut env = Env::new(&args);
    env.launch("127.0.0.1:0", "127.0.0.1:0").await;
    env
}

/// Waits until `env`'s proxy answers `/services/NAME/` from `version`.
pub async fn routes_to(env: &Env, service: &str, version: &str) {
    let path = format!("/services/{service}/");
    env.eventually(
        &format!("{} routes {service} to {version}", env.admin()),
        FOLLOW,
        || async {
            let (status, served, _) = env.get(&path).await;
            status == 200 && served == version
        },
    )
    .await;
}

/// `nodes --json` through `env`.
pub async fn nodes(env: &Env) -> Vec<serde_json::Value> {
    let run = env.cli(&["nodes", "--json"]).await.ok();
    serde_json::from_str(&run.stdout).expect("nodes --json is JSON")
}

/// The names of the nodes listed as leading.
pub fn leaders(nodes: &[serde_json::Value]) -> Vec<String> {
    nodes
        .iter()
        .filter(|n| n["leader"] == true)
        .map(|n| n["name"].as_str().unwrap_or_default().to_owned())
        .collect()
}

/// The index in `envs` (named `one`, `two`) of the node that leads, once
/// both are listed and one leads.
pub async fn leader_of(envs: &[Env; 2]) -> usize {
    envs[0]
        .eventually("a node leads", FOLLOW, || async {
            let listed = nodes(&envs[0]).await;
            listed.len() == 2 && leaders(&listed).len() == 1
        })
        .await;
    let leader = leaders(&nodes(&envs[0]).await);
    if leader == ["one"] { 0 } else { 1 }
}

/// `rollout status SERVICE --json` through `env`.
pub async fn rollout_status(env: &Env, service: &str) -> serde_json::Value {
    let run = env
        .cli(&["rollout", "status", service, "--json"])
        .await
        .ok();
    serde_json::from_str(&run.stdout).expect("rollout status --json is JSON")
}

/// The messages of `service`'s events of `kind`, through `env`.
pub async fn events_of(env: &Env, service: &str, kind: &str) -> Vec<String> {
    let run = env.cli(&["events", service, "--json"]).await.ok();
    let events: Vec<serde_json::Value> =
        serde_json::from_str(&run.stdout).expect("events --json is JSON");
    events
        .iter()
        .filter(|e| e["kind"] == kind)
        .filter_map(|e| e["message"].as_str().map(str::to_owned))
        .collect()
}
