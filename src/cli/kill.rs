use anyhow::bail;
use clap::Args;

use super::output::{confirm, json};
use super::{AdminClient, ClientArgs, release_path, service_path};
use crate::api::services::Change;

#[derive(Debug, Args)]
pub struct KillArgs {
    pub name: String,
    /// The release to kill (omit with --all).
    pub version: Option<String>,
    /// Kill every release of the service.
    #[arg(long)]
    pub all: bool,
    /// Refuse if the service has moved past this revision.
    #[arg(long)]
    pub revision: Option<u64>,
    /// Do not ask for confirmation (asked for --all).
    #[arg(long, short = 'y')]
    pub yes: bool,
    #[command(flatten)]
    pub client: ClientArgs,
}

pub async fn run(args: KillArgs) -> anyhow::Result<()> {
    let client = AdminClient::new(&args.client)?;
    let base = args
        .revision
        .map(|r| format!("?base_revision={r}"))
        .unwrap_or_default();
    let change: Change = match (&args.version, args.all) {
        (Some(_), true) => bail!("give either a VERSION or --all, not both"),
        (None, false) => bail!(
            "which release? `switchyard kill {} VERSION`, or --all for every release",
            args.name
        ),
        (Some(version), false) => {
            client
                .delete(&format!("{}{base}", release_path(&args.name, version)?))
                .await?
        }
        (None, true) => {
            let path = service_path(&args.name)?;
            confirm(
                &format!("Kill every release of {}? It stops answering.", args.name),
                args.yes,
            )?;
            client.delete(&format!("{path}{base}")).await?
        }
    };
    if args.client.json {
        return json(&change);
    }
    println!(
        "{} (revision {})",
        change.revision.action, change.revision.number
    );
    Ok(())
}
