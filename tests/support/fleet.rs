//! Nodes of a fleet on a real etcd cluster ([`super::etcd`]): serves
//! started with `--store etcd://…`, and what `nodes --json` says of them.

use std::time::Duration;

use serde_json::Value;

use super::Env;
use super::etcd::EtcdCluster;

/// How long a node may take to follow a change another node made (the
/// release starts and gets ready on it first).
pub const FOLLOW: Duration = Duration::from_secs(30);

/// A serve of the fleet at `url`, named `name`, with a short lease.
pub async fn node(url: &str, name: &str) -> Env {
    node_with(url, name, &[], &[]).await
}

/// Like [`node`], with more arguments to serve and environment variables
/// only this serve (and so the instances it starts) has.
pub async fn node_with(url: &str, name: &str, args: &[&str], vars: &[(&str, &str)]) -> Env {
    let mut all = vec!["--store", url, "--node", name, "--lease-ttl", "2s"];
    all.extend_from_slice(args);
    let mut env = Env::new(&all);
    env.serve_vars = vars
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect();
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
pub async fn nodes(env: &Env) -> Vec<Value> {
    let run = env.cli(&["nodes", "--json"]).await.ok();
    serde_json::from_str(&run.stdout).expect("nodes --json is JSON")
}

/// The names of the nodes listed as leading.
pub fn leaders(nodes: &[Value]) -> Vec<String> {
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
pub async fn rollout_status(env: &Env, service: &str) -> Value {
    let run = env
        .cli(&["rollout", "status", service, "--json"])
        .await
        .ok();
    serde_json::from_str(&run.stdout).expect("rollout status --json is JSON")
}

/// The messages of `service`'s events of `kind`, through `env`.
pub async fn events_of(env: &Env, service: &str, kind: &str) -> Vec<String> {
    let run = env.cli(&["events", service, "--json"]).await.ok();
    let events: Vec<Value> = serde_json::from_str(&run.stdout).expect("events --json is JSON");
    events
        .iter()
        .filter(|e| e["kind"] == kind)
        .filter_map(|e| e["message"].as_str().map(str::to_owned))
        .collect()
}

/// The names of the listed nodes.
pub fn names(nodes: &[Value]) -> Vec<String> {
    nodes
        .iter()
        .filter_map(|n| n["name"].as_str().map(str::to_owned))
        .collect()
}

/// What node `name` reports of `service` `version` in `nodes --json`:
/// (healthy, expected, phase), if it reports it.
pub fn reported(
    nodes: &[Value],
    name: &str,
    service: &str,
    version: &str,
) -> Option<(u64, u64, String)> {
    let node = nodes.iter().find(|n| n["name"] == name)?;
    let release = node["releases"]
        .as_array()?
        .iter()
        .find(|r| r["service"] == service && r["version"] == version)?;
    Some((
        release["healthy"].as_u64()?,
        release["expected"].as_u64()?,
        release["phase"].as_str()?.to_owned(),
    ))
}

/// Waits until `env` lists exactly the nodes `names` (sorted), each
/// under a live lease.
pub async fn wait_for_nodes(env: &Env, names_: &[&str]) {
    env.eventually(
        &format!("{} lists the nodes {names_:?}", env.admin()),
        FOLLOW,
        || async { names(&nodes(env).await) == names_ },
    )
    .await;
}

/// POSTs `body` to `path` of `env`'s admin API; the answer, whatever its
/// status.
pub async fn admin_post(env: &Env, path: &str, body: Value) -> super::Reply {
    super::reply(
        env.http.post(format!("{}{path}", env.admin())).json(&body),
        Duration::from_secs(30),
    )
    .await
}

/// Deletes the election key of the node that leads the fleet under
/// `prefix` (the oldest key under `PREFIX/leader/`), as when its lease
/// expires while the node cannot run; returns the key. Nothing tells the
/// node: it finds out when a write of its leader's work is refused.
pub fn delete_election_key(etcd: &EtcdCluster, prefix: &str) -> String {
    let keys = etcd.etcdctl(&[
        "get",
        "--prefix",
        &format!("{prefix}/leader/"),
        "--keys-only",
        "--sort-by=CREATE",
        "--order=ASCEND",
    ]);
    let key = keys
        .lines()
        .find(|l| !l.trim().is_empty())
        .expect("the leader's election key")
        .to_owned();
    let deleted = etcd.etcdctl(&["del", &key]);
    assert_eq!(deleted.trim(), "1", "etcdctl del {key} said {deleted}");
    key
}

/// The value etcd holds at `key`, as JSON.
pub fn stored(etcd: &EtcdCluster, key: &str) -> Value {
    let value = etcd.etcdctl(&["get", key, "--print-value-only"]);
    serde_json::from_str(value.trim())
        .unwrap_or_else(|e| panic!("etcd holds no JSON at {key} ({e}): {value:?}"))
}
