//! `switchyard upgrade NAME --to VERSION`: shows the plan, starts it (serve
//! runs it step by step in the background: backup and migrate hooks,
//! deploy, readiness, switch) and follows it until it ends or waits for
//! approval. `--status`, `--continue` and `--abort` reach a running one.

use std::time::Duration;

use anyhow::bail;
use clap::Args;

use super::output::json;
use super::progress::Progress;
use super::{AdminClient, ClientArgs, plan, service_path};
use crate::controller::UpgradeRequest;
use crate::model::{BetweenSteps, UpgradeState, UpgradeStatus};

#[derive(Debug, Args)]
pub struct UpgradeArgs {
    pub name: String,
    /// The registered release to end at.
    #[arg(long, required_unless_present_any = ["status", "go_on", "abort"])]
    pub to: Option<String>,
    /// How long each hook may run before it is killed (and the step fails).
    #[arg(long, value_parser = humantime::parse_duration, default_value = "5m")]
    pub hook_timeout: Duration,
    /// Hold the service's new requests during each step that changes the
    /// schema (backup, migrate, deploy, switch), each at most this long;
    /// they go on, oldest first, when the step ends.
    #[arg(long, value_name = "MAX_HOLD", value_parser = humantime::parse_duration)]
    pub pause: Option<Duration>,
    /// Wait for `--continue` after every step but the last.
    #[arg(long, conflicts_with = "wait")]
    pub approve: bool,
    /// Wait this long after every step but the last (the new main must stay
    /// ready meanwhile, or the upgrade stops).
    #[arg(long, value_parser = humantime::parse_duration)]
    pub wait: Option<Duration>,
    /// Start it and return at once instead of following it.
    #[arg(long)]
    pub detach: bool,
    /// Show the service's latest upgrade.
    #[arg(long, conflicts_with_all = ["to", "go_on", "abort"])]
    pub status: bool,
    /// Let an upgrade that waits between steps go on, and follow it.
    #[arg(long = "continue", conflicts_with_all = ["to", "abort"])]
    pub go_on: bool,
    /// Stop the upgrade at the next step boundary (the running step ends
    /// first); the service stays at the last good step.
    #[arg(long, conflicts_with = "to")]
    pub abort: bool,
    #[command(flatten)]
    pub client: ClientArgs,
}

pub async fn run(args: UpgradeArgs) -> anyhow::Result<()> {
    let client = AdminClient::new(&args.client)?;
    let path = format!("{}/upgrade", service_path(&args.name)?);
    let started: UpgradeState = if args.status {
        let state: UpgradeState = client.get(&path).await?;
        if args.client.json {
            return json(&state);
        }
        print_status(&state);
        return Ok(());
    } else if args.go_on {
        client
            .post(&format!("{path}/continue"), &serde_json::json!({}))
            .await?
    } else if args.abort {
        let state: UpgradeState = client
            .post(&format!("{path}/abort"), &serde_json::json!({}))
            .await?;
        if !args.client.json {
            println!(
                "{}: the upgrade to {} stops at the next step boundary",
                args.name, state.to
            );
        }
        state
    } else {
        let to = args.to.clone().unwrap_or_default();
        if !args.client.json {
            // The plan first, so the irreversible steps are known beforehand.
            let planned = plan::fetch(&client, &args.name, &to).await?;
            plan::print(&planned);
        }
        let between = match (args.approve, args.wait) {
            (true, _) => BetweenSteps::Approve,
            (false, Some(d)) => BetweenSteps::Wait {
                ms: d.as_millis() as u64,
            },
            (false, None) => BetweenSteps::Go,
        };
        let request = UpgradeRequest {
            to,
            hook_timeout_ms: Some(args.hook_timeout.as_millis() as u64),
            pause_max_hold_ms: args.pause.map(|d| d.as_millis() as u64),
            between,
        };
        client.post(&path, &request).await?
    };
    if args.detach {
        if args.client.json {
            return json(&started);
        }
        println!(
            "upgrade of {} to {} started; follow it with `switchyard upgrade {} --status`",
            args.name, started.to, args.name
        );
        return Ok(());
    }
    let end = follow(&client, &path, &args, started.steps.len()).await?;
    if args.client.json {
        json(&end)?;
    }
    match end.status {
        UpgradeStatus::Done => {
            if !args.client.json {
                println!("{} upgraded to {}", args.name, end.to);
            }
            Ok(())
        }
        UpgradeStatus::Waiting => {
            if !args.client.json {
                println!(
                    "waiting after step {}/{}: `switchyard upgrade {} --continue` goes on, `--abort` stops here",
                    end.steps.len(),
                    end.plan.steps.len(),
                    args.name
                );
            }
            Ok(())
        }
        UpgradeStatus::Aborted if args.abort => {
            if !args.client.json {
                println!("{}", end.error.unwrap_or_default());
            }
            Ok(())
        }
        _ => bail!(
            "{}",
            end.error
                .unwrap_or_else(|| format!("the upgrade ended {}", end.status))
        ),
    }
}

/// Polls the upgrade, printing each step as it is done, until it ends or
/// waits for approval.
async fn follow(
    client: &AdminClient,
    path: &str,
    args: &UpgradeArgs,
    mut shown: usize,
) -> anyhow::Result<UpgradeState> {
    let progress = Progress::start(format!("upgrading {}", args.name));
    loop {
        let state: UpgradeState = client.get(path).await?;
        if !args.client.json {
            for step in state.steps.iter().skip(shown) {
                progress.println(&step_line(step));
            }
        }
        shown = state.steps.len();
        if let Some(step) = state.current_step() {
            progress.set_message(format!("upgrading {} to {}: {step}", args.name, state.to));
        }
        if !state.status.is_active() || state.status == UpgradeStatus::Waiting {
            return Ok(state);
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

fn print_step(step: &crate::model::StepDone) {
    println!("{}", step_line(step));
}

fn step_line(step: &crate::model::StepDone) -> String {
    let hooks: Vec<&str> = step.hooks.iter().map(|(h, _)| h.as_str()).collect();
    format!(
        "  done {} → {} (revision {}){}",
        step.from,
        step.to,
        step.revision,
        if hooks.is_empty() {
            String::new()
        } else {
            format!(", hooks: {}", hooks.join(", "))
        }
    )
}

fn print_status(state: &UpgradeState) {
    println!(
        "{} upgrade {} → {}: {}{}",
        state.service,
        state.plan.from,
        state.to,
        state.status,
        if state.abort_requested && state.status.is_active() {
            " (abort requested: stops after the running step)"
        } else {
            ""
        }
    );
    for step in &state.steps {
        print_step(step);
    }
    if state.status.is_active() {
        if let Some(step) = state.current_step() {
            let verb = if state.status == UpgradeStatus::Waiting {
                "next"
            } else {
                "now"
            };
            println!("  {verb}: {step}");
        }
    }
    if let Some(until) = state.waiting_until {
        let left = until.saturating_sub(crate::model::now_millis());
        println!("  waiting between steps: {} s left", left.div_ceil(1000));
    }
    if let Some(error) = &state.error {
        println!("  {error}");
    }
}
