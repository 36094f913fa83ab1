use anyhow::bail;
use clap::Args;

use super::output;
use super::{AdminClient, ClientArgs, service_path};
use crate::api::policy::GreenRequest;
use crate::api::services::Change;
use crate::model::parse_version;

#[derive(Debug, Args)]
pub struct GreenArgs {
    pub name: String,
    /// The release `x-client-mode: green` reaches.
    pub version: Option<String>,
    /// Clear it: `green` then answers 404 unless a canary runs.
    #[arg(long)]
    pub off: bool,
    #[command(flatten)]
    pub client: ClientArgs,
}

pub async fn run(args: GreenArgs) -> anyhow::Result<()> {
    let path = service_path(&args.name)?;
    let version = match (&args.version, args.off) {
        (Some(_), true) => bail!("give either a VERSION or --off, not both"),
        (None, false) => bail!(
            "which release? `switchyard green {} VERSION`, or --off",
            args.name
        ),
        (Some(v), false) => Some(parse_version(v)?.to_string()),
        (None, true) => None,
    };
    let client = AdminClient::new(&args.client)?;
    let change: Change = client
        .post(
            &format!("{path}/green"),
            &GreenRequest {
                version,
                base_revision: None,
            },
        )
        .await?;
    output::change(&args.client, &change)
}
