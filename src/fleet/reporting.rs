//! A node's reports in etcd: under `P/ready/NAME`, kept under the node's
//! lease (so a node whose lease lapses stops counting), every release it
//! runs with how many of its instances are healthy, its phase and, when
//! it failed, why and its last log lines. The report is put again on every
//! change (looked at every [`PUBLISH_EVERY`]) and whenever a new lease is
//! granted. Under `P/traffic/NAME`, also under its lease, the traffic of
//! each release through it (counts by class, latency buckets, its last
//! minute), every [`TRAFFIC_EVERY`]. [`EtcdReports`] reads the other live
//! nodes' reports back.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use etcd_client::PutOptions;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use super::{NodeReport, NodeTraffic, Reports};
use crate::controller::Controller;
use crate::store::{EtcdClients, EtcdStore, NodeRecord, StoreError, StoreResult};

/// How often this node looks for a change of its releases to report.
const PUBLISH_EVERY: Duration = Duration::from_millis(200);

/// How often this node reports its releases' traffic.
const TRAFFIC_EVERY: Duration = Duration::from_secs(10);

/// Where a node's reports go under the fleet's prefix.
pub(super) struct ReportKeys {
    /// Its releases' readiness.
    pub ready: String,
    /// Its releases' traffic.
    pub traffic: String,
}

impl ReportKeys {
    pub(super) fn of(store: &EtcdStore, node: &str) -> Self {
        Self {
            ready: store.key(&format!("ready/{node}")),
            traffic: store.key(&format!("traffic/{node}")),
        }
    }
}

/// Puts this node's report under its lease (`lease`: the current one, if
/// any) whenever what it reports changes, until `stop`.
/// Its traffic every [`TRAFFIC_EVERY`] (and under each new lease).
pub(super) async fn publish(
    clients: EtcdClients,
    keys: ReportKeys,
    node: String,
    controller: Arc<Controller>,
    mut lease: watch::Receiver<Option<i64>>,
    stop: CancellationToken,
) {
    let mut published: Option<(i64, NodeReport)> = None;
    let mut traffic_under = None;
    let mut tick = tokio::time::interval(PUBLISH_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut traffic_tick = tokio::time::interval(TRAFFIC_EVERY);
    traffic_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let traffic_due = tokio::select! {
            () = stop.cancelled() => return,
            _ = tick.tick() => false,
            _ = traffic_tick.tick() => true,
            changed = lease.changed() => if changed.is_err() { return } else { false },
        };
        let Some(id) = *lease.borrow_and_update() else {
            published = None;
            continue;
        };
        if traffic_due || traffic_under != Some(id) {
            let traffic = NodeTraffic {
                node: node.clone(),
                at: crate::model::now_millis(),
                releases: controller.local_traffic(),
            };
            if put_under(&clients, &keys.traffic, &traffic, id).await {
                traffic_under = Some(id);
            }
        }
        let report = NodeReport {
            node: node.clone(),
            releases: controller.local_readiness(),
            ..NodeReport::default()
        };
        if published.as_ref() == Some(&(id, report.clone())) {
            continue;
        }
        if put_under(&clients, &keys.ready, &report, id).await {
            published = Some((id, report));
        }
    }
}

/// Puts `value` at `key` under lease `id`; whether it went in.
async fn put_under<T: serde::Serialize>(
    clients: &EtcdClients,
    key: &str,
    value: &T,
    id: i64,
) -> bool {
    let value = match serde_json::to_vec(value) {
        Ok(value) => value,
        Err(error) => {
            tracing::error!(%error, key, "cannot encode this node's report to the fleet");
            return false;
        }
    };
    let put = clients
        .current()
        .put(key, value, Some(PutOptions::new().with_lease(id)))
        .await;
    match put {
        Ok(_) => true,
        Err(error) => {
            // The lease may be gone: the lease's task grants a new one and
            // the report goes under that.
            tracing::debug!(%error, key, "cannot put this node's report in the fleet yet");
            false
        }
    }
}

/// Every live node's record and the reports under the fleet's prefix, in
/// one look.
pub(super) fn live_reports(
    store: &EtcdStore,
) -> StoreResult<(Vec<NodeRecord>, BTreeMap<String, NodeReport>)> {
    // Read through the store's remembering reads, so that `nodes` answers
    // from the last state while etcd cannot be reached.
    let [nodes, reports, traffic] = ["node/", "ready/", "traffic/"].map(|prefix| {
        store.list(store.key(prefix), None).map(|kvs| {
            kvs.into_iter()
                .map(|kv| kv.value().to_vec())
                .collect::<Vec<_>>()
        })
    });
    let (nodes, reports, traffic) = (nodes?, reports?, traffic?);
    let nodes = nodes
        .iter()
        .map(|v| serde_json::from_slice::<NodeRecord>(v).map_err(StoreError::from))
        .collect::<StoreResult<Vec<_>>>()?;
    let mut reports: BTreeMap<String, NodeReport> = reports
        .iter()
        .filter_map(|v| serde_json::from_slice::<NodeReport>(v).ok())
        .map(|r| (r.node.clone(), r))
        .collect();
    for traffic in traffic
        .iter()
        .filter_map(|v| serde_json::from_slice::<NodeTraffic>(v).ok())
    {
        let report = reports
            .entry(traffic.node.clone())
            .or_insert_with(|| NodeReport {
                node: traffic.node.clone(),
                ..NodeReport::default()
            });
        report.traffic = traffic.releases;
    }
    Ok((nodes, reports))
}

/// The other live nodes' reports, read from etcd.
pub struct EtcdReports {
    pub(super) store: Arc<EtcdStore>,
    /// This node's name.
    pub(super) node: String,
}

impl Reports for EtcdReports {
    fn this_node(&self) -> &str {
        &self.node
    }

    fn shared(&self) -> bool {
        true
    }

    fn others(&self) -> StoreResult<Vec<NodeReport>> {
        let (nodes, mut reports) = live_reports(&self.store)?;
        Ok(nodes
            .into_iter()
            .filter(|n| n.name != self.node)
            .map(|n| {
                reports.remove(&n.name).unwrap_or_else(|| NodeReport {
                    node: n.name,
                    ..NodeReport::default()
                })
            })
            .collect())
    }
}
