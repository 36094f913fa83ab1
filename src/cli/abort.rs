use clap::Args;

use super::output;
use super::{AdminClient, ClientArgs, service_path};
use crate::api::policy::BaseRequest;
use crate::api::services::Change;

#[derive(Debug, Args)]
pub struct AbortArgs {
    pub name: String,
    #[command(flatten)]
    pub client: ClientArgs,
}

pub async fn run(args: AbortArgs) -> anyhow::Result<()> {
    let path = service_path(&args.name)?;
    let client = AdminClient::new(&args.client)?;
    let change: Change = client
        .post(&format!("{path}/abort"), &BaseRequest::default())
        .await?;
    output::change(&args.client, &change)
}
