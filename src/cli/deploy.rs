pub(super) mod container;
pub(super) mod project;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, anyhow, bail};
use clap::Args;

use self::project::Project;
use super::output::json;
use super::{AdminClient, ClientArgs, service_path};
use crate::api::services::Change;
use crate::controller::DeployRequest;
use crate::model::{
    ContainerSpec, HealthCheck, Manifest, ReleaseSpec, Role, RunSpec, ShadowSettings, parse_version,
};
use crate::runtime::Health;
use crate::runtime::docker::Engine;

/// How long a deploy waits for every replica when not told.
const DEFAULT_READY_TIMEOUT: Duration = Duration::from_secs(60);

#[derive(Debug, Args)]
pub struct DeployArgs {
    /// Service name: 1 to 63 of a-z, 0-9 and '-'.
    pub name: String,
    /// Semantic version of the release, e.g. 1.2.0.
    pub version: String,
    /// A project folder: with a Dockerfile it is built into the image
    /// switchyard/NAME:VERSION and runs as containers; with only a
    /// switchyard.toml its command runs as local processes in the folder.
    pub path: Option<PathBuf>,
    /// The command that runs one instance; `{port}` becomes its port (also
    /// in $PORT). With --image or a Dockerfile, it replaces the image's CMD.
    #[arg(last = true)]
    pub command: Vec<String>,
    /// Run containers of this local image (NAME[:TAG] or id) on the Docker
    /// Engine (at DOCKER_HOST, default the local socket).
    #[arg(long)]
    pub image: Option<String>,
    /// With a folder that has both a Dockerfile and a switchyard.toml: run
    /// the manifest's command as local processes instead of building an image.
    #[arg(long)]
    pub process: bool,
    /// A switchyard.toml (any file name): its command runs as local
    /// processes in the file's folder, with its API versions, schemas and
    /// hooks.
    #[arg(long, value_name = "FILE", conflicts_with_all = ["path", "image", "upstreams", "process"])]
    pub manifest: Option<PathBuf>,
    /// The port the service listens on inside its container (default: the
    /// image's one exposed port, else 8080); it is published on a free port
    /// of 127.0.0.1.
    #[arg(long = "port")]
    pub container_port: Option<u16>,
    /// Memory limit of each container, e.g. 256m or 1g.
    #[arg(long, value_parser = container::parse_memory)]
    pub memory: Option<u64>,
    /// CPU limit of each container, e.g. 0.5 or 2.
    #[arg(long, value_parser = container::parse_cpus)]
    pub cpus: Option<u32>,
    /// A mount for each container (repeatable): an absolute host path, a
    /// ./relative one, or a named volume, then the path inside.
    #[arg(long = "volume", value_name = "SOURCE:TARGET[:ro]")]
    pub volumes: Vec<String>,
    /// Instances to run [default: 1, or the manifest's replicas].
    #[arg(long)]
    pub replicas: Option<u32>,
    /// Environment variable for the instances (repeatable).
    #[arg(long = "env", value_name = "KEY=VALUE")]
    pub env: Vec<String>,
    /// Working directory of the instances (default: the current directory).
    #[arg(long)]
    pub cwd: Option<PathBuf>,
    /// Address of an instance that runs elsewhere (repeatable); Switchyard
    /// health-checks and routes to it but never starts or stops it.
    /// `https://HOST:PORT` reaches it over TLS (verified, SNI HOST).
    #[arg(long = "upstream", value_name = "[https://]HOST:PORT")]
    pub upstreams: Vec<String>,
    /// PEM file of CA certificates that https:// upstreams may be signed
    /// by, besides the system's.
    #[arg(long, value_name = "FILE", requires = "upstreams")]
    pub upstream_ca: Option<PathBuf>,
    /// Host name routed to this service (repeatable).
    #[arg(long = "host")]
    pub hosts: Vec<String>,
    /// Enter as standby (running, no traffic) instead of shadow.
    #[arg(long, conflicts_with = "promote")]
    pub standby: bool,
    /// The emergency release: make it main as soon as it is healthy, no canary.
    #[arg(long)]
    pub promote: bool,
    /// Health check path [default: /, or the manifest's].
    #[arg(long = "health")]
    pub health_path: Option<String>,
    /// Time between health checks once healthy [default: 1s].
    #[arg(long, value_parser = humantime::parse_duration)]
    pub health_interval: Option<Duration>,
    /// How long one health check may take [default: 2s].
    #[arg(long, value_parser = humantime::parse_duration)]
    pub health_timeout: Option<Duration>,
    /// Successes in a row that make an instance healthy [default: 2].
    #[arg(long)]
    pub healthy_threshold: Option<u32>,
    /// Failures in a row that take an instance out of rotation [default: 3].
    #[arg(long)]
    pub unhealthy_threshold: Option<u32>,
    /// What the service's clients speak: http, or tcp for a server with its
    /// own wire protocol (connections forwarded whole, from the service's
    /// listen address). A service's protocol is its first release's.
    #[arg(long, value_name = "http|tcp")]
    pub protocol: Option<crate::model::Protocol>,
    /// A TCP release's health check over HTTP on another port of the
    /// instance: `GET --health` there [default for TCP: connect to the
    /// instance's port].
    #[arg(long, value_name = "PORT", conflicts_with = "health_command")]
    pub health_port: Option<u16>,
    /// A TCP release's health check as a command run through `sh -c`
    /// (exit 0 passes), with `{port}` and $PORT the instance's port.
    #[arg(long, value_name = "COMMAND")]
    pub health_command: Option<String>,
    /// Start each connection to a TCP release's instances with a PROXY
    /// protocol header (v1 or v2), so it sees the client's address.
    #[arg(long, value_name = "v1|v2")]
    pub proxy_protocol: Option<crate::model::ProxyHeader>,
    /// How long to wait for every replica to become healthy [default: 60s].
    #[arg(long, value_parser = humantime::parse_duration)]
    pub ready_timeout: Option<Duration>,
    /// Refuse if the service has moved past this revision.
    #[arg(long)]
    pub revision: Option<u64>,
    /// For a release that enters as a shadow: the methods it gets copies
    /// of, e.g. GET,HEAD (a shadow sharing main's data would repeat the
    /// side effects of POST, PUT, PATCH and DELETE), or `all` [default: all].
    #[arg(long, value_name = "METHODS")]
    pub shadow_methods: Option<String>,
    #[command(flatten)]
    pub client: ClientArgs,
}

