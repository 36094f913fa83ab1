use clap::Args;

use super::output::{json, table, timestamp};
use super::{AdminClient, ClientArgs, service_path};
use crate::model::Event;

#[derive(Debug, Args)]
pub struct EventsArgs {
    pub name: String,
    #[arg(short = 'n', long, default_value_t = 50)]
    pub limit: usize,
    #[command(flatten)]
    pub client: ClientArgs,
}

/// Rollout steps, checks, promotions and rollbacks, newest first.
pub async fn run(args: EventsArgs) -> anyhow::Result<()> {
    let path = service_path(&args.name)?;
    let client = AdminClient::new(&args.client)?;
    let events: Vec<Event> = client
        .get(&format!("{path}/events?limit={}", args.limit))
        .await?;
    if args.client.json {
        return json(&events);
    }
    let rows: Vec<Vec<String>> = events
        .iter()
        .map(|e| vec![timestamp(e.at), e.kind.clone(), e.message.clone()])
        .collect();
    table(&["AT", "KIND", "MESSAGE"], &rows);
    Ok(())
}
