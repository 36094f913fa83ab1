use clap::Args;

use super::output::{ago, json, table, timestamp};
use super::{AdminClient, ClientArgs, service_path};
use crate::controller::ServiceView;
use crate::model::Role;
use crate::runtime::Health;

#[derive(Debug, Args)]
pub struct LsArgs {
    /// Only this service.
    pub name: Option<String>,
    #[command(flatten)]
    pub client: ClientArgs,
}

pub async fn run(args: LsArgs) -> anyhow::Result<()> {
    let client = AdminClient::new(&args.client)?;
    let services: Vec<ServiceView> = match &args.name {
        Some(name) => vec![client.get(&service_path(name)?).await?],
        None => client.get("/v1/services").await?,
    };
    if args.client.json {
        return json(&services);
    }
    let mut rows = Vec::new();
    for service in &services {
        for release in &service.releases {
            let healthy = release
                .instances
                .iter()
                .filter(|i| i.health == Health::Healthy)
                .count();
            rows.push(vec![
                if release.role == Role::Main { "*" } else { "" }.to_owned(),
                service.name.clone(),
                release.version.clone(),
                match (&service.policy.canary, release.role) {
                    (Some(c), Role::Canary) => format!("canary {}%", c.percent),
                    _ => release.role.to_string(),
                },
                release.status.clone(),
                format!("{healthy}/{}", release.instances.len()),
                ago(release.since),
            ]);
        }
    }
    table(
        &[
            "MAIN",
            "NAME",
            "VERSION",
            "ROLE",
            "STATUS",
            "INSTANCES",
            "SINCE",
        ],
        &rows,
    );
    for service in &services {
        if service.protocol.is_tcp() {
            println!("{}", tcp_line(service));
        }
        if let Some(upgrade) = &service.upgrading {
            println!(
                "{} is held by its {upgrade}; `switchyard upgrade {} --status` follows it",
                service.name, service.name
            );
        }
        if let Some(pause) = &service.paused {
            println!(
                "{} is paused since {} ({}): new requests are held up to {} (then 503); `switchyard resume {}` lets them go",
                service.name,
                timestamp(pause.since),
                ago(pause.since),
                humantime::format_duration(std::time::Duration::from_millis(pause.max_hold_ms)),
                service.name
            );
        }
    }
    Ok(())
}

/// A TCP service's addresses and each release's connections, under the table.
fn tcp_line(service: &ServiceView) -> String {
    let listen = service.listen.map_or_else(
        || {
            format!(
                "no listen address yet (`switchyard listen {} IP:PORT`)",
                service.name
            )
        },
        |a| format!("listens on {a}"),
    );
    let mut line = format!("{} is a TCP service: {listen}", service.name);
    for r in &service.releases {
        let pinned = r
            .pinned
            .map_or_else(String::new, |a| format!(", pinned to {a}"));
        let counts = r.tcp.as_ref().map_or_else(String::new, |t| {
            format!(
                ": {} open, {} total, {} B in, {} B out, {} connect failures",
                t.open, t.total, t.bytes_in, t.bytes_out, t.connect_failures
            )
        });
        line.push_str(&format!(
            "\n  {} {}{pinned}{counts}",
            service.name, r.version
        ));
    }
    line
}
