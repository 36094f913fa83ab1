//! The release lifecycle: deploy → ready → role → assign / kill / rollback.
//!
//! The [`Controller`] coordinates parts that own their state, each in its
//! own file with its own lock: the services' revisions and change locks
//! (`change`), releases being deployed (`deploy`), pauses (`pause`), pinned
//! addresses (`pin`), shadow mirrors (`mirrors`), shadow counts (`shadow`),
//! the publication of routing tables (`publication`); and, leader only
//! ([`LeaderOnly`]), rollouts, upgrades (with their hooks) and event
//! webhooks. Parts that run tasks stop them when they drop.
//!
//! Every change of a service goes through one transaction,
//! `Controller::change` (in `change`): work that takes time (starting
//! instances, waiting for readiness) happens first, outside any lock; then,
//! under the service's lock, the change is checked against the current
//! revision, validated, committed to the store as a new revision, and the
//! routing table is recompiled and swapped. Releases that leave are drained
//! after the swap. A change that fails leaves state and routing as they were.

mod assign;
mod change;
mod deploy;
mod events;
mod follow;
mod hook;
mod kill;
mod leader;
mod mirrors;
mod pause;
mod pin;
mod policy;
mod publication;
mod readiness;
mod registry;
mod restore;
mod rollback;
mod rollout;
mod settings;
mod shadow;
mod tcp;
mod upgrade;
mod view;

pub use deploy::DeployRequest;
pub use events::{Notifier, post as post_event, webhook_client};
pub use hook::HookError;
pub use leader::{LeaderOnly, LeaderState, Leadership};
pub use pause::{PauseRequest, PauseView, ResumeReport};
pub use publication::RoutesHeld;
pub use registry::{RegisterRequest, Registered, RegisteredView, RegistryError, Unregistered};
pub use rollout::{HandChange, RolloutView};
pub use shadow::ShadowLedger;
pub use upgrade::UpgradeRequest;
pub use view::{ReleaseOnNodeView, ReleaseStatusView, ReleaseView, ServiceView};

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use crate::error::{Classify, ErrorKind, Result};
use crate::model::{ModelError, Release, Revision, ServiceName, ServiceState, now_millis};
use crate::proxy::{Backend, MirrorSettings, SharedPauses, SharedTable};
use crate::routing::{ApiRouting, CompiledPolicy, RoutingTable, Served, ServiceRoutes};
use crate::runtime::{LogChunk, Runtime};
use crate::store::{Commit, NodeStore, ServiceStore};

