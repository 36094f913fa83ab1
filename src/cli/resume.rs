use clap::Args;

use super::output::json;
use super::{AdminClient, ClientArgs, service_path};
use crate::model::RolloutState;

#[derive(Debug, Args)]
pub struct ResumeArgs {
    pub name: String,
    #[command(flatten)]
    pub client: ClientArgs,
}

/// Lets a paused rollout go on to its next step.
pub async fn run(args: ResumeArgs) -> anyhow::Result<()> {
    let path = service_path(&args.name)?;
    let client = AdminClient::new(&args.client)?;
    let state: RolloutState = client
        .post(&format!("{path}/rollout/resume"), &serde_json::json!({}))
        .await?;
    if args.client.json {
        return json(&state);
    }
    println!(
        "rollout of {} {} resumed at step {} of {}",
        args.name,
        state.plan.version,
        (state.step + 1).min(state.plan.steps.len()),
        state.plan.steps.len()
    );
    Ok(())
}
