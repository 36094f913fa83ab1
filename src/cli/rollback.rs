use clap::Args;

use super::output::json;
use super::{AdminClient, ClientArgs, service_path};
use crate::api::services::{Change, RollbackRequest};

#[derive(Debug, Args)]
pub struct RollbackArgs {
    pub name: String,
    /// The revision to return to (default: the one before the current).
    pub revision: Option<u64>,
    #[command(flatten)]
    pub client: ClientArgs,
}

pub async fn run(args: RollbackArgs) -> anyhow::Result<()> {
    let path = service_path(&args.name)?;
    let client = AdminClient::new(&args.client)?;
    let change: Change = client
        .post(
            &format!("{path}/rollback"),
            &RollbackRequest {
                revision: args.revision,
                base_revision: None,
            },
        )
        .await?;
    if args.client.json {
        return json(&change);
    }
    println!(
        "{}: {} (revision {}); main is {}",
        args.name,
        change.revision.action,
        change.revision.number,
        change.service.main.as_deref().unwrap_or("none")
    );
    Ok(())
}
