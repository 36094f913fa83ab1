use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, bail};
use clap::{Args, Subcommand};

use super::output::{json, table};
use super::progress::Progress;
use super::{AdminClient, ClientArgs, service_path};
use crate::api::rollout::{PromoteRequest, RolloutRequest};
use crate::controller::RolloutView;
use crate::model::{
    AnalysisSpec, LatencyLimit, PrometheusCheck, RolloutPlan, RolloutState, RolloutStatus,
    parse_version,
};

#[derive(Debug, Args)]
#[command(args_conflicts_with_subcommands = true)]
pub struct RolloutArgs {
    #[command(subcommand)]
    pub command: Option<RolloutCommand>,
    #[command(flatten)]
    pub start: StartArgs,
}

#[derive(Debug, Subcommand)]
pub enum RolloutCommand {
    /// The current step, every check with its measured value, time to the next step.
    Status(StatusArgs),
    /// Stop the rollout: every client back on main.
    Abort(NameArgs),
    /// Hold the rollout at the step it is on until `switchyard resume`.
    Pause(NameArgs),
    /// Skip the step the rollout is on (a pause or an analysis); with --full make the candidate main now.
    Promote(PromoteArgs),
    /// Run a failed or aborted rollout again from its first step, with the same plan.
    Retry(NameArgs),
}

#[derive(Debug, Args)]
pub struct PromoteArgs {
    pub name: String,
    /// Skip every step left: the candidate becomes main now and the rollout ends.
    #[arg(long)]
    pub full: bool,
    #[command(flatten)]
    pub client: ClientArgs,
}

#[derive(Debug, Args)]
pub struct NameArgs {
    pub name: String,
    #[command(flatten)]
    pub client: ClientArgs,
}

#[derive(Debug, Args)]
pub struct StatusArgs {
    pub name: String,
    /// Follow the rollout until it ends, printing each step as it begins;
    /// exits non-zero unless it succeeds.
    #[arg(long)]
    pub follow: bool,
    #[command(flatten)]
    pub client: ClientArgs,
}

/// `switchyard rollout NAME VERSION --steps 5,25,50,100 --interval 1m`.
#[derive(Debug, Args)]
pub struct StartArgs {
    pub name: Option<String>,
    pub version: Option<String>,
    /// Canary weights, each followed by an analysis interval.
    #[arg(long, value_delimiter = ',')]
    pub steps: Vec<u8>,
    /// A plan file (TOML) instead of --steps.
    #[arg(long, conflicts_with = "steps")]
    pub plan: Option<PathBuf>,
    /// Length of one analysis interval.
    #[arg(long, value_parser = humantime::parse_duration)]
    pub interval: Option<Duration>,
    /// Highest error rate, in percent (default 1).
    #[arg(long)]
    pub max_error_rate: Option<f64>,
    /// Highest latency at a quantile: Q:MS, e.g. 0.99:250.
    #[arg(long)]
    pub max_latency: Option<String>,
    /// Candidate p99 at most K times main's.
    #[arg(long)]
    pub max_relative_p99: Option<f64>,
    /// Lowest shadow match rate, in percent.
    #[arg(long)]
    pub min_match_rate: Option<f64>,
    /// Fewer requests in an interval make it inconclusive (default 20).
    #[arg(long)]
    pub min_requests: Option<u64>,
    /// Failed analyses in a row that roll back (default 2).
    #[arg(long)]
    pub failure_limit: Option<u32>,
    /// URL POSTed each interval; a 2xx answer passes.
    #[arg(long)]
    pub webhook: Option<String>,
    /// Header that carries the client key, e.g. x-user-id.
    #[arg(long)]
    pub sticky_header: Option<String>,
    /// A PromQL check each interval: URL QUERY OP VALUE, e.g.
    /// http://127.0.0.1:9090 'sum(rate(errors[1m]))' '<' 0.5 (repeatable).
    #[arg(long, num_args = 4, value_names = ["URL", "QUERY", "OP", "VALUE"], action = clap::ArgAction::Append)]
    pub check_prometheus: Vec<String>,
    /// A rollout paused longer than this rolls back (default 1h).
    #[arg(long, value_parser = humantime::parse_duration)]
    pub stuck_limit: Option<Duration>,
    #[command(flatten)]
    pub client: ClientArgs,
}

