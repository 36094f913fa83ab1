//! `switchyard nodes`: the nodes of the fleet the serve belongs to, with
//! their addresses, which one leads, their leases and versions, and the
//! releases each runs (`hello@1.0.0 2/2`: 2 of its 2 instances healthy).

use clap::Args;

use super::output::{ago, json, table};
use super::{AdminClient, ClientArgs};
use crate::fleet::NodeView;

#[derive(Debug, Args)]
pub struct NodesArgs {
    #[command(flatten)]
    pub client: ClientArgs,
}

pub async fn run(args: NodesArgs) -> anyhow::Result<()> {
    let client = AdminClient::new(&args.client)?;
    let nodes: Vec<NodeView> = client.get("/v1/nodes").await?;
    if args.client.json {
        return json(&nodes);
    }
    let rows: Vec<Vec<String>> = nodes
        .iter()
        .map(|node| {
            vec![
                format!("{}{}", node.name, if node.this { " (this)" } else { "" }),
                if node.leader { "leader" } else { "" }.to_owned(),
                node.proxy.clone(),
                node.admin.clone(),
                match (node.lease_age_ms, node.lease_ttl_s) {
                    (Some(age), Some(ttl)) => format!("{}s (ttl {ttl}s)", age / 1000),
                    _ => "-".to_owned(),
                },
                node.version.clone(),
                ago(node.started_at),
                releases(node),
            ]
        })
        .collect();
    table(
        &[
            "NODE", "ROLE", "PROXY", "ADMIN", "LEASE", "VERSION", "STARTED", "RELEASES",
        ],
        &rows,
    );
    Ok(())
}

/// `hello@1.0.0 2/2, hello@2.0.0 0/2 failed`, or `-`.
fn releases(node: &NodeView) -> String {
    if node.releases.is_empty() {
        return "-".to_owned();
    }
    node.releases
        .iter()
        .map(|r| format!("{}@{} {}", r.service, r.version, r.counts()))
        .collect::<Vec<_>>()
        .join(", ")
}
