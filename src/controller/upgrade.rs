//! `upgrade NAME --to VERSION`: runs a checked plan one step at a time.
//!
//! Each step `A → B`: when the schema changes, B's `backup` hook, then its
//! `migrate` hook; then B is started as standby from its registered spec
//! and must become ready (a revision); then B becomes main and A standby (a
//! revision). The first failure stops the upgrade: the failed step makes no
//! revision that stays (a B it started is killed again) and, if the schema
//! had moved and B has `migrate_down`, that runs; earlier steps stay done.
//! Old mains stay running as standbys, so clients of an API version the
//! new main dropped still have a release that serves them.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::hook::HookError;
use super::{Controller, ControllerError, DeployRequest, DeployingGuard};
use crate::error::{Error, Result};
use crate::model::{ModelError, Plan, PlanStep, Release, ServiceName};

/// What `switchyard upgrade` sends.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct UpgradeRequest {
    pub to: String,
    /// How long each hook may run, in ms (default 5 minutes).
    #[serde(default)]
    pub hook_timeout_ms: Option<u64>,
    /// Hold the service's new requests during each step that changes the
    /// schema (from before the backup until the switch), at most this many
    /// ms each.
    #[serde(default)]
    pub pause_max_hold_ms: Option<u64>,
}

/// One step done.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StepDone {
    pub from: String,
    pub to: String,
    /// Hooks run, with their captured output.
    pub hooks: Vec<(String, String)>,
    /// The revision that made `to` main.
    pub revision: u64,
}

/// What an upgrade did.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct UpgradeReport {
    pub plan: Plan,
    pub steps: Vec<StepDone>,
}

const DEFAULT_HOOK_TIMEOUT: Duration = Duration::from_secs(300);

impl Controller {
    pub async fn upgrade(
        &self,
        service: &ServiceName,
        req: UpgradeRequest,
        actor: &str,
    ) -> Result<UpgradeReport> {
        let plan = self.plan(service, &req.to)?;
        if let Some(problem) = plan.first_problem() {
            return Err(ModelError::InvalidUpgrade(format!(
                "the plan is refused: {problem} (see `switchyard plan {service} --to {}`)",
                plan.to
            ))
            .into());
        }
        let key = (service.clone(), "upgrade".to_owned());
        if !self
            .deploying
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(key.clone())
        {
            return Err(ControllerError::UpgradeInProgress(service.to_string()).into());
        }
        let _upgrading = DeployingGuard {
            set: &self.deploying,
            key,
        };
        let timeout = req
            .hook_timeout_ms
            .map_or(DEFAULT_HOOK_TIMEOUT, Duration::from_millis);
        let total = plan.steps.len();
        let mut done = Vec::with_capacity(total);
        for (i, step) in plan.steps.iter().enumerate() {
            let label = format!("step {}/{total} {} → {}", i + 1, step.from, step.to);
            let pause = req.pause_max_hold_ms.filter(|_| step.changes_schema());
            if let Some(ms) = pause {
                let hold = super::PauseRequest {
                    max_hold_ms: Some(ms),
                };
                if let Err(error) = self.pause(service, hold) {
                    return Err(ControllerError::UpgradeStopped {
                        service: service.to_string(),
                        step: label,
                        main: step.from.to_string(),
                        reason: error.to_string(),
                    }
                    .into());
                }
            }
            let result = if step.to < step.from {
                self.downgrade_step(service, step, timeout, actor).await
            } else {
                self.upgrade_step(service, step, timeout, actor).await
            };
            if pause.is_some() {
                self.open_gate(service);
            }
            match result {
                Ok(step_done) => {
                    self.record_event(
                        service.as_str(),
                        "upgrade-step",
                        &format!("upgrade {label}: done"),
                        serde_json::to_value(&step_done).unwrap_or_default(),
                    );
                    done.push(step_done);
                }
                Err(error) => {
                    let main = self
                        .current(service)
                        .and_then(|r| r.state.main().map(ToString::to_string))
                        .unwrap_or_default();
                    self.record_event(
                        service.as_str(),
                        "upgrade-stopped",
                        &format!("upgrade {label}: {error}"),
                        serde_json::json!({ "main": main }),
                    );
                    return Err(ControllerError::UpgradeStopped {
                        service: service.to_string(),
                        step: label,
                        main,
                        reason: error.to_string(),
                    }
                    .into());
                }
            }
        }
        Ok(UpgradeReport { plan, steps: done })
    }