impl StartArgs {
    fn plan(&self, version: &str) -> anyhow::Result<RolloutPlan> {
        let mut plan = match &self.plan {
            Some(file) => {
                let text = std::fs::read_to_string(file)
                    .with_context(|| format!("cannot read {}", file.display()))?;
                let plan = RolloutPlan::from_toml(&text)?;
                if plan.version.to_string() != version {
                    bail!("the plan is for {}, not {version}", plan.version);
                }
                plan
            }
            None => {
                if self.steps.is_empty() {
                    bail!("give the steps (--steps 5,25,50,100) or a plan file (--plan FILE)");
                }
                RolloutPlan::from_weights(
                    parse_version(version)?,
                    &self.steps,
                    AnalysisSpec::default(),
                )
            }
        };
        let a = &mut plan.analysis;
        if let Some(i) = self.interval {
            a.interval_seconds = i.as_secs().max(1);
        }
        if self.max_error_rate.is_some() {
            a.max_error_rate = self.max_error_rate;
        }
        if let Some(l) = &self.max_latency {
            let (q, ms) = l
                .split_once(':')
                .context("--max-latency takes QUANTILE:MS, e.g. 0.99:250")?;
            a.max_latency = Some(LatencyLimit {
                quantile: q.parse().context("the quantile is a number such as 0.99")?,
                ms: ms
                    .parse()
                    .context("the limit is a number of milliseconds")?,
            });
        }
        if self.max_relative_p99.is_some() {
            a.max_relative_p99 = self.max_relative_p99;
        }
        if self.min_match_rate.is_some() {
            a.min_match_rate = self.min_match_rate;
        }
        if let Some(n) = self.min_requests {
            a.min_requests = n;
        }
        if let Some(n) = self.failure_limit {
            a.failure_limit = n;
        }
        if self.webhook.is_some() {
            a.webhook = self.webhook.clone();
        }
        if self.sticky_header.is_some() {
            plan.sticky_header = self.sticky_header.clone();
        }
        plan.analysis
            .prometheus
            .extend(prometheus_checks(&self.check_prometheus)?);
        if let Some(limit) = self.stuck_limit {
            plan.stuck_limit_seconds = limit.as_secs().max(1);
        }
        plan.validate()?;
        Ok(plan)
    }
}

/// `--check-prometheus` values, four per check.
fn prometheus_checks(values: &[String]) -> anyhow::Result<Vec<PrometheusCheck>> {
    values
        .chunks(4)
        .map(|c| {
            let [url, query, op, value] = c else {
                bail!("--check-prometheus takes URL QUERY OP VALUE");
            };
            Ok(PrometheusCheck {
                url: url.clone(),
                query: query.clone(),
                op: op.parse()?,
                value: value.parse().with_context(|| {
                    format!("--check-prometheus: the bound `{value}` is not a number")
                })?,
            })
        })
        .collect()
}

pub async fn run(args: RolloutArgs) -> anyhow::Result<()> {
    match args.command {
        Some(RolloutCommand::Status(a)) => status(a).await,
        Some(RolloutCommand::Abort(a)) => abort(a).await,
        Some(RolloutCommand::Pause(a)) => pause(a).await,
        Some(RolloutCommand::Promote(a)) => promote(a).await,
        Some(RolloutCommand::Retry(a)) => retry(a).await,
        None => start(args.start).await,
    }
}

fn status_text(s: &RolloutStatus) -> String {
    match s {
        RolloutStatus::Running => "running".into(),
        RolloutStatus::Paused { reason, .. } => format!("paused ({reason})"),
        RolloutStatus::Succeeded => "succeeded".into(),
        RolloutStatus::Failed { reason } => format!("failed: {reason}"),
        RolloutStatus::Aborted => "aborted".into(),
        RolloutStatus::PromotedByHand { reason } => format!("ended: {reason}"),
    }
}

async fn start(args: StartArgs) -> anyhow::Result<()> {
    let (Some(name), Some(version)) = (&args.name, &args.version) else {
        bail!(
            "usage: switchyard rollout NAME VERSION --steps 5,25,50,100 --interval 1m (or `rollout status NAME`)"
        );
    };
    let path = service_path(name)?;
    let plan = args.plan(version)?;
    let client = AdminClient::new(&args.client)?;
    let state: RolloutState = client
        .post(&format!("{path}/rollout"), &RolloutRequest { plan })
        .await?;
    if args.client.json {
        return json(&state);
    }
    println!(
        "rollout of {name} {} started: {} steps, analysis every {}s; `switchyard rollout status {name} --follow` follows it",
        state.plan.version,
        state.plan.steps.len(),
        state.plan.analysis.interval_seconds
    );
    Ok(())
}

async fn status(args: StatusArgs) -> anyhow::Result<()> {
    let path = service_path(&args.name)?;
    let client = AdminClient::new(&args.client)?;
    let view: RolloutView = client.get(&format!("{path}/rollout")).await?;
    if args.client.json && !args.follow {
        return json(&view);
    }
    if args.follow {
        return follow(&client, &format!("{path}/rollout"), view, args.client.json).await;
    }
    print_status(&view);
    Ok(())
}

