use std::collections::BTreeSet;
use std::time::Duration;

use semver::Version;

use super::Controller;
use super::change::Change;
use crate::error::Result;
use crate::model::{
    ModelError, Revision, Rule, ServiceName, ServiceState, Stickiness, TrafficPolicy, now_millis,
    parse_version,
};
use crate::routing::CompiledPolicy;

impl Controller {
    /// Commits a policy change made by `change`, after checking that every
    /// release the new policy starts sending traffic to is healthy.
    async fn change_policy(
        &self,
        service: &ServiceName,
        base_revision: Option<u64>,
        actor: &str,
        action: String,
        change: impl FnOnce(&ServiceState, u64) -> Result<ServiceState, ModelError>,
    ) -> Result<Revision> {
        self.change(service, base_revision, actor, |current| {
            let next = change(&current.state, now_millis())?;
            let before: BTreeSet<&Version> = current.state.policy.targets().into_iter().collect();
            for target in next.policy.targets() {
                if !before.contains(target) {
                    self.ensure_ready(service, target)?;
                }
            }
            Ok(Change::new(action, next))
        })
        .await
    }

    /// Sends `percent` of the service's clients to a release, sticky per client.
    pub async fn set_canary(
        &self,
        service: &ServiceName,
        version: &str,
        percent: u8,
        sticky: Option<Stickiness>,
        base_revision: Option<u64>,
        actor: &str,
    ) -> Result<Revision> {
        let version = parse_version(version)?;
        if percent > 0 {
            self.ensure_ready(service, &version)?;
            self.await_ready_everywhere(service, &version).await?;
        }
        self.change_policy(
            service,
            base_revision,
            actor,
            format!("canary {version} at {percent}%"),
            |state, now| state.set_canary(service, &version, percent, sticky, now),
        )
        .await
    }

    /// Every client back on main at once; the canary release stays as
    /// standby. A rollout of the canary stops too.
    pub async fn abort(
        &self,
        service: &ServiceName,
        base_revision: Option<u64>,
        actor: &str,
    ) -> Result<Revision> {
        let canary = self
            .current(service)
            .and_then(|r| r.state.policy.canary.map(|c| c.version.to_string()))
            .unwrap_or_default();
        let revision = self
            .change_policy(
                service,
                base_revision,
                actor,
                format!("abort canary {canary}"),
                |state, now| state.abort(service, now),
            )
            .await?;
        // A canary aborted by hand ends its rollout too.
        self.stop_rollout_by_hand(service)?;
        Ok(revision)
    }

    /// Ends the canary as a rollout's rollback, with the reason in history.
    pub(super) async fn abort_because(
        &self,
        service: &ServiceName,
        reason: &str,
    ) -> Result<Revision> {
        self.change_policy(service, None, "rollout", reason.to_owned(), |state, now| {
            state.abort(service, now)
        })
        .await
    }

    /// Marks the release reached by `x-client-mode: green` (or clears it).
    pub async fn set_green(
        &self,
        service: &ServiceName,
        version: Option<&str>,
        base_revision: Option<u64>,
        actor: &str,
    ) -> Result<Revision> {
        let version = version.map(parse_version).transpose()?;
        let action = match &version {
            Some(v) => format!("green {v}"),
            None => "green off".to_owned(),
        };
        self.change_policy(service, base_revision, actor, action, |state, now| {
            state.set_green(service, version.as_ref(), now)
        })
        .await
    }

    /// Makes the candidate main once every instance is healthy (waiting up
    /// to its ready timeout); the old main goes to standby.
    pub async fn promote(
        &self,
        service: &ServiceName,
        version: &str,
        base_revision: Option<u64>,
        actor: &str,
    ) -> Result<Revision> {
        let parsed = parse_version(version)?;
        let current = self.require(service)?;
        Self::check_base(service, current.number, base_revision)?;
        // Fail fast on what the model refuses.
        current.state.assign(service, &parsed, 0)?;
        let handle = self
            .runtime
            .get(service.as_str(), &parsed.to_string())
            .ok_or_else(|| ModelError::UnknownRelease {
                service: service.to_string(),
                version: parsed.to_string(),
                known: "it is not running".into(),
            })?;
        handle
            .wait_ready(Duration::from_millis(handle.release.spec.ready_timeout_ms))
            .await?;
        self.assign(service, version, base_revision, actor).await
    }

    /// Adds a rule at `position` (1-based; default last).
    pub async fn add_rule(
        &self,
        service: &ServiceName,
        rule: Rule,
        position: Option<usize>,
        base_revision: Option<u64>,
        actor: &str,
    ) -> Result<Revision> {
        let label = if rule.name.is_empty() {
            "rule".to_owned()
        } else {
            format!("rule {}", rule.name)
        };
        self.change_policy(
            service,
            base_revision,
            actor,
            format!("add {label}"),
            |state, now| state.add_rule(rule, position, now),
        )
        .await
    }

    /// Removes a rule by number (1-based) or name.
    pub async fn remove_rule(
        &self,
        service: &ServiceName,
        selector: &str,
        base_revision: Option<u64>,
        actor: &str,
    ) -> Result<Revision> {
        self.change_policy(
            service,
            base_revision,
            actor,
            format!("remove rule {selector}"),
            |state, now| state.remove_rule(service, selector, now),
        )
        .await
    }

    /// Replaces the whole policy (`switchyard apply -f`).
    pub async fn apply_policy(
        &self,
        service: &ServiceName,
        policy: TrafficPolicy,
        base_revision: Option<u64>,
        actor: &str,
    ) -> Result<Revision> {
        self.change_policy(
            service,
            base_revision,
            actor,
            "apply policy".to_owned(),
            |state, now| state.with_policy(policy, now),
        )
        .await
    }

    pub fn policy(&self, service: &ServiceName) -> Result<TrafficPolicy> {
        Ok(self.require(service)?.state.policy)
    }

    /// The effective routing of a service in evaluation order: (what
    /// matches, where it goes).
    pub fn routes(&self, service: &ServiceName) -> Result<Vec<(String, String)>> {
        let current = self.require(service)?;
        let compiled = CompiledPolicy::<()>::compile(
            service.as_str(),
            &current.state.policy,
            &current.state.api_version,
            |_| None,
        )
        .map_err(ModelError::InvalidPolicy)?;
        let main = current.state.main().map(|v| v.to_string());
        let mut rows = compiled.describe(main.as_deref());
        // API-version routing comes after the policy (see routing::api_version).
        let mut served: Vec<(String, String)> = Vec::new();
        for version in current.state.releases.keys().rev() {
            let Some(handle) = self.runtime.get(service.as_str(), &version.to_string()) else {
                continue;
            };
            let api = &handle.release.spec.versioning.api_versions;
            if !api.is_empty() {
                served.push((version.to_string(), crate::model::api_list(api)));
            }
        }
        if !served.is_empty() {
            let list = served
                .iter()
                .map(|(v, api)| format!("{v}: {api}"))
                .collect::<Vec<_>>()
                .join("; ");
            rows.push((
                format!(
                    "then, for a request naming an API version ({}) the release above does not serve",
                    current.state.api_version
                ),
                format!("main if it serves it, else the newest that does ({list}), else 406"),
            ));
        }
        Ok(rows)
    }
}
