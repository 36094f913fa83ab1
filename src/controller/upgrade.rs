//! `upgrade NAME --to VERSION`: runs a checked plan one step at a time, in
//! the background, while `--status` shows where it is.
//!
//! Each step `A → B`: when the schema changes, B's `backup` hook, then its
//! `migrate` hook, then a revision that records the new schema; then B is
//! started as standby from its registered spec and must become ready (a
//! revision); then B becomes main and A standby (a revision). The first
//! failure stops the upgrade: a B the step started is killed again and, if
//! the schema had moved and B has `migrate_down`, that runs (and a revision
//! records the schema back); earlier steps stay done. Between two steps the
//! upgrade goes on at once, waits a set time (the new main must stay
//! ready), or waits for `--continue`; `--abort` stops it at the next step
//! boundary, never inside a step. Old mains stay running as standbys, so
//! clients of an API version the new main dropped still have a release
//! that serves them. While an upgrade holds a service, the admin API
//! refuses manual changes to it (see `api::upgrade_guard`).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use super::change::Change;
use super::hook::HookError;
use super::{Controller, ControllerError, DeployRequest};
use crate::error::{Error, Result};
use crate::model::{
    BetweenSteps, ModelError, PlanStep, Release, ServiceName, StepDone, UpgradeOptions,
    UpgradeState, UpgradeStatus, now_millis, step_label,
};

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
    /// What happens between two steps.
    #[serde(default)]
    pub between: BetweenSteps,
}

pub(super) const DEFAULT_HOOK_TIMEOUT: Duration = Duration::from_secs(300);

/// The longest wait between steps one may ask for.
const MAX_WAIT: Duration = Duration::from_secs(24 * 3600);

/// How the operator reaches a running upgrade.
#[derive(Default)]
pub(super) struct UpgradeControl {
    go_on: AtomicBool,
    abort: AtomicBool,
    wake: Notify,
}

/// The upgrades running in this serve, by service, with the handle the
/// operator's `--continue` and `--abort` reach them through. Leader only
/// (upgrades run hooks, which must run once for the fleet). An upgrade's
/// task runs until it ends (done, failed, aborted) or until the part stops
/// it (`stop_upgrades`, or the part's drop): then the task ends where it
/// is, a hook that runs is killed, and the stored upgrade stays as it was
/// for the next serve to find interrupted (`interrupt_upgrades`).
#[derive(Default)]
pub(super) struct Upgrades {
    controls: std::sync::Mutex<std::collections::HashMap<ServiceName, Arc<UpgradeControl>>>,
    /// Cancelled to stop every running upgrade's task; a fresh one
    /// replaces it, for the upgrades started afterwards.
    stop: std::sync::Mutex<CancellationToken>,
}

