//! Rollouts: a task per service walks the plan's steps — set the canary's
//! weight, pause, analyse — and promotes at the end or rolls back when
//! checks fail. Progress is stored after every move, so a restarted serve
//! picks the rollout up at the step it was on. The candidate's health is
//! watched the whole time: a crash loop or no healthy instance rolls back
//! at once, without waiting for the interval.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use super::{Controller, ControllerError};
use crate::error::Result;
use crate::fleet::{fleet_delta, fleet_minute};
use crate::metrics::{MetricsSnapshot, WindowSummary};
use crate::model::{
    AnalysisSpec, CheckResult, ModelError, RolloutPlan, RolloutState, RolloutStatus, ServiceName,
    Step, now_millis,
};
use crate::runtime::ReleasePhase;

/// How often the candidate's health is looked at during a step.
const WATCH_EVERY: Duration = Duration::from_millis(200);
/// How often a step looks at the candidate on the fleet's other nodes.
const WATCH_FLEET_EVERY: Duration = Duration::from_secs(1);
/// Who the rollout's changes are recorded as.
const ACTOR: &str = "rollout";

mod hand;
mod prometheus;

pub use hand::HandChange;

/// The task driving one service's rollout.
pub(super) struct Driver {
    cancel: CancellationToken,
    resume: Arc<Notify>,
    /// Held by the task while it drives; a change by hand takes it (after
    /// `interrupt`), so the task stands still until the change is done and
    /// then goes on from the stored state.
    gate: Arc<tokio::sync::Mutex<()>>,
    interrupt: Arc<Notify>,
}

impl Drop for Driver {
    fn drop(&mut self) {
        self.cancel.cancel();
    }
}

/// The rollouts this serve drives, one driver task per service. Leader
/// only; dropping it stops every driver (their progress is in the store).
#[derive(Default)]
pub(super) struct Rollouts {
    drivers: std::sync::Mutex<std::collections::HashMap<ServiceName, Driver>>,
}

impl Rollouts {
    fn drivers(&self) -> std::sync::MutexGuard<'_, std::collections::HashMap<ServiceName, Driver>> {
        self.drivers.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// A rollout as `switchyard rollout status` shows it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RolloutView {
    pub state: RolloutState,
    /// The step being carried out, described.
    pub current: String,
    /// Seconds until the step ends by itself (pauses and analyses).
    pub next_in_seconds: Option<u64>,
}

enum Verdict {
    Pass,
    Fail(String),
    Inconclusive(String),
}

fn describe(step: Option<&Step>, spec: &AnalysisSpec) -> String {
    match step {
        Some(Step::SetWeight { percent }) => format!("set weight {percent}%"),
        Some(Step::Pause { seconds: Some(s) }) => format!("pause {s}s"),
        Some(Step::Pause { seconds: None }) => "pause until resumed".to_owned(),
        Some(Step::Analysis) => format!("analysis over {}s", spec.interval_seconds),
        None => "done".to_owned(),
    }
}

impl Controller {
    pub(super) fn rollout_state(&self, service: &ServiceName) -> Result<Option<RolloutState>> {
        Ok(self
            .store
            .rollouts()?
            .into_iter()
            .find(|r| r.service == service.as_str()))
    }

    /// Saves the rollout's state for an operator's command (a start, a
    /// pause, a promotion): a write the store refuses (fenced, unreachable)
    /// is the command's answer, and the command changes nothing more.
    fn save_rollout(&self, state: &RolloutState) -> Result<()> {
        Ok(self.store.save_rollout(state)?)
    }

    /// Saves the progress of a rollout's task; a refused write is logged
    /// and the task goes on from what is stored, or ends: a write refused
    /// by the fence has stopped this node's rollouts (another node leads).
    fn save_progress(&self, state: &RolloutState) {
        if let Err(error) = self.store.save_rollout(state) {
            tracing::error!(%error, service = %state.service, "cannot save rollout progress");
        }
    }

