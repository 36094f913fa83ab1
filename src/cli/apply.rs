use std::path::PathBuf;

use anyhow::{Context, bail};
use clap::Args;

use super::output;
use super::{AdminClient, ClientArgs, service_path};
use crate::api::policy::PolicyRequest;
use crate::api::services::Change;
use crate::model::TrafficPolicy;

#[derive(Debug, Args)]
pub struct ApplyArgs {
    /// The policy file (TOML): the whole traffic policy of one service.
    #[arg(short = 'f', long = "file")]
    pub file: PathBuf,
    /// The service (default: the file's `service = "…"`).
    pub name: Option<String>,
    #[command(flatten)]
    pub client: ClientArgs,
}

/// Replaces a service's whole traffic policy with the file's.
pub async fn run(args: ApplyArgs) -> anyhow::Result<()> {
    let text = std::fs::read_to_string(&args.file)
        .with_context(|| format!("cannot read {}", args.file.display()))?;
    let mut table: toml::Table = toml::from_str(&text)
        .with_context(|| format!("{} is not valid TOML", args.file.display()))?;
    let in_file = match table.remove("service") {
        Some(toml::Value::String(s)) => Some(s),
        Some(_) => bail!("`service` in {} must be a string", args.file.display()),
        None => None,
    };
    let name = match (args.name.clone(), in_file) {
        (Some(a), Some(b)) if a != b => {
            bail!("the file is for service {b}, not {a}; drop the NAME argument or fix the file")
        }
        (Some(a), _) => a,
        (None, Some(b)) => b,
        (None, None) => bail!(
            "which service? put `service = \"NAME\"` in {} or pass NAME",
            args.file.display()
        ),
    };
    let policy = TrafficPolicy::from_toml(&toml::to_string(&table)?)?;
    let path = service_path(&name)?;
    let client = AdminClient::new(&args.client)?;
    let change: Change = client
        .put(
            &format!("{path}/policy"),
            &PolicyRequest {
                policy,
                base_revision: None,
            },
        )
        .await?;
    output::change(&args.client, &change)
}
