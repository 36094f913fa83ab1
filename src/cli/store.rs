//! `switchyard store copy --to etcd://…`: a stopped serve's state directory
//! copied into a fleet's etcd, so that the installation becomes the first
//! node of a fleet (`serve --store etcd://… --state-dir` the same directory).

use std::path::PathBuf;

use anyhow::Context;
use clap::{Args, Subcommand};

use crate::store::{SqliteStore, StateDir, StoreLocation};

#[derive(Debug, Args)]
pub struct StoreArgs {
    #[command(subcommand)]
    pub command: StoreCommand,
}

#[derive(Debug, Subcommand)]
pub enum StoreCommand {
    /// Copy a state directory's services, history and releases into a
    /// fleet's etcd (serve stopped; the fleet's prefix empty).
    Copy(CopyArgs),
}

#[derive(Debug, Args)]
pub struct CopyArgs {
    /// The state directory to copy (its serve stopped).
    #[arg(long, env = "SWITCHYARD_STATE_DIR", default_value = ".switchyard")]
    pub state_dir: PathBuf,
    /// Where to: etcd://HOST:PORT[,HOST:PORT…][/PREFIX] (needs a
    /// switchyard built with `--features etcd`).
    #[arg(long, value_name = "URL")]
    pub to: StoreLocation,
}

pub fn run(args: StoreArgs) -> anyhow::Result<()> {
    let StoreCommand::Copy(args) = args.command;
    let held = StateDir::lock(&args.state_dir)?;
    let from = SqliteStore::open(&held)
        .with_context(|| format!("cannot open the state in {}", args.state_dir.display()))?;
    let to = open(&args.to)?;
    let report = crate::store::copy(&from, to.as_ref())
        .with_context(|| format!("cannot copy into {}", describe(&args.to)))?
        .map_err(|there| {
            anyhow::anyhow!(
                "{} holds services already ({}); copy into an empty prefix, e.g. etcd://HOST:PORT/NEW-PREFIX",
                describe(&args.to),
                there.join(", ")
            )
        })?;
    println!(
        "copied {} services ({} revisions, {} releases, {} events) from {} into {}",
        report.services,
        report.revisions,
        report.releases,
        report.events,
        args.state_dir.display(),
        describe(&args.to)
    );
    Ok(())
}

fn describe(location: &StoreLocation) -> String {
    match location {
        StoreLocation::Etcd(etcd) => etcd.to_string(),
        StoreLocation::StateDir => "the state directory".to_owned(),
    }
}

#[cfg(feature = "etcd")]
fn open(location: &StoreLocation) -> anyhow::Result<Box<dyn crate::store::ServiceStore>> {
    match location {
        StoreLocation::Etcd(etcd) => Ok(Box::new(
            crate::store::EtcdStore::open(etcd)
                .with_context(|| format!("cannot open the fleet's store {etcd}"))?,
        )),
        StoreLocation::StateDir => anyhow::bail!("give --to etcd://HOST:PORT[/PREFIX]"),
    }
}

#[cfg(not(feature = "etcd"))]
fn open(location: &StoreLocation) -> anyhow::Result<Box<dyn crate::store::ServiceStore>> {
    anyhow::bail!(
        "--to {}: this switchyard was built without etcd. Build one with it: \
         `cargo build --release --features etcd` (building it needs protoc: \
         `apt-get install protobuf-compiler`)",
        describe(location)
    )
}
