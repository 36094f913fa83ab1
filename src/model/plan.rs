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
    /// Nothing runs yet: the plan first starts `from`, the service's first
    /// registered release, as main (the database is taken to be at its
    /// schema), then takes the steps.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub starts: bool,
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
/// registered releases (any order). `schema` is the schema the database is
/// at (the service's recorded one; `None`: main's own). Refuses a target
/// that is not registered or is main; a chain that breaks a rule is
/// returned with the rule named in its step.
pub fn plan(
    service: &str,
    registered: &[Release],
    main: &Version,
    schema: Option<&Version>,
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
    if target == main {
        return refuse(format!("{service} {main} is main already; nothing to do"));
    }
    if target < main {
        return Ok(plan_back(service, &releases, main, schema, target));
    }
    let schemas = declared_schemas(registered);
    let index = |s: &Version| schemas.iter().position(|x| *x == s);

    let chain: Vec<&Release> = releases
        .iter()
        .copied()
        .filter(|r| &r.version > main && &r.version <= target)
        .collect();
    let mut steps = Vec::with_capacity(chain.len());
    let mut from = *current;
    let mut schema = schema
        .cloned()
        .or_else(|| current.spec.versioning.schema_version.clone());
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
        starts: false,
        steps,
    })
}

/// Plans the upgrade of a service that has no main yet: it starts from
/// its first (lowest) registered release, made main as a first deploy
/// would, then goes through the later ones to `target` as [`plan`] does.
/// `schema` is a schema recorded earlier (`None`: the first release's).
pub fn plan_first(
    service: &str,
    registered: &[Release],
    schema: Option<&Version>,
    target: &Version,
) -> Result<Plan, ModelError> {
    let Some(first) = registered.iter().map(|r| &r.version).min() else {
        return Err(ModelError::InvalidUpgrade(format!(
            "{service} has no release to start from: register one with `switchyard release add FILE`"
        )));
    };
    if target == first {
        return Ok(Plan {
            service: service.to_owned(),
            from: first.clone(),
            to: target.clone(),
            starts: true,
            steps: Vec::new(),
        });
    }
    let mut planned = plan(service, registered, first, schema, target)?;
    planned.starts = true;
    Ok(planned)
}

/// The schema versions the releases declare, oldest first, each once: the
/// steps a schema moves by.
pub fn declared_schemas<'a>(releases: impl IntoIterator<Item = &'a Release>) -> Vec<&'a Version> {
    let mut schemas: Vec<&Version> = releases
        .into_iter()
        .filter_map(|r| r.spec.versioning.schema_version.as_ref())
        .collect();
    schemas.sort();
    schemas.dedup();
    schemas
}

/// The schema each release runs on once it is main: its own, else the
/// one before it (in version order).
fn effective_schemas(releases: &[&Release]) -> Vec<Option<Version>> {
    let mut schema = None;
    releases
        .iter()
        .map(|r| {
            if let Some(s) = &r.spec.versioning.schema_version {
                schema = Some(s.clone());
            }
            schema.clone()
        })
        .collect()
}

