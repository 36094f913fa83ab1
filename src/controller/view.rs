use serde::{Deserialize, Serialize};

use super::{Controller, PauseView};
use crate::error::Result;
use crate::metrics::{MinuteCounts, ReleaseSample, TcpSnapshot, WindowSummary};
use crate::model::{
    ComparePolicy, HttpsPolicy, PrefixRewrite, Protocol, Revision, Role, ServiceName,
    ShadowSettings, TrafficPolicy,
};
use crate::runtime::InstanceStatus;

/// A service as `ls` and the API show it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ServiceView {
    pub name: String,
    pub revision: u64,
    pub hosts: Vec<String>,
    pub main: Option<String>,
    pub releases: Vec<ReleaseView>,
    /// How shadows' answers are compared with main's.
    pub compare: ComparePolicy,
    /// Who reaches which release.
    pub policy: TrafficPolicy,
    /// The schema the service's database is at, when its releases declare
    /// schemas.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub schema: Option<String>,
    /// Set while an upgrade holds the service: `upgrade to VERSION: STATUS,
    /// step I/N FROM → TO`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub upgrading: Option<String>,
    /// Set while the service's new requests are held (`switchyard pause`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub paused: Option<PauseView>,
    /// Whether answers through its prefix get their links rewritten.
    #[serde(default)]
    pub rewrite: PrefixRewrite,
    /// Whether it has an error page of its own (`switchyard error-page`).
    #[serde(default)]
    pub error_page: bool,
    /// Redirect to HTTPS and HSTS (`switchyard https`).
    #[serde(default)]
    pub https: HttpsPolicy,
    /// What its clients speak.
    #[serde(default, skip_serializing_if = "Protocol::is_http")]
    pub protocol: Protocol,
    /// A TCP service's own listen address (`switchyard listen`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub listen: Option<std::net::SocketAddr>,
    /// How long a TCP connection to a release that left may stay open (ms).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tcp_drain_ms: Option<u64>,
}

/// A release of a service, with what its instances are doing.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ReleaseView {
    pub version: String,
    pub role: Role,
    /// When it took this role (unix ms).
    pub since: u64,
    /// `ready`, `starting`, `degraded`, `unhealthy`, `crash-loop`, `failed`,
    /// or `stopped` when it should run but does not.
    pub status: String,
    /// `process`, `container` or `external`.
    pub kind: String,
    pub instances: Vec<InstanceStatus>,
    /// How it is mirrored to while it is a shadow.
    pub shadow: ShadowSettings,
    /// Its own listen address, when pinned.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pinned: Option<std::net::SocketAddr>,
    /// A TCP release's connections and bytes since it started.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tcp: Option<TcpSnapshot>,
}

impl Controller {
    fn view(&self, revision: &Revision) -> ServiceView {
        let releases = revision
            .state
            .releases
            .iter()
            .map(|(version, entry)| {
                let handle = self
                    .runtime
                    .get(revision.service.as_str(), &version.to_string());
                let tcp = handle
                    .as_ref()
                    .filter(|h| h.release.spec.protocol.is_tcp())
                    .map(|h| h.backend.tcp.snapshot());
                let (status, kind, instances) = match handle {
                    Some(h) => {
                        let s = h.status();
                        let kind = h.release.spec.run.kind_name();
                        (s.phase().to_string(), kind.to_owned(), s.instances)
                    }
                    None => ("stopped".to_owned(), String::new(), Vec::new()),
                };
                ReleaseView {
                    version: version.to_string(),
                    role: entry.role,
                    since: entry.since,
                    status,
                    kind,
                    instances,
                    shadow: entry.shadow.clone(),
                    pinned: entry.pinned,
                    tcp,
                }
            })
            .collect();
        ServiceView {
            name: revision.service.to_string(),
            revision: revision.number,
            hosts: revision.state.hosts.iter().cloned().collect(),
            main: revision.state.main().map(|v| v.to_string()),
            releases,
            compare: revision.state.compare.clone(),
            policy: revision.state.policy.clone(),
            schema: revision.state.schema.as_ref().map(ToString::to_string),
            upgrading: self.active_upgrade(&revision.service).map(|u| {
                format!(
                    "upgrade to {}: {}{}",
                    u.to,
                    u.status,
                    u.current_step()
                        .map_or_else(String::new, |s| format!(", {s}"))
                )
            }),
            paused: self.pause_view(revision.service.as_str()),
            rewrite: revision.state.rewrite,
            error_page: revision.state.error_page.is_some(),
            https: revision.state.https,
            protocol: revision.state.protocol,
            listen: revision.state.listen,
            tcp_drain_ms: revision.state.tcp_drain_ms,
        }
    }

    /// Every service that has releases.
    pub fn services(&self) -> Vec<ServiceView> {
        let current: Vec<Revision> = self.current_map().values().cloned().collect();
        current
            .iter()
            .filter(|r| !r.state.releases.is_empty())
            .map(|r| self.view(r))
            .collect()
    }

