//! `switchyard api-version NAME`: where the service's requests name the
//! API version they want (shown without a flag, changed with one).

use anyhow::bail;
use clap::Args;

use super::output;
use super::{AdminClient, ClientArgs, service_path};
use crate::api::registry::ApiVersionRequest;
use crate::api::services::Change;
use crate::model::ApiVersionSource;

#[derive(Debug, Args)]
pub struct ApiVersionArgs {
    pub name: String,
    /// Read it from this request header (the default is x-api-version).
    #[arg(long, conflicts_with_all = ["media_type", "path_prefix"])]
    pub header: Option<String>,
    /// Read the `version=` parameter of the Accept media type, else of
    /// Content-Type (`application/vnd.x+json;version=2.0`).
    #[arg(long, conflicts_with = "path_prefix")]
    pub media_type: bool,
    /// Read the first path segment within the service (`/v2/…`).
    #[arg(long)]
    pub path_prefix: bool,
    #[command(flatten)]
    pub client: ClientArgs,
}

pub async fn run(args: ApiVersionArgs) -> anyhow::Result<()> {
    let path = format!("{}/api-version", service_path(&args.name)?);
    let client = AdminClient::new(&args.client)?;
    let source = match (&args.header, args.media_type, args.path_prefix) {
        (Some(name), _, _) => {
            if name.trim().is_empty() {
                bail!("--header needs a header name, e.g. x-api-version");
            }
            ApiVersionSource::Header {
                name: name.trim().to_ascii_lowercase(),
            }
        }
        (None, true, _) => ApiVersionSource::MediaType,
        (None, _, true) => ApiVersionSource::PathPrefix,
        (None, false, false) => {
            let source: ApiVersionSource = client.get(&path).await?;
            if args.client.json {
                return output::json(&source);
            }
            println!("{}: the API version is read from the {source}", args.name);
            return Ok(());
        }
    };
    let request = ApiVersionRequest {
        source,
        base_revision: None,
    };
    let change: Change = client.put(&path, &request).await?;
    output::change(&args.client, &change)
}