/// Going back from `main` to `target` (older), one registered release at a
/// time. Each step `A → B` (A the newer) switches main to B while the
/// schema is still A's, then runs A's `migrate_down` when the schema moves
/// back, then stops A. Rules: **api** (shared API version), **schema-step**
/// (back by at most one), **runs-on** (B runs against A's schema, where it
/// becomes main), **migrate_down** (a schema change needs A's
/// `migrate_down`: without it the step cannot be reversed).
fn plan_back(
    service: &str,
    releases: &[&Release],
    main: &Version,
    schema: Option<&Version>,
    target: &Version,
) -> Plan {
    let mut schemas_of = effective_schemas(releases);
    if let (Some(recorded), Some(i)) = (schema, releases.iter().position(|r| &r.version == main)) {
        schemas_of[i] = Some(recorded.clone());
    }
    let known = declared_schemas(releases.iter().copied());
    let index = |s: &Version| known.iter().position(|x| *x == s);
    let chain: Vec<(usize, &Release)> = releases
        .iter()
        .copied()
        .enumerate()
        .filter(|(_, r)| &r.version >= target && &r.version <= main)
        .rev()
        .collect();
    let steps = chain
        .windows(2)
        .map(|pair| {
            let ((ia, a), (ib, b)) = (pair[0], pair[1]);
            let (sa, sb) = (schemas_of[ia].clone(), schemas_of[ib].clone());
            let (va, vb) = (&a.spec.versioning, &b.spec.versioning);
            let mut broken = Vec::new();
            let shared: Vec<ApiVersion> = va
                .api_versions
                .iter()
                .copied()
                .filter(|v| vb.api_versions.iter().any(|w| w.matches(v)))
                .collect();
            if shared.is_empty() {
                broken.push(format!(
                    "api: {} serves {} and {} serves {}: no API version in common",
                    a.version,
                    api_list(&va.api_versions),
                    b.version,
                    api_list(&vb.api_versions)
                ));
            }
            if let (Some(x), Some(y)) = (&sa, &sb) {
                if let (Some(i), Some(j)) = (index(x), index(y)) {
                    if j + 1 < i || j > i {
                        broken.push(format!(
                            "schema-step: going back would move the schema from {x} to {y}"
                        ));
                    }
                }
            }
            if let Some(current) = &sa {
                let runs_on = vb.runs_on();
                if !runs_on.is_empty() && !runs_on.contains(current) {
                    broken.push(format!(
                        "runs-on: {} cannot run against schema {current}, where it would become main",
                        b.version
                    ));
                }
            }
            let changes = sa != sb;
            if changes && va.hooks.migrate_down.is_empty() {
                broken.push(format!(
                    "migrate_down: the schema would go back from {} to {} but {} has no hooks.migrate_down; this step cannot be reversed",
                    sa.as_ref().map_or("?".into(), ToString::to_string),
                    sb.as_ref().map_or("?".into(), ToString::to_string),
                    a.version
                ));
            }
            PlanStep {
                from: a.version.clone(),
                to: b.version.clone(),
                schema_before: sa,
                schema_after: sb,
                shared_api: shared,
                reversible: true,
                broken,
            }
        })
        .collect();
    Plan {
        service: service.to_owned(),
        from: main.clone(),
        to: target.clone(),
        starts: false,
        steps,
    }
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
                    upstream_ca: None,
                },
                replicas: 1,
                health: HealthCheck::default(),
                ready_timeout_ms: 1000,
                versioning,
                protocol: crate::model::Protocol::Http,
                proxy_protocol: None,
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
        let p = plan("hub", &hub(), &v("1.0.0"), None, &v("2.0.1")).expect("plan");
        assert!(p.ok(), "{:?}", p.first_problem());
        let tos: Vec<String> = p.steps.iter().map(|s| s.to.to_string()).collect();
        assert_eq!(tos, ["1.0.1", "1.0.2", "2.0.0", "2.0.1"]);
        assert!(p.steps[0].changes_schema() && !p.steps[0].reversible);
        assert!(!p.steps[1].changes_schema() && p.steps[1].reversible);
    }

    #[test]
    fn with_nothing_running_the_plan_starts_from_the_first_registered_release() {
        let mut releases = hub();
        releases.reverse();
        let p = plan_first("hub", &releases, None, &v("1.0.2")).expect("plan");
        assert!(p.starts && p.ok(), "{p:?}");
        assert_eq!(p.from, v("1.0.0"));
        let tos: Vec<String> = p.steps.iter().map(|s| s.to.to_string()).collect();
        assert_eq!(tos, ["1.0.1", "1.0.2"]);
        let only = plan_first("hub", &releases, None, &v("1.0.0")).expect("plan");
        assert!(only.starts && only.steps.is_empty(), "{only:?}");
        assert!(plan_first("hub", &[], None, &v("1.0.0")).is_err());
        assert!(plan_first("hub", &releases, None, &v("3.0.0")).is_err());
    }

    #[test]
    fn skipping_the_bridge_release_is_refused_with_the_reason() {
        let mut releases = hub();
        releases.retain(|r| r.version == v("1.0.0") || r.version == v("2.0.0"));
        let p = plan("hub", &releases, &v("1.0.0"), None, &v("2.0.0")).expect("plan");
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
        let p = plan("hub", &releases, &v("1.0.0"), None, &v("1.2.0")).expect("plan");
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
        let p = plan("hub", &jump, &v("1.0.0"), None, &v("1.2.0")).expect("plan");
        let all: Vec<&String> = p.steps.iter().flat_map(|s| &s.broken).collect();
        let jumped = all
            .iter()
            .any(|b| b.contains("jump from 1.0.0 to 1.2.0, past 1.1.0"));
        assert!(jumped, "{all:?}");
    }

    #[test]
    fn unknown_targets_are_refused() {
        assert!(plan("hub", &hub(), &v("1.0.0"), None, &v("9.0.0")).is_err());
        assert!(plan("hub", &hub(), &v("2.0.0"), None, &v("2.0.0")).is_err());
        assert!(plan("hub", &hub(), &v("3.0.0"), None, &v("2.0.1")).is_err());
    }

    #[test]
    fn going_back_needs_migrate_down_where_the_schema_moves() {
        let mut releases = hub();
        let p = plan("hub", &releases, &v("2.0.1"), None, &v("2.0.0")).expect("plan");
        let problem = p.first_problem().expect("no migrate_down");
        assert!(problem.contains("cannot be reversed"), "{problem}");
        releases[4].spec.versioning.hooks.migrate_down = vec!["./down".into()];
        let p = plan("hub", &releases, &v("2.0.1"), None, &v("1.0.2")).expect("plan");
        assert!(p.ok(), "{:?}", p.first_problem());
        let tos: Vec<String> = p.steps.iter().map(|s| s.to.to_string()).collect();
        assert_eq!(tos, ["2.0.0", "1.0.2"]);
        assert!(p.steps[0].changes_schema() && !p.steps[1].changes_schema());
    }

    #[test]
    fn a_schema_already_migrated_is_not_migrated_again() {
        // Serve stopped after 1.0.1's migrate ran but before 1.0.1 became
        // main: the recorded schema is 1.0.1 and main is still 1.0.0.
        let p = plan("hub", &hub(), &v("1.0.0"), Some(&v("1.0.1")), &v("1.0.2")).expect("plan");
        assert!(p.ok(), "{:?}", p.first_problem());
        assert!(!p.steps[0].changes_schema(), "{:?}", p.steps[0]);
        assert!(p.steps[0].reversible);
    }
}