    fn drivers(&self) -> std::sync::MutexGuard<'_, std::collections::HashMap<ServiceName, Driver>> {
        self.rollouts.part().drivers()
    }

    /// Starts a rollout of `plan` (the candidate must run and be healthy).
    pub async fn start_rollout(
        self: &Arc<Self>,
        service: &ServiceName,
        plan: RolloutPlan,
    ) -> Result<RolloutState> {
        self.as_leader(self.launch_rollout(service, plan, None))
            .await
    }

    /// Starts a rollout; `note` says why, when it is not a new one.
    async fn launch_rollout(
        self: &Arc<Self>,
        service: &ServiceName,
        plan: RolloutPlan,
        note: Option<&str>,
    ) -> Result<RolloutState> {
        self.ensure_leading("rollouts")?;
        plan.validate()?;
        let current = self.require(service)?;
        if current.state.protocol.is_tcp() {
            return Err(ModelError::InvalidPlan(format!(
                "{service} is a TCP service, and a rollout's analysis judges HTTP answers (error rates, latency) that a forwarded connection does not have. Move it by hand: `switchyard canary {service} {} --percent P` for a share of client addresses, then `switchyard assign {service} {}`",
                plan.version, plan.version
            ))
            .into());
        }
        if current.state.main() == Some(&plan.version) {
            return Err(
                ModelError::InvalidPlan(format!("{} is already main", plan.version)).into(),
            );
        }
        if !current.state.releases.contains_key(&plan.version) {
            return Err(ModelError::UnknownRelease {
                service: service.to_string(),
                version: plan.version.to_string(),
                known: "deploy it first".into(),
            }
            .into());
        }
        if let Some(canary) = &current.state.policy.canary {
            if canary.version != plan.version {
                return Err(ModelError::CanaryExists {
                    service: service.to_string(),
                    version: canary.version.to_string(),
                }
                .into());
            }
        }
        self.ensure_ready(service, &plan.version)?;
        if let Some(existing) = self.rollout_state(service)? {
            if existing.status.is_active() {
                return Err(ControllerError::RolloutRunning {
                    service: service.to_string(),
                    version: existing.plan.version.to_string(),
                }
                .into());
            }
        }
        let now = now_millis();
        let state = RolloutState {
            service: service.to_string(),
            plan,
            step: 0,
            step_started_at: now,
            failures: 0,
            status: RolloutStatus::Running,
            checks: Vec::new(),
            started_at: now,
        };
        self.save_rollout(&state)?;
        self.record_event(
            service.as_str(),
            "rollout-started",
            &format!(
                "rollout of {} started: {} steps{}",
                state.plan.version,
                state.plan.steps.len(),
                note.map(|n| format!("; {n}")).unwrap_or_default()
            ),
            serde_json::to_value(&state.plan).unwrap_or_default(),
        );
        self.spawn_driver(service);
        Ok(state)
    }

    fn spawn_driver(self: &Arc<Self>, service: &ServiceName) {
        let driver = Driver {
            cancel: CancellationToken::new(),
            resume: Arc::new(Notify::new()),
            gate: Arc::new(tokio::sync::Mutex::new(())),
            interrupt: Arc::new(Notify::new()),
        };
        let this = Arc::clone(self);
        let (cancel, resume, gate, interrupt, name) = (
            driver.cancel.clone(),
            Arc::clone(&driver.resume),
            Arc::clone(&driver.gate),
            Arc::clone(&driver.interrupt),
            service.clone(),
        );
        let fence = self.leadership().fence();
        tokio::spawn(crate::store::fence::scope(fence, async move {
            loop {
                let _turn = tokio::select! {
                    turn = Arc::clone(&gate).lock_owned() => turn,
                    () = cancel.cancelled() => return,
                };
                tokio::select! {
                    () = this.drive(&name, &resume) => return,
                    () = cancel.cancelled() => return,
                    // A change by hand: stop where it is, let the change
                    // through, then go on from what is stored.
                    () = interrupt.notified() => {}
                }
            }
        }));
        self.drivers().insert(service.clone(), driver);
    }

    /// Picks up the rollouts that were running when serve stopped (or
    /// when the node that led a fleet went away); ones driven here already
    /// go on as they are.
    pub fn resume_rollouts(self: &Arc<Self>) -> Result<()> {
        if !self.rollouts.is_on() {
            return Ok(());
        }
        for state in self.store.rollouts()? {
            let driven = state
                .service
                .parse::<ServiceName>()
                .is_ok_and(|s| self.drivers().contains_key(&s));
            if state.status.is_active() && !driven {
                if let Ok(service) = state.service.parse::<ServiceName>() {
                    tracing::info!(%service, step = state.step, "resuming rollout");
                    self.spawn_driver(&service);
                }
            }
        }
        Ok(())
    }

    /// Stops driving rollouts without changing them (another serve takes
    /// over and resumes them from the store).
    pub fn stop_rollout_drivers(&self) {
        self.drivers().clear();
    }

    /// Lets a paused rollout go on to its next step.
    pub fn resume(&self, service: &ServiceName) -> Result<RolloutState> {
        self.as_leader_sync(|| self.resume_fenced(service))
    }

    fn resume_fenced(&self, service: &ServiceName) -> Result<RolloutState> {
        self.ensure_leading("rollouts")?;
        let mut state = self
            .rollout_state(service)?
            .ok_or_else(|| ControllerError::NoRollout(service.to_string()))?;
        let RolloutStatus::Paused { by_hand, .. } = state.status else {
            return Err(ControllerError::NotPaused(service.to_string()).into());
        };
        state.status = RolloutStatus::Running;
        // A step paused by hand runs again; a pause step or an
        // inconclusive analysis is over.
        if !by_hand {
            state.step += 1;
            state.failures = 0;
        }
        state.step_started_at = now_millis();
        self.save_rollout(&state)?;
        let message = format!(
            "rollout resumed at step {} of {}: {}",
            (state.step + 1).min(state.plan.steps.len()),
            state.plan.steps.len(),
            describe(state.plan.steps.get(state.step), &state.plan.analysis)
        );
        self.record_event(
            service.as_str(),
            "resumed",
            &message,
            serde_json::Value::Null,
        );
        if let Some(driver) = self.drivers().get(service) {
            driver.resume.notify_one();
        }
        Ok(state)
    }

    pub fn rollout_view(&self, service: &ServiceName) -> Result<RolloutView> {
        let state = self
            .rollout_state(service)?
            .ok_or_else(|| ControllerError::NoRollout(service.to_string()))?;
        let step = state.plan.steps.get(state.step);
        let length = match step {
            Some(Step::Pause { seconds: Some(s) }) => Some(*s),
            Some(Step::Analysis) => Some(state.plan.analysis.interval_seconds),
            _ => None,
        };
        let next_in_seconds = length
            .filter(|_| state.status == RolloutStatus::Running)
            .map(|l| {
                let ends = state.step_started_at + l * 1000;
                ends.saturating_sub(now_millis()) / 1000
            });
        Ok(RolloutView {
            current: describe(step, &state.plan.analysis),
            next_in_seconds,
            state,
        })
    }

    /// Walks the plan from the stored step until it ends.
    async fn drive(self: &Arc<Self>, service: &ServiceName, resume: &Notify) {
        // Ends as soon as this node stops leading (a refused fenced write).
        while self.rollouts.is_on() {
            let mut state = match self.rollout_state(service) {
                Ok(Some(s)) if s.status.is_active() => s,
                _ => return,
            };
            if let RolloutStatus::Paused { .. } = state.status {
                if let Err(reason) = self.wait_while_paused(&mut state, resume).await {
                    self.roll_back(service, state, reason).await;
                    return;
                }
                continue;
            }
            let version = state.plan.version.to_string();
            let Some(step) = state.plan.steps.get(state.step).cloned() else {
                self.finish(service, state).await;
                return;
            };
            let outcome: std::result::Result<(), String> = match step {
                Step::SetWeight { percent } => self
                    .set_canary(
                        service,
                        &version,
                        percent,
                        self.rollout_sticky(service, &state),
                        None,
                        ACTOR,
                    )
                    .await
                    .map(|_| ())
                    .map_err(|e| format!("could not set the weight to {percent}%: {e}")),
                Step::Pause { seconds: Some(s) } => {
                    let ends = state.step_started_at + s * 1000;
                    self.watch(service, &version, ends).await
                }
                Step::Pause { seconds: None } => {
                    state.status = RolloutStatus::paused(
                        "waiting for `switchyard resume`".into(),
                        now_millis(),
                        false,
                    );
                    self.save_progress(&state);
                    self.record_event(
                        service.as_str(),
                        "paused",
                        "rollout paused until resumed",
                        serde_json::Value::Null,
                    );
                    continue;
                }
                Step::Analysis => match self.analyse(service, &mut state).await {
                    Err(reason) => Err(reason),
                    Ok(Verdict::Pass) => Ok(()),
                    Ok(Verdict::Inconclusive(why)) => {
                        state.status = RolloutStatus::paused(
                            format!("inconclusive: {why}; `switchyard resume` to go on"),
                            now_millis(),
                            false,
                        );
                        self.save_progress(&state);
                        self.record_event(
                            service.as_str(),
                            "paused",
                            &format!("analysis inconclusive: {why}"),
                            serde_json::Value::Null,
                        );
                        continue;
                    }
                    Ok(Verdict::Fail(why)) => {
                        state.failures += 1;
                        if state.failures >= state.plan.analysis.failure_limit {
                            Err(format!(
                                "{why} ({} failed analyses in a row)",
                                state.failures
                            ))
                        } else {
                            // Stay on this step for another interval.
                            state.step_started_at = now_millis();
                            self.save_progress(&state);
                            continue;
                        }
                    }
                },
            };
            match outcome {
                Ok(()) => {
                    let done = describe(Some(&step), &state.plan.analysis);
                    // A passed step ends a run of failed analyses.
                    state.failures = 0;
                    state.step += 1;
                    state.step_started_at = now_millis();
                    self.save_progress(&state);
                    self.record_event(
                        service.as_str(),
                        "step",
                        &format!("step {} done: {done}", state.step),
                        serde_json::json!({ "step": state.step, "version": version }),
                    );
                }
                // A step refused by the fence: this node stopped leading,
                // and the next leader goes on from the stored state.
                Err(_) if !self.rollouts.is_on() => return,
                Err(reason) => {
                    self.roll_back(service, state, reason).await;
                    return;
                }
            }
        }
    }

    /// Waits for `resume` while the rollout is paused; past the plan's
    /// stuck limit it answers why the rollout must roll back.
    async fn wait_while_paused(
        &self,
        state: &mut RolloutState,
        resume: &Notify,
    ) -> std::result::Result<(), String> {
        let RolloutStatus::Paused { reason, since, .. } = &mut state.status else {
            return Ok(());
        };
        // A pause stored before pauses had a start counts from now.
        let since = *since.get_or_insert_with(now_millis);
        let reason = reason.clone();
        self.save_progress(state);
        let limit = state.plan.stuck_limit_seconds;
        let deadline = since + limit * 1000;
        let left = Duration::from_millis(deadline.saturating_sub(now_millis()));
        tokio::select! {
            () = resume.notified() => Ok(()),
            () = tokio::time::sleep(left) => Err(format!(
                "paused longer than the stuck limit of {} at step {} of {} ({reason})",
                humantime::format_duration(Duration::from_secs(limit)),
                (state.step + 1).min(state.plan.steps.len()),
                state.plan.steps.len(),
            )),
        }
    }

    /// Waits until `until` (unix ms), watching the candidate's health.
    async fn watch(
        &self,
        service: &ServiceName,
        version: &str,
        until: u64,
    ) -> std::result::Result<(), String> {
        let mut fleet_looked_at = tokio::time::Instant::now();
        loop {
            match self.runtime.get(service.as_str(), version) {
                None => return Err(format!("{version} no longer runs")),
                Some(handle) => {
                    let status = handle.status();
                    match status.phase() {
                        ReleasePhase::CrashLoop => {
                            return Err(format!(
                                "{version} is in a crash loop (exits: {})",
                                status.exits_summary()
                            ));
                        }
                        ReleasePhase::Unhealthy | ReleasePhase::Failed => {
                            return Err(format!(
                                "{version} has no healthy instance ({})",
                                status.health_summary()
                            ));
                        }
                        _ => {}
                    }
                }
            }
            // The other nodes' reports live in etcd: look less often.
            if fleet_looked_at.elapsed() >= WATCH_FLEET_EVERY {
                fleet_looked_at = tokio::time::Instant::now();
                if let Some(failed) = self.failed_on_a_node(service, version) {
                    return Err(failed);
                }
            }
            let now = now_millis();
            if now >= until {
                return Ok(());
            }
            tokio::time::sleep(WATCH_EVERY.min(Duration::from_millis(until - now))).await;
        }
    }

    /// Why the candidate failed on another node of the fleet, if it did.
    fn failed_on_a_node(&self, service: &ServiceName, version: &str) -> Option<String> {
        if !self.reports().shared() {
            return None;
        }
        let parsed = semver::Version::parse(version).ok()?;
        match self.fleet_verdict(service, &parsed, 0) {
            Ok(crate::fleet::FleetVerdict::Failed { node, why, .. }) => {
                Some(format!("{version} failed on node {node}: {why}"))
            }
            _ => None,
        }
    }

    /// The stickiness the plan asks for, on top of the service's.
    fn rollout_sticky(
        &self,
        service: &ServiceName,
        state: &RolloutState,
    ) -> Option<crate::model::Stickiness> {
        let header = state.plan.sticky_header.clone()?;
        let mut sticky = self.current(service)?.state.policy.sticky;
        sticky.header = Some(header);
        Some(sticky)
    }

    /// A release's counts since each live node started it, by node (the
    /// leader's own as they are now, the others' as last reported).
    fn snapshots_of(
        &self,
        service: &ServiceName,
        version: Option<&str>,
    ) -> BTreeMap<String, MetricsSnapshot> {
        let Some(version) = version else {
            return BTreeMap::new();
        };
        match self.fleet_traffic(service, version) {
            Ok(traffic) => traffic.into_iter().map(|(n, t)| (n, t.total)).collect(),
            Err(error) => {
                tracing::warn!(%service, %version, %error, "cannot read the fleet's traffic; analysing this node's alone");
                self.runtime
                    .get(service.as_str(), version)
                    .map(|h| {
                        let node = self.reports().this_node().to_owned();
                        BTreeMap::from([(node, h.backend.metrics.snapshot())])
                    })
                    .unwrap_or_default()
            }
        }
    }

    /// The fleet's last minute of a release: its minutes on the live nodes
    /// added up.
    fn fleet_last_minute(&self, service: &ServiceName, version: &str) -> Option<WindowSummary> {
        let traffic = self.fleet_traffic(service, version).ok()?;
        if traffic.is_empty() {
            return None;
        }
        Some(fleet_minute(traffic.iter().map(|(_, t)| &t.minute)).summary())
    }

    /// One analysis interval: measure, then judge.
    async fn analyse(
        &self,
        service: &ServiceName,
        state: &mut RolloutState,
    ) -> std::result::Result<Verdict, String> {
        let version = state.plan.version.to_string();
        let main = self
            .current(service)
            .and_then(|r| r.state.main().map(|v| v.to_string()));
        // Each node's counts, before and after: the fleet's interval is
        // the sum of each node's own difference.
        let candidate_before = self.snapshots_of(service, Some(&version));
        let main_before = self.snapshots_of(service, main.as_deref());
        state.step_started_at = now_millis();
        self.save_progress(state);
        let spec = state.plan.analysis.clone();
        self.watch(
            service,
            &version,
            state.step_started_at + spec.interval_seconds * 1000,
        )
        .await?;
        let candidate = fleet_delta(
            &candidate_before,
            &self.snapshots_of(service, Some(&version)),
        );
        let main_delta = fleet_delta(&main_before, &self.snapshots_of(service, main.as_deref()));
        // With every client on the candidate (a 100% step) main serves
        // nothing this interval but the stragglers routed before the step:
        // compare with its last minute instead.
        let all_on_candidate = self
            .current(service)
            .and_then(|r| r.state.policy.canary.as_ref().map(|c| c.percent))
            == Some(100);
        let main_p99 = if main_delta.requests() > 0 && !all_on_candidate {
            p99_ms(&main_delta).map(|ms| (ms, "main"))
        } else {
            main.and_then(|v| self.fleet_last_minute(service, &v))
                .and_then(|minute| minute.p99_ms)
                .map(|ms| (ms, "main's last minute"))
        };
        let match_rate = self
            .shadows
            .stats(service.as_str(), &version)
            .lock()
            .map(|s| s.report(service.as_str(), &version).match_rate)
            .unwrap_or(None);
        let mut checks = analysis_checks(&spec, &candidate, main_p99, match_rate);
        for query in &spec.prometheus {
            checks.push(prometheus::judge(query).await);
        }
        if let Some(url) = &spec.webhook {
            checks
                .push(webhook_check(url, service, &version, state.step, &candidate, &checks).await);
        }
        let verdict = if let Some(failed) = checks.iter().find(|c| c.verdict == "fail") {
            Verdict::Fail(format!(
                "{}: {} (threshold {})",
                failed.name, failed.measured, failed.threshold
            ))
        } else if checks.iter().any(|c| c.verdict == "inconclusive") {
            Verdict::Inconclusive(checks_line(&checks))
        } else {
            Verdict::Pass
        };
        let summary = match &verdict {
            Verdict::Pass => format!("passed: {}", checks_line(&checks)),
            Verdict::Fail(why) => format!("failed: {why}"),
            Verdict::Inconclusive(why) => format!("inconclusive: {why}"),
        };
        self.record_event(
            service.as_str(),
            "analysis",
            &format!("analysis of {version} {summary}"),
            serde_json::to_value(&checks).unwrap_or_default(),
        );
        state.checks = checks;
        self.save_progress(state);
        Ok(verdict)
    }

    /// Every step passed: the candidate becomes main.
    async fn finish(&self, service: &ServiceName, mut state: RolloutState) {
        let version = state.plan.version.to_string();
        // Main already (a promotion stopped by a change by hand after it
        // committed): nothing is left but to say so.
        let is_main = self
            .current(service)
            .is_some_and(|r| r.state.main() == Some(&state.plan.version));
        let promoted = if is_main {
            Ok(())
        } else {
            self.promote(service, &version, None, ACTOR)
                .await
                .map(|_| ())
        };
        match promoted {
            Ok(_) => {
                state.status = RolloutStatus::Succeeded;
                self.save_progress(&state);
                self.record_event(
                    service.as_str(),
                    "promoted",
                    &format!("{version} is main"),
                    serde_json::Value::Null,
                );
            }
            Err(error) => {
                self.roll_back(service, state, format!("could not promote: {error}"))
                    .await
            }
        }
    }

    /// All traffic back to main at once; the candidate is marked failed.
    async fn roll_back(&self, service: &ServiceName, mut state: RolloutState, reason: String) {
        let version = state.plan.version.to_string();
        let has_canary = self.current(service).is_some_and(|r| {
            r.state
                .policy
                .canary
                .as_ref()
                .is_some_and(|c| c.version == state.plan.version)
        });
        if has_canary {
            if let Err(error) = self
                .abort_because(service, &format!("rollback of {version}: {reason}"))
                .await
            {
                tracing::error!(%service, %error, "rollback could not end the canary");
            }
        }
        state.status = RolloutStatus::Failed {
            reason: reason.clone(),
        };
        self.save_progress(&state);
        self.record_event(
            service.as_str(),
            "rolled-back",
            &format!("{version} rolled back: {reason}"),
            serde_json::json!({ "version": version, "reason": reason }),
        );
    }
}

