use clap::Args;

use super::output::json;
use super::{AdminClient, ClientArgs, service_path};
use crate::controller::ResumeReport;

#[derive(Debug, Args)]
pub struct ResumeArgs {
    pub name: String,
    #[command(flatten)]
    pub client: ClientArgs,
}

/// Lets paused traffic through (held requests oldest first) and a paused
/// rollout go on to its next step, and says which it resumed.
pub async fn run(args: ResumeArgs) -> anyhow::Result<()> {
    let path = service_path(&args.name)?;
    let client = AdminClient::new(&args.client)?;
    let report: ResumeReport = client
        .post(&format!("{path}/resume"), &serde_json::json!({}))
        .await?;
    if args.client.json {
        return json(&report);
    }
    if let Some(released) = report.released {
        println!(
            "traffic of {} resumed: {released} held requests let through",
            args.name
        );
    }
    if let Some(state) = &report.rollout {
        println!(
            "rollout of {} {} resumed at step {} of {}",
            args.name,
            state.plan.version,
            (state.step + 1).min(state.plan.steps.len()),
            state.plan.steps.len()
        );
    }
    Ok(())
}
