//! Upgrade plans: the chain of registered releases from the current main
//! to a target, each step checked against the compatibility rules.
//!
//! The chain is every registered release after main up to the target, in
//! version order: a release is never skipped, so a rule that needs an
//! intermediate release (the one that adds the new API before the old one
//! is dropped, say) cannot be dodged. Each step `A → B` must keep these:
//!
//! - **api**: A and B serve at least one API version in common, so every
//!   client has somewhere to go while both run;
//! - **schema-step**: the schema moves forward by at most one of the
//!   schema versions the registered releases declare;
//! - **runs-on**: A and B can both run against the schema in between (B's
//!   schema, migrated before B starts while A still answers);
//! - **migrate**: a schema change comes with B's `hooks.migrate`.
//!
//! A step that changes the schema and has no `hooks.migrate_down` is
//! flagged as not reversible.

use semver::Version;
use serde::{Deserialize, Serialize};

use super::{ApiVersion, ModelError, Release, api_list};

/// One step of a plan: make `to` main in place of `from`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PlanStep {
    pub from: Version,
    pub to: Version,
    /// The schema before and after the step (`None`: nobody declared one).
    pub schema_before: Option<Version>,
    pub schema_after: Option<Version>,
    /// API versions both releases serve.
    pub shared_api: Vec<ApiVersion>,
    /// Whether rolling back this step can restore the schema (no schema
    /// change, or `to` has `migrate_down`).
    pub reversible: bool,
    /// Rules this step breaks, as `rule: reason`.
    pub broken: Vec<String>,
}

impl PlanStep {
    pub fn changes_schema(&self) -> bool {
        self.schema_before != self.schema_after
    }
}

/// The whole chain from the current main to the target.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Plan {
    pub service: String,
    pub from: Version,
    pub to: Version,
    pub steps: Vec<PlanStep>,
}

impl Plan {
    /// Whether every step keeps every rule.
    pub fn ok(&self) -> bool {
        self.steps.iter().all(|s| s.broken.is_empty())
    }

    /// The first broken rule, named with its step, for an error message.
    pub fn first_problem(&self) -> Option<String> {
        self.steps.iter().find_map(|s| {
            s.broken
                .first()
                .map(|b| format!("step {} → {} breaks {b}", s.from, s.to))
        })
    }
}