impl Upgrades {
    fn controls(
        &self,
    ) -> std::sync::MutexGuard<'_, std::collections::HashMap<ServiceName, Arc<UpgradeControl>>>
    {
        self.controls.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The token an upgrade started now stops on.
    fn stop_token(&self) -> CancellationToken {
        self.stop.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Runs an upgrade's driver as a task that ends early when the part
    /// stops; dropping the driver there kills a hook it runs.
    fn spawn(
        &self,
        service: &ServiceName,
        driver: impl std::future::Future<Output = ()> + Send + 'static,
    ) -> tokio::task::JoinHandle<()> {
        let stop = self.stop_token();
        let service = service.clone();
        tokio::spawn(async move {
            tokio::select! {
                () = driver => {}
                () = stop.cancelled() => {
                    tracing::warn!(%service, "upgrade stopped where it was; its progress is stored");
                }
            }
        })
    }

    /// Ends every running upgrade's task where it is.
    fn stop_all(&self) {
        let old = std::mem::take(&mut *self.stop.lock().unwrap_or_else(|p| p.into_inner()));
        old.cancel();
        self.controls().clear();
    }
}

impl Drop for Upgrades {
    fn drop(&mut self) {
        self.stop_token().cancel();
    }
}

impl Controller {
    fn upgrade_controls(
        &self,
    ) -> std::sync::MutexGuard<'_, std::collections::HashMap<ServiceName, Arc<UpgradeControl>>>
    {
        self.upgrades.part().controls()
    }

    /// Checks the plan and starts it in the background; answers with the
    /// upgrade as it starts. A plan that breaks a rule, a second upgrade
    /// and an upgrade during a rollout are refused with nothing changed.
    pub fn start_upgrade(
        self: &Arc<Self>,
        service: &ServiceName,
        req: UpgradeRequest,
        actor: &str,
    ) -> Result<UpgradeState> {
        self.as_leader_sync(|| self.start_upgrade_fenced(service, req, actor))
    }

    fn start_upgrade_fenced(
        self: &Arc<Self>,
        service: &ServiceName,
        req: UpgradeRequest,
        actor: &str,
    ) -> Result<UpgradeState> {
        self.ensure_leading("upgrades")?;
        if let BetweenSteps::Wait { ms } = req.between {
            if ms == 0 || Duration::from_millis(ms) > MAX_WAIT {
                return Err(ModelError::InvalidUpgrade(
                    "the wait between steps must be more than zero and at most 24h, e.g. 30s"
                        .into(),
                )
                .into());
            }
        }
        let plan = self.plan(service, &req.to)?;
        if let Some(problem) = plan.first_problem() {
            return Err(ModelError::InvalidUpgrade(format!(
                "the plan is refused: {problem} (see `switchyard plan {service} --to {}`)",
                plan.to
            ))
            .into());
        }
        if let Some(rollout) = self.rollout_state(service)? {
            if rollout.status.is_active() {
                return Err(ControllerError::RolloutRunning {
                    service: service.to_string(),
                    version: rollout.plan.version.to_string(),
                }
                .into());
            }
        }
        let control = Arc::new(UpgradeControl::default());
        {
            let mut controls = self.upgrade_controls();
            // A control whose upgrade has ended (its driver is about to
            // drop it) does not hold the service.
            if controls.contains_key(service) && self.stored_active(service) {
                return Err(ControllerError::UpgradeInProgress(service.to_string()).into());
            }
            controls.insert(service.clone(), Arc::clone(&control));
        }
        let now = now_millis();
        let state = UpgradeState {
            service: service.to_string(),
            to: plan.to.clone(),
            options: UpgradeOptions {
                hook_timeout_ms: req
                    .hook_timeout_ms
                    .unwrap_or(DEFAULT_HOOK_TIMEOUT.as_millis() as u64),
                pause_max_hold_ms: req.pause_max_hold_ms,
                between: req.between,
            },
            plan,
            status: UpgradeStatus::Running,
            steps: Vec::new(),
            error: None,
            waiting_until: None,
            abort_requested: false,
            actor: actor.to_owned(),
            started_at: now,
            updated_at: now,
        };
        if let Err(error) = self.store.save_upgrade(&state) {
            self.upgrade_controls().remove(service);
            return Err(error.into());
        }
        self.record_event(
            service.as_str(),
            "upgrade-started",
            &format!(
                "upgrade to {} started: {} steps from {}",
                state.to,
                state.plan.steps.len(),
                state.plan.from
            ),
            serde_json::to_value(&state.plan).unwrap_or_default(),
        );
        let this = Arc::clone(self);
        let (name, first, mine) = (service.clone(), state.clone(), Arc::clone(&control));
        let fence = self.leadership().fence();
        let driver = self.upgrades.part().spawn(
            service,
            crate::store::fence::scope(fence, async move {
                this.drive_upgrade(&name, first, &control).await;
            }),
        );
        let this = Arc::clone(self);
        let name = service.clone();
        tokio::spawn(async move {
            if let Err(panic) = driver.await {
                tracing::error!(service = %name, error = %panic, "the upgrade driver failed");
                if let Ok(Some(mut state)) = this.upgrade_state(&name) {
                    state.status = UpgradeStatus::Stopped;
                    state.error = Some(format!("the upgrade failed inside switchyard: {panic}"));
                    this.save_upgrade(&mut state);
                }
            }
            let mut controls = this.upgrade_controls();
            if controls.get(&name).is_some_and(|c| Arc::ptr_eq(c, &mine)) {
                controls.remove(&name);
            }
        });
        Ok(state)
    }

    /// The service's latest upgrade, if it ever had one.
    pub fn upgrade_state(&self, service: &ServiceName) -> Result<Option<UpgradeState>> {
        Ok(self.store.upgrade(service.as_str())?)
    }

    /// The upgrade that holds the service right now, if any: one this
    /// serve drives that has not ended.
    pub fn active_upgrade(&self, service: &ServiceName) -> Option<UpgradeState> {
        if !self.upgrade_controls().contains_key(service) {
            return None;
        }
        self.upgrade_state(service)
            .ok()
            .flatten()
            .filter(|u| u.status.is_active())
    }

    fn stored_active(&self, service: &ServiceName) -> bool {
        self.upgrade_state(service)
            .ok()
            .flatten()
            .is_some_and(|u| u.status.is_active())
    }

    /// Whether any service is being upgraded by this serve.
    pub fn upgrading(&self) -> Vec<String> {
        let held: Vec<ServiceName> = self.upgrade_controls().keys().cloned().collect();
        held.into_iter()
            .filter(|s| self.stored_active(s))
            .map(|s| s.to_string())
            .collect()
    }

    /// Lets an upgrade that waits between steps go on (also cuts a timed
    /// wait short). The operator's word is recorded first, as the
    /// leader's work: a node whose election is gone refuses it and the
    /// upgrade waits on (see [`Self::as_leader`]).
    pub fn continue_upgrade(&self, service: &ServiceName) -> Result<UpgradeState> {
        self.as_leader_sync(|| self.continue_upgrade_fenced(service))
    }

    fn continue_upgrade_fenced(&self, service: &ServiceName) -> Result<UpgradeState> {
        self.ensure_leading("upgrades")?;
        let state = self.held_upgrade(service)?;
        if state.status != UpgradeStatus::Waiting && state.waiting_until.is_none() {
            return Err(ControllerError::UpgradeNotWaiting {
                service: service.to_string(),
                doing: state
                    .current_step()
                    .map_or_else(|| "finishing".to_owned(), |s| format!("running {s}")),
            }
            .into());
        }
        self.try_record_event(
            service.as_str(),
            "upgrade-continued",
            &format!(
                "the upgrade to {} goes on after step {}/{} (`switchyard upgrade {service} --continue`)",
                state.to,
                state.steps.len(),
                state.plan.steps.len()
            ),
            serde_json::Value::Null,
        )?;
        if let Some(control) = self.upgrade_controls().get(service) {
            control.go_on.store(true, Ordering::SeqCst);
            control.wake.notify_one();
        }
        Ok(state)
    }

    /// Stops the upgrade at the next step boundary (at once when it waits
    /// between steps); the step that runs finishes or fails as usual.
    pub fn abort_upgrade(&self, service: &ServiceName) -> Result<UpgradeState> {
        self.as_leader_sync(|| self.abort_upgrade_fenced(service))
    }

    fn abort_upgrade_fenced(&self, service: &ServiceName) -> Result<UpgradeState> {
        self.ensure_leading("upgrades")?;
        let mut state = self.held_upgrade(service)?;
        self.try_record_event(
            service.as_str(),
            "upgrade-abort-asked",
            &format!(
                "the upgrade to {} stops at the next step boundary, {} of {} steps done (`switchyard upgrade {service} --abort`)",
                state.to,
                state.steps.len(),
                state.plan.steps.len()
            ),
            serde_json::Value::Null,
        )?;
        if let Some(control) = self.upgrade_controls().get(service) {
            control.abort.store(true, Ordering::SeqCst);
            control.wake.notify_one();
        }
        state.abort_requested = true;
        Ok(state)
    }

    fn held_upgrade(&self, service: &ServiceName) -> Result<UpgradeState> {
        self.require_known(service)?;
        match self.active_upgrade(service) {
            Some(state) => Ok(state),
            None => Err(ControllerError::NoUpgrade(service.to_string()).into()),
        }
    }

    /// Stops every upgrade this serve runs, where it is, without changing
    /// what is stored: a hook that runs is killed, and the serve that runs
    /// upgrades next marks them interrupted (`interrupt_upgrades`).
    pub fn stop_upgrades(&self) {
        self.upgrades.part().stop_all();
    }

    /// At startup: upgrades stored as running were cut off when serve
    /// stopped. Each is marked interrupted, naming where its service is.
    pub fn interrupt_upgrades(&self) -> Result<()> {
        for mut state in self.store.upgrades()? {
            if !state.status.is_active() {
                continue;
            }
            let Ok(service) = state.service.parse::<ServiceName>() else {
                continue;
            };
            // One this node runs goes on (a node that led, lost its lease
            // for a moment and leads again).
            if self.upgrade_controls().contains_key(&service) {
                continue;
            }
            let main = self
                .current(&service)
                .and_then(|r| r.state.main().map(ToString::to_string))
                .unwrap_or_else(|| "none".into());
            let at = state
                .current_step()
                .unwrap_or_else(|| "the last step".into());
            state.status = UpgradeStatus::Interrupted;
            state.waiting_until = None;
            let held = if self.pause_view(service.as_str()).is_some() {
                format!("; its traffic is still paused: `switchyard resume {service}` lets it go")
            } else {
                String::new()
            };
            state.error = Some(format!(
                "serve stopped during {at}; {service} is at the last change that committed (main {main}): `switchyard upgrade {service} --to {}` plans again from there{held}",
                state.to
            ));
            self.save_upgrade(&mut state);
            tracing::warn!(%service, "an upgrade was interrupted by a restart");
        }
        Ok(())
    }

    fn save_upgrade(&self, state: &mut UpgradeState) {
        state.updated_at = now_millis();
        if let Err(error) = self.store.save_upgrade(state) {
            tracing::error!(service = %state.service, %error, "cannot store the upgrade's progress");
        }
    }

    async fn drive_upgrade(
        &self,
        service: &ServiceName,
        mut state: UpgradeState,
        control: &UpgradeControl,
    ) {
        let total = state.plan.steps.len();
        let timeout = Duration::from_millis(state.options.hook_timeout_ms);
        let actor = state.actor.clone();
        if state.plan.starts && state.steps.is_empty() && self.main_of(service).is_empty() {
            let first = state.plan.from.clone();
            let start = DeployRequest {
                version: first.to_string(),
                spec: None,
                hosts: Vec::new(),
                standby: false,
                promote: false,
                base_revision: None,
                shadow_methods: None,
            };
            match self.deploy(service, start, &actor).await {
                Ok(revision) => self.record_event(
                    service.as_str(),
                    "upgrade-step",
                    &format!(
                        "upgrade: started {first}, the first registered release, as main (revision {})",
                        revision.number
                    ),
                    serde_json::Value::Null,
                ),
                Err(error) => {
                    let reason = format!(
                        "the upgrade of {service} could not start its first registered release {first}: {error}; nothing changed"
                    );
                    return self.end_upgrade(
                        service,
                        &mut state,
                        UpgradeStatus::Stopped,
                        Some(reason),
                    );
                }
            }
        }
        while state.steps.len() < total {
            let i = state.steps.len();
            let step = state.plan.steps[i].clone();
            let label = step_label(i, total, &step.from, &step.to);
            if control.abort.load(Ordering::SeqCst) {
                return self.end_upgrade(
                    service,
                    &mut state,
                    UpgradeStatus::Aborted,
                    Some(format!("aborted by the operator before {label}")),
                );
            }
            match self
                .run_step(
                    service,
                    &step,
                    state.options.pause_max_hold_ms,
                    timeout,
                    &actor,
                )
                .await
            {
                Ok(done) => {
                    self.record_event(
                        service.as_str(),
                        "upgrade-step",
                        &format!("upgrade {label}: done"),
                        serde_json::to_value(&done).unwrap_or_default(),
                    );
                    state.steps.push(done);
                    state.abort_requested = control.abort.load(Ordering::SeqCst);
                    self.save_upgrade(&mut state);
                }
                Err(error) => {
                    let main = self.main_of(service);
                    let stopped = ControllerError::UpgradeStopped {
                        service: service.to_string(),
                        step: label,
                        main,
                        reason: error.to_string(),
                    };
                    return self.end_upgrade(
                        service,
                        &mut state,
                        UpgradeStatus::Stopped,
                        Some(stopped.to_string()),
                    );
                }
            }
            if state.steps.len() < total {
                if let Err(reason) = self.between_steps(service, &mut state, control).await {
                    let status = if control.abort.load(Ordering::SeqCst) {
                        UpgradeStatus::Aborted
                    } else {
                        UpgradeStatus::Stopped
                    };
                    return self.end_upgrade(service, &mut state, status, Some(reason));
                }
            }
        }
        self.end_upgrade(service, &mut state, UpgradeStatus::Done, None);
    }

    fn main_of(&self, service: &ServiceName) -> String {
        self.current(service)
            .and_then(|r| r.state.main().map(ToString::to_string))
            .unwrap_or_default()
    }

    fn end_upgrade(
        &self,
        service: &ServiceName,
        state: &mut UpgradeState,
        status: UpgradeStatus,
        error: Option<String>,
    ) {
        state.status = status;
        state.error = error;
        state.waiting_until = None;
        self.save_upgrade(state);
        let (kind, message) = match status {
            UpgradeStatus::Done => (
                "upgrade-done",
                format!(
                    "upgrade to {} done in {} steps",
                    state.to,
                    state.steps.len()
                ),
            ),
            UpgradeStatus::Aborted => (
                "upgrade-aborted",
                format!(
                    "upgrade to {} aborted after {} of {} steps; main {}",
                    state.to,
                    state.steps.len(),
                    state.plan.steps.len(),
                    self.main_of(service)
                ),
            ),
            _ => (
                "upgrade-stopped",
                state.error.clone().unwrap_or_else(|| "stopped".into()),
            ),
        };
        self.record_event(
            service.as_str(),
            kind,
            &message,
            serde_json::json!({ "main": self.main_of(service) }),
        );
    }

    /// The wait between two steps; `Err` says why the upgrade ends there.
    async fn between_steps(
        &self,
        service: &ServiceName,
        state: &mut UpgradeState,
        control: &UpgradeControl,
    ) -> std::result::Result<(), String> {
        let done = state.steps.len();
        let total = state.plan.steps.len();
        let aborted = || format!("aborted by the operator after step {done}/{total}");
        match state.options.between {
            BetweenSteps::Go => Ok(()),
            BetweenSteps::Approve => {
                state.status = UpgradeStatus::Waiting;
                self.save_upgrade(state);
                self.record_event(
                    service.as_str(),
                    "upgrade-waiting",
                    &format!(
                        "upgrade waits after step {done}/{total}: `switchyard upgrade {service} --continue` goes on, `--abort` stops here"
                    ),
                    serde_json::Value::Null,
                );
                loop {
                    if control.abort.load(Ordering::SeqCst) {
                        return Err(aborted());
                    }
                    if control.go_on.swap(false, Ordering::SeqCst) {
                        break;
                    }
                    control.wake.notified().await;
                }
                state.status = UpgradeStatus::Running;
                self.save_upgrade(state);
                Ok(())
            }
            BetweenSteps::Wait { ms } => {
                state.waiting_until = Some(now_millis() + ms);
                self.save_upgrade(state);
                let sleep = tokio::time::sleep(Duration::from_millis(ms));
                tokio::pin!(sleep);
                loop {
                    tokio::select! {
                        () = &mut sleep => break,
                        () = control.wake.notified() => {}
                    }
                    if control.abort.load(Ordering::SeqCst) {
                        return Err(aborted());
                    }
                    if control.go_on.swap(false, Ordering::SeqCst) {
                        break;
                    }
                }
                state.waiting_until = None;
                self.save_upgrade(state);
                // The release the last step made main must have stayed
                // ready through the wait.
                let main = state.plan.steps[done - 1].to.clone();
                self.ensure_ready(service, &main).map_err(|e| {
                    format!(
                        "stopped after step {done}/{total}: {main} did not stay ready during the wait between steps: {e}"
                    )
                })
            }
        }
    }

    /// One step, with the service's traffic held around it when asked.
    async fn run_step(
        &self,
        service: &ServiceName,
        step: &PlanStep,
        pause_max_hold_ms: Option<u64>,
        timeout: Duration,
        actor: &str,
    ) -> Result<StepDone> {
        let pause = pause_max_hold_ms.filter(|_| step.changes_schema());
        if let Some(ms) = pause {
            let hold = super::PauseRequest {
                max_hold_ms: Some(ms),
            };
            self.pause(service, hold)?;
        }
        let result = if step.to < step.from {
            self.downgrade_step(service, step, timeout, actor, true)
                .await
        } else {
            self.upgrade_step(service, step, timeout, actor).await
        };
        if pause.is_some() {
            self.open_gate(service);
        }
        result
    }

    async fn upgrade_step(
        &self,
        service: &ServiceName,
        step: &PlanStep,
        timeout: Duration,
        actor: &str,
    ) -> Result<StepDone> {
        let release = self.registered_release(service, &step.to)?;
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
            self.record_schema_move(service, step, "migrate", &step.to, actor)
                .await?;
        }
        let result = self.switch_to(service, &release, step, actor).await;
        match result {
            Ok(revision) => Ok(StepDone {
                from: step.from.to_string(),
                to: step.to.to_string(),
                hooks: ran,
                revision,
            }),
            Err(error) if migrated && !hooks.migrate_down.is_empty() => {
                if let Err(down) = self
                    .run_hook(&release, "migrate_down", &hooks.migrate_down, timeout)
                    .await
                {
                    tracing::error!(service = %service, error = %down, "migrate_down failed after a failed step");
                    return Err(ControllerError::StepFailed(format!(
                        "{error}; then hooks.migrate_down failed too, so the schema stays at {}: {down}",
                        shown(&step.schema_after)
                    ))
                    .into());
                }
                self.record_schema(
                    service,
                    step.schema_before.clone(),
                    format!(
                        "schema back to {} (hooks.migrate_down of {}: the step failed)",
                        shown(&step.schema_before),
                        step.to
                    ),
                    actor,
                )
                .await?;
                Err(error)
            }
            Err(error) if migrated => Err(ControllerError::StepFailed(format!(
                "{error}; {} has no hooks.migrate_down, so the schema stays at {}, which {} runs on",
                step.to,
                shown(&step.schema_after),
                step.from
            ))
            .into()),
            Err(error) => Err(error),
        }
    }

    /// One step back `A → B` (A the newer, main): B becomes main while the
    /// schema is still A's (B runs on it, the plan checked), then A's
    /// `migrate_down` moves the schema back (a revision records it), then
    /// A is stopped when `stop_newer`. A failing `migrate_down` makes A
    /// main again.
    pub(super) async fn downgrade_step(
        &self,
        service: &ServiceName,
        step: &PlanStep,
        timeout: Duration,
        actor: &str,
        stop_newer: bool,
    ) -> Result<StepDone> {
        let newer = self.registered_release(service, &step.from)?;
        let older = self.registered_release(service, &step.to)?;
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
            revision = self
                .record_schema_move(service, step, "migrate_down", &step.from, actor)
                .await?
                .number;
        }
        if stop_newer {
            match self
                .kill(service, &step.from.to_string(), None, actor)
                .await
            {
                Ok(r) => revision = r.number,
                Err(error) => {
                    tracing::warn!(service = %service, %error, "the release stepped back from stays as standby");
                }
            }
        }
        Ok(StepDone {
            from: step.from.to_string(),
            to: step.to.to_string(),
            hooks: ran,
            revision,
        })
    }

