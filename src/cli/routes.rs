use clap::Args;

use super::output::{json, table};
use super::{AdminClient, ClientArgs, service_path};
use crate::api::policy::RouteLine;

#[derive(Debug, Args)]
pub struct RoutesArgs {
    pub name: String,
    #[command(flatten)]
    pub client: ClientArgs,
}

/// Prints the effective routing table in evaluation order.
pub async fn run(args: RoutesArgs) -> anyhow::Result<()> {
    let path = service_path(&args.name)?;
    let client = AdminClient::new(&args.client)?;
    let lines: Vec<RouteLine> = client.get(&format!("{path}/routes")).await?;
    if args.client.json {
        return json(&lines);
    }
    let rows: Vec<Vec<String>> = lines
        .into_iter()
        .enumerate()
        .map(|(i, l)| vec![(i + 1).to_string(), l.matches, l.target])
        .collect();
    table(&["#", "WHEN", "GOES TO"], &rows);
    Ok(())
}
