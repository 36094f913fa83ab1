//! `switchyard host add|rm NAME HOST`: the host names routed to a service,
//! changed without a new release (each change is a revision).

use clap::{Args, Subcommand};

use super::output;
use super::{AdminClient, ClientArgs, service_path};
use crate::api::services::Change;
use crate::api::settings::HostRequest;

#[derive(Debug, Args)]
pub struct HostArgs {
    #[command(subcommand)]
    pub command: HostCommand,
}

#[derive(Debug, Subcommand)]
pub enum HostCommand {
    /// Route a host name to the service (the whole path goes to it).
    Add(HostChange),
    /// Stop routing a host name to the service.
    Rm(HostChange),
}

#[derive(Debug, Args)]
pub struct HostChange {
    pub name: String,
    /// A DNS name such as app.example.com (no port).
    pub host: String,
    /// Refuse the change unless the service is still at this revision.
    #[arg(long)]
    pub revision: Option<u64>,
    #[command(flatten)]
    pub client: ClientArgs,
}

pub async fn run(args: HostArgs) -> anyhow::Result<()> {
    let (args, add) = match args.command {
        HostCommand::Add(a) => (a, true),
        HostCommand::Rm(a) => (a, false),
    };
    let host = crate::model::normalize_host(&args.host)?;
    let client = AdminClient::new(&args.client)?;
    let path = format!("{}/hosts", service_path(&args.name)?);
    let change: Change = if add {
        let request = HostRequest {
            host,
            base_revision: args.revision,
        };
        client.post(&path, &request).await?
    } else {
        let base = args
            .revision
            .map_or_else(String::new, |r| format!("?base_revision={r}"));
        client.delete(&format!("{path}/{host}{base}")).await?
    };
    output::change(&args.client, &change)
}
