use std::path::PathBuf;

use anyhow::Context;
use clap::Args;

use super::output::json;
use super::{AdminClient, ClientArgs};
use crate::handover::{API_PATH, HandoverReport, HandoverRequest};

#[derive(Debug, Args)]
pub struct HandoverArgs {
    /// The new serve's binary (default: the path the running serve was
    /// started from, so replacing that file first upgrades it). It gets
    /// the running serve's arguments.
    #[arg(long)]
    pub binary: Option<PathBuf>,
    #[command(flatten)]
    pub client: ClientArgs,
}

pub async fn run(args: HandoverArgs) -> anyhow::Result<()> {
    let binary = match args.binary {
        // serve may run in another directory: send an absolute path.
        Some(path) => Some(
            std::path::absolute(&path)
                .with_context(|| format!("cannot resolve {}", path.display()))?,
        ),
        None => None,
    };
    let client = AdminClient::new(&args.client)?;
    let report: HandoverReport = client.post(API_PATH, &HandoverRequest { binary }).await?;
    if args.client.json {
        return json(&report);
    }
    println!(
        "serve pid {} handed over to pid {} ({}); the instances kept running",
        report.old_pid, report.new_pid, report.binary
    );
    Ok(())
}