fn pct(part: u64, whole: u64) -> f64 {
    if whole == 0 {
        0.0
    } else {
        part as f64 * 100.0 / whole as f64
    }
}

fn check(name: &str, pass: Option<bool>, measured: String, threshold: String) -> CheckResult {
    CheckResult {
        name: name.to_owned(),
        verdict: match pass {
            Some(true) => "pass",
            Some(false) => "fail",
            None => "inconclusive",
        }
        .to_owned(),
        measured,
        threshold,
    }
}

fn p99_ms(snapshot: &MetricsSnapshot) -> Option<f64> {
    snapshot
        .latency
        .quantile(0.99)
        .map(|d| d.as_secs_f64() * 1000.0)
}

/// Whether `errors` alone exceed `max` percent of the `min` requests an
/// interval needs: then no outcome of the requests still missing could
/// bring the rate at or under `max`, so the step fails without them.
fn fails_whatever_the_rest(errors: u64, max: f64, min: u64) -> bool {
    errors as f64 * 100.0 > max * min as f64
}

/// The error-rate check; below the minimum request count it fails early
/// by [`fails_whatever_the_rest`], else it cannot judge.
fn error_rate_check(spec: &AnalysisSpec, candidate: &MetricsSnapshot, max: f64) -> CheckResult {
    let (requests, errors) = (candidate.requests(), candidate.errors());
    let rate = pct(errors, requests);
    let measured = format!("{rate:.2}% ({errors} of {requests} requests)");
    let threshold = format!("at most {max}%");
    if requests >= spec.min_requests {
        return check("error rate", Some(rate <= max), measured, threshold);
    }
    if fails_whatever_the_rest(errors, max, spec.min_requests) {
        let missing = spec.min_requests - requests;
        return check(
            "error rate",
            Some(false),
            measured,
            format!(
                "{threshold}; failed before the {} requests: {errors} errors already exceed {max}% of {} requests, so no outcome of the {missing} missing ones could pass",
                spec.min_requests, spec.min_requests
            ),
        );
    }
    check("error rate", None, measured, threshold)
}

