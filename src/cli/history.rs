use clap::Args;

use super::output::{json, table, timestamp};
use super::{AdminClient, ClientArgs, service_path};
use crate::model::Revision;

#[derive(Debug, Args)]
pub struct HistoryArgs {
    pub name: String,
    /// Show at most this many revisions, newest first.
    #[arg(long, short = 'n', default_value_t = 50)]
    pub limit: usize,
    #[command(flatten)]
    pub client: ClientArgs,
}

pub async fn run(args: HistoryArgs) -> anyhow::Result<()> {
    let path = service_path(&args.name)?;
    let client = AdminClient::new(&args.client)?;
    let revisions: Vec<Revision> = client
        .get(&format!("{path}/history?limit={}", args.limit))
        .await?;
    if args.client.json {
        return json(&revisions);
    }
    let rows: Vec<Vec<String>> = revisions
        .iter()
        .map(|r| {
            vec![
                r.number.to_string(),
                timestamp(r.at),
                r.actor.clone(),
                r.state.main().map_or("-".into(), |v| v.to_string()),
                r.action.clone(),
            ]
        })
        .collect();
    table(&["REVISION", "AT", "ACTOR", "MAIN", "ACTION"], &rows);
    Ok(())
}
