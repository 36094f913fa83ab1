//! `switchyard listen NAME ADDR`: a TCP service's own listen address, where
//! each new connection goes to its main (or its canary, by client
//! address); `--off` stops it.

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::bail;
use clap::Args;

use super::output;
use super::{AdminClient, ClientArgs};
use crate::api::registry::ListenRequest;
use crate::api::services::Change;

#[derive(Debug, Args)]
pub struct ListenArgs {
    pub name: String,
    /// The address clients connect to, e.g. 127.0.0.1:6379 or 0.0.0.0:6379.
    #[arg(conflicts_with = "off")]
    pub address: Option<SocketAddr>,
    /// How long a connection to a release that was killed may stay open
    /// before its instances stop, e.g. 10m [default: until it closes].
    #[arg(long, value_parser = humantime::parse_duration)]
    pub drain: Option<Duration>,
    /// Stop listening (open connections stay until they close).
    #[arg(long)]
    pub off: bool,
    #[command(flatten)]
    pub client: ClientArgs,
}

pub async fn run(args: ListenArgs) -> anyhow::Result<()> {
    if args.address.is_none() && !args.off {
        bail!(
            "which address? `switchyard listen {} 127.0.0.1:PORT`, or --off",
            args.name
        );
    }
    let client = AdminClient::new(&args.client)?;
    let path = format!("{}/listen", super::service_path(&args.name)?);
    let request = ListenRequest {
        address: args.address,
        drain_ms: args.drain.map(|d| d.as_millis() as u64),
    };
    let change: Change = client.post(&path, &request).await?;
    output::change(&args.client, &change)
}
