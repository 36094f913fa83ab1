//! `switchyard release add PATH`: registers a release from its manifest
//! without starting it, so that plans, upgrades and `deploy NAME VERSION`
//! can use it; `release rm NAME VERSION` removes one that never ran. A project
//! folder with a Dockerfile is built into an image first and registered as
//! a container release, as `deploy NAME VERSION FOLDER` would run it.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, bail};
use clap::{Args, Subcommand};

use super::deploy::container::{absolute_volume, parse_cpus, parse_memory};
use super::deploy::project::{self, Project};
use super::output::json;
use super::{AdminClient, ClientArgs, service_path};
use crate::controller::{RegisterRequest, Registered, Unregistered};
use crate::model::{ContainerSpec, MANIFEST_FILE, ReleaseSpec, RunSpec, api_list, parse_version};
use crate::runtime::docker::Engine;

#[derive(Debug, Args)]
pub struct ReleaseArgs {
    #[command(subcommand)]
    pub command: ReleaseCommand,
}

#[derive(Debug, Subcommand)]
pub enum ReleaseCommand {
    /// Register a release from a switchyard.toml (with name and version)
    /// or a project folder, without starting it.
    Add(AddArgs),
    /// Remove a registered release that never ran (a mistake in its
    /// manifest, say); one that ran stays registered for rollbacks.
    Rm(RmArgs),
}

#[derive(Debug, Args)]
pub struct RmArgs {
    pub name: String,
    pub version: String,
    #[command(flatten)]
    pub client: ClientArgs,
}

#[derive(Debug, Args)]
pub struct AddArgs {
    /// A switchyard.toml with name, version and command: its command runs
    /// as local processes in the file's folder. Or a project folder: with
    /// a Dockerfile it is built into switchyard/NAME:VERSION and registered
    /// as a container release (its switchyard.toml gives name, version,
    /// health, env, API versions, schemas and hooks); without one, as the
    /// folder's switchyard.toml.
    pub path: PathBuf,
    /// With a folder that has both a Dockerfile and a switchyard.toml:
    /// register the manifest's command as local processes instead.
    #[arg(long)]
    pub process: bool,
    /// The port the service listens on inside its container.
    #[arg(long = "port")]
    pub container_port: Option<u16>,
    /// Memory limit of each container (and hook container), e.g. 256m.
    #[arg(long, value_parser = parse_memory)]
    pub memory: Option<u64>,
    /// CPU limit of each container (and hook container), e.g. 0.5.
    #[arg(long, value_parser = parse_cpus)]
    pub cpus: Option<u32>,
    /// A mount for each container and hook container (repeatable).
    #[arg(long = "volume", value_name = "SOURCE:TARGET[:ro]")]
    pub volumes: Vec<String>,
    /// How long a deploy of it waits for every replica to become healthy.
    #[arg(long, value_parser = humantime::parse_duration, default_value = "60s")]
    pub ready_timeout: Duration,
    #[command(flatten)]
    pub client: ClientArgs,
}

impl AddArgs {
    fn container_flags_given(&self) -> bool {
        self.container_port.is_some()
            || self.memory.is_some()
            || self.cpus.is_some()
            || !self.volumes.is_empty()
    }

    /// How the release runs: the folder's image (built here) or the
    /// manifest's command.
    async fn run_spec(
        &self,
        project: &Project,
        name: &str,
        version: &str,
    ) -> anyhow::Result<RunSpec> {
        match project {
            Project::Processes { dir, manifest } => {
                if self.container_flags_given() {
                    bail!(
                        "--port, --memory, --cpus and --volume apply to containers: give a folder with a Dockerfile"
                    );
                }
                if manifest.command.is_empty() {
                    bail!(
                        "{} has no command: add e.g. command = [\"./server\", \"--port\", \"{{port}}\"] ({MANIFEST_FILE} format)",
                        self.path.display()
                    );
                }
                Ok(RunSpec::Process {
                    command: manifest.command.clone(),
                    env: manifest.env.clone(),
                    cwd: dir.clone(),
                })
            }
            Project::Image { dir, manifest } => {
                parse_version(version)?;
                let here = std::env::current_dir().context("cannot read the current directory")?;
                let volumes = self
                    .volumes
                    .iter()
                    .map(|v| absolute_volume(v, &here))
                    .collect::<anyhow::Result<_>>()?;
                let tag = project::image_tag(name, version);
                let id = project::build(&Engine::from_env(), dir, &tag).await?;
                Ok(RunSpec::Container(ContainerSpec {
                    image: tag,
                    image_id: Some(id),
                    // As `deploy` runs a folder: the image's CMD.
                    command: Vec::new(),
                    env: manifest.as_ref().map(|m| m.env.clone()).unwrap_or_default(),
                    port: self.container_port,
                    memory_bytes: self.memory,
                    millicpus: self.cpus,
                    volumes,
                }))
            }
        }
    }
}

pub async fn run(args: ReleaseArgs) -> anyhow::Result<()> {
    match args.command {
        ReleaseCommand::Add(add) => run_add(add).await,
        ReleaseCommand::Rm(rm) => run_rm(rm).await,
    }
}

async fn run_rm(args: RmArgs) -> anyhow::Result<()> {
    let version = parse_version(&args.version)?;
    let path = format!("{}/registry/{version}", service_path(&args.name)?);
    let client = AdminClient::new(&args.client)?;
    let done: Unregistered = client.delete(&path).await?;
    if args.client.json {
        return json(&done);
    }
    println!(
        "removed {} {}: it never ran; registered now: {}",
        done.service,
        done.version,
        if done.left.is_empty() {
            "none".to_owned()
        } else {
            done.left.join(", ")
        }
    );
    Ok(())
}

/// The project at `path`: a folder as `deploy` reads one, or a manifest
/// file (processes in its folder).
fn open(path: &Path, as_processes: bool) -> anyhow::Result<Project> {
    if path.is_dir() {
        return Project::open(path, as_processes);
    }
    if as_processes {
        bail!("--process applies to a project folder; a manifest file always registers processes");
    }
    Project::from_manifest_file(path)
}

async fn run_add(args: AddArgs) -> anyhow::Result<()> {
    let project = open(&args.path, args.process)?;
    let Some(manifest) = project.manifest() else {
        bail!(
            "{} has a Dockerfile but no {MANIFEST_FILE}: add one with name = \"…\" and version = \"…\" (and its health check, API versions, schemas and hooks)",
            args.path.display()
        );
    };
    let (Some(name), Some(version)) = (&manifest.name, &manifest.version) else {
        bail!(
            "{} must say which release it is: add name = \"…\" and version = \"…\"",
            args.path.display()
        );
    };
    let path = format!("{}/registry", service_path(name)?);
    let spec = ReleaseSpec {
        run: args.run_spec(&project, name, version).await?,
        replicas: manifest.replicas.unwrap_or(1),
        health: manifest.health_check()?,
        ready_timeout_ms: args.ready_timeout.as_millis() as u64,
        versioning: manifest.versioning()?,
        protocol: crate::model::Protocol::Http,
        proxy_protocol: None,
    };
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
