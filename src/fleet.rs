//! Several serves ("nodes") sharing one desired state: the fleet. With
//! `serve --store etcd://…` (the `etcd` feature) every node keeps its
//! record under an etcd lease, watches the services' heads and follows
//! each change another node commits, and takes part in the election of
//! the node that leads (rollouts, upgrades, webhooks). A serve on its
//! state directory is a fleet of one that always leads.

#[cfg(feature = "etcd")]
mod etcd;
mod readiness;
#[cfg(feature = "etcd")]
mod reporting;
mod traffic;
#[cfg(feature = "etcd")]
mod webhooks;

#[cfg(feature = "etcd")]
pub use etcd::{Fleet, FleetSettings};
pub use readiness::{FleetVerdict, NodePhase, ReleaseReadiness, judge};
pub use traffic::{NodeTraffic, ReleaseTraffic, fleet_delta, fleet_minute};

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::model::now_millis;
use crate::store::{NodeRecord, StoreResult};

/// A node as `switchyard nodes` shows it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct NodeView {
    pub name: String,
    pub proxy: String,
    pub admin: String,
    pub version: String,
    /// When it started (unix ms).
    pub started_at: u64,
    /// How long ago its lease was granted (ms); none for a single serve.
    #[serde(default)]
    pub lease_age_ms: Option<u64>,
    /// Its lease's time to live (seconds); none for a single serve.
    #[serde(default)]
    pub lease_ttl_s: Option<u64>,
    /// Whether it leads the fleet.
    pub leader: bool,
    /// Whether it is the node that answered.
    pub this: bool,
    /// The releases it runs, as it reports them (`hello@1.0.0 2/2`).
    #[serde(default)]
    pub releases: Vec<ReleaseReadiness>,
}

impl NodeView {
    /// A node's record as a view (`leader`: the leading node's name).
    pub fn of(record: NodeRecord, leader: Option<&str>, this: &str, leased: bool) -> Self {
        Self {
            leader: leader == Some(record.name.as_str()),
            this: record.name == this,
            lease_age_ms: leased.then(|| now_millis().saturating_sub(record.lease_granted_at)),
            lease_ttl_s: leased.then_some(record.lease_ttl),
            name: record.name,
            proxy: record.proxy,
            admin: record.admin,
            version: record.version,
            started_at: record.started_at,
            releases: Vec::new(),
        }
    }
}

/// What a live node reports under its lease.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct NodeReport {
    pub node: String,
    /// Every release it runs, by [`ReleaseReadiness::key`].
    pub releases: BTreeMap<String, ReleaseReadiness>,
    /// Their traffic through it, by the same key (reported apart, less
    /// often).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub traffic: BTreeMap<String, ReleaseTraffic>,
}

/// What the controller asks of the fleet: which other nodes are live and
/// what they report. A single serve has none, so the controller judges a
/// release with one code path whether it runs alone or in a fleet.
pub trait Reports: Send + Sync + 'static {
    /// This node's name.
    fn this_node(&self) -> &str;
    /// Whether other nodes may share this node's services (a fleet).
    fn shared(&self) -> bool;
    /// Every other live node (its record under a live lease) with what it
    /// reports; a node that reported nothing yet comes with no releases.
    fn others(&self) -> StoreResult<Vec<NodeReport>>;
}

/// A serve on its own, by its node name: no other node reports anything.
pub struct Alone(pub String);

impl Reports for Alone {
    fn this_node(&self) -> &str {
        &self.0
    }

    fn shared(&self) -> bool {
        false
    }

    fn others(&self) -> StoreResult<Vec<NodeReport>> {
        Ok(Vec::new())
    }
}

/// The nodes a serve knows of: itself alone, or every live node of its
/// fleet.
pub trait Members: Send + Sync + 'static {
    fn nodes(&self) -> StoreResult<Vec<NodeView>>;
}

/// A serve on its own: the only node, and so the leader.
pub struct SingleNode {
    pub record: NodeRecord,
    /// Its releases as its runtime has them.
    pub local: Box<dyn Fn() -> Vec<ReleaseReadiness> + Send + Sync>,
}

impl Members for SingleNode {
    fn nodes(&self) -> StoreResult<Vec<NodeView>> {
        let name = self.record.name.clone();
        let mut view = NodeView::of(self.record.clone(), Some(&name), &name, false);
        view.releases = (self.local)();
        Ok(vec![view])
    }
}

/// This machine's host name, the default name of a node.
pub fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|name| name.trim().to_owned())
        .ok()
        .filter(|name| !name.is_empty())
        .unwrap_or_else(|| "switchyard".to_owned())
}
