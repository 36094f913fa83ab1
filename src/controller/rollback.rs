use std::time::Duration;

use semver::Version;

use super::{Controller, ControllerError};
use crate::error::Result;
use crate::model::{Revision, ServiceName, ServiceState, now_millis};

impl Controller {
    /// Makes a new revision equal to revision `to` (default: the one before
    /// the current). Releases it needs are started again from their stored
    /// specs and must be ready before traffic switches; releases it does
    /// not have are drained and stopped afterwards.
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

        let started = self.start_needed(service, &target.state).await?;

        let committed = {
            let _lock = self.lock(service).await;
            let current = self.require(service)?;
            let state = with_role_times(&current.state, &target.state);
            Self::check_base(service, current.number, Some(based_on.number))
                .and_then(|()| self.check_hosts(service, &state))
                .and_then(|()| {
                    self.commit(
                        service,
                        Some(&current),
                        state,
                        format!("rollback to {number}"),
                        actor,
                        Vec::new(),
                    )
                })
                .map(|revision| (revision, current))
        };
        match committed {
            Ok((revision, previous)) => {
                let gone: Vec<Version> = previous
                    .state
                    .releases
                    .keys()
                    .filter(|v| !revision.state.releases.contains_key(*v))
                    .cloned()
                    .collect();
                self.stop_drained(service, &gone).await;
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