impl DeployArgs {
    /// The health check: these flags over the manifest's values over the
    /// defaults.
    fn health(&self, manifest: Option<&Manifest>) -> anyhow::Result<HealthCheck> {
        let base = match manifest {
            Some(m) => m.health_check()?,
            None => HealthCheck::default(),
        };
        let ms = |d: Duration| d.as_millis() as u64;
        Ok(HealthCheck {
            path: self.health_path.clone().unwrap_or(base.path),
            interval_ms: self.health_interval.map_or(base.interval_ms, ms),
            timeout_ms: self.health_timeout.map_or(base.timeout_ms, ms),
            healthy_threshold: self.healthy_threshold.unwrap_or(base.healthy_threshold),
            unhealthy_threshold: self.unhealthy_threshold.unwrap_or(base.unhealthy_threshold),
            port: self.health_port.or(base.port),
            command: match &self.health_command {
                Some(c) => vec!["sh".into(), "-c".into(), c.clone()],
                None => base.command,
            },
        })
    }

    /// The manifest's environment with `--env` over it.
    fn env(&self, manifest: Option<&Manifest>) -> anyhow::Result<BTreeMap<String, String>> {
        let mut env = manifest.map(|m| m.env.clone()).unwrap_or_default();
        for pair in &self.env {
            let Some((k, v)) = pair.split_once('=') else {
                bail!("--env takes KEY=VALUE, got `{pair}`");
            };
            env.insert(k.to_owned(), v.to_owned());
        }
        Ok(env)
    }