    async fn upgrade_step(
        &self,
        service: &ServiceName,
        step: &PlanStep,
        timeout: Duration,
        actor: &str,
    ) -> Result<StepDone> {
        let release = self.store.release(service, &step.to)?.ok_or_else(|| {
            ControllerError::MissingRelease {
                service: service.to_string(),
                version: step.to.to_string(),
            }
        })?;
        let hooks = &release.spec.versioning.hooks;
        let mut ran = Vec::new();
        let migrated = step.changes_schema();
        if migrated {
            for (name, command) in [("backup", &hooks.backup), ("migrate", &hooks.migrate)] {
                if command.is_empty() {
                    continue;
                }
                let run = self
                    .run_hook(&release, name, command, timeout)
                    .await
                    .map_err(hook_error)?;
                ran.push((name.to_owned(), run.output));
            }
        }
        let result = self.switch_to(service, &release, step, actor).await;
        match result {
            Ok(revision) => Ok(StepDone {
                from: step.from.to_string(),
                to: step.to.to_string(),
                hooks: ran,
                revision,
            }),
            Err(error) => {
                if migrated && !hooks.migrate_down.is_empty() {
                    if let Err(down) = self
                        .run_hook(&release, "migrate_down", &hooks.migrate_down, timeout)
                        .await
                    {
                        tracing::error!(service = %service, error = %down, "migrate_down failed after a failed step");
                        return Err(hook_error(down));
                    }
                }
                Err(error)
            }
        }
    }

    /// One step back `A → B` (A the newer, main): B becomes main while the
    /// schema is still A's (B runs on it, the plan checked), then A's
    /// `migrate_down` moves the schema back, then A is stopped. A failing
    /// `migrate_down` makes A main again.
    async fn downgrade_step(
        &self,
        service: &ServiceName,
        step: &PlanStep,
        timeout: Duration,
        actor: &str,
    ) -> Result<StepDone> {
        let missing = |v: &semver::Version| ControllerError::MissingRelease {
            service: service.to_string(),
            version: v.to_string(),
        };
        let newer = self
            .store
            .release(service, &step.from)?
            .ok_or_else(|| missing(&step.from))?;
        let older = self
            .store
            .release(service, &step.to)?
            .ok_or_else(|| missing(&step.to))?;
        let mut revision = self.switch_to(service, &older, step, actor).await?;
        let mut ran = Vec::new();
        if step.changes_schema() {
            let down = &newer.spec.versioning.hooks.migrate_down;
            match self.run_hook(&newer, "migrate_down", down, timeout).await {
                Ok(run) => ran.push(("migrate_down".to_owned(), run.output)),
                Err(error) => {
                    let back = self
                        .assign(service, &step.from.to_string(), None, actor)
                        .await;
                    if let Err(e) = back {
                        tracing::error!(service = %service, error = %e, "cannot make the newer release main again");
                    }
                    return Err(hook_error(error));
                }
            }
        }
        match self
            .kill(service, &step.from.to_string(), None, actor)
            .await
        {
            Ok(r) => revision = r.number,
            Err(error) => {
                tracing::warn!(service = %service, %error, "the release stepped back from stays as standby");
            }
        }
        Ok(StepDone {
            from: step.from.to_string(),
            to: step.to.to_string(),
            hooks: ran,
            revision,
        })
    }

    /// Starts `release` as standby (unless it runs) and makes it main; on
    /// failure a release this started is killed again.
    async fn switch_to(
        &self,
        service: &ServiceName,
        release: &Release,
        step: &PlanStep,
        actor: &str,
    ) -> Result<u64> {
        let version = step.to.to_string();
        let running = self
            .current(service)
            .is_some_and(|r| r.state.releases.contains_key(&step.to));
        if !running {
            self.deploy(
                service,
                DeployRequest {
                    version: version.clone(),
                    spec: release.spec.clone(),
                    hosts: Vec::new(),
                    standby: true,
                    promote: false,
                    base_revision: None,
                },
                actor,
            )
            .await?;
        }
        match self.assign(service, &version, None, actor).await {
            Ok(revision) => Ok(revision.number),
            Err(error) => {
                if !running {
                    let _ = self.kill(service, &version, None, actor).await;
                }
                Err(error)
            }
        }
    }
}

fn hook_error(e: HookError) -> Error {
    ControllerError::Hook(e).into()
}