    fn registered_release(
        &self,
        service: &ServiceName,
        version: &semver::Version,
    ) -> Result<Release> {
        self.store.release(service, version)?.ok_or_else(|| {
            ControllerError::MissingRelease {
                service: service.to_string(),
                version: version.to_string(),
            }
            .into()
        })
    }

    /// Records the schema a step's hook moved to, naming the hook.
    async fn record_schema_move(
        &self,
        service: &ServiceName,
        step: &PlanStep,
        hook: &str,
        of: &semver::Version,
        actor: &str,
    ) -> Result<crate::model::Revision> {
        let action = format!(
            "schema {} → {} (hooks.{hook} of {of})",
            shown(&step.schema_before),
            shown(&step.schema_after),
        );
        self.record_schema(service, step.schema_after.clone(), action, actor)
            .await
    }

    /// Commits the service's state at another schema (a hook moved it).
    pub(super) async fn record_schema(
        &self,
        service: &ServiceName,
        schema: Option<semver::Version>,
        action: String,
        actor: &str,
    ) -> Result<crate::model::Revision> {
        self.change(service, None, actor, |current| {
            Ok(Change::new(action, current.state.with_schema(schema)))
        })
        .await
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
                    spec: Some(release.spec.clone()),
                    hosts: Vec::new(),
                    standby: true,
                    promote: false,
                    base_revision: None,
                    shadow_methods: None,
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

fn shown(schema: &Option<semver::Version>) -> String {
    schema
        .as_ref()
        .map_or_else(|| "none".to_owned(), ToString::to_string)
}

fn hook_error(e: HookError) -> Error {
    ControllerError::Hook(e).into()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn alive(pid: u32) -> bool {
        std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|stat| {
            !stat
                .rsplit(')')
                .next()
                .unwrap_or("")
                .trim_start()
                .starts_with('Z')
        })
    }

    /// Waits (bounded) until the process is gone or a zombie: a killed
    /// child dies when the kernel delivers the signal, not at once.
    async fn gone(pid: u32) -> bool {
        for _ in 0..200 {
            if !alive(pid) {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        false
    }

    /// A driver in the middle of a hook: a child that would run a minute.
    fn hook_running() -> (impl std::future::Future<Output = ()> + Send + 'static, u32) {
        let mut child = tokio::process::Command::new("sleep")
            .arg("60")
            .kill_on_drop(true)
            .spawn()
            .expect("start sleep");
        let pid = child.id().expect("a pid");
        (
            async move {
                let _ = child.wait().await;
            },
            pid,
        )
    }

    #[tokio::test]
    async fn stopping_the_part_ends_every_upgrade_task_and_kills_its_hook() {
        let upgrades = Upgrades::default();
        let service: ServiceName = "hub".parse().expect("a name");
        let (driver, pid) = hook_running();
        let task = upgrades.spawn(&service, driver);
        upgrades
            .controls()
            .insert(service.clone(), Arc::new(UpgradeControl::default()));
        assert!(alive(pid), "the hook runs while the upgrade does");

        upgrades.stop_all();
        tokio::time::timeout(Duration::from_secs(10), task)
            .await
            .expect("the task ends once the part stops")
            .expect("the task ends without a panic");
        assert!(gone(pid).await, "the hook that ran was killed");
        assert!(
            upgrades.controls().is_empty(),
            "no upgrade is held any more"
        );

        // Upgrades started afterwards run again.
        let (driver, pid) = hook_running();
        let task = upgrades.spawn(&service, driver);
        assert!(alive(pid));
        assert!(!task.is_finished());
        drop(upgrades);
        tokio::time::timeout(Duration::from_secs(10), task)
            .await
            .expect("dropping the part ends its tasks")
            .expect("no panic");
        assert!(gone(pid).await, "the hook was killed with the part");
    }
}
