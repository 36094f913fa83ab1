//! The state Switchyard keeps, behind two traits, so that the embedded
//! SQLite file and a fleet store (etcd, `EtcdStore` with the `etcd`
//! feature) are interchangeable:
//!
//! - [`ServiceStore`]: the desired state of the services (revisions,
//!   registered releases, rollouts, upgrades, pauses, events); what every
//!   node of a fleet shares.
//! - [`NodeStore`]: what one node keeps for itself: where the instances it
//!   runs are (pids, ports) and its shadows' counts.
//!
//! Every change of a service is a [`Commit`]: the releases it registers and
//! the revision it makes, written together or not at all. A commit names the
//! revision number it creates; when that number is not current + 1 the store
//! refuses it with [`StoreError::Conflict`] (compare-and-swap on revision).
//!
//! Both traits are synchronous and called only from the control plane: the
//! controller and the runtime's instance tasks, on serve's admin thread.
//! The data plane (proxy, routing, backend) never reaches the store; it
//! reads the compiled routing table and the instances' slots. A store call
//! that waits therefore delays other changes and health checks, never
//! client traffic.

mod copy;
#[cfg(feature = "etcd")]
mod etcd;
pub mod fence;
#[cfg(feature = "etcd")]
mod last_reads;
mod location;
mod migrations;
mod sqlite;
mod state_dir;

pub use copy::{CopyReport, copy};
#[cfg(feature = "etcd")]
pub use etcd::{EtcdClients, EtcdStore};
pub use fence::Fence;
pub use location::{EtcdLocation, StoreLocation};
pub use migrations::LATEST as SCHEMA_VERSION;
pub use sqlite::SqliteStore;
pub use state_dir::{LOCK_FILE, StateDir};

use crate::model::{Event, Release, Revision, RolloutState, ServiceName, UpgradeState};

/// A change to write atomically.
#[derive(Debug, Clone)]
pub struct Commit {
    /// Releases to register (already registered identical ones are kept).
    pub releases: Vec<Release>,
    pub revision: Revision,
}

/// Where a running instance was, so that a restarted serve can adopt it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InstanceRecord {
    pub service: String,
    pub version: String,
    pub slot: u32,
    pub pid: u32,
    /// Process start time in clock ticks since boot (`/proc/PID/stat`),
    /// which tells a reused pid from the process we started.
    pub start_ticks: u64,
    pub port: u16,
}

/// A node of the fleet as it describes itself under its lease.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct NodeRecord {
    pub name: String,
    /// The proxy's address clients reach it at.
    pub proxy: String,
    /// The admin API's address.
    pub admin: String,
    /// The Switchyard version it runs.
    pub version: String,
    /// When it started (unix ms).
    pub started_at: u64,
    /// When its current lease was granted (unix ms).
    pub lease_granted_at: u64,
    /// The lease's time to live (seconds).
    pub lease_ttl: u64,
}

/// A paused service, so that a restarted serve holds its traffic again.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PauseRecord {
    pub service: String,
    /// How long one request may be held before it gets 503.
    pub max_hold_ms: u64,
    /// When the service was paused (unix ms).
    pub since: u64,
}