/// The metric checks of one interval. `main_p99` is main's p99 (ms) to
/// compare with, and what it was measured over. Below the minimum
/// request count every value is still measured and shown, but only an
/// error rate that fails whatever the missing requests do is judged.
fn analysis_checks(
    spec: &AnalysisSpec,
    candidate: &MetricsSnapshot,
    main_p99: Option<(f64, &str)>,
    match_rate: Option<f64>,
) -> Vec<CheckResult> {
    let requests = candidate.requests();
    let enough = requests >= spec.min_requests;
    // Too few requests to judge: measured, not judged.
    let judged = |pass: Option<bool>| pass.filter(|_| enough);
    let mut checks = vec![check(
        "requests",
        enough.then_some(true),
        requests.to_string(),
        format!("at least {}", spec.min_requests),
    )];
    if let Some(max) = spec.max_error_rate {
        checks.push(error_rate_check(spec, candidate, max));
    }
    if let Some(limit) = &spec.max_latency {
        let measured = candidate
            .latency
            .quantile(limit.quantile)
            .map(|d| d.as_secs_f64() * 1000.0);
        checks.push(check(
            &format!("latency p{}", limit.quantile * 100.0),
            judged(measured.map(|m| m <= limit.ms)),
            measured.map_or("-".into(), |m| format!("{m:.1}ms")),
            format!("at most {}ms", limit.ms),
        ));
    }
    if let Some(k) = spec.max_relative_p99 {
        let c = p99_ms(candidate);
        let pass = match (c, main_p99) {
            (Some(c), Some((m, _))) => Some(c <= k * m),
            _ => None,
        };
        checks.push(check(
            "p99 relative to main",
            judged(pass),
            format!(
                "{} vs {} {}",
                c.map_or("-".into(), |c| format!("{c:.1}ms")),
                main_p99.map_or("main", |(_, over)| over),
                main_p99.map_or("-".into(), |(m, _)| format!("{m:.1}ms"))
            ),
            format!("at most {k}× main"),
        ));
    }
    if let Some(min) = spec.min_match_rate {
        let rate = match_rate.map(|r| r * 100.0);
        checks.push(check(
            "shadow match rate",
            judged(rate.map(|r| r >= min)),
            rate.map_or("no comparisons".into(), |r| format!("{r:.1}%")),
            format!("at least {min}%"),
        ));
    }
    checks
}