    fn ready_timeout_ms(&self) -> u64 {
        self.ready_timeout
            .unwrap_or(DEFAULT_READY_TIMEOUT)
            .as_millis() as u64
    }

    /// The flags given that describe how a release runs (part of its spec).
    fn spec_flags_given(&self) -> Vec<&'static str> {
        [
            ("--replicas", self.replicas.is_some()),
            ("--env", !self.env.is_empty()),
            ("--cwd", self.cwd.is_some()),
            ("--health", self.health_path.is_some()),
            ("--health-interval", self.health_interval.is_some()),
            ("--health-timeout", self.health_timeout.is_some()),
            ("--healthy-threshold", self.healthy_threshold.is_some()),
            ("--unhealthy-threshold", self.unhealthy_threshold.is_some()),
            ("--ready-timeout", self.ready_timeout.is_some()),
            ("--protocol", self.protocol.is_some()),
            ("--health-port", self.health_port.is_some()),
            ("--health-command", self.health_command.is_some()),
            ("--proxy-protocol", self.proxy_protocol.is_some()),
            ("--port", self.container_port.is_some()),
            ("--memory", self.memory.is_some()),
            ("--cpus", self.cpus.is_some()),
            ("--volume", !self.volumes.is_empty()),
        ]
        .into_iter()
        .filter_map(|(flag, given)| given.then_some(flag))
        .collect()
    }

    fn container_flags_given(&self) -> bool {
        self.container_port.is_some()
            || self.memory.is_some()
            || self.cpus.is_some()
            || !self.volumes.is_empty()
    }

    /// Refuses combinations of sources that say two different things.
    fn check_sources(&self) -> anyhow::Result<()> {
        let sources = [
            self.path.is_some(),
            self.image.is_some(),
            !self.upstreams.is_empty(),
        ];
        if sources.iter().filter(|s| **s).count() > 1 {
            bail!("give one of a folder, --image or --upstream, not several");
        }
        if !self.upstreams.is_empty() && !self.command.is_empty() {
            bail!("give either a command (after --) or --upstream addresses, not both");
        }
        if self.process && self.path.is_none() {
            bail!(
                "--process applies to a project folder: `switchyard deploy NAME VERSION ./folder --process`"
            );
        }
        if self.cwd.is_some() && (self.path.is_some() || self.image.is_some()) {
            bail!("--cwd applies to a command after `--`; a folder is its own working directory");
        }
        Ok(())
    }

    /// The release's spec; `None` when nothing to run is given, so the
    /// release registered under the version is deployed by name.
    async fn spec(&self) -> anyhow::Result<Option<ReleaseSpec>> {
        self.check_sources()?;
        let by_name = self.path.is_none()
            && self.manifest.is_none()
            && self.image.is_none()
            && self.upstreams.is_empty()
            && self.command.is_empty();
        if by_name {
            let flags = self.spec_flags_given();
            if !flags.is_empty() {
                bail!(
                    "{} describe how a release runs, but nothing to run was given: put the command after `--` (e.g. `switchyard deploy {} {} -- ./server --port {{port}}`), give --image IMAGE, a project folder, --manifest FILE or --upstream HOST:PORT. A release registered with `switchyard release add` runs with its own spec: deploy it with `switchyard deploy {} {}` and no such flags",
                    flags.join(", "),
                    self.name,
                    self.version,
                    self.name,
                    self.version
                );
            }
            return Ok(None);
        }
        self.spec_to_run().await.map(Some)
    }

    async fn spec_to_run(&self) -> anyhow::Result<ReleaseSpec> {
        let project = match (&self.path, &self.manifest) {
            (Some(path), _) => Some(Project::open(path, self.process)?),
            (None, Some(file)) => Some(Project::from_manifest_file(file)?),
            (None, None) => None,
        };
        let manifest = project.as_ref().and_then(Project::manifest);
        if let Some(m) = manifest {
            m.check_identity(&self.name, &self.version)?;
        }
        let container = self.image.is_some() || matches!(project, Some(Project::Image { .. }));
        if self.container_flags_given() && !container {
            bail!(
                "--port, --memory, --cpus and --volume apply to containers: use --image or a folder with a Dockerfile"
            );
        }
        let health = self.health(manifest)?;
        let env = self.env(manifest)?;
        let versioning = manifest
            .map(Manifest::versioning)
            .transpose()?
            .unwrap_or_default();
        let replicas = self
            .replicas
            .or(manifest.and_then(|m| m.replicas))
            .unwrap_or(1);
        let run = match (&project, &self.image) {
            (Some(Project::Processes { dir, manifest }), _) => {
                if !self.command.is_empty() {
                    bail!(
                        "the command comes from {}; drop the one after `--` (or change the manifest)",
                        crate::model::MANIFEST_FILE
                    );
                }
                if manifest.command.is_empty() {
                    bail!(
                        "{} in {} has no command: add e.g. command = [\"python3\", \"app.py\"]",
                        crate::model::MANIFEST_FILE,
                        dir.display()
                    );
                }
                RunSpec::Process {
                    command: manifest.command.clone(),
                    env,
                    cwd: dir.clone(),
                }
            }
            (Some(Project::Image { dir, .. }), _) => {
                parse_version(&self.version)?;
                service_path(&self.name)?;
                let tag = project::image_tag(&self.name, &self.version);
                let id = project::build(&Engine::from_env(), dir, &tag).await?;
                RunSpec::Container(self.container_spec(tag, Some(id), env)?)
            }
            (None, Some(image)) => {
                let id = Engine::from_env()
                    .image_id(image)
                    .await
                    .map_err(|e| anyhow!("{e}"))?;
                RunSpec::Container(self.container_spec(image.clone(), Some(id), env)?)
            }
            (None, None) if !self.upstreams.is_empty() => {
                if self
                    .replicas
                    .is_some_and(|r| r as usize != self.upstreams.len())
                {
                    bail!("an external release has one replica per --upstream; drop --replicas");
                }
                return Ok(ReleaseSpec {
                    run: RunSpec::External {
                        upstreams: self.upstreams.clone(),
                        upstream_ca: match &self.upstream_ca {
                            Some(path) => {
                                Some(std::fs::read_to_string(path).with_context(|| {
                                    format!("cannot read the upstream CA file {}", path.display())
                                })?)
                            }
                            None => None,
                        },
                    },
                    replicas: self.upstreams.len() as u32,
                    health,
                    ready_timeout_ms: self.ready_timeout_ms(),
                    versioning,
                    protocol: self.protocol.unwrap_or_default(),
                    proxy_protocol: self.proxy_protocol,
                });
            }
            (None, None) => {
                if self.command.is_empty() {
                    bail!(
                        "nothing to run: put the command after `--` (e.g. `switchyard deploy {} {} -- ./server --port {{port}}`), give --image IMAGE, a project folder, or --upstream HOST:PORT",
                        self.name,
                        self.version
                    );
                }
                let here = std::env::current_dir().context("cannot read the current directory")?;
                let cwd = match &self.cwd {
                    Some(dir) => here.join(dir),
                    None => here,
                };
                RunSpec::Process {
                    command: self.command.clone(),
                    env,
                    cwd,
                }
            }
        };
        Ok(ReleaseSpec {
            run,
            replicas,
            health,
            ready_timeout_ms: self.ready_timeout_ms(),
            versioning,
            protocol: self.protocol.unwrap_or_default(),
            proxy_protocol: self.proxy_protocol,
        })
    }

    fn container_spec(
        &self,
        image: String,
        image_id: Option<String>,
        env: BTreeMap<String, String>,
    ) -> anyhow::Result<ContainerSpec> {
        let here = std::env::current_dir().context("cannot read the current directory")?;
        let volumes = self
            .volumes
            .iter()
            .map(|v| container::absolute_volume(v, &here))
            .collect::<anyhow::Result<_>>()?;
        Ok(ContainerSpec {
            image,
            image_id,
            command: self.command.clone(),
            env,
            port: self.container_port,
            memory_bytes: self.memory,
            millicpus: self.cpus,
            volumes,
        })
    }
}

