use std::time::Duration;

use super::Controller;
use crate::error::Result;

impl Controller {
    /// Brings a (re)started serve back to the committed state: every
    /// service's current revision is loaded, instances still running from
    /// the previous serve are adopted, missing ones are started, and
    /// recorded instances of releases that should not run are stopped, as
    /// are instance processes no record names.
    /// Paused services stay paused. Routing is ready when this returns; instances join as they pass
    /// their health checks.
    pub fn restore(&self) -> Result<()> {
        self.shadows.load(self.node_store.shadow_stats()?);
        let revisions = self.store.current_revisions()?;
        let mut records = self.node_store.instances()?;
        // Before any release starts: its new processes are no strays.
        self.runtime.stop_unrecorded_processes(&records);
        for revision in &revisions {
            self.run_releases(revision, &mut records, "restoring")?;
            self.current_map()
                .insert(revision.service.clone(), revision.clone());
        }
        for orphan in records {
            // Started by an earlier serve for a deploy that never committed.
            let _ = self.node_store.forget_instance(
                &orphan.service,
                &orphan.version,
                orphan.slot,
                orphan.pid,
            );
            self.runtime.stop_orphan(&orphan);
        }
        // Containers are found by their labels rather than by records.
        self.runtime.remove_stray_containers();
        self.restore_pauses()?;
        self.recompile();
        Ok(())
    }

    /// Waits, at most `timeout`, until the restored releases are ready, so
    /// that a restarted serve opens its listener with its instances back in
    /// rotation (adopted ones need one passing probe).
    pub async fn wait_restored(&self, timeout: Duration) {
        let handles = self.runtime.running();
        let waits = handles.iter().map(|h| h.wait_ready(timeout));
        futures_util::future::join_all(waits).await;
    }
}