#[derive(Debug, thiserror::Error)]
pub enum ControllerError {
    #[error(
        "{service} changed meanwhile: you based this on revision {given}, the current one is {current}. Look again (`switchyard ls`) and retry"
    )]
    StaleRevision {
        service: String,
        given: u64,
        current: u64,
    },
    #[error("{service} {version} is being deployed right now; wait for that deploy to finish")]
    DeployInProgress { service: String, version: String },
    #[error(
        "refusing to send traffic to {service} {version}: it is {phase} ({detail}); wait until every instance is healthy"
    )]
    NotHealthy {
        service: String,
        version: String,
        phase: String,
        detail: String,
    },
    #[error(
        "{service} {version} failed on node {node}: {why}; it receives no traffic. Fix what that node lacks (its last log lines below) and deploy again.\n{logs}"
    )]
    FailedOnNode {
        service: String,
        version: String,
        node: String,
        why: String,
        logs: String,
    },
    #[error(
        "refusing to send traffic to {service} {version}: it is not ready on every node of the fleet ({nodes}); wait until it is (`switchyard nodes` shows each node's releases)"
    )]
    NotReadyEverywhere {
        service: String,
        version: String,
        nodes: String,
    },
    #[error(
        "{service} {version} was not ready on every node of the fleet within {waited}: {nodes}. `switchyard nodes` shows each node's releases"
    )]
    NotReadyInTime {
        service: String,
        version: String,
        waited: String,
        nodes: String,
    },
    #[error(
        "{service} has no revision {number}; `switchyard history {service}` lists revisions 1 to {latest}"
    )]
    UnknownRevision {
        service: String,
        number: u64,
        latest: u64,
    },
    #[error("{service} is already at revision {number}; nothing to roll back")]
    NothingToRollBack { service: String, number: u64 },
    #[error(
        "{service} already has a rollout of {version} running; `switchyard rollout abort {service}` first"
    )]
    RolloutRunning { service: String, version: String },
    #[error(
        "{0} has no rollout running; start one with `switchyard rollout {0} VERSION --steps …`"
    )]
    NoRollout(String),
    #[error("the rollout of {0} is not paused")]
    NotPaused(String),
    #[error("{service} has a rollout of {version} running, {what}; {instead}")]
    RolloutInTheWay {
        service: String,
        version: String,
        what: String,
        instead: String,
    },
    #[error("the rollout of {service} is paused already ({reason})")]
    RolloutPaused { service: String, reason: String },
    #[error(
        "the last rollout of {service} ({version}) ended with {version} as main; nothing to retry. Start a new one with `switchyard rollout {service} VERSION --steps …`"
    )]
    NothingToRetry { service: String, version: String },
    #[error("release {service} {version} is not in the store; it cannot be started again")]
    MissingRelease { service: String, version: String },
    #[error(
        "{0} is being upgraded right now; follow it with `switchyard upgrade {0} --status`, or stop it with `switchyard upgrade {0} --abort`"
    )]
    UpgradeInProgress(String),
    #[error("{0} has no upgrade running; start one with `switchyard upgrade {0} --to VERSION`")]
    NoUpgrade(String),
    #[error(
        "the upgrade of {service} is not waiting between steps (it is {doing}); `--continue` goes on after a step when the upgrade was started with --approve or --wait"
    )]
    UpgradeNotWaiting { service: String, doing: String },
    #[error("{0}")]
    StepFailed(String),
    #[error(
        "{service} {version} cannot run against schema {schema}, where {service}'s database is (it runs on {runs_on}); move the schema first: `switchyard upgrade {service} --to {version}` or a rollback runs the migrations"
    )]
    WrongSchema {
        service: String,
        version: String,
        schema: String,
        runs_on: String,
    },
    #[error("cannot roll {service} back to revision {number}: {reason}")]
    CannotRollBack {
        service: String,
        number: u64,
        reason: String,
    },
    #[error("{0} is paused already; `switchyard resume {0}` lets its traffic go")]
    AlreadyPaused(String),
    #[error("nothing to resume: {0} is not paused and has no paused rollout")]
    NothingToResume(String),
    #[error("the maximum hold must be more than zero and at most 1h, e.g. 30s")]
    BadHold,
    #[error("cannot listen on {0}: {1}; pick another port")]
    PinBind(std::net::SocketAddr, String),
    #[error(
        "{what} run on the node that leads the fleet, and this one does not: {leader} leads. Run it against that node's admin API"
    )]
    NotLeader { what: String, leader: String },
    #[error(transparent)]
    Hook(HookError),
    #[error(
        "the upgrade of {service} stopped at {step}: {reason}. {service} stays at the last good step (main {main}); steps before it are done"
    )]
    UpgradeStopped {
        service: String,
        step: String,
        main: String,
        reason: String,
    },
}

impl From<ControllerError> for crate::Error {
    fn from(e: ControllerError) -> Self {
        crate::Error::part(e)
    }
}

impl Classify for ControllerError {
    fn current_revision(&self) -> Option<u64> {
        match self {
            ControllerError::StaleRevision { current, .. } => Some(*current),
            _ => None,
        }
    }

    fn kind(&self) -> ErrorKind {
        match self {
            ControllerError::StaleRevision { .. }
            | ControllerError::DeployInProgress { .. }
            | ControllerError::NotHealthy { .. }
            | ControllerError::NotReadyEverywhere { .. }
            | ControllerError::NothingToRollBack { .. }
            | ControllerError::RolloutRunning { .. }
            | ControllerError::NotPaused(_)
            | ControllerError::RolloutInTheWay { .. }
            | ControllerError::RolloutPaused { .. }
            | ControllerError::NothingToRetry { .. }
            | ControllerError::UpgradeInProgress(_)
            | ControllerError::UpgradeNotWaiting { .. }
            | ControllerError::WrongSchema { .. }
            | ControllerError::CannotRollBack { .. }
            | ControllerError::AlreadyPaused(_)
            | ControllerError::NothingToResume(_) => ErrorKind::Conflict,
            ControllerError::BadHold => ErrorKind::BadRequest,
            ControllerError::PinBind(..) | ControllerError::NotLeader { .. } => ErrorKind::Conflict,
            ControllerError::Hook(_)
            | ControllerError::FailedOnNode { .. }
            | ControllerError::NotReadyInTime { .. }
            | ControllerError::UpgradeStopped { .. }
            | ControllerError::StepFailed(_) => ErrorKind::Unprocessable,
            ControllerError::UnknownRevision { .. }
            | ControllerError::NoRollout(_)
            | ControllerError::NoUpgrade(_) => ErrorKind::NotFound,
            ControllerError::MissingRelease { .. } => ErrorKind::Internal,
        }
    }
}

