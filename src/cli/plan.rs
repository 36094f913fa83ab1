//! `switchyard plan NAME --to VERSION`: the chain of registered releases
//! from the current main to VERSION, every step checked. Exits non-zero
//! when a step breaks a rule.

use anyhow::bail;
use clap::Args;

use super::output::json;
use super::{AdminClient, ClientArgs, service_path};
use crate::model::{Plan, api_list, parse_version};

#[derive(Debug, Args)]
pub struct PlanArgs {
    pub name: String,
    /// The registered release to end at.
    #[arg(long)]
    pub to: String,
    #[command(flatten)]
    pub client: ClientArgs,
}

/// Fetches the plan for `name` to `to`.
pub(super) async fn fetch(client: &AdminClient, name: &str, to: &str) -> anyhow::Result<Plan> {
    let to = parse_version(to)?.to_string().replace('+', "%2B");
    client
        .get(&format!("{}/plan?to={to}", service_path(name)?))
        .await
}

/// The plan as people read it, one line per step.
pub(super) fn print(plan: &Plan) {
    println!("{} {} → {}", plan.service, plan.from, plan.to);
    let schema = |s: &Option<semver::Version>| s.as_ref().map_or("-".into(), ToString::to_string);
    if plan.starts {
        println!(
            "  0. start {} as main: nothing runs yet, so the plan starts from the first registered release",
            plan.from
        );
    }
    for (i, step) in plan.steps.iter().enumerate() {
        let schema_text = if step.changes_schema() {
            format!(
                "schema {} → {}{}",
                schema(&step.schema_before),
                schema(&step.schema_after),
                if step.reversible {
                    ""
                } else {
                    " (cannot be reversed: no migrate_down)"
                }
            )
        } else {
            format!("schema stays {}", schema(&step.schema_after))
        };
        let verdict = if step.broken.is_empty() {
            "ok"
        } else {
            "BROKEN"
        };
        println!(
            "  {}. {} → {}: {verdict}; shared API {}; {schema_text}",
            i + 1,
            step.from,
            step.to,
            api_list(&step.shared_api),
        );
        for problem in &step.broken {
            println!("       {problem}");
        }
    }
}

pub async fn run(args: PlanArgs) -> anyhow::Result<()> {
    let client = AdminClient::new(&args.client)?;
    let plan = fetch(&client, &args.name, &args.to).await?;
    if args.client.json {
        json(&plan)?;
    } else {
        print(&plan);
    }
    if let Some(problem) = plan.first_problem() {
        bail!("the plan is refused: {problem}");
    }
    Ok(())
}
