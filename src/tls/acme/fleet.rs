//! ACME on a fleet: one issuer. Only the leading node orders and renews
//! (its orders' writes fenced by its election key, like the rest of its
//! leader-only work); an order asked of another node is kept in the store
//! for the leader to take up. Every node follows the store's orders (what
//! `tls ls` shows, and `tls rm` through any node cancels the leader's
//! order) and answers the leader's HTTP-01 challenges, which the leader
//! keeps in the store and checks every node answers before it tells the
//! CA to validate: the CA may reach any node. A node that stops leading
//! cancels the orders it runs (storing nothing of them); the next leader
//! takes them up from the store.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;

use super::{Acme, AcmeError, AcmeOrder, AcmeState, CHALLENGE_PREFIX};
use crate::controller::{LeaderState, Leadership};
use crate::model::now_millis;
use crate::store::Fence;

/// How long the leader waits for every node to answer a challenge before
/// it tells the CA to validate (it goes on after, and says which node did
/// not answer).
const PREFLIGHT: Duration = Duration::from_secs(5);

/// The other nodes of the fleet, as `(name, proxy address)`.
pub type OtherNodes = Box<dyn Fn() -> Vec<(String, String)> + Send + Sync>;

/// Where a serve's ACME orders stand in its fleet.
pub struct AcmeFleet {
    /// Whether this serve leads (a single serve always does).
    pub leadership: Leadership,
    /// The other nodes, for a node of a fleet; `None` for a single serve.
    pub other_nodes: Option<OtherNodes>,
}

impl Acme {
    /// Says where this serve stands in its fleet (set once, by serve,
    /// before the renewals start).
    pub fn set_fleet(&self, fleet: AcmeFleet) {
        let _ = self.fleet.set(fleet);
    }

    /// Whether this serve orders (it leads).
    pub(super) fn leads(&self) -> bool {
        self.fleet.get().is_none_or(|f| f.leadership.is_leading())
    }

    /// Whether this serve is a node of a fleet.
    pub(super) fn in_fleet(&self) -> bool {
        self.fleet.get().is_some_and(|f| f.other_nodes.is_some())
    }

    /// The fence the orders' writes go under.
    pub(super) fn fence(&self) -> Option<Fence> {
        self.fleet.get().and_then(|f| f.leadership.fence())
    }

    /// Told whenever this serve starts or stops leading.
    pub(super) fn lead_changes(&self) -> Option<watch::Receiver<LeaderState>> {
        self.fleet.get().map(|f| f.leadership.subscribe())
    }

    /// On a node that does not lead: keeps the order for the leader to
    /// take up.
    pub(super) fn leave_to_leader(&self, mut order: AcmeOrder) -> Result<AcmeOrder, AcmeError> {
        let host = order.host().to_owned();
        if self
            .order_of(&host)
            .is_some_and(|o| o.state == AcmeState::Ordering)
        {
            return Err(AcmeError::Busy(host));
        }
        let leader = self
            .fleet
            .get()
            .and_then(|f| f.leadership.state().leader)
            .unwrap_or_else(|| "none yet".into());
        order.step = format!("waiting for the leading node ({leader}) to order it");
        self.save(&order)?;
        Ok(order)
    }

    /// Reads the store's orders and pending challenges again (another
    /// node changed them). An order this node runs that is gone from the
    /// store (`tls rm` through another node) is cancelled; new orders are
    /// taken up by the leader.
    pub fn follow_store(&self) {
        match self.store.acme_orders() {
            Ok(stored) => {
                let mut running = self.running();
                let mut orders = self.orders();
                let mut followed = std::collections::HashMap::new();
                for (host, json) in stored {
                    match serde_json::from_str::<AcmeOrder>(&json) {
                        // What this node runs, it knows best (its step).
                        Ok(order) => {
                            let kept = match (running.contains_key(&host), orders.remove(&host)) {
                                (true, Some(mine)) => mine,
                                _ => order,
                            };
                            followed.insert(host, kept);
                        }
                        Err(error) => {
                            tracing::error!(host, %error, "a stored ACME order cannot be read");
                        }
                    }
                }
                *orders = followed;
                running.retain(|host, claim| {
                    let kept = orders.contains_key(host);
                    if !kept {
                        claim.cancel.cancel();
                        tracing::info!(
                            host,
                            "ACME order cancelled: its certificate was removed through another node"
                        );
                    }
                    kept
                });
            }
            Err(error) => tracing::warn!(%error, "cannot read the fleet's ACME orders"),
        }
        match self.store.acme_challenges() {
            Ok(stored) => self.challenges.follow(stored),
            Err(error) => tracing::warn!(%error, "cannot read the fleet's ACME challenges"),
        }
        self.wake();
    }

    /// Starts every order waiting to be ordered that does not run here:
    /// asked through another node, or left by a leader that stopped
    /// (or by a serve that stopped) while it ordered.
    pub(super) fn take_up(self: &Arc<Self>) {
        for order in self.list() {
            if order.state != AcmeState::Ordering {
                continue;
            }
            let host = order.host().to_owned();
            let mut order = order;
            order.step = "starting".into();
            order.updated_at = now_millis();
            match self.claim_and_save(&order, true) {
                Ok(Some(claim)) => {
                    tracing::info!(host, "taking up an ACME order");
                    self.spawn_run(order.request, claim);
                }
                Ok(None) => {}
                Err(error) => {
                    tracing::error!(host, %error, "cannot take up the ACME order; it is tried again later");
                }
            }
        }
    }

    /// This node does not lead: the orders it runs stop and store nothing
    /// (kept in the store as they were, for the leader to take up).
    pub(super) fn stand_down(&self) {
        let mut running = self.running();
        for (host, claim) in running.drain() {
            claim.cancel.cancel();
            tracing::info!(host, "ACME order left to the leading node");
        }
    }

    /// Waits until every other node answers `token` for `name` (each
    /// reads it from the store), so that the CA finds the answer
    /// whichever node it reaches; goes on after [`PREFLIGHT`], saying
    /// which nodes did not answer.
    pub(super) async fn preflight(&self, name: &str, token: &str, answer: &str) {
        let Some(nodes) = self.fleet.get().and_then(|f| f.other_nodes.as_ref()) else {
            return;
        };
        let mut waiting = nodes();
        if waiting.is_empty() {
            return;
        }
        let client = match super::super::http_client()
            .timeout(Duration::from_secs(1))
            .build()
        {
            Ok(client) => client,
            Err(error) => {
                tracing::warn!(%error, "cannot check that every node answers the ACME challenge");
                return;
            }
        };
        let deadline = tokio::time::Instant::now() + PREFLIGHT;
        loop {
            let mut still = Vec::new();
            for (node, proxy) in waiting {
                let answered = client
                    .get(format!("http://{proxy}{CHALLENGE_PREFIX}{token}"))
                    .header(http::header::HOST, name)
                    .send()
                    .await
                    .ok()
                    .filter(|r| r.status().is_success())
                    .map(|r| r.text());
                let answered = match answered {
                    Some(text) => text.await.is_ok_and(|t| t == answer),
                    None => false,
                };
                if !answered {
                    still.push((node, proxy));
                }
            }
            if still.is_empty() {
                return;
            }
            if tokio::time::Instant::now() >= deadline {
                let names: Vec<_> = still.iter().map(|(n, _)| n.as_str()).collect();
                tracing::warn!(host = name, nodes = ?names, "these nodes do not answer the ACME challenge yet; the CA may fail to validate through them");
                return;
            }
            waiting = still;
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}
