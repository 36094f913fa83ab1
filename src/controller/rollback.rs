use std::time::Duration;

use semver::Version;

use super::change::Change;
use super::{Controller, ControllerError};
use crate::error::{Error, Result};
use crate::model::{Revision, ServiceName, ServiceState, now_millis, step_label};

impl Controller {
    /// Makes a new revision equal to revision `to` (default: the one before
    /// the current). Releases it needs are started again from their stored
    /// specs and must be ready before traffic switches; releases it does
    /// not have are drained and stopped afterwards. When revision `to` ran
    /// on an older schema, the way back goes step by step through the
    /// registered releases first, running `migrate_down` where the schema
    /// moves (each step a revision); a step that cannot be reversed is
    /// refused beforehand with nothing changed. The schema stays what the
    /// hooks made it: a rollback never moves it up.
    pub async fn rollback(
        &self,
        service: &ServiceName,
        to: Option<u64>,
        base_revision: Option<u64>,
        actor: &str,
    ) -> Result<Revision> {
        let based_on = self.require(service)?;
        Self::check_base(service, based_on.number, base_revision)?;
        let number = to.unwrap_or(based_on.number.saturating_sub(1));
        if number == based_on.number {
            return Err(ControllerError::NothingToRollBack {
                service: service.to_string(),
                number,
            }
            .into());
        }
        let target = self
            .store
            .revision(service, number)?
            .filter(|_| number > 0)
            .ok_or(ControllerError::UnknownRevision {
                service: service.to_string(),
                number,
                latest: based_on.number,
            })?;

        self.step_back_schema(service, &based_on, &target, actor)
            .await?;
        // The steps back made revisions of their own.
        let based_on = self.require(service)?;

        let started = self.start_needed(service, &target.state).await?;

        let mut previous = None;
        let committed = self
            .change(service, Some(based_on.number), actor, |current| {
                let state = with_role_times(&current.state, &target.state)
                    .with_schema(current.state.schema.clone());
                if let (Some(main), Some(_)) = (state.main(), &state.schema) {
                    self.check_runs_on(service, main, state.schema.as_ref())?;
                }
                previous = Some(current.clone());
                Ok(Change::new(format!("rollback to {number}"), state))
            })
            .await
            .map(|revision| (revision, previous));
        match committed {
            Ok((revision, previous)) => {
                let gone: Vec<Version> = previous
                    .iter()
                    .flat_map(|p| p.state.releases.keys())
                    .filter(|v| !revision.state.releases.contains_key(*v))
                    .cloned()
                    .collect();
                self.stop_drained(service, &gone).await;
                self.await_routed_everywhere(&revision).await?;
                Ok(revision)
            }
            Err(error) => {
                for version in started {
                    self.runtime
                        .stop(service.as_str(), &version.to_string(), false)
                        .await;
                }
                Err(error)
            }
        }
    }

    /// Moves the schema back to the one revision `target` ran on, when it
    /// is older than the current one (see [`Controller::rollback`]).
    async fn step_back_schema(
        &self,
        service: &ServiceName,
        current: &Revision,
        target: &Revision,
        actor: &str,
    ) -> Result<()> {
        let number = target.number;
        let refuse = |reason: String| cannot_roll_back(service, number, reason);
        let (Some(now), Some(then)) = (&current.state.schema, &target.state.schema) else {
            return Ok(());
        };
        if now == then {
            return Ok(());
        }
        let (Some(current_main), Some(target_main)) = (current.state.main(), target.state.main())
        else {
            return Err(refuse(format!(
                "it ran on schema {then} and the database is at {now}, but one of the two has no main release to run the migrations with"
            )));
        };
        if then > now {
            return Err(refuse(format!(
                "it ran on schema {then}, newer than the database's {now}; a rollback only migrates down: go forward with `switchyard upgrade {service} --to {target_main}`"
            )));
        }
        let registered = self.store.releases(service)?;
        if target_main == current_main {
            return self
                .undo_schema_move(service, current_main, now, then, &registered, number, actor)
                .await;
        }
        if target_main > current_main {
            return Err(refuse(format!(
                "its main {target_main} is newer than {current_main} but ran on an older schema ({then}, the database is at {now}); go there with `switchyard upgrade {service} --to {target_main}`"
            )));
        }
        let way_back = crate::model::plan(
            service.as_str(),
            &registered,
            current_main,
            Some(now),
            target_main,
        )?;
        if let Some(problem) = way_back.first_problem() {
            return Err(refuse(format!("going back, {problem}")));
        }
        let ends_at = way_back.steps.last().and_then(|s| s.schema_after.as_ref());
        if ends_at != Some(then) {
            return Err(refuse(format!(
                "going back through the registered releases ends at schema {}, but it ran on {then}",
                ends_at.map_or_else(|| "none".to_owned(), ToString::to_string)
            )));
        }
        let total = way_back.steps.len();
        for (i, step) in way_back.steps.iter().enumerate() {
            let label = step_label(i, total, &step.from, &step.to);
            let timeout = super::upgrade::DEFAULT_HOOK_TIMEOUT;
            if let Err(error) = self
                .downgrade_step(service, step, timeout, actor, false)
                .await
            {
                let main = self
                    .current(service)
                    .and_then(|r| r.state.main().map(ToString::to_string))
                    .unwrap_or_default();
                return Err(ControllerError::StepFailed(format!(
                    "the rollback of {service} to revision {number} stopped at {label} back: {error}. {service} stays where the steps before left it (main {main})"
                ))
                .into());
            }
        }
        Ok(())
    }