pub struct Controller {
    /// The services' desired state (shared by a fleet).
    store: Arc<dyn ServiceStore>,
    /// What this node keeps for itself: instance records, shadow counts.
    node_store: Arc<dyn NodeStore>,
    runtime: Runtime,
    /// Where compiled routing tables go (to the proxy, unless held).
    routes: publication::Publication,
    /// Paused services' gates, shared with the proxy.
    pauses: pause::Pauses,
    /// Pinned addresses and their listeners.
    pins: pin::Pins,
    /// TCP services' listeners and the connections they forwarded.
    tcp: tcp::TcpListeners,
    /// The current revision of every service and its change lock.
    revisions: change::Revisions,
    /// Releases being deployed right now.
    deploying: deploy::Deploying,
    /// Changes of other nodes being followed, one at a time per service.
    following: follow::Following,
    shadows: ShadowLedger,
    /// Each mirrored shadow's mirror.
    mirrors: mirrors::Mirrors,
    /// Posts events to webhooks (leader only).
    notifier: LeaderOnly<Notifier>,
    /// Rollouts driven by this serve (leader only).
    rollouts: LeaderOnly<rollout::Rollouts>,
    /// Upgrades running in this serve (leader only).
    upgrades: LeaderOnly<upgrade::Upgrades>,
    /// Whether this node leads: the switch of the three parts above.
    leadership: Leadership,
    /// What the fleet's other live nodes report (none for a serve alone).
    reports: std::sync::OnceLock<Arc<dyn crate::fleet::Reports>>,
    /// Told after every committed revision (serve: ACME orders for new
    /// host names of services marked for automatic certificates).
    on_commit: std::sync::OnceLock<Box<dyn Fn() + Send + Sync>>,
}

impl Controller {
    pub fn new(
        store: Arc<dyn ServiceStore>,
        node_store: Arc<dyn NodeStore>,
        runtime: Runtime,
        table: SharedTable,
        pauses: SharedPauses,
        mirror_settings: MirrorSettings,
        notifier: Notifier,
    ) -> Self {
        Self::with_leadership(
            store,
            node_store,
            runtime,
            table,
            pauses,
            mirror_settings,
            notifier,
            Leadership::single(),
        )
    }

    /// A controller whose leader-only parts follow `leadership` (a node of
    /// a fleet).
    #[allow(clippy::too_many_arguments)]
    pub fn with_leadership(
        store: Arc<dyn ServiceStore>,
        node_store: Arc<dyn NodeStore>,
        runtime: Runtime,
        table: SharedTable,
        pauses: SharedPauses,
        mirror_settings: MirrorSettings,
        notifier: Notifier,
        leadership: Leadership,
    ) -> Self {
        Self {
            store,
            node_store,
            runtime,
            routes: publication::Publication::new(table),
            pauses: pause::Pauses::new(pauses),
            pins: pin::Pins::default(),
            tcp: tcp::TcpListeners::default(),
            revisions: change::Revisions::default(),
            deploying: deploy::Deploying::default(),
            following: follow::Following::default(),
            shadows: ShadowLedger::default(),
            mirrors: mirrors::Mirrors::new(mirror_settings),
            notifier: LeaderOnly::new(notifier, leadership.clone()),
            rollouts: LeaderOnly::new(rollout::Rollouts::default(), leadership.clone()),
            upgrades: LeaderOnly::new(upgrade::Upgrades::default(), leadership.clone()),
            leadership,
            reports: std::sync::OnceLock::new(),
            on_commit: std::sync::OnceLock::new(),
        }
    }

    /// Since when (unix ms) the store cannot be reached, while it cannot:
    /// what this node answers may be stale meanwhile.
    pub fn store_unreachable_since(&self) -> Option<u64> {
        self.store.unreachable_since()
    }

    /// Whether this node leads (a single serve always does).
    pub fn leadership(&self) -> &Leadership {
        &self.leadership
    }

    /// Refuses work only the leading node does (rollouts, upgrades) on a
    /// node that does not lead, naming the one that does.
    fn ensure_leading(&self, what: &str) -> Result<()> {
        let state = self.leadership.state();
        if state.leading {
            return Ok(());
        }
        Err(ControllerError::NotLeader {
            what: what.to_owned(),
            leader: state.leader.unwrap_or_else(|| {
                "no node (an election is under way; retry in a few seconds)".to_owned()
            }),
        }
        .into())
    }

