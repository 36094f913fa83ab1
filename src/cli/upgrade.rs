//! `switchyard upgrade NAME --to VERSION`: shows the plan, then runs it
//! step by step (backup and migrate hooks, deploy, readiness, switch),
//! stopping at the first failure at the last good step.

use std::time::Duration;

use clap::Args;

use super::output::json;
use super::{AdminClient, ClientArgs, plan, service_path};
use crate::controller::{UpgradeReport, UpgradeRequest};

#[derive(Debug, Args)]
pub struct UpgradeArgs {
    pub name: String,
    /// The registered release to end at.
    #[arg(long)]
    pub to: String,
    /// How long each hook may run before it is killed (and the step fails).
    #[arg(long, value_parser = humantime::parse_duration, default_value = "5m")]
    pub hook_timeout: Duration,
    /// Hold the service's new requests during each step that changes the
    /// schema (backup, migrate, deploy, switch), each at most this long;
    /// they go on, oldest first, when the step ends.
    #[arg(long, value_name = "MAX_HOLD", value_parser = humantime::parse_duration)]
    pub pause: Option<Duration>,
    #[command(flatten)]
    pub client: ClientArgs,
}

pub async fn run(args: UpgradeArgs) -> anyhow::Result<()> {
    let client = AdminClient::new(&args.client)?;
    if !args.client.json {
        // The plan first, so the irreversible steps are known beforehand.
        let planned = plan::fetch(&client, &args.name, &args.to).await?;
        plan::print(&planned);
    }
    let request = UpgradeRequest {
        to: args.to.clone(),
        hook_timeout_ms: Some(args.hook_timeout.as_millis() as u64),
        pause_max_hold_ms: args.pause.map(|d| d.as_millis() as u64),
    };
    let path = format!("{}/upgrade", service_path(&args.name)?);
    let report: UpgradeReport = client.post(&path, &request).await?;
    if args.client.json {
        return json(&report);
    }
    for step in &report.steps {
        let hooks: Vec<&str> = step.hooks.iter().map(|(h, _)| h.as_str()).collect();
        println!(
            "  done {} → {} (revision {}){}",
            step.from,
            step.to,
            step.revision,
            if hooks.is_empty() {
                String::new()
            } else {
                format!(", hooks: {}", hooks.join(", "))
            }
        );
    }
    println!("{} upgraded to {}", args.name, report.plan.to);
    Ok(())
}
