//! The fence of a fleet's leader: what only the leading node writes
//! (its rollouts' steps, its upgrades' steps, the events they record, and
//! the operator's commands on them: a rollout's pause or promotion, an
//! upgrade's `--continue`, …) is written only while the election key this
//! node won still exists. A leader that lost its lease while it could not
//! run (a long pause, a partition) and goes on where it was finds its
//! writes refused ([`super::StoreError::Fenced`]) instead of overwriting
//! what the next leader did meanwhile; a command answers with that
//! refusal.
//!
//! The fence travels with the leader's work: a task or a command that
//! acts for the leader runs inside [`scope`] (the controller's
//! `as_leader`), and the store reads [`current`] when it writes. A serve
//! on its state directory has no fence (it always leads).

use std::fmt;
use std::future::Future;
use std::sync::Arc;

/// The election key a leading node holds, as the store compares it.
#[derive(Clone)]
pub struct Fence {
    /// The election key (its name).
    pub key: String,
    /// Its create revision: a key put again later is another one.
    pub revision: i64,
    /// The lease the key is under.
    pub lease: i64,
    /// Told when a write is refused: this node does not lead any more.
    refused: Arc<dyn Fn(&Fence) + Send + Sync>,
}

impl Fence {
    pub fn new(
        key: String,
        revision: i64,
        lease: i64,
        refused: impl Fn(&Fence) + Send + Sync + 'static,
    ) -> Self {
        Self {
            key,
            revision,
            lease,
            refused: Arc::new(refused),
        }
    }

    /// A write under this fence was refused: the node steps down.
    pub fn refused(&self) {
        (self.refused)(self);
    }
}

impl PartialEq for Fence {
    fn eq(&self, other: &Self) -> bool {
        self.key == other.key && self.revision == other.revision
    }
}

impl Eq for Fence {}

impl fmt::Debug for Fence {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} (revision {})", self.key, self.revision)
    }
}

tokio::task_local! {
    static FENCE: Option<Fence>;
}

/// Runs `work` (the leader's work) with `fence`: the store writes what it
/// writes only while the fence holds.
pub async fn scope<F: Future>(fence: Option<Fence>, work: F) -> F::Output {
    FENCE.scope(fence, work).await
}

/// Like [`scope`], for synchronous work.
pub fn sync_scope<T>(fence: Option<Fence>, work: impl FnOnce() -> T) -> T {
    FENCE.sync_scope(fence, work)
}

/// The fence of the leader's work running now, if any.
pub fn current() -> Option<Fence> {
    FENCE.try_with(Clone::clone).ok().flatten()
}