    /// Calls `hook` after every revision this node takes, committed here
    /// or followed from the fleet (set once).
    pub fn set_on_commit(&self, hook: Box<dyn Fn() + Send + Sync>) {
        let _ = self.on_commit.set(hook);
    }

    /// The host names of services marked for automatic certificates, and
    /// where each service orders them.
    pub fn auto_certificate_hosts(&self) -> Vec<(String, crate::model::AutoCertificates)> {
        let current = self.current_map();
        let mut hosts = Vec::new();
        for revision in current.values() {
            if let Some(auto) = &revision.state.certificates {
                for host in &revision.state.hosts {
                    hosts.push((host.clone(), auto.clone()));
                }
            }
        }
        hosts
    }

    pub fn runtime(&self) -> &Runtime {
        &self.runtime
    }

    /// Keeps the proxy on the routing table it has until the returned
    /// hold drops; the tables compiled meanwhile wait, and the latest is
    /// published then.
    pub fn hold_routes(&self) -> publication::RoutesHeld<'_> {
        publication::RoutesHeld::new(&self.routes)
    }

    fn current_map(&self) -> std::sync::MutexGuard<'_, BTreeMap<ServiceName, Revision>> {
        self.revisions.map()
    }

    /// The service's current revision, if it was ever deployed.
    pub fn current(&self, service: &ServiceName) -> Option<Revision> {
        self.current_map().get(service).cloned()
    }

    fn require(&self, service: &ServiceName) -> Result<Revision> {
        self.current(service)
            .ok_or_else(|| ModelError::UnknownService(service.to_string()).into())
    }

    /// Refuses to send traffic to a release unless every instance is
    /// healthy, here and on every other live node of the fleet.
    fn ensure_ready(&self, service: &ServiceName, version: &semver::Version) -> Result<()> {
        let handle = self
            .runtime
            .get(service.as_str(), &version.to_string())
            .ok_or_else(|| ModelError::UnknownRelease {
                service: service.to_string(),
                version: version.to_string(),
                known: "it is not running".into(),
            })?;
        let status = handle.status();
        let phase = status.phase();
        if phase != crate::runtime::ReleasePhase::Ready {
            return Err(ControllerError::NotHealthy {
                service: service.to_string(),
                version: version.to_string(),
                phase: phase.to_string(),
                detail: status.health_summary(),
            }
            .into());
        }
        self.ensure_ready_everywhere(service, version)
    }

    fn check_base(service: &ServiceName, current: u64, base: Option<u64>) -> Result<()> {
        match base {
            Some(given) if given != current => Err(ControllerError::StaleRevision {
                service: service.to_string(),
                given,
                current,
            }
            .into()),
            _ => Ok(()),
        }
    }

    /// Refuses host names that already route to another service.
    fn check_hosts(&self, service: &ServiceName, state: &ServiceState) -> Result<()> {
        let current = self.current_map();
        for (other, revision) in current.iter().filter(|(n, _)| *n != service) {
            if let Some(host) = state.hosts.intersection(&revision.state.hosts).next() {
                return Err(ModelError::HostTaken {
                    host: host.clone(),
                    owner: other.to_string(),
                }
                .into());
            }
        }
        Ok(())
    }

    /// Writes a new revision (and the releases it registers), then swaps
    /// the routing table. Call with the service's lock held.
    fn commit(
        &self,
        service: &ServiceName,
        previous: Option<&Revision>,
        state: ServiceState,
        action: String,
        actor: &str,
        releases: Vec<Release>,
    ) -> Result<Revision> {
        let revision = Revision {
            service: service.clone(),
            number: previous.map_or(1, |r| r.number + 1),
            at: now_millis(),
            action,
            actor: actor.to_owned(),
            state,
        };
        self.store.commit(&Commit {
            releases,
            revision: revision.clone(),
        })?;
        tracing::info!(service = %service, revision = revision.number, action = %revision.action, actor, "committed");
        self.current_map().insert(service.clone(), revision.clone());
        self.recompile();
        self.committed();
        Ok(revision)
    }

    /// Tells the hook set with [`Controller::set_on_commit`] that a
    /// revision was taken (committed here, or followed from the fleet).
    fn committed(&self) {
        if let Some(hook) = self.on_commit.get() {
            hook();
        }
    }

    /// Builds a routing table from the current revisions and the running
    /// releases, and swaps it in.
    fn recompile(&self) {
        let current = self.current_map();
        let mut mirrors = self.mirrors.rebuild();
        let mut table = RoutingTable::new();
        for (name, revision) in current.iter() {
            let mut routes = ServiceRoutes {
                name: name.to_string(),
                main: None,
                versions: HashMap::new(),
                shadows: Vec::new(),
                policy: None,
                api: None,
                rewrite: revision.state.rewrite.is_on(),
                error_page: revision.state.error_page.clone().map(Arc::new),
                https: revision.state.https,
                tcp: revision.state.protocol.is_tcp(),
            };
            for (version, shadow) in revision.state.mirrored() {
                let key = (name.to_string(), version.to_string());
                let Some(handle) = self.runtime.get(&key.0, &key.1) else {
                    continue;
                };
                let mirror = mirrors.mirror(
                    key,
                    &handle.backend,
                    shadow,
                    &revision.state.compare,
                    || self.shadows.stats(name.as_str(), &version.to_string()),
                );
                routes.shadows.push(mirror);
            }
            let mut served = Vec::new();
            for (version, entry) in &revision.state.releases {
                let version = version.to_string();
                if let Some(handle) = self.runtime.get(name.as_str(), &version) {
                    if entry.role == crate::model::Role::Main {
                        routes.main = Some(Arc::clone(&handle.backend));
                    }
                    served.push(Served {
                        version: version.clone(),
                        api_versions: handle.release.spec.versioning.api_versions.clone(),
                        backend: Arc::clone(&handle.backend),
                    });
                    routes.versions.insert(version, Arc::clone(&handle.backend));
                }
            }
            routes.policy = self.compile_policy(name, revision, &routes.versions);
            routes.api = ApiRouting::compile(
                name.as_str(),
                &revision.state.api_version,
                revision.state.main().map(ToString::to_string),
                served,
                |a, b| {
                    let v = |s: &str| semver::Version::parse(s).ok();
                    v(b).cmp(&v(a))
                },
            );
            table.insert(routes, revision.state.hosts.iter().cloned());
        }
        mirrors.finish();
        self.routes.publish(Arc::new(table));
        drop(current);
        self.reconcile_pins();
        self.reconcile_tcp();
    }

    /// The service's policy for the proxy (always: even with no rule and no
    /// candidate, `x-client-mode: green` must be told there is none).
    fn compile_policy(
        &self,
        name: &ServiceName,
        revision: &Revision,
        versions: &HashMap<String, Arc<Backend>>,
    ) -> Option<CompiledPolicy<Backend>> {
        let compiled = CompiledPolicy::compile(
            name.as_str(),
            &revision.state.policy,
            &revision.state.api_version,
            |v| versions.get(&v.to_string()).cloned(),
        );
        match compiled {
            Ok(p) => Some(p),
            Err(error) => {
                // Validated when it was set; if it cannot compile now, main
                // keeps answering rather than nothing.
                tracing::error!(service = %name, %error, "traffic policy does not compile; routing to main");
                None
            }
        }
    }

    /// Revisions of a service, newest first.
    pub fn history(&self, service: &ServiceName, limit: usize) -> Result<Vec<Revision>> {
        self.require(service)?;
        Ok(self.store.history(service, limit)?)
    }

    /// Log lines of a release: the last `lines` of each instance, or with
    /// `after` (slot → offset) the lines written since.
    pub fn logs(
        &self,
        service: &ServiceName,
        version: &str,
        lines: usize,
        after: &BTreeMap<u32, u64>,
    ) -> Result<Vec<LogChunk>> {
        let version = crate::model::parse_version(version)?;
        let logs = crate::runtime::LogFiles::new(
            &self.runtime.settings().state_dir,
            service.as_str(),
            &version.to_string(),
        );
        let slots = logs.slots();
        if slots.is_empty() {
            let known = self.store.release(service, &version)?.is_some();
            if !known {
                return Err(ModelError::UnknownRelease {
                    service: service.to_string(),
                    version: version.to_string(),
                    known: "see `switchyard ls`".into(),
                }
                .into());
            }
        }
        let mut chunks = Vec::new();
        for slot in slots {
            let chunk = match after.get(&slot) {
                Some(offset) => logs.since(slot, *offset),
                None => logs.tail(slot, lines),
            };
            chunks.push(chunk.map_err(|e| crate::runtime::RuntimeError::Logs {
                release: format!("{service} {version}"),
                cause: e.to_string(),
            })?);
        }
        Ok(chunks)
    }

    /// Stops every release (serve is shutting down).
    pub async fn shutdown(&self) {
        self.runtime.stop_all().await;
    }
}
