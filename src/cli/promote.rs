use clap::Args;

use super::output;
use super::{AdminClient, ClientArgs, service_path};
use crate::api::policy::VersionRequest;
use crate::api::services::Change;
use crate::model::parse_version;

#[derive(Debug, Args)]
pub struct PromoteArgs {
    pub name: String,
    pub version: String,
    #[command(flatten)]
    pub client: ClientArgs,
}

pub async fn run(args: PromoteArgs) -> anyhow::Result<()> {
    let path = service_path(&args.name)?;
    let version = parse_version(&args.version)?;
    let client = AdminClient::new(&args.client)?;
    let change: Change = client
        .post(
            &format!("{path}/promote"),
            &VersionRequest {
                version: version.to_string(),
                base_revision: None,
            },
        )
        .await?;
    output::change(&args.client, &change)
}
