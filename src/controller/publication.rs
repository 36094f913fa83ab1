//! Where compiled routing tables go: straight to the proxy, or, while a
//! hold is on, kept back until it ends.
//!
//! A serve that takes its instances back after a failed handover adopts
//! them afresh, and adopted instances join rotation only after a passing
//! probe. The hold keeps the proxy on the routes it had (whose instances
//! never stopped) until the adopted ones are ready, so that no request
//! meets a table without a ready instance.

use std::sync::{Arc, Mutex, MutexGuard};

use crate::proxy::{SharedTable, Table};

pub(super) struct Publication {
    table: SharedTable,
    /// `Some` while held: the latest table compiled since, if any.
    held: Mutex<Option<Option<Arc<Table>>>>,
}

impl Publication {
    pub(super) fn new(table: SharedTable) -> Self {
        Self {
            table,
            held: Mutex::new(None),
        }
    }

    /// Where the proxy reads the published table.
    pub(super) fn shared(&self) -> &SharedTable {
        &self.table
    }

    fn held(&self) -> MutexGuard<'_, Option<Option<Arc<Table>>>> {
        self.held.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Publishes `table`, or keeps it for the end of the hold.
    pub(super) fn publish(&self, table: Arc<Table>) {
        let mut held = self.held();
        match held.as_mut() {
            Some(latest) => *latest = Some(table),
            None => self.table.store(table),
        }
    }

    /// Keeps the table the proxy has until [`Publication::release`].
    pub(super) fn hold(&self) {
        self.held().get_or_insert(None);
    }

    /// Ends the hold and publishes the latest table compiled during it.
    pub(super) fn release(&self) {
        if let Some(Some(latest)) = self.held().take() {
            self.table.store(latest);
        }
    }
}

/// A hold on the routing table's publication, released on drop (see
/// [`Controller::hold_routes`](super::Controller::hold_routes)).
pub struct RoutesHeld<'a>(&'a Publication);

impl<'a> RoutesHeld<'a> {
    pub(super) fn new(publication: &'a Publication) -> Self {
        publication.hold();
        Self(publication)
    }
}

impl Drop for RoutesHeld<'_> {
    fn drop(&mut self) {
        self.0.release();
    }
}

#[cfg(test)]
mod tests {
    use arc_swap::ArcSwap;

    use super::*;
    use crate::routing::RoutingTable;

    #[test]
    fn a_held_publication_keeps_the_old_table_and_publishes_the_latest_on_release() {
        let first = Arc::new(RoutingTable::new());
        let shared: SharedTable = Arc::new(ArcSwap::new(Arc::clone(&first)));
        let publication = Publication::new(Arc::clone(&shared));
        let held = RoutesHeld::new(&publication);
        let (second, third) = (Arc::new(RoutingTable::new()), Arc::new(RoutingTable::new()));
        publication.publish(Arc::clone(&second));
        publication.publish(Arc::clone(&third));
        assert!(Arc::ptr_eq(&shared.load_full(), &first));
        drop(held);
        assert!(Arc::ptr_eq(&shared.load_full(), &third));
        let fourth = Arc::new(RoutingTable::new());
        publication.publish(Arc::clone(&fourth));
        assert!(Arc::ptr_eq(&shared.load_full(), &fourth));
    }
}