/// A certificate kept for TLS: PEM text as given, by the host pattern it
/// serves (`app.example.com`, `*.example.com`, or `*` for the default).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertificateRecord {
    pub host: String,
    pub cert_pem: String,
    pub key_pem: String,
    /// `file` or `acme`.
    pub source: String,
    /// When it was stored (unix ms).
    pub updated_at: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error(
        "the service changed meanwhile: its revision is now {current}; look again (`switchyard ls`) and retry"
    )]
    Conflict { current: u64 },
    #[error(
        "release {service} {version} is already registered with another spec; releases are immutable, deploy a new version"
    )]
    ReleaseMismatch { service: String, version: String },
    #[error(
        "the store {store} cannot be reached ({cause}); nothing was changed. Check that it runs and that this node reaches it, then retry"
    )]
    Unreachable { store: String, cause: String },
    #[error("the store {store} refused the request: {cause}")]
    Refused { store: String, cause: String },
    #[error(
        "this node does not lead the fleet any more (the election key {key} it held is gone, its lease lost while it could not reach the store); nothing was written: the node that leads now goes on from the stored state. See `switchyard nodes`"
    )]
    Fenced { key: String },
    #[error("state database error: {0}")]
    Database(#[from] rusqlite::Error),
    #[error("state database holds unreadable data: {0}")]
    Corrupt(#[from] serde_json::Error),
    #[error("cannot open the state directory {path}: {source}")]
    Open {
        path: String,
        source: std::io::Error,
    },
    #[error(
        "the state directory {path} is in use by another serve ({holder}); stop that serve first, or give this one its own --state-dir"
    )]
    InUse { path: String, holder: String },
    #[error("cannot lock the state directory with {path}: {source}")]
    Lock {
        path: String,
        source: std::io::Error,
    },
    #[error(
        "the state database {path} is empty, yet a serve used this directory before (it holds {signs}): its state is lost, not new. \
         Restore the file from a backup; or, if nothing in it is needed, remove it and start serve again with an empty state"
    )]
    EmptyDatabase { path: String, signs: String },
    #[error(
        "the state database {path} is at schema version {found}, written by a newer Switchyard (this one knows up to {known}); run that newer serve, or restore a backup this one wrote"
    )]
    NewerSchema {
        path: String,
        found: u32,
        known: u32,
    },
}

impl crate::error_kind::Classify for StoreError {
    fn kind(&self) -> crate::error_kind::ErrorKind {
        use crate::error_kind::ErrorKind;
        match self {
            StoreError::Conflict { .. } | StoreError::ReleaseMismatch { .. } => ErrorKind::Conflict,
            StoreError::Unreachable { .. } => ErrorKind::Unavailable,
            StoreError::Fenced { .. } => ErrorKind::Conflict,
            _ => ErrorKind::Internal,
        }
    }

    fn current_revision(&self) -> Option<u64> {
        match self {
            StoreError::Conflict { current } => Some(*current),
            _ => None,
        }
    }
}

pub type StoreResult<T> = std::result::Result<T, StoreError>;

