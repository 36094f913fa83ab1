//! Changes made by hand (the CLI, the dashboard) to a service whose
//! rollout runs: the rollout's own verbs — pause, promote a step or in
//! full, retry — and what other verbs do to it. A verb either ends the
//! rollout with an event that says what happened ("promoted by hand",
//! "aborted by hand") or is refused with the command to use instead; it
//! never leaves the rollout to end in a rollback that did not happen.

use std::future::Future;
use std::sync::Arc;

use tokio::sync::OwnedMutexGuard;

use super::describe;
use crate::controller::{Controller, ControllerError};
use crate::error::Result;
use crate::model::{RolloutState, RolloutStatus, ServiceName, now_millis, parse_version};

/// A change by hand, as a running rollout sees it.
#[derive(Debug, Clone, Copy)]
pub enum HandChange<'a> {
    /// `assign`, `promote`, `deploy --promote`: `version` becomes main.
    MakeMain {
        version: &'a str,
        /// The command, e.g. `promote`, for messages.
        verb: &'static str,
    },
    /// `abort`: every client back on main.
    EndCanary,
    /// `canary VERSION PCT`: the share the rollout sets itself.
    SetCanary,
    /// `kill VERSION`.
    Kill { version: &'a str },
    /// `kill --all`.
    KillAll,
    /// `rollback N`.
    Rollback,
}

/// The rollout's task, stopped between two moves while held.
type Hold = Option<OwnedMutexGuard<()>>;

/// Step `n` of `m`, counted from 1.
fn step_of(state: &RolloutState) -> String {
    format!(
        "step {} of {}",
        (state.step + 1).min(state.plan.steps.len()),
        state.plan.steps.len()
    )
}

impl Controller {
    /// The service's rollout if it is running or paused.
    fn active_rollout(&self, service: &ServiceName) -> Result<Option<RolloutState>> {
        Ok(self
            .rollout_state(service)?
            .filter(|s| s.status.is_active()))
    }

    /// Stops the rollout's task between two moves until the hold drops;
    /// then it goes on from the stored state (or ends, when the rollout
    /// ended meanwhile).
    async fn hold_driver(&self, service: &ServiceName) -> Hold {
        let (gate, interrupt) = {
            let drivers = self.drivers();
            let driver = drivers.get(service)?;
            (Arc::clone(&driver.gate), Arc::clone(&driver.interrupt))
        };
        interrupt.notify_one();
        Some(gate.lock_owned().await)
    }

    /// Ends the rollout (its task stops) with `status`, recording why. A
    /// write the store refuses is the answer, and the rollout's task is
    /// left as it was.
    fn end_by_hand(
        &self,
        service: &ServiceName,
        mut state: RolloutState,
        status: RolloutStatus,
        kind: &str,
        message: &str,
    ) -> Result<()> {
        state.status = status;
        self.save_rollout(&state)?;
        self.drivers().remove(service);
        self.record_event(
            service.as_str(),
            kind,
            message,
            serde_json::json!({ "version": state.plan.version.to_string(), "by_hand": true }),
        );
        Ok(())
    }

    /// Runs `act`, a change by hand, in agreement with a running rollout:
    /// making the candidate main ends the rollout as promoted by hand,
    /// ending the canary ends it as aborted by hand, and what would fight
    /// the rollout is refused with the command to use. With a rollout
    /// running, it all runs as the leader's work (fenced).
    pub async fn by_hand<T>(
        &self,
        service: &ServiceName,
        change: HandChange<'_>,
        act: impl Future<Output = Result<T>>,
    ) -> Result<T> {
        let Some(rollout) = self.active_rollout(service)? else {
            return act.await;
        };
        self.as_leader(self.by_hand_in_rollout(service, rollout, change, act))
            .await
    }

