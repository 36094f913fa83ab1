//! The one way a service changes. Every verb that makes a revision (deploy,
//! assign, kill, rollback, policy, shadow, settings, pins, schema moves)
//! goes through [`Controller::change`]: under the service's lock, the
//! caller's base revision is checked against the current one, the verb
//! makes and validates the new state, the revision is committed, and the
//! routing table is recompiled and published. Work that takes time
//! (starting instances, waiting for readiness, draining) happens before or
//! after, outside the lock.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, MutexGuard};

use super::Controller;
use crate::error::Result;
use crate::model::{ModelError, Release, Revision, ServiceName, ServiceState};

/// The current revision of every service, as committed, and the lock per
/// service that [`Controller::change`] holds.
#[derive(Default)]
pub(super) struct Revisions {
    current: Mutex<BTreeMap<ServiceName, Revision>>,
    locks: Mutex<HashMap<ServiceName, Arc<tokio::sync::Mutex<()>>>>,
}

impl Revisions {
    pub(super) fn map(&self) -> MutexGuard<'_, BTreeMap<ServiceName, Revision>> {
        self.current.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Serializes changes of one service.
    pub(super) async fn lock(&self, service: &ServiceName) -> tokio::sync::OwnedMutexGuard<()> {
        let lock = {
            let mut locks = self.locks.lock().unwrap_or_else(|p| p.into_inner());
            Arc::clone(locks.entry(service.clone()).or_default())
        };
        lock.lock_owned().await
    }
}

/// What a verb makes of the current state: the new state, the action the
/// history names it by, and the releases it registers.
pub(super) struct Change {
    pub state: ServiceState,
    pub action: String,
    pub releases: Vec<Release>,
}

impl Change {
    pub(super) fn new(action: impl Into<String>, state: ServiceState) -> Self {
        Self {
            state,
            action: action.into(),
            releases: Vec::new(),
        }
    }

    /// The change also registers `releases` (in the same commit).
    pub(super) fn registering(mut self, releases: Vec<Release>) -> Self {
        self.releases = releases;
        self
    }
}

impl Controller {
    /// Changes a deployed service: `make` gets its current revision and
    /// returns the change, or why it is refused (nothing is written then).
    /// A `base` revision that is not the current one is refused as stale.
    pub(super) async fn change(
        &self,
        service: &ServiceName,
        base: Option<u64>,
        actor: &str,
        make: impl FnOnce(&Revision) -> Result<Change>,
    ) -> Result<Revision> {
        self.transact(service, base, actor, true, |current| match current {
            Some(current) => make(current),
            None => Err(ModelError::UnknownService(service.to_string()).into()),
        })
        .await
    }

    /// Like [`Controller::change`], for a service that may not exist yet
    /// (a first deploy): `make` gets `None` then, and the base is 0.
    pub(super) async fn change_or_create(
        &self,
        service: &ServiceName,
        base: Option<u64>,
        actor: &str,
        make: impl FnOnce(Option<&Revision>) -> Result<Change>,
    ) -> Result<Revision> {
        self.transact(service, base, actor, false, make).await
    }

    async fn transact(
        &self,
        service: &ServiceName,
        base: Option<u64>,
        actor: &str,
        must_exist: bool,
        make: impl FnOnce(Option<&Revision>) -> Result<Change>,
    ) -> Result<Revision> {
        let _lock = self.revisions.lock(service).await;
        let current = self.current(service);
        if must_exist && current.is_none() {
            // An unknown service is told as such, before any stale base.
            return Err(ModelError::UnknownService(service.to_string()).into());
        }
        Self::check_base(service, current.as_ref().map_or(0, |r| r.number), base)?;
        let change = make(current.as_ref())?;
        self.check_hosts(service, &change.state)?;
        self.commit(
            service,
            current.as_ref(),
            change.state,
            change.action,
            actor,
            change.releases,
        )
    }
}