/// Polls the rollout until it ends: a line for each step and the end (a
/// spinner on a terminal while it waits).
async fn follow(
    client: &AdminClient,
    path: &str,
    mut view: RolloutView,
    as_json: bool,
) -> anyhow::Result<()> {
    let title =
        |v: &RolloutView| format!("rollout of {} {}", v.state.service, v.state.plan.version);
    let progress = Progress::start(title(&view));
    let mut shown: Option<(usize, String)> = None;
    loop {
        let s = &view.state;
        let now = (s.step, status_text(&s.status));
        if shown.as_ref() != Some(&now) {
            if as_json {
                progress.println(&serde_json::to_string(&view)?);
            } else {
                progress.println(&format!(
                    "{}: {}, step {} of {}: {}",
                    title(&view),
                    now.1,
                    (s.step + 1).min(s.plan.steps.len()),
                    s.plan.steps.len(),
                    view.current
                ));
            }
            shown = Some(now);
        }
        progress.set_message(format!(
            "{}: {}{}",
            title(&view),
            view.current,
            view.next_in_seconds
                .map(|n| format!(", next in {n}s"))
                .unwrap_or_default()
        ));
        match &view.state.status {
            RolloutStatus::Succeeded | RolloutStatus::PromotedByHand { .. } => return Ok(()),
            RolloutStatus::Failed { reason } => bail!("the rollout failed: {reason}"),
            RolloutStatus::Aborted => bail!("the rollout was aborted"),
            RolloutStatus::Running | RolloutStatus::Paused { .. } => {}
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
        view = client.get(path).await?;
    }
}

fn print_status(view: &RolloutView) {
    let s = &view.state;
    println!(
        "rollout of {} {}: {}",
        s.service,
        s.plan.version,
        status_text(&s.status)
    );
    println!(
        "step {} of {}: {}{}",
        (s.step + 1).min(s.plan.steps.len()),
        s.plan.steps.len(),
        view.current,
        view.next_in_seconds
            .map(|n| format!(" (next in {n}s)"))
            .unwrap_or_default()
    );
    println!(
        "failed analyses in a row: {} of {}",
        s.failures, s.plan.analysis.failure_limit
    );
    if !s.checks.is_empty() {
        let rows: Vec<Vec<String>> = s
            .checks
            .iter()
            .map(|c| {
                vec![
                    c.name.clone(),
                    c.verdict.clone(),
                    c.measured.clone(),
                    c.threshold.clone(),
                ]
            })
            .collect();
        table(&["CHECK", "VERDICT", "MEASURED", "THRESHOLD"], &rows);
    }
}

async fn abort(args: NameArgs) -> anyhow::Result<()> {
    let path = service_path(&args.name)?;
    let client = AdminClient::new(&args.client)?;
    let state: RolloutState = client
        .post(&format!("{path}/rollout/abort"), &serde_json::json!({}))
        .await?;
    if args.client.json {
        return json(&state);
    }
    println!(
        "rollout of {} {} aborted; every client is on main",
        args.name, state.plan.version
    );
    Ok(())
}

/// Where the rollout is now, in one line.
fn step_line(state: &RolloutState) -> String {
    format!(
        "step {} of {}",
        (state.step + 1).min(state.plan.steps.len()),
        state.plan.steps.len()
    )
}

async fn pause(args: NameArgs) -> anyhow::Result<()> {
    let path = service_path(&args.name)?;
    let client = AdminClient::new(&args.client)?;
    let state: RolloutState = client
        .post(&format!("{path}/rollout/pause"), &serde_json::json!({}))
        .await?;
    if args.client.json {
        return json(&state);
    }
    println!(
        "rollout of {} {} paused at {}; `switchyard resume {}` runs that step again",
        args.name,
        state.plan.version,
        step_line(&state),
        args.name
    );
    Ok(())
}

async fn promote(args: PromoteArgs) -> anyhow::Result<()> {
    let path = service_path(&args.name)?;
    let client = AdminClient::new(&args.client)?;
    let state: RolloutState = client
        .post(
            &format!("{path}/rollout/promote"),
            &PromoteRequest { full: args.full },
        )
        .await?;
    if args.client.json {
        return json(&state);
    }
    if args.full {
        println!(
            "{} {} is main; the rollout ended, promoted by hand",
            args.name, state.plan.version
        );
    } else {
        println!(
            "rollout of {} {} skipped to {}",
            args.name,
            state.plan.version,
            step_line(&state)
        );
    }
    Ok(())
}

async fn retry(args: NameArgs) -> anyhow::Result<()> {
    let path = service_path(&args.name)?;
    let client = AdminClient::new(&args.client)?;
    let state: RolloutState = client
        .post(&format!("{path}/rollout/retry"), &serde_json::json!({}))
        .await?;
    if args.client.json {
        return json(&state);
    }
    println!(
        "rollout of {} {} started again from its first step; `switchyard rollout status {} --follow` follows it",
        args.name, state.plan.version, args.name
    );
    Ok(())
}