    async fn by_hand_in_rollout<T>(
        &self,
        service: &ServiceName,
        rollout: RolloutState,
        change: HandChange<'_>,
        act: impl Future<Output = Result<T>>,
    ) -> Result<T> {
        let candidate = rollout.plan.version.clone();
        let is_candidate = |v: &str| parse_version(v).is_ok_and(|v| v == candidate);
        let refuse = |what: String, instead: String| -> Result<T> {
            Err(ControllerError::RolloutInTheWay {
                service: service.to_string(),
                version: candidate.to_string(),
                what,
                instead,
            }
            .into())
        };
        match change {
            HandChange::MakeMain { version, verb } if is_candidate(version) => {
                self.promote_candidate_by_hand(service, verb, act).await
            }
            HandChange::MakeMain { version, verb } => refuse(
                format!("making {version} main (`{verb}`) would fight it"),
                format!(
                    "`switchyard rollout abort {service}` first (every client back on main), then `switchyard {verb} {service} {version}`; or `switchyard rollout promote {service} --full` to make {candidate} main now"
                ),
            ),
            HandChange::EndCanary => {
                let _hold = self.hold_driver(service).await;
                // `abort` ends the rollout as aborted by hand once the
                // canary is gone.
                act.await
            }
            HandChange::SetCanary => refuse(
                "which sets the canary's share itself".into(),
                format!(
                    "`switchyard rollout pause {service}` holds it at this step, `switchyard rollout promote {service}` goes on to the next, `switchyard rollout abort {service}` ends it"
                ),
            ),
            HandChange::Kill { version } if is_candidate(version) => refuse(
                format!("and {version} is its candidate"),
                format!(
                    "`switchyard rollout abort {service}` first (every client back on main), then `switchyard kill {service} {version}`"
                ),
            ),
            HandChange::Kill { .. } => act.await,
            HandChange::KillAll => refuse(
                "and killing every release would end it with nothing to answer".into(),
                format!(
                    "`switchyard rollout abort {service}` first, then `switchyard kill {service} --all`"
                ),
            ),
            HandChange::Rollback => refuse(
                "which would set the canary again after the rollback".into(),
                format!("`switchyard rollout abort {service}` first, then roll back"),
            ),
        }
    }

    /// `act` makes the candidate main: the rollout's task stands still
    /// meanwhile; when it worked the rollout ends as promoted by hand, when
    /// it failed the rollout goes on.
    async fn promote_candidate_by_hand<T>(
        &self,
        service: &ServiceName,
        verb: &str,
        act: impl Future<Output = Result<T>>,
    ) -> Result<T> {
        let _hold = self.hold_driver(service).await;
        // The task may have ended the rollout before it stood still.
        let Some(rollout) = self.active_rollout(service)? else {
            return act.await;
        };
        let done = act.await?;
        let version = rollout.plan.version.to_string();
        let at = step_of(&rollout);
        let reason = format!("{version} promoted by hand (`{verb}`) at {at}");
        self.end_by_hand(
            service,
            rollout,
            RolloutStatus::PromotedByHand {
                reason: reason.clone(),
            },
            "promoted",
            &format!("{reason}; it is main and the rollout ends"),
        )?;
        Ok(done)
    }

    /// Ends a running rollout as aborted by hand (its canary already gone).
    pub(in crate::controller) fn stop_rollout_by_hand(&self, service: &ServiceName) -> Result<()> {
        let Ok(Some(state)) = self.active_rollout(service) else {
            // Dropping the driver cancels its task.
            self.drivers().remove(service);
            return Ok(());
        };
        let message = format!(
            "rollout of {} aborted by hand at {}; every client is on main",
            state.plan.version,
            step_of(&state)
        );
        self.end_by_hand(service, state, RolloutStatus::Aborted, "aborted", &message)
    }

    /// Stops a rollout by hand: every client back on main.
    pub async fn abort_rollout(&self, service: &ServiceName, actor: &str) -> Result<RolloutState> {
        self.as_leader(self.abort_rollout_fenced(service, actor))
            .await
    }

    async fn abort_rollout_fenced(
        &self,
        service: &ServiceName,
        actor: &str,
    ) -> Result<RolloutState> {
        self.ensure_leading("rollouts")?;
        let _hold = self.hold_driver(service).await;
        let state = self
            .active_rollout(service)?
            .ok_or_else(|| ControllerError::NoRollout(service.to_string()))?;
        let has_canary = self
            .current(service)
            .is_some_and(|r| r.state.policy.canary.is_some());
        if has_canary {
            self.abort(service, None, actor).await?;
        } else {
            self.stop_rollout_by_hand(service)?;
        }
        Ok(RolloutState {
            status: RolloutStatus::Aborted,
            ..state
        })
    }

    /// Holds a running rollout at the step it is on until `resume`, which
    /// runs that step again (the stuck limit counts meanwhile).
    pub async fn pause_rollout(&self, service: &ServiceName) -> Result<RolloutState> {
        self.as_leader(self.pause_rollout_fenced(service)).await
    }

