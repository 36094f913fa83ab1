use clap::Args;

use super::output::{json, table};
use super::{AdminClient, ClientArgs, service_path};
use crate::controller::ReleaseStatusView;
use crate::metrics::WindowSummary;
use crate::model::Role;

#[derive(Debug, Args)]
pub struct StatusArgs {
    pub name: String,
    /// Each node of the fleet on a row of its own (a single serve: its
    /// one node), beside the fleet's totals.
    #[arg(long)]
    pub nodes: bool,
    #[command(flatten)]
    pub client: ClientArgs,
}

fn ms(v: Option<f64>) -> String {
    v.map_or_else(|| "-".to_owned(), |v| format!("{v:.1}ms"))
}

/// Every release of a service side by side over the last minute.
pub async fn run(args: StatusArgs) -> anyhow::Result<()> {
    let path = service_path(&args.name)?;
    let client = AdminClient::new(&args.client)?;
    let releases: Vec<ReleaseStatusView> = client.get(&format!("{path}/status")).await?;
    if args.client.json {
        return json(&releases);
    }
    if releases.iter().any(|r| r.tcp.is_some()) {
        tcp_table(&releases);
        return Ok(());
    }
    let mut rows: Vec<Vec<String>> = Vec::new();
    for r in &releases {
        let role = match (r.role, r.canary_percent) {
            (Role::Canary, Some(p)) => format!("canary {p}%"),
            (role, _) => role.to_string(),
        };
        let mut row = |node: &str, healthy: usize, instances: usize, w: &WindowSummary| {
            let mut row = vec![r.version.clone(), role.clone()];
            if args.nodes {
                row.push(node.to_owned());
            }
            row.extend([
                format!("{healthy}/{instances}"),
                format!("{:.1}", w.rate_per_second),
                format!("{:.2}%", w.error_rate * 100.0),
                ms(w.p50_ms),
                ms(w.p99_ms),
                ms(w.p999_ms),
            ]);
            rows.push(row);
        };
        if args.nodes {
            for n in &r.nodes {
                row(&n.node, n.healthy, n.instances, &n.last_minute);
            }
        }
        row("fleet", r.healthy, r.instances, &r.last_minute);
    }
    let mut headers = vec!["VERSION", "ROLE"];
    if args.nodes {
        headers.push("NODE");
    }
    headers.extend(["HEALTHY", "REQ/S", "ERRORS", "P50", "P99", "P99.9"]);
    table(&headers, &rows);
    Ok(())
}

/// A TCP service's releases: connections, bytes, connect failures and the
/// mean duration of closed connections, since each release started.
fn tcp_table(releases: &[ReleaseStatusView]) {
    let rows: Vec<Vec<String>> = releases
        .iter()
        .map(|r| {
            let t = r.tcp.clone().unwrap_or_default();
            let closed: u64 = t.durations.iter().sum();
            vec![
                r.version.clone(),
                match (r.role, r.canary_percent) {
                    (Role::Canary, Some(p)) => format!("canary {p}%"),
                    (role, _) => role.to_string(),
                },
                format!("{}/{}", r.healthy, r.instances),
                t.open.to_string(),
                t.total.to_string(),
                t.bytes_in.to_string(),
                t.bytes_out.to_string(),
                t.connect_failures.to_string(),
                if closed == 0 {
                    "-".to_owned()
                } else {
                    format!("{:.1}s", t.duration_sum_ms as f64 / 1e3 / closed as f64)
                },
            ]
        })
        .collect();
    table(
        &[
            "VERSION",
            "ROLE",
            "HEALTHY",
            "OPEN",
            "CONNECTIONS",
            "BYTES IN",
            "BYTES OUT",
            "CONNECT FAILED",
            "MEAN DURATION",
        ],
        &rows,
    );
}