/// Every check in one line: `requests 17 (at least 20: inconclusive); …`.
fn checks_line(checks: &[CheckResult]) -> String {
    checks
        .iter()
        .map(|c| format!("{} {} ({}: {})", c.name, c.measured, c.threshold, c.verdict))
        .collect::<Vec<_>>()
        .join("; ")
}

/// POSTs the analysis context; a 2xx answer passes.
async fn webhook_check(
    url: &str,
    service: &ServiceName,
    version: &str,
    step: usize,
    candidate: &MetricsSnapshot,
    checks: &[CheckResult],
) -> CheckResult {
    let context = serde_json::json!({
        "service": service.as_str(),
        "version": version,
        "step": step,
        "requests": candidate.requests(),
        "errors": candidate.errors(),
        "checks": checks,
    });
    let client = crate::tls::http_client()
        .no_proxy()
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap_or_default();
    let (pass, measured) = match client.post(url).json(&context).send().await {
        Ok(r) => (
            r.status().is_success(),
            format!("answered {}", r.status().as_u16()),
        ),
        Err(e) => (false, format!("failed: {e}")),
    };
    check("webhook", Some(pass), measured, format!("2xx from {url}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::ReleaseMetrics;
    use crate::model::LatencyLimit;

    fn traffic(requests: u32, errors: u32, ms: u64) -> MetricsSnapshot {
        let m = ReleaseMetrics::default();
        for i in 0..requests {
            let status = if i < errors { 500 } else { 200 };
            m.record(status, false, Duration::from_millis(ms));
        }
        m.snapshot()
    }

    fn main_p99(s: &MetricsSnapshot) -> Option<(f64, &'static str)> {
        p99_ms(s).map(|ms| (ms, "main"))
    }

    fn verdicts(checks: &[CheckResult]) -> Vec<(&str, &str)> {
        checks
            .iter()
            .map(|c| (c.name.as_str(), c.verdict.as_str()))
            .collect()
    }

    #[test]
    fn too_few_requests_are_inconclusive_with_every_value_measured() {
        let spec = AnalysisSpec {
            max_latency: Some(LatencyLimit {
                quantile: 0.99,
                ms: 50.0,
            }),
            ..AnalysisSpec::default()
        };
        let checks = analysis_checks(&spec, &traffic(5, 0, 1), main_p99(&traffic(5, 0, 1)), None);
        assert_eq!(
            verdicts(&checks),
            vec![
                ("requests", "inconclusive"),
                ("error rate", "inconclusive"),
                ("latency p99", "inconclusive")
            ]
        );
        assert_eq!(checks[1].measured, "0.00% (0 of 5 requests)");
    }

    #[test]
    fn errors_that_no_missing_request_could_outweigh_fail_below_the_minimum() {
        // 1% of the 20-request minimum is 0.2 errors: one error is too many.
        let spec = AnalysisSpec::default();
        let checks = analysis_checks(&spec, &traffic(17, 1, 1), None, None);
        assert_eq!(
            verdicts(&checks),
            vec![("requests", "inconclusive"), ("error rate", "fail")]
        );
        assert!(
            checks[1]
                .threshold
                .contains("no outcome of the 3 missing ones")
        );
        // 10% of 20 is 2 errors: two are not more, a third is.
        let spec = AnalysisSpec {
            max_error_rate: Some(10.0),
            ..AnalysisSpec::default()
        };
        let two = analysis_checks(&spec, &traffic(10, 2, 1), None, None);
        assert_eq!(two[1].verdict, "inconclusive");
        let three = analysis_checks(&spec, &traffic(10, 3, 1), None, None);
        assert_eq!(three[1].verdict, "fail");
    }

    #[test]
    fn only_the_releases_own_failures_count_as_errors() {
        use crate::metrics::ClientFault;
        let spec = AnalysisSpec {
            max_error_rate: Some(1.0),
            ..AnalysisSpec::default()
        };
        let m = ReleaseMetrics::default();
        for _ in 0..100 {
            m.record(200, false, Duration::from_millis(1));
        }
        // Many more bad, slow and abandoned uploads than answers.
        for fault in ClientFault::ALL.iter().cycle().take(3000) {
            m.record_client_fault(*fault);
        }
        let checks = analysis_checks(&spec, &m.snapshot(), None, None);
        assert!(checks.iter().all(|c| c.verdict == "pass"), "{checks:?}");
        // Answers the upstream broke off are the release's.
        for _ in 0..5 {
            m.record_broken_response();
        }
        let checks = analysis_checks(&spec, &m.snapshot(), None, None);
        assert_eq!(
            verdicts(&checks),
            vec![("requests", "pass"), ("error rate", "fail")]
        );
    }

    #[test]
    fn error_rate_latency_and_relative_p99_are_judged() {
        let spec = AnalysisSpec {
            max_error_rate: Some(5.0),
            max_latency: Some(LatencyLimit {
                quantile: 0.99,
                ms: 50.0,
            }),
            max_relative_p99: Some(2.0),
            min_match_rate: Some(90.0),
            ..AnalysisSpec::default()
        };
        let good = analysis_checks(
            &spec,
            &traffic(100, 2, 10),
            main_p99(&traffic(100, 0, 10)),
            Some(0.95),
        );
        assert!(good.iter().all(|c| c.verdict == "pass"), "{good:?}");
        let bad = analysis_checks(
            &spec,
            &traffic(100, 20, 90),
            main_p99(&traffic(100, 0, 10)),
            Some(0.5),
        );
        assert_eq!(
            verdicts(&bad),
            vec![
                ("requests", "pass"),
                ("error rate", "fail"),
                ("latency p99", "fail"),
                ("p99 relative to main", "fail"),
                ("shadow match rate", "fail"),
            ]
        );
    }
}
