//! `switchyard rewrite NAME [--on|--off]`: whether answers through
//! `/services/NAME/` get their links back to the application rewritten
//! (shown without a flag). Each change is a revision.

use clap::Args;

use super::output;
use super::{AdminClient, ClientArgs, service_path};
use crate::api::services::Change;
use crate::api::settings::RewriteRequest;
use crate::model::PrefixRewrite;

#[derive(Debug, Args)]
pub struct RewriteArgs {
    pub name: String,
    /// Rewrite Location, Content-Location, Refresh and Set-Cookie paths
    /// of answers through the path prefix (the default).
    #[arg(long, conflicts_with = "off")]
    pub on: bool,
    /// Pass them through as the application wrote them (for an
    /// application that reads X-Forwarded-Prefix itself).
    #[arg(long)]
    pub off: bool,
    #[command(flatten)]
    pub client: ClientArgs,
}

pub async fn run(args: RewriteArgs) -> anyhow::Result<()> {
    let path = format!("{}/rewrite", service_path(&args.name)?);
    let client = AdminClient::new(&args.client)?;
    let rewrite = match (args.on, args.off) {
        (true, _) => PrefixRewrite::On,
        (_, true) => PrefixRewrite::Off,
        (false, false) => {
            let rewrite: PrefixRewrite = client.get(&path).await?;
            if args.client.json {
                return output::json(&rewrite);
            }
            println!(
                "{}: links in answers through /services/{}/ are rewritten: {rewrite}",
                args.name, args.name
            );
            return Ok(());
        }
    };
    let request = RewriteRequest {
        rewrite,
        base_revision: None,
    };
    let change: Change = client.put(&path, &request).await?;
    output::change(&args.client, &change)
}
