//! A node's part in a fleet on etcd: its lease and record, the watch on
//! the services' heads, and the election of the leading node. These run
//! on the etcd store's own thread; what they find is handed to the
//! control plane, which follows changes ([`Controller::follow`]) and takes
//! or gives up the lead ([`Controller::take_lead`]).

use std::sync::{Arc, Weak};
use std::time::Duration;

use etcd_client::{Client, EventType, PutOptions, WatchOptions};
use serde::{Deserialize, Serialize};
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;

use super::reporting::{self, EtcdReports};
use super::{Members, NodeView};
use crate::controller::Controller;
use crate::model::{ServiceName, now_millis};
use crate::store::{EtcdClients, EtcdStore, Fence, NodeRecord, StoreError, StoreResult};
use crate::tls::{Acme, Certificates};

/// How long to wait before trying etcd again after a lost watch or lease.
const RETRY: Duration = Duration::from_millis(500);

/// How a node joins its fleet.
pub struct FleetSettings {
    /// Its record (the lease fields are filled in as leases are granted).
    pub node: NodeRecord,
    /// The time to live of its lease: a node silent that long drops out
    /// (and, if it led, another node leads).
    pub lease_ttl: Duration,
    /// The certificates its TLS listener serves, read again whenever one
    /// changes in the store.
    pub certificates: Arc<Certificates>,
    /// Its ACME orders, read again whenever the fleet's orders or pending
    /// challenges change.
    pub acme: Arc<Acme>,
    /// The webhooks every event of the fleet is posted to (by the node
    /// that leads).
    pub webhooks: Vec<String>,
}

/// What the tasks on the store's thread tell the control plane.
enum Signal {
    /// A service's head changed.
    Changed(ServiceName),
    /// A service was paused or resumed.
    Paused(ServiceName),
    /// A certificate was added, renewed or removed.
    Certificates,
    /// An ACME order or pending challenge changed.
    Acme,
    /// A node recorded an event.
    Event,
    /// Changes may have been missed (a watch started again).
    Resync,
    /// This node won the election (described), holding that election key.
    Leading(String, Option<ElectionKey>),
    /// This node does not lead; the leader, when known.
    Following(Option<String>),
}

/// The election key a node won: its name, create revision and lease.
struct ElectionKey {
    key: String,
    revision: i64,
    lease: i64,
}

/// The value a candidate puts in the election.
#[derive(Serialize, Deserialize)]
struct Candidate {
    name: String,
    admin: String,
}

impl Candidate {
    fn describe(&self) -> String {
        format!("{} (admin API {})", self.name, self.admin)
    }
}

/// This node in its fleet. Dropping it stops its tasks and revokes its
/// lease, so that it leaves the fleet at once.
pub struct Fleet {
    store: Arc<EtcdStore>,
    name: String,
    stop: CancellationToken,
    /// The leader the election named last, told while etcd cannot be
    /// reached (with the nodes read last).
    last_leader: std::sync::Mutex<Option<String>>,
}

impl Fleet {
    /// Joins the fleet: starts the lease, the watch and the election, and
    /// the task on the control plane (call it there) that follows what they
    /// report.
    pub fn join(
        store: Arc<EtcdStore>,
        controller: Arc<Controller>,
        settings: FleetSettings,
    ) -> Arc<Self> {
        let stop = CancellationToken::new();
        let (tx, rx) = mpsc::unbounded_channel();
        let (lease, leased) = watch::channel(None);
        controller.set_reports(Arc::new(EtcdReports {
            store: Arc::clone(&store),
            node: settings.node.name.clone(),
        }));
        store.spawn(reporting::publish(
            store.clients(),
            reporting::ReportKeys::of(&store, &settings.node.name),
            settings.node.name.clone(),
            Arc::clone(&controller),
            leased,
            stop.clone(),
        ));
        store.spawn(watch_heads(
            store.clients(),
            store.key(""),
            tx.clone(),
            stop.clone(),
        ));
        store.spawn(hold_lease(
            store.clients(),
            store.key(&format!("node/{}", settings.node.name)),
            store.key("leader"),
            settings.node.clone(),
            settings.lease_ttl,
            lease,
            tx,
            stop.clone(),
        ));
        let wake = Arc::new(tokio::sync::Notify::new());
        tokio::spawn(super::webhooks::post_events(
            Arc::downgrade(&controller),
            Arc::downgrade(&store),
            settings.webhooks,
            Arc::clone(&wake),
            stop.clone(),
        ));
        tokio::spawn(apply(
            controller,
            settings.certificates,
            settings.acme,
            Arc::downgrade(&store),
            wake,
            rx,
            stop.clone(),
        ));
        Arc::new(Self {
            name: settings.node.name,
            store,
            stop,
            last_leader: std::sync::Mutex::default(),
        })
    }