/// The desired state of the services, which every node of a fleet shares.
pub trait ServiceStore: Send + Sync + 'static {
    /// Since when (unix ms) the store cannot be reached, while it cannot:
    /// reads then answer what this node read last, which may be stale. A
    /// store on this machine is never unreachable.
    fn unreachable_since(&self) -> Option<u64> {
        None
    }

    /// The newest revision of every service ever deployed.
    fn current_revisions(&self) -> StoreResult<Vec<Revision>>;
    fn current_revision(&self, service: &ServiceName) -> StoreResult<Option<Revision>>;
    fn revision(&self, service: &ServiceName, number: u64) -> StoreResult<Option<Revision>>;
    /// Revisions newest first, at most `limit`.
    fn history(&self, service: &ServiceName, limit: usize) -> StoreResult<Vec<Revision>>;
    fn release(
        &self,
        service: &ServiceName,
        version: &semver::Version,
    ) -> StoreResult<Option<Release>>;
    fn commit(&self, commit: &Commit) -> StoreResult<()>;
    /// Registers a release without a revision (nothing runs). Returns
    /// false when an identical one was registered already; another spec
    /// under the same version is [`StoreError::ReleaseMismatch`].
    fn register_release(&self, release: &Release) -> StoreResult<bool>;
    /// Forgets a registered release (the controller checked that no
    /// revision has it). Returns false when it was not registered.
    fn unregister_release(
        &self,
        service: &ServiceName,
        version: &semver::Version,
    ) -> StoreResult<bool>;
    /// Every registered release of a service, oldest version first.
    fn releases(&self, service: &ServiceName) -> StoreResult<Vec<Release>>;

    /// Keeps a rollout's progress (one per service).
    fn save_rollout(&self, rollout: &RolloutState) -> StoreResult<()>;
    fn rollouts(&self) -> StoreResult<Vec<RolloutState>>;

    /// Keeps the latest upgrade of a service (one per service).
    fn save_upgrade(&self, upgrade: &UpgradeState) -> StoreResult<()>;
    fn upgrades(&self) -> StoreResult<Vec<UpgradeState>>;
    /// The latest upgrade of one service.
    fn upgrade(&self, service: &str) -> StoreResult<Option<UpgradeState>>;

    /// Keeps a service's pause (one per service) until [`ServiceStore::delete_pause`].
    fn save_pause(&self, pause: &PauseRecord) -> StoreResult<()>;
    fn delete_pause(&self, service: &str) -> StoreResult<()>;
    /// Every paused service.
    fn pauses(&self) -> StoreResult<Vec<PauseRecord>>;

    /// Keeps a certificate (one per host pattern, replacing the last).
    fn save_certificate(&self, certificate: &CertificateRecord) -> StoreResult<()>;
    fn delete_certificate(&self, host: &str) -> StoreResult<()>;
    /// Every stored certificate, by host.
    fn certificates(&self) -> StoreResult<Vec<CertificateRecord>>;

    /// Keeps what serve orders from an ACME CA for a host (JSON), so that
    /// it renews it; one per host.
    fn save_acme_order(&self, host: &str, json: &str) -> StoreResult<()>;
    fn delete_acme_order(&self, host: &str) -> StoreResult<()>;
    /// Every ACME order kept, as `(host, json)`.
    fn acme_orders(&self) -> StoreResult<Vec<(String, String)>>;
    /// The ACME account (credentials JSON) used with a CA directory, shared
    /// by every serve of the store.
    fn save_acme_account(&self, directory: &str, credentials: &str) -> StoreResult<()>;
    fn acme_account(&self, directory: &str) -> StoreResult<Option<String>>;
    /// Keeps the answer to a pending HTTP-01 challenge (its key
    /// authorization, by token) while the order runs, so that every node
    /// of a fleet answers the CA, whichever node the CA reaches. A store
    /// that one serve has to itself keeps none: that serve answers from
    /// memory.
    fn save_acme_challenge(&self, token: &str, key_authorization: &str) -> StoreResult<()> {
        let _ = (token, key_authorization);
        Ok(())
    }
    fn delete_acme_challenge(&self, token: &str) -> StoreResult<()> {
        let _ = token;
        Ok(())
    }
    /// Every pending HTTP-01 challenge kept, as `(token, key authorization)`.
    fn acme_challenges(&self) -> StoreResult<Vec<(String, String)>> {
        Ok(Vec::new())
    }

    /// Notes that the events up to `id` were posted to the webhooks, where
    /// a fleet's leader posts them from (under the fence of the leader's
    /// work running now). A store one serve has to itself keeps no note:
    /// that serve posts each event as it records it.
    fn set_webhooks_posted(&self, id: u64) -> StoreResult<()> {
        let _ = id;
        Ok(())
    }

    /// Records an event and returns it with its id.
    fn add_event(
        &self,
        service: &str,
        kind: &str,
        message: &str,
        detail: serde_json::Value,
    ) -> StoreResult<Event>;
    /// A service's events, newest first.
    fn events(&self, service: &str, limit: usize) -> StoreResult<Vec<Event>>;
}

/// What one node keeps for itself: the instances it runs, so that a
/// restarted serve adopts them, and its shadows' summary counts.
pub trait NodeStore: Send + Sync + 'static {
    fn record_instance(&self, record: &InstanceRecord) -> StoreResult<()>;
    fn forget_instance(&self, service: &str, version: &str, slot: u32, pid: u32)
    -> StoreResult<()>;
    fn instances(&self) -> StoreResult<Vec<InstanceRecord>>;

    /// Keeps a shadow's summary counts (JSON) across restarts.
    fn save_shadow_stats(&self, service: &str, version: &str, json: &str) -> StoreResult<()>;
    /// Every saved shadow summary: (service, version, JSON).
    fn shadow_stats(&self) -> StoreResult<Vec<(String, String, String)>>;

    /// Keeps an ended window of a shadow's report (JSON).
    fn add_shadow_window(&self, service: &str, version: &str, json: &str) -> StoreResult<()>;
    /// Ended windows of a service's shadow reports (one version, or every
    /// one), newest first, at most `limit`.
    fn shadow_windows(
        &self,
        service: &str,
        version: Option<&str>,
        limit: usize,
    ) -> StoreResult<Vec<String>>;
}
