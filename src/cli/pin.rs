//! `switchyard pin NAME VERSION --port P`: the release gets its own listen
//! address, served for as long as it runs; `--off` takes it away.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use anyhow::bail;
use clap::Args;

use super::output;
use super::{AdminClient, ClientArgs};
use crate::api::registry::PinRequest;
use crate::api::services::Change;

#[derive(Debug, Args)]
pub struct PinArgs {
    pub name: String,
    pub version: String,
    /// The port whose every request goes to this release.
    #[arg(long, conflicts_with = "off")]
    pub port: Option<u16>,
    /// The address to listen on.
    #[arg(long, default_value_t = IpAddr::V4(Ipv4Addr::LOCALHOST))]
    pub address: IpAddr,
    /// Stop serving the release's pinned address.
    #[arg(long)]
    pub off: bool,
    #[command(flatten)]
    pub client: ClientArgs,
}

pub async fn run(args: PinArgs) -> anyhow::Result<()> {
    let address = match (args.port, args.off) {
        (Some(port), false) => Some(SocketAddr::new(args.address, port)),
        (None, true) => None,
        _ => bail!(
            "which port? `switchyard pin {} {} --port PORT`, or --off",
            args.name,
            args.version
        ),
    };
    let client = AdminClient::new(&args.client)?;
    let path = format!(
        "{}/pins/{}",
        super::service_path(&args.name)?,
        crate::model::parse_version(&args.version)?
    );
    let change: Change = client.post(&path, &PinRequest { address }).await?;
    output::change(&args.client, &change)
}
