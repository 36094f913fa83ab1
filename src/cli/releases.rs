//! `switchyard releases NAME`: every registered release with its API and
//! schema versions, and its role when it runs.

use clap::Args;

use super::output::{ago, json, table};
use super::{AdminClient, ClientArgs, service_path};
use crate::controller::{RegisteredView, ServiceView};
use crate::model::api_list;

#[derive(Debug, Args)]
pub struct ReleasesArgs {
    pub name: String,
    #[command(flatten)]
    pub client: ClientArgs,
}

pub async fn run(args: ReleasesArgs) -> anyhow::Result<()> {
    let client = AdminClient::new(&args.client)?;
    let path = format!("{}/registry", service_path(&args.name)?);
    let releases: Vec<RegisteredView> = client.get(&path).await?;
    if args.client.json {
        return json(&releases);
    }
    let rows: Vec<Vec<String>> = releases
        .iter()
        .map(|r| {
            let v = &r.versioning;
            let list = |s: &[semver::Version]| {
                if s.is_empty() {
                    "-".to_owned()
                } else {
                    s.iter()
                        .map(ToString::to_string)
                        .collect::<Vec<_>>()
                        .join(", ")
                }
            };
            vec![
                r.version.clone(),
                api_list(&v.api_versions),
                v.schema_version
                    .as_ref()
                    .map_or("-".into(), ToString::to_string),
                list(&v.runs_on()),
                r.role.map_or("registered".into(), |role| role.to_string()),
                ago(r.registered_at),
                v.changelog.lines().next().unwrap_or("").to_owned(),
            ]
        })
        .collect();
    table(
        &[
            "VERSION",
            "API",
            "SCHEMA",
            "RUNS ON",
            "ROLE",
            "REGISTERED",
            "CHANGELOG",
        ],
        &rows,
    );
    let service: Option<ServiceView> = client.get(&service_path(&args.name)?).await.ok();
    if let Some(schema) = service.and_then(|s| s.schema) {
        println!("database schema: {schema}");
    }
    Ok(())
}