    /// The leading node's name, if one leads.
    fn leader(&self) -> StoreResult<Option<String>> {
        let election = self.store.key("leader");
        let value = self.store.call(move |mut c| {
            let election = election.clone();
            async move {
                match c.leader(election).await {
                    Ok(response) => Ok(response.kv().map(|kv| kv.value().to_vec())),
                    // "no leader" comes as an error status.
                    Err(etcd_client::Error::GRpcStatus(s))
                        if s.code() != tonic::Code::Unavailable =>
                    {
                        Ok(None)
                    }
                    Err(e) => Err(e),
                }
            }
        });
        let mut last = self.last_leader.lock().unwrap_or_else(|p| p.into_inner());
        match value {
            Ok(value) => {
                *last = value
                    .and_then(|v| serde_json::from_slice::<Candidate>(&v).ok())
                    .map(|c| c.name);
                Ok(last.clone())
            }
            Err(StoreError::Unreachable { .. }) => Ok(last.clone()),
            Err(error) => Err(error),
        }
    }
}

impl Drop for Fleet {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

impl Members for Fleet {
    fn nodes(&self) -> StoreResult<Vec<NodeView>> {
        let leader = self.leader()?;
        let (records, mut reports) = reporting::live_reports(&self.store)?;
        let mut nodes: Vec<NodeView> = records
            .into_iter()
            .map(|record| {
                let releases = reports
                    .remove(&record.name)
                    .map(|r| r.releases.into_values().collect())
                    .unwrap_or_default();
                NodeView {
                    releases,
                    ..NodeView::of(record, leader.as_deref(), &self.name, true)
                }
            })
            .collect();
        nodes.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(nodes)
    }
}

/// On the control plane: follows each reported change (side by side for
/// different services), switches the leader-only parts and wakes the
/// posting of events (`events`) when there may be some to post.
async fn apply(
    controller: Arc<Controller>,
    certificates: Arc<Certificates>,
    acme: Arc<Acme>,
    store: Weak<EtcdStore>,
    events: Arc<tokio::sync::Notify>,
    mut signals: mpsc::UnboundedReceiver<Signal>,
    stop: CancellationToken,
) {
    loop {
        let signal = tokio::select! {
            () = stop.cancelled() => return,
            signal = signals.recv() => match signal {
                Some(signal) => signal,
                None => return,
            },
        };
        match signal {
            Signal::Changed(service) => {
                let controller = Arc::clone(&controller);
                tokio::spawn(async move {
                    if let Err(error) = controller.follow(&service).await {
                        tracing::warn!(%service, %error, "cannot follow a change from the fleet");
                    }
                });
            }
            Signal::Paused(service) => {
                if let Err(error) = controller.follow_pause(&service) {
                    tracing::warn!(%service, %error, "cannot follow a pause from the fleet");
                }
            }
            Signal::Certificates => {
                if let Err(error) = certificates.reload() {
                    tracing::warn!(%error, "cannot read the certificates changed in the fleet");
                }
            }
            Signal::Acme => acme.follow_store(),
            Signal::Event => events.notify_one(),
            Signal::Resync => {
                events.notify_one();
                acme.follow_store();
                if let Err(error) = certificates.reload() {
                    tracing::warn!(%error, "cannot read the fleet's certificates");
                }
                let controller = Arc::clone(&controller);
                tokio::spawn(async move {
                    if let Err(error) = controller.follow_all().await {
                        tracing::warn!(%error, "cannot catch up with the fleet");
                    }
                });
            }
            Signal::Leading(me, key) => {
                let fence = key.map(|key| fence(&controller, &store, key));
                if let Err(error) = controller.take_lead(me, fence) {
                    tracing::error!(%error, "cannot pick up the rollouts and upgrades of the last leader");
                }
                events.notify_one();
            }
            Signal::Following(leader) => controller.follow_leader(leader),
        }
    }
}

/// The fence of the leader's work, for `key`: a write it refuses stops
/// the leader-only parts at once and revokes the lease the key was under,
/// so that the node starts a lease again and campaigns anew.
fn fence(controller: &Arc<Controller>, store: &Weak<EtcdStore>, key: ElectionKey) -> Fence {
    let (controller, store) = (Arc::downgrade(controller), store.clone());
    Fence::new(key.key, key.revision, key.lease, move |fence: &Fence| {
        let (Some(controller), Some(store)) = (controller.upgrade(), store.upgrade()) else {
            return;
        };
        if !controller.fenced_out(fence) {
            return;
        }
        tracing::warn!(election = %fence.key, "another node leads the fleet now; this node stopped its rollouts and upgrades where they were and joins again with a new lease");
        let (mut client, lease) = (store.clients().current(), fence.lease);
        store.spawn(async move {
            let _ = client.lease_revoke(lease).await;
        });
    })
}

/// Watches the fleet's prefix and reports each change of a service's head
/// or pause, certificate, ACME order or challenge and each new event; after a lost watch (etcd compacted what it had not seen yet,
/// or its member went away), starts again from the store's current
/// revision and asks for a full catch-up: it never resumes from an old
/// revision, which compaction may have removed.
async fn watch_heads(
    clients: EtcdClients,
    prefix: String,
    signals: mpsc::UnboundedSender<Signal>,
    stop: CancellationToken,
) {
    loop {
        let mut client = clients.current();
        match client
            .watch(prefix.clone(), Some(WatchOptions::new().with_prefix()))
            .await
        {
            Ok(mut stream) => {
                clients.reached();
                let _ = signals.send(Signal::Resync);
                loop {
                    let message = tokio::select! {
                        () = stop.cancelled() => return,
                        message = stream.message() => message,
                    };
                    let response = match message {
                        Ok(Some(response)) if !response.canceled() => response,
                        // Behind changes etcd compacted meanwhile (this
                        // node was paused or cut off): the new watch starts
                        // from now, after a full catch-up (Resync).
                        Ok(Some(response)) => {
                            tracing::warn!(
                                compacted = response.compact_revision(),
                                reason = response.cancel_reason(),
                                "etcd ended the watch on the fleet's services; catching up with everything"
                            );
                            break;
                        }
                        Ok(None) => break,
                        Err(error) => {
                            tracing::warn!(%error, "lost the watch on the fleet's services");
                            break;
                        }
                    };
                    for event in response.events() {
                        let Some(kv) = event.kv() else { continue };
                        let key = String::from_utf8_lossy(kv.key());
                        let Some(rest) = key.strip_prefix(&prefix) else {
                            continue;
                        };
                        let signal = match rest.split_once('/') {
                            Some(("head", name)) if event.event_type() == EventType::Put => {
                                name.parse().ok().map(Signal::Changed)
                            }
                            Some(("pause", name)) => name.parse().ok().map(Signal::Paused),
                            Some(("certificate", _)) => Some(Signal::Certificates),
                            Some(("acme", rest)) if !rest.starts_with("account/") => {
                                Some(Signal::Acme)
                            }
                            Some(("event", _)) if event.event_type() == EventType::Put => {
                                Some(Signal::Event)
                            }
                            _ => None,
                        };
                        if let Some(signal) = signal {
                            let _ = signals.send(signal);
                        }
                    }
                }
            }
            Err(error) => tracing::warn!(%error, "cannot watch the fleet's services"),
        }
        clients.move_on();
        // Whether any member answers (it marks the store unreachable, or
        // not, for the answers of the admin API).
        let _ = clients.run(|mut c| async move { c.status().await }).await;
        tokio::select! {
            () = stop.cancelled() => return,
            () = tokio::time::sleep(RETRY) => {}
        }
    }
}

/// Keeps this node's lease (and its record under it) and takes part in
/// the election; a lost lease is granted anew.
#[allow(clippy::too_many_arguments)]
async fn hold_lease(
    clients: EtcdClients,
    node_key: String,
    election: String,
    record: NodeRecord,
    ttl: Duration,
    lease: watch::Sender<Option<i64>>,
    signals: mpsc::UnboundedSender<Signal>,
    stop: CancellationToken,
) {
    loop {
        let round = lease_round(
            clients.current(),
            &node_key,
            &election,
            record.clone(),
            ttl,
            &lease,
            &signals,
            &stop,
        )
        .await;
        lease.send_replace(None);
        if let Err(error) = round {
            clients.move_on();
            tracing::warn!(%error, "lost this node's lease in the fleet; it does not lead until it has one again");
        }
        let _ = signals.send(Signal::Following(None));
        tokio::select! {
            () = stop.cancelled() => return,
            () = tokio::time::sleep(RETRY) => {}
        }
    }
}

/// One lease: granted, the record put under it (and told to `lease`, so
/// that the node's report goes under it too), kept alive every third of
/// its time to live while this node campaigns (or leads). Ends with an
/// error when the lease is lost, or when the node stops (revoking it).
#[allow(clippy::too_many_arguments)]
async fn lease_round(
    mut client: Client,
    node_key: &str,
    election: &str,
    mut record: NodeRecord,
    ttl: Duration,
    lease_id: &watch::Sender<Option<i64>>,
    signals: &mpsc::UnboundedSender<Signal>,
    stop: &CancellationToken,
) -> Result<(), etcd_client::Error> {
    let seconds = ttl.as_secs().max(1) as i64;
    let lease = client.lease_grant(seconds, None).await?.id();
    record.lease_granted_at = now_millis();
    record.lease_ttl = seconds as u64;
    client
        .put(
            node_key,
            serde_json::to_vec(&record).unwrap_or_default(),
            Some(PutOptions::new().with_lease(lease)),
        )
        .await?;
    lease_id.send_replace(Some(lease));
    let me = Candidate {
        name: record.name.clone(),
        admin: record.admin.clone(),
    };
    let (mut keeper, mut answers) = client.lease_keep_alive(lease).await?;
    let value = serde_json::to_vec(&me).unwrap_or_default();
    // etcd answers a campaign only once this node leads, and the client
    // ends every call after its timeout (the store's CALL_TIMEOUT): a
    // campaign that timed out is made again, with the same lease, which
    // keeps this node's place in the election. Ending the round instead
    // would drop a lease that is alive, every few seconds on every node
    // that does not lead.
    let campaigner = client.clone();
    let campaign_once = || {
        let (mut campaigner, election, value) =
            (campaigner.clone(), election.to_owned(), value.clone());
        Box::pin(async move { campaigner.campaign(election, value, lease).await })
    };
    let mut campaign = campaign_once();
    let mut leading = false;
    let mut told: Option<Option<String>> = None;
    let mut tick = tokio::time::interval(ttl / 3);
    loop {
        tokio::select! {
            () = stop.cancelled() => {
                let _ = client.lease_revoke(lease).await;
                return Ok(());
            }
            won = &mut campaign, if !leading => match won {
                Ok(won) => {
                    let key = won.leader().map(|key| ElectionKey {
                        key: String::from_utf8_lossy(key.key()).into_owned(),
                        revision: key.rev(),
                        lease: key.lease(),
                    });
                    leading = true;
                    let _ = signals.send(Signal::Leading(me.describe(), key));
                }
                Err(etcd_client::Error::GRpcStatus(status))
                    if status.code() == tonic::Code::Cancelled =>
                {
                    campaign = campaign_once();
                }
                Err(error) => return Err(error),
            },
            _ = tick.tick() => {
                keeper.keep_alive().await?;
                match tokio::time::timeout(ttl, answers.message()).await {
                    Ok(Ok(Some(answer))) if answer.ttl() > 0 => {}
                    _ => {
                        return Err(etcd_client::Error::LeaseKeepAliveError(
                            "the lease expired or etcd did not answer".into(),
                        ));
                    }
                }
                if !leading {
                    let leader = match client.leader(election).await {
                        Ok(response) => response
                            .kv()
                            .and_then(|kv| serde_json::from_slice::<Candidate>(kv.value()).ok())
                            .map(|c| c.describe()),
                        Err(_) => None,
                    };
                    if told.as_ref() != Some(&leader) {
                        told = Some(leader.clone());
                        let _ = signals.send(Signal::Following(leader));
                    }
                }
            }
        }
    }
}
