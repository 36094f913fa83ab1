use std::time::Duration;

use clap::Args;

use super::output::json;
use super::{AdminClient, ClientArgs, release_path};
use crate::runtime::LogChunk;

#[derive(Debug, Args)]
pub struct LogsArgs {
    pub name: String,
    pub version: String,
    /// Lines to show from the end of each instance's log.
    #[arg(short = 'n', long = "lines", default_value_t = 50)]
    pub lines: usize,
    /// Keep printing new lines as they are written.
    #[arg(short = 'f', long)]
    pub follow: bool,
    #[command(flatten)]
    pub client: ClientArgs,
}

pub async fn run(args: LogsArgs) -> anyhow::Result<()> {
    let path = format!("{}/logs", release_path(&args.name, &args.version)?);
    let client = AdminClient::new(&args.client)?;
    let mut chunks: Vec<LogChunk> = client.get(&format!("{path}?lines={}", args.lines)).await?;
    if args.client.json && !args.follow {
        return json(&chunks);
    }
    loop {
        let several = chunks.len() > 1;
        for chunk in &chunks {
            for line in &chunk.lines {
                if several {
                    println!("[{}] {line}", chunk.slot);
                } else {
                    println!("{line}");
                }
            }
        }
        if !args.follow {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
        let after: Vec<String> = chunks
            .iter()
            .map(|c| format!("{}:{}", c.slot, c.offset))
            .collect();
        chunks = client
            .get(&format!("{path}?after={}", after.join(",")))
            .await?;
    }
}
