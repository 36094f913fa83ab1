//! `switchyard https NAME [--redirect on|off] [--hsts DURATION|off]`:
//! whether cleartext requests to the service are redirected to HTTPS, and
//! whether its answers over HTTPS carry HSTS (shown without a flag). Each
//! change is a revision.

use std::time::Duration;

use anyhow::bail;
use clap::Args;

use super::output;
use super::{AdminClient, ClientArgs, service_path};
use crate::api::services::Change;
use crate::api::settings::HttpsRequest;
use crate::model::HttpsPolicy;

#[derive(Debug, Args)]
pub struct HttpsArgs {
    pub name: String,
    /// `on`: answer cleartext requests 308 to the same URL on the TLS
    /// listener (serve --tls-listen); `off`: serve them.
    #[arg(long, value_name = "on|off")]
    pub redirect: Option<String>,
    /// A duration (`1y`, `180d`): answers over HTTPS carry
    /// `Strict-Transport-Security: max-age=…`; `off`: they do not.
    #[arg(long, value_name = "DURATION|off")]
    pub hsts: Option<String>,
    #[command(flatten)]
    pub client: ClientArgs,
}

fn on_off(value: &str) -> anyhow::Result<bool> {
    match value {
        "on" => Ok(true),
        "off" => Ok(false),
        other => bail!("--redirect takes on or off, not `{other}`"),
    }
}

fn hsts(value: &str) -> anyhow::Result<Option<u64>> {
    if value == "off" {
        return Ok(None);
    }
    let age: Duration = humantime::parse_duration(value).map_err(|e| {
        anyhow::anyhow!("--hsts takes a duration such as 1y or 180d, or off; `{value}`: {e}")
    })?;
    if age.is_zero() {
        bail!("--hsts 0s would tell browsers to forget HTTPS; use --hsts off to send no HSTS");
    }
    Ok(Some(age.as_secs()))
}

pub async fn run(args: HttpsArgs) -> anyhow::Result<()> {
    let path = format!("{}/https", service_path(&args.name)?);
    let client = AdminClient::new(&args.client)?;
    let redirect = args.redirect.as_deref().map(on_off).transpose()?;
    let hsts = args.hsts.as_deref().map(hsts).transpose()?;
    let current: HttpsPolicy = client.get(&path).await?;
    if redirect.is_none() && hsts.is_none() {
        if args.client.json {
            return output::json(&current);
        }
        println!("{}: {current}", args.name);
        return Ok(());
    }
    let https = HttpsPolicy {
        redirect: redirect.unwrap_or(current.redirect),
        hsts_max_age: hsts.unwrap_or(current.hsts_max_age),
    };
    let request = HttpsRequest {
        https,
        base_revision: None,
    };
    let change: Change = client.put(&path, &request).await?;
    output::change(&args.client, &change)
}