/// Plans the upgrade of `service` from `main` to `target` through the
/// registered releases (any order). Refuses a target that is not
/// registered or not after main; a chain that breaks a rule is returned
/// with the rule named in its step.
pub fn plan(
    service: &str,
    registered: &[Release],
    main: &Version,
    target: &Version,
) -> Result<Plan, ModelError> {
    let refuse = |m: String| Err(ModelError::InvalidUpgrade(m));
    let mut releases: Vec<&Release> = registered.iter().collect();
    releases.sort_by(|a, b| a.version.cmp(&b.version));
    let known = || {
        releases
            .iter()
            .map(|r| r.version.to_string())
            .collect::<Vec<_>>()
            .join(", ")
    };
    let Some(current) = releases.iter().find(|r| &r.version == main) else {
        return refuse(format!(
            "{service} {main} (main) is not registered; registered: {}",
            known()
        ));
    };
    if !releases.iter().any(|r| &r.version == target) {
        return refuse(format!(
            "{service} {target} is not registered; register it with `switchyard release add FILE` (registered: {})",
            known()
        ));
    }
    if target <= main {
        return refuse(format!(
            "{target} is not after the current main {main}; an upgrade moves forward (use `switchyard rollback` to go back)"
        ));
    }
    let mut schemas: Vec<&Version> = releases
        .iter()
        .filter_map(|r| r.spec.versioning.schema_version.as_ref())
        .collect();
    schemas.sort();
    schemas.dedup();
    let index = |s: &Version| schemas.iter().position(|x| *x == s);

    let chain: Vec<&Release> = releases
        .iter()
        .copied()
        .filter(|r| &r.version > main && &r.version <= target)
        .collect();
    let mut steps = Vec::with_capacity(chain.len());
    let mut from = *current;
    let mut schema = current.spec.versioning.schema_version.clone();
    for to in chain {
        let (a, b) = (&from.spec.versioning, &to.spec.versioning);
        let after = b.schema_version.clone().or_else(|| schema.clone());
        let mut broken = Vec::new();
        let shared: Vec<ApiVersion> = a
            .api_versions
            .iter()
            .copied()
            .filter(|v| b.api_versions.iter().any(|w| w.matches(v)))
            .collect();
        if shared.is_empty() {
            broken.push(format!(
                "api: {} serves {} and {} serves {}: no API version in common, so clients of one would have nowhere to go",
                from.version,
                api_list(&a.api_versions),
                to.version,
                api_list(&b.api_versions)
            ));
        }
        if let (Some(before), Some(after)) = (&schema, &after) {
            match (index(before), index(after)) {
                (Some(i), Some(j)) if j < i => broken.push(format!(
                    "schema-step: the schema would move back from {before} to {after}"
                )),
                (Some(i), Some(j)) if j > i + 1 => broken.push(format!(
                    "schema-step: the schema would jump from {before} to {after}, past {}",
                    schemas[i + 1..j]
                        .iter()
                        .map(ToString::to_string)
                        .collect::<Vec<_>>()
                        .join(", ")
                )),
                _ => {}
            }
        }
        if let Some(between) = &after {
            for (release, v) in [(from, a), (to, b)] {
                let runs_on = v.runs_on();
                if !runs_on.is_empty() && !runs_on.contains(between) {
                    broken.push(format!(
                        "runs-on: {} cannot run against schema {between} (it runs on {})",
                        release.version,
                        runs_on
                            .iter()
                            .map(ToString::to_string)
                            .collect::<Vec<_>>()
                            .join(", ")
                    ));
                }
            }
        }
        let changes = schema != after;
        if changes && b.hooks.migrate.is_empty() {
            broken.push(format!(
                "migrate: the schema moves to {} but {} has no hooks.migrate",
                after.as_ref().map_or("?".into(), ToString::to_string),
                to.version
            ));
        }
        steps.push(PlanStep {
            from: from.version.clone(),
            to: to.version.clone(),
            schema_before: schema.clone(),
            schema_after: after.clone(),
            shared_api: shared,
            reversible: !changes || !b.hooks.migrate_down.is_empty(),
            broken,
        });
        from = to;
        schema = after;
    }
    Ok(Plan {
        service: service.to_owned(),
        from: main.clone(),
        to: target.clone(),
        steps,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{HealthCheck, ReleaseSpec, RunSpec, Versioning};

    fn release(version: &str, api: &[&str], schema: &str, runs_on: &[&str]) -> Release {
        let v = |s: &str| Version::parse(s).expect("semver");
        let mut versioning = Versioning {
            api_versions: api.iter().map(|a| a.parse().expect("api")).collect(),
            schema_version: Some(v(schema)),
            runs_on_schemas: runs_on.iter().map(|s| v(s)).collect(),
            ..Versioning::default()
        };
        versioning.hooks.migrate = vec!["./migrate.sh".into()];
        Release {
            service: "hub".parse().expect("name"),
            version: v(version),
            spec: ReleaseSpec {
                run: RunSpec::External {
                    upstreams: vec!["127.0.0.1:1".into()],
                },
                replicas: 1,
                health: HealthCheck::default(),
                ready_timeout_ms: 1000,
                versioning,
            },
            registered_at: 0,
        }
    }

    /// The five releases of the payments hub.
    fn hub() -> Vec<Release> {
        vec![
            release("1.0.0", &["v1"], "1.0.0", &["1.0.0", "1.0.1"]),
            release("1.0.1", &["v1"], "1.0.1", &[]),
            release("1.0.2", &["v1", "v2"], "1.0.1", &["1.0.1", "2.0.0"]),
            release("2.0.0", &["v2"], "1.0.1", &["1.0.1", "2.0.0"]),
            release("2.0.1", &["v2"], "2.0.0", &[]),
        ]
    }

    fn v(s: &str) -> Version {
        Version::parse(s).expect("semver")
    }

    #[test]
    fn the_hub_chain_passes_every_step() {
        let p = plan("hub", &hub(), &v("1.0.0"), &v("2.0.1")).expect("plan");
        assert!(p.ok(), "{:?}", p.first_problem());
        let tos: Vec<String> = p.steps.iter().map(|s| s.to.to_string()).collect();
        assert_eq!(tos, ["1.0.1", "1.0.2", "2.0.0", "2.0.1"]);
        assert!(p.steps[0].changes_schema() && !p.steps[0].reversible);
        assert!(!p.steps[1].changes_schema() && p.steps[1].reversible);
    }

    #[test]
    fn skipping_the_bridge_release_is_refused_with_the_reason() {
        let mut releases = hub();
        releases.retain(|r| r.version == v("1.0.0") || r.version == v("2.0.0"));
        let p = plan("hub", &releases, &v("1.0.0"), &v("2.0.0")).expect("plan");
        assert!(!p.ok());
        let problem = p.first_problem().expect("a problem");
        assert!(problem.contains("no API version in common"), "{problem}");
        assert!(problem.contains("1.0.0 → 2.0.0"), "{problem}");
    }

    #[test]
    fn a_schema_jump_and_a_release_that_cannot_run_on_it_are_named() {
        let releases = vec![
            release("1.0.0", &["v1"], "1.0.0", &[]),
            release("1.1.0", &["v1"], "1.1.0", &[]),
            release("1.2.0", &["v1"], "1.2.0", &[]),
        ];
        // 1.1.0 is registered, so the chain goes through it: no jump, but
        // 1.0.0 cannot run on 1.1.0 (it only runs on its own).
        let p = plan("hub", &releases, &v("1.0.0"), &v("1.2.0")).expect("plan");
        let all: Vec<&String> = p.steps.iter().flat_map(|s| &s.broken).collect();
        assert!(
            all.iter().any(|b| b.starts_with("runs-on: 1.0.0")),
            "{all:?}"
        );
        assert!(!all.iter().any(|b| b.starts_with("schema-step")), "{all:?}");
        // With schema 1.1.0 declared only by an older release, going from
        // 1.0.0 straight to 1.2.0 jumps over it.
        let jump = vec![
            release("0.9.0", &["v1"], "1.1.0", &[]),
            releases[0].clone(),
            releases[2].clone(),
        ];
        let p = plan("hub", &jump, &v("1.0.0"), &v("1.2.0")).expect("plan");
        let all: Vec<&String> = p.steps.iter().flat_map(|s| &s.broken).collect();
        let jumped = all
            .iter()
            .any(|b| b.contains("jump from 1.0.0 to 1.2.0, past 1.1.0"));
        assert!(jumped, "{all:?}");
    }

    #[test]
    fn unknown_targets_and_backward_plans_are_refused() {
        assert!(plan("hub", &hub(), &v("1.0.0"), &v("9.0.0")).is_err());
        assert!(plan("hub", &hub(), &v("2.0.0"), &v("1.0.1")).is_err());
        assert!(plan("hub", &hub(), &v("3.0.0"), &v("2.0.1")).is_err());
    }
}
