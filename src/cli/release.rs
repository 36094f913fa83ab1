//! `switchyard release add FILE`: registers a release from its manifest
//! without starting it, so that plans and upgrades can use it.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::bail;
use clap::{Args, Subcommand};

use super::deploy::project::read_manifest_file;
use super::output::json;
use super::{AdminClient, ClientArgs, service_path};
use crate::controller::{RegisterRequest, Registered};
use crate::model::{MANIFEST_FILE, ReleaseSpec, RunSpec, api_list};

#[derive(Debug, Args)]
pub struct ReleaseArgs {
    #[command(subcommand)]
    pub command: ReleaseCommand,
}

#[derive(Debug, Subcommand)]
pub enum ReleaseCommand {
    /// Register a release from a switchyard.toml (with name and version)
    /// without starting it; its command runs in the file's folder.
    Add(AddArgs),
}

#[derive(Debug, Args)]
pub struct AddArgs {
    /// The manifest: a switchyard.toml with name, version and command.
    pub file: PathBuf,
    /// How long a deploy of it waits for every replica to become healthy.
    #[arg(long, value_parser = humantime::parse_duration, default_value = "60s")]
    pub ready_timeout: Duration,
    #[command(flatten)]
    pub client: ClientArgs,
}

pub async fn run(args: ReleaseArgs) -> anyhow::Result<()> {
    match args.command {
        ReleaseCommand::Add(add) => run_add(add).await,
    }
}

async fn run_add(args: AddArgs) -> anyhow::Result<()> {
    let (dir, manifest) = read_manifest_file(&args.file)?;
    let (Some(name), Some(version)) = (&manifest.name, &manifest.version) else {
        bail!(
            "{} must say which release it is: add name = \"…\" and version = \"…\"",
            args.file.display()
        );
    };
    if manifest.command.is_empty() {
        bail!(
            "{} has no command: add e.g. command = [\"./server\", \"--port\", \"{{port}}\"] ({MANIFEST_FILE} format)",
            args.file.display()
        );
    }
    let spec = ReleaseSpec {
        run: RunSpec::Process {
            command: manifest.command.clone(),
            env: manifest.env.clone(),
            cwd: dir,
        },
        replicas: manifest.replicas.unwrap_or(1),
        health: manifest.health_check()?,
        ready_timeout_ms: args.ready_timeout.as_millis() as u64,
        versioning: manifest.versioning()?,
    };
    let path = format!("{}/registry", service_path(name)?);
    let client = AdminClient::new(&args.client)?;
    let request = RegisterRequest {
        version: version.clone(),
        spec,
    };
    let done: Registered = client.post(&path, &request).await?;
    if args.client.json {
        return json(&done);
    }
    let v = &done.release.versioning;
    println!(
        "{} {name} {version}: API {}, schema {}",
        if done.new {
            "registered"
        } else {
            "already registered"
        },
        api_list(&v.api_versions),
        v.schema_version
            .as_ref()
            .map_or("-".into(), ToString::to_string),
    );
    Ok(())
}
