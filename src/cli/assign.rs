use clap::Args;

use super::output::{confirm, json};
use super::{AdminClient, ClientArgs, service_path};
use crate::api::services::{AssignRequest, Change};
use crate::controller::ServiceView;

#[derive(Debug, Args)]
pub struct AssignArgs {
    pub name: String,
    pub version: String,
    /// Do not ask for confirmation.
    #[arg(long, short = 'y')]
    pub yes: bool,
    #[command(flatten)]
    pub client: ClientArgs,
}

pub async fn run(args: AssignArgs) -> anyhow::Result<()> {
    let path = service_path(&args.name)?;
    let client = AdminClient::new(&args.client)?;
    let service: ServiceView = client.get(&path).await?;
    let from = service.main.as_deref().unwrap_or("none");
    confirm(
        &format!(
            "Switch main of {} from {from} to {} (revision {})?",
            args.name, args.version, service.revision
        ),
        args.yes,
    )?;
    let change: Change = client
        .post(
            &format!("{path}/assign"),
            &AssignRequest {
                version: args.version.clone(),
                base_revision: Some(service.revision),
            },
        )
        .await?;
    if args.client.json {
        return json(&change);
    }
    println!(
        "{} {} is main (revision {}); {from} is standby",
        args.name, args.version, change.revision.number
    );
    Ok(())
}
