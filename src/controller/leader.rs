//! Parts that act for the whole fleet and so may run on one node only, the
//! one that leads: rollouts (their drivers), upgrades (and the hooks they
//! run) and event webhooks. Today every serve leads itself. Wrapping such
//! a part in [`LeaderOnly`] says so in the types: a node that is not the
//! leader will hold it switched off (the fleet's election decides), while
//! the other parts (pins, pauses, mirrors, revisions) run on every node.

/// A part that runs only on the leading node.
pub struct LeaderOnly<T> {
    part: T,
}

impl<T> LeaderOnly<T> {
    /// The part, on a node that leads (a single serve always does).
    pub fn leading(part: T) -> Self {
        Self { part }
    }

    /// The part, to act through. Only the leader holds one that acts.
    pub fn part(&self) -> &T {
        &self.part
    }
}