    async fn pause_rollout_fenced(&self, service: &ServiceName) -> Result<RolloutState> {
        self.ensure_leading("rollouts")?;
        let _hold = self.hold_driver(service).await;
        let mut state = self
            .active_rollout(service)?
            .ok_or_else(|| ControllerError::NoRollout(service.to_string()))?;
        if let RolloutStatus::Paused { reason, .. } = &state.status {
            return Err(ControllerError::RolloutPaused {
                service: service.to_string(),
                reason: reason.clone(),
            }
            .into());
        }
        let doing = describe(state.plan.steps.get(state.step), &state.plan.analysis);
        let message = format!(
            "rollout of {} paused by hand at {} ({doing}); `switchyard resume {service}` runs this step again",
            state.plan.version,
            step_of(&state)
        );
        state.status = RolloutStatus::paused(message.clone(), now_millis(), true);
        self.save_rollout(&state)?;
        self.record_event(
            service.as_str(),
            "paused",
            &message,
            serde_json::json!({ "step": state.step, "by_hand": true }),
        );
        Ok(state)
    }

    /// Argo's promote: skips the step the rollout is on (a pause or an
    /// analysis, paused or not) and goes on with the next.
    pub async fn promote_rollout_step(&self, service: &ServiceName) -> Result<RolloutState> {
        self.as_leader(self.promote_rollout_step_fenced(service))
            .await
    }

    async fn promote_rollout_step_fenced(&self, service: &ServiceName) -> Result<RolloutState> {
        self.ensure_leading("rollouts")?;
        let hold = self.hold_driver(service).await;
        let mut state = self
            .active_rollout(service)?
            .ok_or_else(|| ControllerError::NoRollout(service.to_string()))?;
        let skipped = describe(state.plan.steps.get(state.step), &state.plan.analysis);
        let at = step_of(&state);
        state.step = (state.step + 1).min(state.plan.steps.len());
        state.status = RolloutStatus::Running;
        state.failures = 0;
        state.step_started_at = now_millis();
        self.save_rollout(&state)?;
        let next = describe(state.plan.steps.get(state.step), &state.plan.analysis);
        self.record_event(
            service.as_str(),
            "skipped",
            &format!(
                "{at} ({skipped}) skipped by hand (`rollout promote`); next: {}",
                if next == "done" {
                    "the end, which makes the candidate main".to_owned()
                } else {
                    next
                }
            ),
            serde_json::json!({ "step": state.step, "by_hand": true }),
        );
        // A paused task waits for a resume.
        drop(hold);
        if let Some(driver) = self.drivers().get(service) {
            driver.resume.notify_one();
        }
        Ok(state)
    }

    /// Argo's full promotion: the candidate becomes main now, skipping
    /// every step left; the rollout ends as promoted by hand.
    pub async fn promote_rollout_full(
        &self,
        service: &ServiceName,
        actor: &str,
    ) -> Result<RolloutState> {
        self.as_leader(self.promote_rollout_full_fenced(service, actor))
            .await
    }

    async fn promote_rollout_full_fenced(
        &self,
        service: &ServiceName,
        actor: &str,
    ) -> Result<RolloutState> {
        self.ensure_leading("rollouts")?;
        let state = self
            .active_rollout(service)?
            .ok_or_else(|| ControllerError::NoRollout(service.to_string()))?;
        let version = state.plan.version.to_string();
        self.by_hand(
            service,
            HandChange::MakeMain {
                version: &version,
                verb: "rollout promote --full",
            },
            self.promote(service, &version, None, actor),
        )
        .await?;
        self.rollout_state(service)?
            .ok_or_else(|| ControllerError::NoRollout(service.to_string()).into())
    }

    /// Runs a failed or aborted rollout again from its first step, with
    /// the same plan.
    pub async fn retry_rollout(self: &Arc<Self>, service: &ServiceName) -> Result<RolloutState> {
        self.as_leader(self.retry_rollout_fenced(service)).await
    }

    async fn retry_rollout_fenced(self: &Arc<Self>, service: &ServiceName) -> Result<RolloutState> {
        self.ensure_leading("rollouts")?;
        let last = self
            .rollout_state(service)?
            .ok_or_else(|| ControllerError::NoRollout(service.to_string()))?;
        let was = match &last.status {
            RolloutStatus::Failed { reason } => format!("it had failed: {reason}"),
            RolloutStatus::Aborted => "it had been aborted".to_owned(),
            RolloutStatus::Running | RolloutStatus::Paused { .. } => {
                return Err(ControllerError::RolloutRunning {
                    service: service.to_string(),
                    version: last.plan.version.to_string(),
                }
                .into());
            }
            RolloutStatus::Succeeded | RolloutStatus::PromotedByHand { .. } => {
                return Err(ControllerError::NothingToRetry {
                    service: service.to_string(),
                    version: last.plan.version.to_string(),
                }
                .into());
            }
        };
        let note = format!("a retry of the last rollout from its first step ({was})");
        self.launch_rollout(service, last.plan, Some(&note)).await
    }
}
