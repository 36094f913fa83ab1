//! `switchyard pause NAME`: holds the service's new requests (in-flight
//! ones finish) until `switchyard resume NAME`, each at most --max-hold.

use std::time::Duration;

use clap::Args;

use super::output::json;
use super::{AdminClient, ClientArgs, service_path};
use crate::controller::{PauseRequest, PauseView};

#[derive(Debug, Args)]
pub struct PauseArgs {
    pub name: String,
    /// How long one request may be held before it gets 503.
    #[arg(long, value_parser = humantime::parse_duration, default_value = "30s")]
    pub max_hold: Duration,
    #[command(flatten)]
    pub client: ClientArgs,
}

pub async fn run(args: PauseArgs) -> anyhow::Result<()> {
    let client = AdminClient::new(&args.client)?;
    let request = PauseRequest {
        max_hold_ms: Some(args.max_hold.as_millis() as u64),
    };
    let view: PauseView = client
        .post(&format!("{}/pause", service_path(&args.name)?), &request)
        .await?;
    if args.client.json {
        return json(&view);
    }
    println!(
        "{} paused: new requests are held up to {} (then 503); `switchyard resume {}` lets them go",
        args.name,
        humantime::format_duration(Duration::from_millis(view.max_hold_ms)),
        args.name
    );
    Ok(())
}