pub async fn run(args: DeployArgs) -> anyhow::Result<()> {
    let path = service_path(&args.name)?;
    let client = AdminClient::new(&args.client)?;
    let spec = args.spec().await?;
    let by_name = spec.is_none();
    let request = DeployRequest {
        version: args.version.clone(),
        spec,
        hosts: args.hosts.clone(),
        standby: args.standby,
        promote: args.promote,
        base_revision: args.revision,
        shadow_methods: args
            .shadow_methods
            .as_deref()
            .map(super::shadow::parse_methods),
    };
    let waiting = super::progress::Progress::start(format!(
        "starting {} {}{} and waiting until every replica is healthy",
        args.name,
        args.version,
        if by_name { " (registered)" } else { "" }
    ));
    let change: Change = client.post(&format!("{path}/releases"), &request).await?;
    drop(waiting);
    if args.client.json {
        return json(&change);
    }
    let release = change
        .service
        .releases
        .iter()
        .find(|r| r.version == args.version);
    let (role, healthy, total) = release.map_or(("?".into(), 0, 0), |r| {
        let healthy = r
            .instances
            .iter()
            .filter(|i| i.health == Health::Healthy)
            .count();
        (r.role.to_string(), healthy, r.instances.len())
    });
    println!(
        "deployed {} {}{} as {role} (revision {}): {healthy}/{total} instances healthy",
        args.name,
        args.version,
        if by_name {
            " from its registered spec"
        } else {
            ""
        },
        change.revision.number
    );
    if change.service.protocol.is_tcp() {
        println!(
            "  {}",
            match change.service.listen {
                Some(addr) if role == "main" => format!("new connections to {addr} reach it"),
                Some(addr) => format!(
                    "connections to {addr} go to main; `switchyard pin {} {} --port PORT` gives it an address of its own",
                    args.name, args.version
                ),
                None => format!(
                    "give {} an address for its clients: `switchyard listen {} IP:PORT`",
                    args.name, args.name
                ),
            }
        );
        return Ok(());
    }
    println!(
        "  reach it at /services/{}_{}/{}",
        args.name,
        args.version,
        if role == "main" {
            format!(" and /services/{}/", args.name)
        } else {
            String::new()
        }
    );
    if let Some(r) = release.filter(|r| r.role == Role::Shadow) {
        println!("{}", shadow_note(&args.name, &args.version, &r.shadow));
    }
    Ok(())
}

/// What a new shadow gets copies of, and how to limit it.
fn shadow_note(name: &str, version: &str, shadow: &ShadowSettings) -> String {
    if !shadow.enabled || shadow.sample_percent == 0 {
        return format!(
            "  it gets no copies: mirroring is off (`switchyard shadow set {name} {version} --on` turns it on)"
        );
    }
    let share = if shadow.sample_percent < 100 {
        format!("{}% of ", shadow.sample_percent)
    } else {
        "a copy of ".to_owned()
    };
    if shadow.methods.is_empty() {
        format!(
            "  it gets {share}every request to {name}'s main, of every method: POST, PUT, PATCH and DELETE too, \
             whose side effects a shadow sharing main's data repeats. Limit them with \
             `switchyard shadow set {name} {version} --methods GET,HEAD` (or deploy with --shadow-methods GET,HEAD)"
        )
    } else {
        format!(
            "  it gets {share}{name}'s main's {} requests only; other methods are not copied (change with `switchyard shadow set {name} {version} --methods …`)",
            shadow.methods.join(", ")
        )
    }
}
