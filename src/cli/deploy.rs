use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, bail};
use clap::Args;

use super::output::json;
use super::{AdminClient, ClientArgs, service_path};
use crate::api::services::Change;
use crate::controller::DeployRequest;
use crate::model::{HealthCheck, ReleaseSpec, RunSpec};
use crate::runtime::Health;

#[derive(Debug, Args)]
pub struct DeployArgs {
    /// Service name: 1 to 63 of a-z, 0-9 and '-'.
    pub name: String,
    /// Semantic version of the release, e.g. 1.2.0.
    pub version: String,
    /// The command that runs one instance; `{port}` becomes its port (also in $PORT).
    #[arg(last = true)]
    pub command: Vec<String>,
    /// Instances to run.
    #[arg(long, default_value_t = 1)]
    pub replicas: u32,
    /// Environment variable for the instances (repeatable).
    #[arg(long = "env", value_name = "KEY=VALUE")]
    pub env: Vec<String>,
    /// Working directory of the instances (default: the current directory).
    #[arg(long)]
    pub cwd: Option<PathBuf>,
    /// Address of an instance that runs elsewhere (repeatable); Switchyard
    /// health-checks and routes to it but never starts or stops it.
    #[arg(long = "upstream", value_name = "HOST:PORT")]
    pub upstreams: Vec<String>,
    /// Host name routed to this service (repeatable).
    #[arg(long = "host")]
    pub hosts: Vec<String>,
    /// Enter as standby (running, no traffic) instead of shadow.
    #[arg(long, conflicts_with = "promote")]
    pub standby: bool,
    /// The emergency release: make it main as soon as it is healthy, no canary.
    #[arg(long)]
    pub promote: bool,
    /// Health check path.
    #[arg(long = "health", default_value = "/")]
    pub health_path: String,
    /// Time between health checks once healthy.
    #[arg(long, value_parser = humantime::parse_duration, default_value = "1s")]
    pub health_interval: Duration,
    /// How long one health check may take.
    #[arg(long, value_parser = humantime::parse_duration, default_value = "2s")]
    pub health_timeout: Duration,
    /// Successes in a row that make an instance healthy.
    #[arg(long, default_value_t = 2)]
    pub healthy_threshold: u32,
    /// Failures in a row that take an instance out of rotation.
    #[arg(long, default_value_t = 3)]
    pub unhealthy_threshold: u32,
    /// How long to wait for every replica to become healthy.
    #[arg(long, value_parser = humantime::parse_duration, default_value = "60s")]
    pub ready_timeout: Duration,
    /// Refuse if the service has moved past this revision.
    #[arg(long)]
    pub revision: Option<u64>,
    #[command(flatten)]
    pub client: ClientArgs,
}

impl DeployArgs {
    fn spec(&self) -> anyhow::Result<ReleaseSpec> {
        let health = HealthCheck {
            path: self.health_path.clone(),
            interval_ms: self.health_interval.as_millis() as u64,
            timeout_ms: self.health_timeout.as_millis() as u64,
            healthy_threshold: self.healthy_threshold,
            unhealthy_threshold: self.unhealthy_threshold,
        };
        let (run, replicas) = match (self.command.is_empty(), self.upstreams.is_empty()) {
            (false, false) => {
                bail!("give either a command (after --) or --upstream addresses, not both")
            }
            (true, true) => bail!(
                "nothing to run: put the command after `--` (e.g. `switchyard deploy {} {} -- ./server --port {{port}}`) or give --upstream HOST:PORT",
                self.name,
                self.version
            ),
            (true, false) => {
                if self.replicas != 1 && self.replicas as usize != self.upstreams.len() {
                    bail!("an external release has one replica per --upstream; drop --replicas");
                }
                let run = RunSpec::External {
                    upstreams: self.upstreams.clone(),
                };
                (run, self.upstreams.len() as u32)
            }
            (false, true) => {
                let here = std::env::current_dir().context("cannot read the current directory")?;
                let cwd = match &self.cwd {
                    Some(dir) => here.join(dir),
                    None => here,
                };
                let mut env = BTreeMap::new();
                for pair in &self.env {
                    let Some((k, v)) = pair.split_once('=') else {
                        bail!("--env takes KEY=VALUE, got `{pair}`");
                    };
                    env.insert(k.to_owned(), v.to_owned());
                }
                let run = RunSpec::Process {
                    command: self.command.clone(),
                    env,
                    cwd,
                };
                (run, self.replicas)
            }
        };
        Ok(ReleaseSpec {
            run,
            replicas,
            health,
            ready_timeout_ms: self.ready_timeout.as_millis() as u64,
        })
    }
}

pub async fn run(args: DeployArgs) -> anyhow::Result<()> {
    let path = service_path(&args.name)?;
    let client = AdminClient::new(&args.client)?;
    let request = DeployRequest {
        version: args.version.clone(),
        spec: args.spec()?,
        hosts: args.hosts.clone(),
        standby: args.standby,
        promote: args.promote,
        base_revision: args.revision,
    };
    let change: Change = client.post(&format!("{path}/releases"), &request).await?;
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
        "deployed {} {} as {role} (revision {}): {healthy}/{total} instances healthy",
        args.name, args.version, change.revision.number
    );
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
    Ok(())
}