    pub fn service(&self, service: &ServiceName) -> Result<ServiceView> {
        Ok(self.view(&self.require(service)?))
    }

    /// Every running release's numbers, for `/metrics`.
    pub fn release_samples(&self) -> Vec<ReleaseSample> {
        let current: Vec<Revision> = self.current_map().values().cloned().collect();
        let mut samples = Vec::new();
        for revision in &current {
            for (version, entry) in &revision.state.releases {
                let Some(handle) = self
                    .runtime
                    .get(revision.service.as_str(), &version.to_string())
                else {
                    continue;
                };
                samples.push(ReleaseSample {
                    service: revision.service.to_string(),
                    version: version.to_string(),
                    role: entry.role.to_string(),
                    metrics: handle.backend.metrics.snapshot(),
                    tcp: handle
                        .release
                        .spec
                        .protocol
                        .is_tcp()
                        .then(|| handle.backend.tcp.snapshot()),
                    in_flight: handle.backend.in_flight(),
                    healthy: handle.backend.healthy_count(),
                    instances: handle.release.spec.replicas as usize,
                });
            }
        }
        samples
    }

    /// The last minute of every release of a service, for `switchyard
    /// status`: the fleet's totals, and each live node's own numbers (its
    /// instances, and its last minute as it last reported it).
    pub fn status(&self, service: &ServiceName) -> Result<Vec<ReleaseStatusView>> {
        let revision = self.require(service)?;
        let others = if self.reports().shared() {
            self.reports().others().unwrap_or_else(|error| {
                tracing::warn!(%service, %error, "cannot read the other nodes' reports; status shows this node's numbers alone");
                Vec::new()
            })
        } else {
            Vec::new()
        };
        let this_node = self.reports().this_node().to_owned();
        Ok(revision
            .state
            .releases
            .iter()
            .map(|(version, entry)| {
                let handle = self.runtime.get(service.as_str(), &version.to_string());
                let key =
                    crate::fleet::ReleaseReadiness::key(service.as_str(), &version.to_string());
                let mut nodes = vec![NodeNumbers {
                    node: this_node.clone(),
                    healthy: handle.as_ref().map_or(0, |h| h.backend.healthy_count()),
                    instances: handle
                        .as_ref()
                        .map_or(0, |h| h.release.spec.replicas as usize),
                    minute: handle
                        .as_ref()
                        .map(|h| h.backend.metrics.minute_counts())
                        .unwrap_or_default(),
                }];
                for other in &others {
                    let readiness = other.releases.get(&key);
                    nodes.push(NodeNumbers {
                        node: other.node.clone(),
                        healthy: readiness.map_or(0, |r| r.healthy as usize),
                        instances: readiness.map_or(0, |r| r.expected as usize),
                        minute: other
                            .traffic
                            .get(&key)
                            .map(|t| t.minute.clone())
                            .unwrap_or_default(),
                    });
                }
                ReleaseStatusView {
                    version: version.to_string(),
                    role: entry.role,
                    canary_percent: revision
                        .state
                        .policy
                        .canary
                        .as_ref()
                        .filter(|c| &c.version == version)
                        .map(|c| c.percent),
                    healthy: nodes.iter().map(|n| n.healthy).sum(),
                    instances: nodes.iter().map(|n| n.instances).sum(),
                    tcp: handle
                        .as_ref()
                        .filter(|h| h.release.spec.protocol.is_tcp())
                        .map(|h| h.backend.tcp.snapshot()),
                    last_minute: crate::fleet::fleet_minute(nodes.iter().map(|n| &n.minute))
                        .summary(),
                    nodes: nodes.into_iter().map(NodeNumbers::into_row).collect(),
                }
            })
            .collect())
    }
}

/// One release in `switchyard status`: the fleet's totals (a single
/// serve's own numbers), and each node's in `nodes`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ReleaseStatusView {
    pub version: String,
    pub role: Role,
    pub canary_percent: Option<u8>,
    /// Healthy instances on every live node together.
    pub healthy: usize,
    pub instances: usize,
    /// The last minute through every live node together.
    pub last_minute: WindowSummary,
    /// Each live node's instances and last minute (this node first).
    #[serde(default)]
    pub nodes: Vec<ReleaseOnNodeView>,
    /// A TCP release's connections and bytes since it started.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tcp: Option<TcpSnapshot>,
}

/// One release on one node, in `switchyard status --nodes`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ReleaseOnNodeView {
    pub node: String,
    pub healthy: usize,
    pub instances: usize,
    pub last_minute: WindowSummary,
}

/// One node's numbers of a release, before they are summed up.
struct NodeNumbers {
    node: String,
    healthy: usize,
    instances: usize,
    minute: MinuteCounts,
}

impl NodeNumbers {
    fn into_row(self) -> ReleaseOnNodeView {
        ReleaseOnNodeView {
            last_minute: self.minute.summary(),
            node: self.node,
            healthy: self.healthy,
            instances: self.instances,
        }
    }
}