    /// The schema moved from `then` to `now` while `main` stayed main (a
    /// step that failed after its migration): the `migrate_down` of the
    /// release that migrates to `now` moves it back.
    #[allow(clippy::too_many_arguments)]
    async fn undo_schema_move(
        &self,
        service: &ServiceName,
        main: &Version,
        now: &Version,
        then: &Version,
        registered: &[crate::model::Release],
        number: u64,
        actor: &str,
    ) -> Result<()> {
        let refuse = |reason: String| cannot_roll_back(service, number, reason);
        let Some(mover) = registered
            .iter()
            .filter(|r| r.spec.versioning.schema_version.as_ref() == Some(now))
            .min_by(|a, b| a.version.cmp(&b.version))
        else {
            return Err(refuse(format!(
                "no registered release migrates to schema {now}, so nothing can migrate it back to {then}"
            )));
        };
        let down = &mover.spec.versioning.hooks.migrate_down;
        if down.is_empty() {
            return Err(refuse(format!(
                "the schema moved from {then} to {now} by {}'s migrate hook, and {} has no hooks.migrate_down: this change cannot be reversed",
                mover.version, mover.version
            )));
        }
        let schemas = crate::model::declared_schemas(registered);
        let index = |s: &Version| schemas.iter().position(|x| *x == s);
        if !matches!((index(then), index(now)), (Some(i), Some(j)) if i + 1 == j) {
            return Err(refuse(format!(
                "the schema would go back from {now} to {then} in one migration, past the schemas between them"
            )));
        }
        if let Some(release) = registered.iter().find(|r| &r.version == main) {
            super::assign::ensure_runs_on(service, main, &release.spec.versioning, then)
                .map_err(|e| refuse(e.to_string()))?;
        }
        let timeout = super::upgrade::DEFAULT_HOOK_TIMEOUT;
        self.run_hook(mover, "migrate_down", down, timeout)
            .await
            .map_err(|e| Error::from(ControllerError::Hook(e)))?;
        self.record_schema(
            service,
            Some(then.clone()),
            format!(
                "schema {now} → {then} (hooks.migrate_down of {}; rollback to {number})",
                mover.version
            ),
            actor,
        )
        .await?;
        Ok(())
    }

    /// Starts the releases of `state` that do not run, and waits until all
    /// of its releases are ready. Returns the versions it started; on
    /// failure it stops them again.
    async fn start_needed(
        &self,
        service: &ServiceName,
        state: &ServiceState,
    ) -> Result<Vec<Version>> {
        let mut started = Vec::new();
        let mut handles = Vec::new();
        for version in state.releases.keys() {
            let name = version.to_string();
            let handle = match self.runtime.get(service.as_str(), &name) {
                Some(h) => h,
                None => {
                    let release = self.store.release(service, version)?.ok_or_else(|| {
                        ControllerError::MissingRelease {
                            service: service.to_string(),
                            version: name.clone(),
                        }
                    })?;
                    started.push(version.clone());
                    self.runtime.start(&release, Vec::new())
                }
            };
            handles.push(handle);
        }
        let waits = handles
            .iter()
            .map(|h| h.wait_ready(Duration::from_millis(h.release.spec.ready_timeout_ms)));
        let results = futures_util::future::join_all(waits).await;
        if let Some(Err(error)) = results.into_iter().find(|r| r.is_err()) {
            for version in &started {
                self.runtime
                    .stop(service.as_str(), &version.to_string(), false)
                    .await;
            }
            return Err(error.into());
        }
        Ok(started)
    }
}

/// The target state, with `since` kept for releases whose role stays the
/// same and set to now for the others.
fn with_role_times(current: &ServiceState, target: &ServiceState) -> ServiceState {
    let now = now_millis();
    let mut state = target.clone();
    for (version, entry) in state.releases.iter_mut() {
        match current.releases.get(version) {
            Some(old) if old.role == entry.role => entry.since = old.since,
            _ => entry.since = now,
        }
    }
    state
}

fn cannot_roll_back(service: &ServiceName, number: u64, reason: String) -> Error {
    ControllerError::CannotRollBack {
        service: service.to_string(),
        number,
        reason,
    }
    .into()
}
