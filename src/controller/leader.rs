//! Parts that act for the whole fleet and so may run on one node only, the
//! one that leads: rollouts (their drivers), upgrades (and the hooks they
//! run) and event webhooks. Wrapping such a part in [`LeaderOnly`] says so
//! in the types, and its switch is the node's [`Leadership`]: a single
//! serve always leads; a node of a fleet leads while it holds the fleet's
//! election, and holds these parts off otherwise. The other parts (pins,
//! pauses, mirrors, revisions) run on every node.

use std::sync::Arc;

use crate::store::Fence;

/// Whether this node leads, and which node does (as far as it knows).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeaderState {
    pub leading: bool,
    /// The leading node's name, when known (a fleet's election says it).
    pub leader: Option<String>,
    /// While this node leads a fleet: the election key it won, which its
    /// leader-only work writes under (none for a single serve).
    pub fence: Option<Fence>,
}

/// The switch every [`LeaderOnly`] part of a controller reads.
#[derive(Clone)]
pub struct Leadership {
    state: Arc<tokio::sync::watch::Sender<LeaderState>>,
}

impl Leadership {
    /// A single serve: it always leads.
    pub fn single() -> Self {
        Self::starting(true)
    }

    /// A node of a fleet: it does not lead until its election says so.
    pub fn follower() -> Self {
        Self::starting(false)
    }

    fn starting(leading: bool) -> Self {
        let (state, _) = tokio::sync::watch::channel(LeaderState {
            leading,
            leader: None,
            fence: None,
        });
        Self {
            state: Arc::new(state),
        }
    }

    pub fn is_leading(&self) -> bool {
        self.state.borrow().leading
    }

    pub fn state(&self) -> LeaderState {
        self.state.borrow().clone()
    }

    /// The fence the leader-only parts write under now.
    pub fn fence(&self) -> Option<Fence> {
        self.state.borrow().fence.clone()
    }

    /// Told of every change of the state from now on.
    pub fn subscribe(&self) -> tokio::sync::watch::Receiver<LeaderState> {
        self.state.subscribe()
    }

    /// Sets the state; returns whether `leading` changed.
    pub fn set(&self, next: LeaderState) -> bool {
        let mut changed = false;
        self.state.send_modify(|state| {
            changed = state.leading != next.leading;
            *state = next;
        });
        changed
    }
}

/// A part that runs only on the leading node.
pub struct LeaderOnly<T> {
    part: T,
    leadership: Leadership,
}

impl<T> LeaderOnly<T> {
    /// The part, switched on while `leadership` leads.
    pub fn new(part: T, leadership: Leadership) -> Self {
        Self { part, leadership }
    }

    /// The part, to act through. Only the leader acts through it: check
    /// [`LeaderOnly::is_on`] before starting work.
    pub fn part(&self) -> &T {
        &self.part
    }

    /// Whether this node leads, so that the part may act.
    pub fn is_on(&self) -> bool {
        self.leadership.is_leading()
    }
}

impl super::Controller {
    /// This node now leads the fleet: it picks up what the last leader
    /// left, from the stored state, as a restarted serve does: rollouts
    /// go on from their stored step, upgrades that were running are
    /// marked interrupted (their hooks are never run twice). What they
    /// write is fenced by `fence`, the election key this node won.
    pub fn take_lead(
        self: &Arc<Self>,
        leader: String,
        fence: Option<Fence>,
    ) -> crate::error::Result<()> {
        let changed = self.leadership().set(LeaderState {
            leading: true,
            leader: Some(leader),
            fence: fence.clone(),
        });
        if changed {
            tracing::info!("this node leads the fleet now");
            crate::store::fence::sync_scope(fence, || {
                self.interrupt_upgrades()?;
                self.resume_rollouts()
            })?;
        }
        Ok(())
    }

    /// A write of this node's leader-only work was refused by `fence`:
    /// another node leads since. The parts stop where they are (once per
    /// fence); returns whether they did.
    pub fn fenced_out(&self, fence: &Fence) -> bool {
        if self.leadership().fence().as_ref() != Some(fence) {
            return false;
        }
        self.follow_leader(None);
        true
    }

    /// This node does not lead (any more): its rollout drivers and its
    /// upgrades stop where they are (a hook that runs is killed); the
    /// leader goes on from the stored state.
    pub fn follow_leader(&self, leader: Option<String>) {
        let changed = self.leadership().set(LeaderState {
            leading: false,
            leader,
            fence: None,
        });
        if changed {
            tracing::warn!("this node does not lead the fleet any more");
            self.stop_rollout_drivers();
            self.stop_upgrades();
        }
    }

    /// Runs `work`, an operator's command on what the leader does (a
    /// rollout's pause, an upgrade's `--continue`, …), as the leader's
    /// work: what it writes is fenced by the election key this node won,
    /// so a node that lost the election without noticing yet has the
    /// command refused ([`crate::store::StoreError::Fenced`]), with nothing
    /// written, instead of answering that it was done.
    pub(super) async fn as_leader<F: std::future::Future>(&self, work: F) -> F::Output {
        crate::store::fence::scope(self.leadership().fence(), work).await
    }

    /// Like [`Self::as_leader`], for a synchronous command.
    pub(super) fn as_leader_sync<T>(&self, work: impl FnOnce() -> T) -> T {
        crate::store::fence::sync_scope(self.leadership().fence(), work)
    }
}
