//! A node of a fleet follows the changes other nodes commit: when the
//! store's head of a service is newer than the revision this node has, it
//! starts its own instances of the releases the new revision names (the
//! same way a restarted serve does, [`Controller::run_releases`]), waits
//! until they are ready here, takes the revision and recompiles its
//! routing table, then drains and stops the releases that left.

use std::sync::Arc;
use std::time::Duration;

use super::Controller;
use crate::error::Result;
use crate::model::{Revision, ServiceName};
use crate::runtime::ReleaseHandle;
use crate::store::InstanceRecord;

/// Serializes the following of one service (changes of different
/// services are followed side by side).
#[derive(Default)]
pub(super) struct Following {
    locks: std::sync::Mutex<std::collections::HashMap<ServiceName, Arc<tokio::sync::Mutex<()>>>>,
}

impl Following {
    async fn lock(&self, service: &ServiceName) -> tokio::sync::OwnedMutexGuard<()> {
        let lock = {
            let mut locks = self.locks.lock().unwrap_or_else(|p| p.into_inner());
            Arc::clone(locks.entry(service.clone()).or_default())
        };
        lock.lock_owned().await
    }
}

impl Controller {
    /// Starts the releases `revision` names that do not run on this node,
    /// adopting the instances of `records` that belong to them (the records
    /// taken are removed from it). Returns the handles of every release of
    /// the revision that runs now. `why` names it in the log (`restoring`,
    /// `following`).
    pub(super) fn run_releases(
        &self,
        revision: &Revision,
        records: &mut Vec<InstanceRecord>,
        why: &str,
    ) -> Result<Vec<Arc<ReleaseHandle>>> {
        let mut handles = Vec::new();
        for version in revision.state.releases.keys() {
            let Some(release) = self.store.release(&revision.service, version)? else {
                tracing::error!(service = %revision.service, %version, "release missing from the store; not started");
                continue;
            };
            let (service, version) = (revision.service.to_string(), version.to_string());
            let (mine, rest): (Vec<_>, Vec<_>) = std::mem::take(records)
                .into_iter()
                .partition(|r| r.service == service && r.version == version);
            *records = rest;
            if self.runtime.get(&service, &version).is_none() {
                tracing::info!(%service, %version, adopt = mine.len(), "{why} release");
            }
            handles.push(self.runtime.start(&release, mine));
        }
        Ok(handles)
    }

    /// Takes the store's current revision of `service` when it is newer
    /// than this node's: another node changed it. Its releases start here
    /// and get ready (each within its ready timeout; one that does not is
    /// routed to anyway, as every other node does, and logged), then the
    /// routing table changes, then releases that left drain and stop.
    pub async fn follow(&self, service: &ServiceName) -> Result<()> {
        let _following = self.following.lock(service).await;
        let Some(head) = self.store.current_revision(service)? else {
            return Ok(());
        };
        if self
            .current(service)
            .is_some_and(|r| r.number >= head.number)
        {
            return Ok(());
        }
        let handles = self.run_releases(&head, &mut Vec::new(), "following")?;
        let waits = handles.iter().map(|h| {
            let timeout = Duration::from_millis(h.release.spec.ready_timeout_ms);
            async move {
                if let Err(error) = h.wait_ready(timeout).await {
                    tracing::warn!(release = %h.name(), %error, "a release another node deployed is not ready here");
                }
            }
        });
        futures_util::future::join_all(waits).await;
        let gone = {
            let _lock = self.revisions.lock(service).await;
            let known = self.current(service);
            if known.as_ref().is_some_and(|r| r.number >= head.number) {
                return Ok(());
            }
            self.current_map().insert(service.clone(), head.clone());
            self.recompile();
            self.committed();
            tracing::info!(%service, revision = head.number, action = %head.action, actor = %head.actor, "followed a change from the fleet");
            known.map_or_else(Vec::new, |k| {
                k.state
                    .releases
                    .keys()
                    .filter(|v| !head.state.releases.contains_key(*v))
                    .cloned()
                    .collect()
            })
        };
        self.stop_drained(service, &gone).await;
        Ok(())
    }

    /// Follows every service of the store, its pause too (after a lost
    /// watch, when changes may have been missed).
    pub async fn follow_all(&self) -> Result<()> {
        for revision in self.store.current_revisions()? {
            self.follow(&revision.service).await?;
            self.follow_pause(&revision.service)?;
        }
        Ok(())
    }
}
