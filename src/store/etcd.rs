//! The fleet's store: the services' desired state in an etcd cluster that
//! every node of a fleet shares (`serve --store etcd://…`).
//!
//! [`ServiceStore`] is synchronous and called only on the control plane's
//! thread. The etcd client is async, so this store owns a small runtime on
//! a thread of its own: each call runs there and the caller waits for it,
//! bounded by [`CALL_TIMEOUT`]. An unreachable etcd is then an error that
//! names the store ([`StoreError::Unreachable`], 503 to the admin API),
//! never a control plane stuck for good; the data plane never waits for it.
//!
//! Keys, under the prefix `P`:
//!
//! | key | value |
//! |---|---|
//! | `P/head/SERVICE` | the service's current revision (JSON) |
//! | `P/revision/SERVICE/NUMBER` | every revision (JSON; number zero-padded) |
//! | `P/release/SERVICE/VERSION` | a registered release (JSON) |
//! | `P/rollout/SERVICE`, `P/upgrade/SERVICE`, `P/pause/SERVICE` | their state (JSON) |
//! | `P/certificate/HOST`, `P/acme/order/HOST`, `P/acme/account/DIRECTORY` | TLS |
//! | `P/acme/challenge/TOKEN` | the answer to a pending HTTP-01 challenge (while its order runs) |
//! | `P/event/SERVICE/AT-NONCE` | an event (JSON; its id is the key's create revision) |
//! | `P/webhooks/posted` | the id of the last event the leader posted to the webhooks |
//! | `P/node/NAME` | a node's record, under that node's lease |
//! | `P/ready/NAME`, `P/traffic/NAME` | what a node reports of its releases (readiness; traffic), under its lease |
//! | `P/leader/…` | the election of the node that leads |
//!
//! A commit is one etcd transaction: it writes the head, the revision and
//! the releases it registers only if the head is still the one read (its
//! modification revision) and those releases are still unregistered.
//!
//! What the leader's work writes (inside [`fence::scope`]: its rollouts'
//! and upgrades' steps and their events) is conditioned as well on the
//! election key the leader won: the transaction compares the key's create
//! revision, so once the key is gone (its lease expired) the write is
//! refused as [`StoreError::Fenced`] and the fence is told.

use std::collections::hash_map::RandomState;
use std::future::Future;
use std::hash::{BuildHasher, Hasher};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, mpsc};
use std::time::Duration;

use etcd_client::{
    Client, Compare, CompareOp, ConnectOptions, GetOptions, KeyValue, SortOrder, SortTarget, Txn,
    TxnOp,
};
use serde::{Deserialize, Serialize};

use super::fence::{self, Fence};
use super::last_reads::{self, LastReads};
use super::{
    CertificateRecord, Commit, EtcdLocation, NodeRecord, PauseRecord, ServiceStore, StoreError,
    StoreResult,
};
use crate::model::{Event, Release, Revision, RolloutState, ServiceName, UpgradeState, now_millis};

/// How long one call may take, connecting included, before it fails as
/// unreachable.
pub const CALL_TIMEOUT: Duration = Duration::from_secs(5);
/// How many times a commit re-reads and retries when something it did not
/// depend on (another release's registration) moved meanwhile.
const COMMIT_ATTEMPTS: usize = 5;
/// How long connecting to one member may take before the next is tried.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);

/// A client per etcd member, and the one calls go to first: a call that
/// finds its member unreachable moves on to the next, so the loss of a
/// member (with a quorum left) fails nothing.
#[derive(Clone)]
pub struct EtcdClients {
    clients: Arc<Vec<Client>>,
    preferred: Arc<AtomicUsize>,
    /// Since when (unix ms) no member answered, while none does.
    unreachable_since: Arc<std::sync::Mutex<Option<u64>>>,
}

impl EtcdClients {
    /// A call, the watch or the lease reached a member that answered.
    pub fn reached(&self) {
        *self.since() = None;
    }

    /// No member answered a call, the watch or the lease.
    pub fn unreached(&self) {
        self.since().get_or_insert_with(now_millis);
    }

    /// Since when no member answers (unix ms), while none does.
    pub fn unreachable_since(&self) -> Option<u64> {
        *self.since()
    }

    fn since(&self) -> std::sync::MutexGuard<'_, Option<u64>> {
        self.unreachable_since
            .lock()
            .unwrap_or_else(|p| p.into_inner())
    }

    /// The client of the member calls go to now.
    pub fn current(&self) -> Client {
        self.clients[self.preferred.load(Ordering::Relaxed) % self.clients.len()].clone()
    }

    /// The member calls go to was unreachable: prefer the next one.
    pub fn move_on(&self) {
        self.preferred.fetch_add(1, Ordering::Relaxed);
    }

    /// Runs `work` against the preferred member, then each other member in
    /// turn while the member it tried was unreachable.
    pub async fn run<T, F>(&self, work: impl Fn(Client) -> F) -> Result<T, etcd_client::Error>
    where
        F: Future<Output = Result<T, etcd_client::Error>>,
    {
        let mut last = None;
        for _ in 0..self.clients.len() {
            match work(self.current()).await {
                Err(error) if unreachable(&error) => {
                    self.move_on();
                    last = Some(error);
                }
                done => {
                    self.reached();
                    return done;
                }
            }
        }
        self.unreached();
        Err(last.unwrap_or_else(|| etcd_client::Error::InvalidArgs("no etcd member".into())))
    }
}

/// The services' desired state in etcd.
pub struct EtcdStore {
    location: EtcdLocation,
    clients: EtcdClients,
    /// What the last successful read of each key (or prefix) found, for
    /// the most recent different reads: reads answer from it while no
    /// member answers (static stability).
    last_read: std::sync::Mutex<LastReads<Vec<KeyValue>>>,
    /// The store's own runtime (on its thread): every etcd call runs there.
    handle: tokio::runtime::Handle,
    /// Dropped with the store: its thread then ends, and its runtime with it.
    _stop: tokio::sync::oneshot::Sender<()>,
}

impl EtcdStore {
    /// Connects to the cluster's members and checks that one answers.
    pub fn open(location: &EtcdLocation) -> StoreResult<Self> {
        let (handle, stop) = start_thread().map_err(|e| StoreError::Refused {
            store: location.to_string(),
            cause: format!("cannot start its thread: {e}"),
        })?;
        let endpoints = location.endpoints.clone();
        let clients = wait(&handle, location, async move {
            let mut clients = Vec::new();
            for endpoint in endpoints {
                let options = ConnectOptions::new()
                    .with_connect_timeout(CONNECT_TIMEOUT)
                    .with_timeout(CALL_TIMEOUT)
                    .with_keep_alive(Duration::from_secs(2), Duration::from_secs(2))
                    .with_require_leader(true);
                clients.push(Client::connect([format!("http://{endpoint}")], Some(options)).await?);
            }
            let clients = EtcdClients {
                clients: Arc::new(clients),
                preferred: Arc::new(AtomicUsize::new(0)),
                unreachable_since: Arc::default(),
            };
            clients.run(|mut c| async move { c.status().await }).await?;
            Ok(clients)
        })?;
        Ok(Self {
            location: location.clone(),
            clients,
            last_read: std::sync::Mutex::new(LastReads::new(last_reads::REMEMBERED)),
            handle,
            _stop: stop,
        })
    }

    /// Where the store is, as `etcd://…` (errors and logs name it so).
    pub fn location(&self) -> &EtcdLocation {
        &self.location
    }

    /// The members' clients, for the fleet's tasks on [`EtcdStore::spawn`].
    pub fn clients(&self) -> EtcdClients {
        self.clients.clone()
    }

    /// Runs a task on the store's runtime (watches, the lease, the election).
    pub fn spawn<F>(&self, task: F) -> tokio::task::JoinHandle<F::Output>
    where
        F: Future + Send + 'static,
        F::Output: Send + 'static,
    {
        self.handle.spawn(task)
    }

    /// The full key of `rest` under the prefix.
    pub fn key(&self, rest: &str) -> String {
        format!("{}/{rest}", self.location.prefix)
    }

    /// Runs `work` on the store's runtime (against one member, then the
    /// next while they are unreachable) and waits for it.
    pub(crate) fn call<T, F>(&self, work: impl Fn(Client) -> F + Send + 'static) -> StoreResult<T>
    where
        T: Send + 'static,
        F: Future<Output = Result<T, etcd_client::Error>> + Send + 'static,
    {
        let clients = self.clients.clone();
        wait(&self.handle, &self.location, async move {
            clients.run(work).await
        })
    }

    /// Like [`EtcdStore::call`], for work that also fails with a store
    /// error of its own.
    fn call_store<T, F>(&self, work: impl Fn(Client) -> F + Send + 'static) -> StoreResult<T>
    where
        T: Send + 'static,
        F: Future<Output = Result<StoreResult<T>, etcd_client::Error>> + Send + 'static,
    {
        self.call(work)?
    }

    fn get_json<T: serde::de::DeserializeOwned + Send + 'static>(
        &self,
        key: String,
    ) -> StoreResult<Option<T>> {
        self.read(key, None)?
            .first()
            .map(|kv| serde_json::from_slice(kv.value()).map_err(StoreError::from))
            .transpose()
    }

    fn list_json<T: serde::de::DeserializeOwned + Send + 'static>(
        &self,
        prefix: String,
    ) -> StoreResult<Vec<T>> {
        let values = self.list(prefix, None)?;
        values
            .iter()
            .map(|kv| serde_json::from_slice(kv.value()).map_err(StoreError::from))
            .collect()
    }

    /// Every key under `prefix` (ending in `/`), in key order unless sorted.
    pub(crate) fn list(
        &self,
        prefix: String,
        options: Option<GetOptions>,
    ) -> StoreResult<Vec<KeyValue>> {
        self.read(prefix, Some(options.unwrap_or_default().with_prefix()))
    }

    /// Reads `key` with `options`. While no member answers, answers what
    /// the last successful read of the same found, if any: the store then
    /// says since when it is unreachable ([`ServiceStore::unreachable_since`]).
    fn read(&self, key: String, options: Option<GetOptions>) -> StoreResult<Vec<KeyValue>> {
        let remembered = format!("{key}\n{options:?}");
        let read = self.call(move |mut c| {
            let (key, options) = (key.clone(), options.clone());
            async move { Ok(c.get(key, options).await?.take_kvs()) }
        });
        let mut last = self.last_read.lock().unwrap_or_else(|p| p.into_inner());
        match read {
            Ok(kvs) => {
                last.remember(remembered, kvs.clone());
                Ok(kvs)
            }
            Err(error @ StoreError::Unreachable { .. }) => last.answer(&remembered).ok_or(error),
            Err(error) => Err(error),
        }
    }

    fn put(&self, key: String, value: Vec<u8>) -> StoreResult<()> {
        self.write(TxnOp::put(key, value, None)).map(|_| ())
    }

    /// The text values under `P/FOLDER`, as `(rest of the key, value)`.
    fn texts_under(&self, folder: &str) -> StoreResult<Vec<(String, String)>> {
        let prefix = self.key(folder);
        let kvs = self.list(prefix.clone(), None)?;
        Ok(kvs
            .iter()
            .map(|kv| {
                (
                    key_rest(kv, &prefix),
                    String::from_utf8_lossy(kv.value()).into_owned(),
                )
            })
            .collect())
    }

    /// Writes `op` in one transaction, under the fence of the leader's work
    /// running now, if any; returns the store's revision after it.
    fn write(&self, op: TxnOp) -> StoreResult<i64> {
        let fence = fence::current();
        let when: Vec<Compare> = fence.iter().map(holds).collect();
        let (succeeded, revision) = self.call(move |mut c| {
            let txn = Txn::new().when(when.clone()).and_then([op.clone()]);
            async move {
                let response = c.txn(txn).await?;
                Ok((
                    response.succeeded(),
                    response.header().map_or(0, |h| h.revision()),
                ))
            }
        })?;
        match fence {
            Some(fence) if !succeeded => Err(fenced(&fence)),
            _ => Ok(revision),
        }
    }

    /// Whether the election key of `fence` is still the one it names.
    fn fence_holds(&self, fence: &Fence) -> StoreResult<bool> {
        let (key, revision) = (fence.key.clone(), fence.revision);
        self.call(move |mut c| {
            let key = key.clone();
            async move {
                let response = c.get(key, None).await?;
                Ok(response
                    .kvs()
                    .first()
                    .is_some_and(|kv| kv.create_revision() == revision))
            }
        })
    }

    fn put_json<T: Serialize>(&self, key: String, value: &T) -> StoreResult<()> {
        self.put(key, serde_json::to_vec(value)?)
    }

    fn delete(&self, key: String) -> StoreResult<bool> {
        let fence = fence::current();
        let when: Vec<Compare> = fence.iter().map(holds).collect();
        let (succeeded, deleted) = self.call(move |mut c| {
            let txn = Txn::new()
                .when(when.clone())
                .and_then([TxnOp::delete(key.clone(), None)]);
            async move {
                let response = c.txn(txn).await?;
                let deleted = response.op_responses().into_iter().any(
                    |op| matches!(op, etcd_client::TxnOpResponse::Delete(d) if d.deleted() > 0),
                );
                Ok((response.succeeded(), deleted))
            }
        })?;
        match fence {
            Some(fence) if !succeeded => Err(fenced(&fence)),
            _ => Ok(deleted),
        }
    }

    fn release_key(&self, service: &str, version: &semver::Version) -> String {
        self.key(&format!("release/{service}/{version}"))
    }

    /// Every node whose lease is alive.
    pub fn nodes(&self) -> StoreResult<Vec<NodeRecord>> {
        self.list_json(self.key("node/"))
    }
}

/// Starts the store's thread with a single-threaded runtime; returns its
/// handle and what stops it when dropped.
fn start_thread() -> std::io::Result<(tokio::runtime::Handle, tokio::sync::oneshot::Sender<()>)> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let handle = runtime.handle().clone();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    std::thread::Builder::new()
        .name("switchyard-etcd".into())
        .spawn(move || {
            runtime.block_on(async move {
                let _ = stopped.await;
            });
        })?;
    Ok((handle, stop))
}

/// Runs `work` on the store's runtime and waits for it, at most
/// [`CALL_TIMEOUT`].
fn wait<T, F>(handle: &tokio::runtime::Handle, location: &EtcdLocation, work: F) -> StoreResult<T>
where
    T: Send + 'static,
    F: Future<Output = Result<T, etcd_client::Error>> + Send + 'static,
{
    let (tx, rx) = mpsc::sync_channel(1);
    handle.spawn(async move {
        let result = tokio::time::timeout(CALL_TIMEOUT, work).await;
        let _ = tx.send(result);
    });
    let unreachable = |cause: String| StoreError::Unreachable {
        store: location.to_string(),
        cause,
    };
    match rx.recv_timeout(CALL_TIMEOUT + Duration::from_secs(1)) {
        Ok(Ok(Ok(value))) => Ok(value),
        Ok(Ok(Err(error))) => Err(classify(location, error)),
        Ok(Err(_)) | Err(mpsc::RecvTimeoutError::Timeout) => Err(unreachable(format!(
            "no answer within {}",
            humantime::format_duration(CALL_TIMEOUT)
        ))),
        Err(mpsc::RecvTimeoutError::Disconnected) => {
            Err(unreachable("its client stopped".to_owned()))
        }
    }
}

/// Whether an etcd error says the member cannot be reached (or has no
/// quorum): the call may go to another member.
fn unreachable(error: &etcd_client::Error) -> bool {
    use etcd_client::Error as E;
    match error {
        E::GRpcStatus(status) => matches!(
            status.code(),
            tonic::Code::Unavailable | tonic::Code::DeadlineExceeded | tonic::Code::Cancelled
        ),
        E::TransportError(_) | E::IoError(_) => true,
        _ => false,
    }
}

/// An etcd error as a store error: transport and availability failures
/// are [`StoreError::Unreachable`], anything else a refusal.
fn classify(location: &EtcdLocation, error: etcd_client::Error) -> StoreError {
    let store = location.to_string();
    let cause = match &error {
        etcd_client::Error::GRpcStatus(status) => status.message().to_owned(),
        other => other.to_string(),
    };
    if unreachable(&error) {
        StoreError::Unreachable { store, cause }
    } else {
        StoreError::Refused { store, cause }
    }
}

/// The comparison that holds while `fence`'s election key is the one won.
fn holds(fence: &Fence) -> Compare {
    Compare::create_revision(fence.key.clone(), CompareOp::Equal, fence.revision)
}

/// A write refused by `fence`: the fence is told (the node steps down).
fn fenced(fence: &Fence) -> StoreError {
    tracing::error!(election = %fence.key, "a write of the leader was refused: this node does not hold the fleet's election any more");
    fence.refused();
    StoreError::Fenced {
        key: fence.key.clone(),
    }
}

/// A nonce that makes an event's key unique among nodes writing at once.
fn nonce() -> u64 {
    RandomState::new().build_hasher().finish()
}

#[derive(Serialize, Deserialize)]
struct StoredPause {
    max_hold_ms: u64,
    since: u64,
}

#[derive(Serialize, Deserialize)]
struct StoredCertificate {
    cert_pem: String,
    key_pem: String,
    source: String,
    updated_at: u64,
}

#[derive(Serialize, Deserialize)]
struct StoredEvent {
    service: String,
    at: u64,
    kind: String,
    message: String,
    #[serde(default)]
    detail: serde_json::Value,
}

/// What a commit found: the head's number and modification revision, and
/// the releases it must register (with their keys).
struct CommitPlan {
    current: u64,
    head_mod_revision: i64,
    /// The head as stored (to know a commit of ours whose answer was lost).
    head_value: Vec<u8>,
    new_releases: Vec<(String, Vec<u8>)>,
}

impl ServiceStore for EtcdStore {
    fn unreachable_since(&self) -> Option<u64> {
        self.clients.unreachable_since()
    }

    fn current_revisions(&self) -> StoreResult<Vec<Revision>> {
        self.list_json(self.key("head/"))
    }

    fn current_revision(&self, service: &ServiceName) -> StoreResult<Option<Revision>> {
        self.get_json(self.key(&format!("head/{service}")))
    }

    fn revision(&self, service: &ServiceName, number: u64) -> StoreResult<Option<Revision>> {
        self.get_json(self.key(&format!("revision/{service}/{number:020}")))
    }

    fn history(&self, service: &ServiceName, limit: usize) -> StoreResult<Vec<Revision>> {
        let options = GetOptions::new()
            .with_sort(SortTarget::Key, SortOrder::Descend)
            .with_limit(limit as i64);
        let kvs = self.list(self.key(&format!("revision/{service}/")), Some(options))?;
        kvs.iter()
            .map(|kv| serde_json::from_slice(kv.value()).map_err(StoreError::from))
            .collect()
    }

    fn release(
        &self,
        service: &ServiceName,
        version: &semver::Version,
    ) -> StoreResult<Option<Release>> {
        self.get_json(self.release_key(service.as_str(), version))
    }

    fn commit(&self, commit: &Commit) -> StoreResult<()> {
        let service = commit.revision.service.to_string();
        let head_key = self.key(&format!("head/{service}"));
        let revision_key = self.key(&format!(
            "revision/{service}/{:020}",
            commit.revision.number
        ));
        let revision_json = serde_json::to_vec(&commit.revision)?;
        let releases = commit
            .releases
            .iter()
            .map(|r| Ok((self.release_key(&service, &r.version), r.clone())))
            .collect::<StoreResult<Vec<_>>>()?;
        let number = commit.revision.number;
        let fence = fence::current();
        for _ in 0..COMMIT_ATTEMPTS {
            let (read_key, releases, service) =
                (head_key.clone(), releases.clone(), service.clone());
            let plan = self.call_store(move |mut c| {
                let (read_key, releases, service) =
                    (read_key.clone(), releases.clone(), service.clone());
                async move {
                    let head = c.get(read_key, None).await?;
                    let (current, head_mod_revision, head_value) = match head.kvs().first() {
                        Some(kv) => match serde_json::from_slice::<Revision>(kv.value()) {
                            Ok(r) => (r.number, kv.mod_revision(), kv.value().to_vec()),
                            Err(e) => return Ok(Err(StoreError::from(e))),
                        },
                        None => (0, 0, Vec::new()),
                    };
                    let mut new_releases = Vec::new();
                    for (key, release) in releases {
                        let found = c.get(key.clone(), None).await?;
                        match found.kvs().first() {
                            Some(kv) => match serde_json::from_slice::<Release>(kv.value()) {
                                Ok(stored) if stored.spec == release.spec => {}
                                Ok(_) => {
                                    return Ok(Err(StoreError::ReleaseMismatch {
                                        service,
                                        version: release.version.to_string(),
                                    }));
                                }
                                Err(e) => return Ok(Err(StoreError::from(e))),
                            },
                            None => match serde_json::to_vec(&release) {
                                Ok(json) => new_releases.push((key, json)),
                                Err(e) => return Ok(Err(StoreError::from(e))),
                            },
                        }
                    }
                    Ok(Ok(CommitPlan {
                        current,
                        head_mod_revision,
                        head_value,
                        new_releases,
                    }))
                }
            })?;
            // A transaction whose answer was lost (its member went away)
            // and that committed all the same finds its own revision.
            if plan.current == number && plan.head_value == revision_json {
                return Ok(());
            }
            if number != plan.current + 1 {
                return Err(StoreError::Conflict {
                    current: plan.current,
                });
            }
            let mut when = vec![if plan.head_mod_revision == 0 {
                Compare::version(head_key.clone(), CompareOp::Equal, 0)
            } else {
                Compare::mod_revision(head_key.clone(), CompareOp::Equal, plan.head_mod_revision)
            }];
            let mut then = vec![
                TxnOp::put(head_key.clone(), revision_json.clone(), None),
                TxnOp::put(revision_key.clone(), revision_json.clone(), None),
            ];
            for (key, json) in plan.new_releases {
                when.push(Compare::version(key.clone(), CompareOp::Equal, 0));
                then.push(TxnOp::put(key, json, None));
            }
            when.extend(fence.iter().map(holds));
            let txn = Txn::new().when(when).and_then(then);
            let committed = self.call(move |mut c| {
                let txn = txn.clone();
                async move { Ok(c.txn(txn).await?.succeeded()) }
            })?;
            if committed {
                return Ok(());
            }
            if let Some(fence) = &fence {
                if !self.fence_holds(fence)? {
                    return Err(fenced(fence));
                }
            }
        }
        let current = self
            .current_revision(&commit.revision.service)?
            .map_or(0, |r| r.number);
        Err(StoreError::Conflict { current })
    }

    fn register_release(&self, release: &Release) -> StoreResult<bool> {
        let key = self.release_key(release.service.as_str(), &release.version);
        let json = serde_json::to_vec(release)?;
        let stored = self.call(move |mut c| {
            let (key, json) = (key.clone(), json.clone());
            async move {
                let txn = Txn::new()
                    .when([Compare::version(key.clone(), CompareOp::Equal, 0)])
                    .and_then([TxnOp::put(key.clone(), json, None)])
                    .or_else([TxnOp::get(key, None)]);
                let response = c.txn(txn).await?;
                if response.succeeded() {
                    return Ok(None);
                }
                let value = response.op_responses().into_iter().find_map(|op| match op {
                    etcd_client::TxnOpResponse::Get(get) => {
                        get.kvs().first().map(|kv| kv.value().to_vec())
                    }
                    _ => None,
                });
                Ok(Some(value.unwrap_or_default()))
            }
        })?;
        match stored {
            None => Ok(true),
            Some(json) => {
                let stored: Release = serde_json::from_slice(&json)?;
                if stored.spec != release.spec {
                    return Err(StoreError::ReleaseMismatch {
                        service: release.service.to_string(),
                        version: release.version.to_string(),
                    });
                }
                Ok(false)
            }
        }
    }

    fn unregister_release(
        &self,
        service: &ServiceName,
        version: &semver::Version,
    ) -> StoreResult<bool> {
        self.delete(self.release_key(service.as_str(), version))
    }

    fn releases(&self, service: &ServiceName) -> StoreResult<Vec<Release>> {
        let mut releases: Vec<Release> =
            self.list_json(self.key(&format!("release/{service}/")))?;
        releases.sort_by(|a, b| a.version.cmp(&b.version));
        Ok(releases)
    }

    fn save_rollout(&self, rollout: &RolloutState) -> StoreResult<()> {
        self.put_json(self.key(&format!("rollout/{}", rollout.service)), rollout)
    }

    fn rollouts(&self) -> StoreResult<Vec<RolloutState>> {
        self.list_json(self.key("rollout/"))
    }

    fn save_upgrade(&self, upgrade: &UpgradeState) -> StoreResult<()> {
        self.put_json(self.key(&format!("upgrade/{}", upgrade.service)), upgrade)
    }

    fn upgrades(&self) -> StoreResult<Vec<UpgradeState>> {
        self.list_json(self.key("upgrade/"))
    }

    fn upgrade(&self, service: &str) -> StoreResult<Option<UpgradeState>> {
        self.get_json(self.key(&format!("upgrade/{service}")))
    }

    fn save_pause(&self, pause: &PauseRecord) -> StoreResult<()> {
        let stored = StoredPause {
            max_hold_ms: pause.max_hold_ms,
            since: pause.since,
        };
        self.put_json(self.key(&format!("pause/{}", pause.service)), &stored)
    }

    fn delete_pause(&self, service: &str) -> StoreResult<()> {
        self.delete(self.key(&format!("pause/{service}")))?;
        Ok(())
    }

    fn pauses(&self) -> StoreResult<Vec<PauseRecord>> {
        let prefix = self.key("pause/");
        let kvs = self.list(prefix.clone(), None)?;
        kvs.iter()
            .map(|kv| {
                let stored: StoredPause = serde_json::from_slice(kv.value())?;
                Ok(PauseRecord {
                    service: key_rest(kv, &prefix),
                    max_hold_ms: stored.max_hold_ms,
                    since: stored.since,
                })
            })
            .collect()
    }

    fn save_certificate(&self, c: &CertificateRecord) -> StoreResult<()> {
        let stored = StoredCertificate {
            cert_pem: c.cert_pem.clone(),
            key_pem: c.key_pem.clone(),
            source: c.source.clone(),
            updated_at: c.updated_at,
        };
        self.put_json(self.key(&format!("certificate/{}", c.host)), &stored)
    }

    fn delete_certificate(&self, host: &str) -> StoreResult<()> {
        self.delete(self.key(&format!("certificate/{host}")))?;
        Ok(())
    }

    fn certificates(&self) -> StoreResult<Vec<CertificateRecord>> {
        let prefix = self.key("certificate/");
        let kvs = self.list(prefix.clone(), None)?;
        kvs.iter()
            .map(|kv| {
                let stored: StoredCertificate = serde_json::from_slice(kv.value())?;
                Ok(CertificateRecord {
                    host: key_rest(kv, &prefix),
                    cert_pem: stored.cert_pem,
                    key_pem: stored.key_pem,
                    source: stored.source,
                    updated_at: stored.updated_at,
                })
            })
            .collect()
    }

    fn save_acme_order(&self, host: &str, json: &str) -> StoreResult<()> {
        self.put(
            self.key(&format!("acme/order/{host}")),
            json.as_bytes().to_vec(),
        )
    }

    fn delete_acme_order(&self, host: &str) -> StoreResult<()> {
        self.delete(self.key(&format!("acme/order/{host}")))?;
        Ok(())
    }

    fn acme_orders(&self) -> StoreResult<Vec<(String, String)>> {
        self.texts_under("acme/order/")
    }

    fn save_acme_account(&self, directory: &str, credentials: &str) -> StoreResult<()> {
        self.put(
            self.key(&format!("acme/account/{directory}")),
            credentials.as_bytes().to_vec(),
        )
    }

    fn acme_account(&self, directory: &str) -> StoreResult<Option<String>> {
        let key = self.key(&format!("acme/account/{directory}"));
        Ok(self
            .read(key, None)?
            .first()
            .map(|kv| String::from_utf8_lossy(kv.value()).into_owned()))
    }

    fn save_acme_challenge(&self, token: &str, key_authorization: &str) -> StoreResult<()> {
        self.put(
            self.key(&format!("acme/challenge/{token}")),
            key_authorization.as_bytes().to_vec(),
        )
    }

    fn delete_acme_challenge(&self, token: &str) -> StoreResult<()> {
        self.delete(self.key(&format!("acme/challenge/{token}")))?;
        Ok(())
    }

    fn acme_challenges(&self) -> StoreResult<Vec<(String, String)>> {
        self.texts_under("acme/challenge/")
    }

    fn set_webhooks_posted(&self, id: u64) -> StoreResult<()> {
        self.put(self.key("webhooks/posted"), id.to_string().into_bytes())
    }

    fn add_event(
        &self,
        service: &str,
        kind: &str,
        message: &str,
        detail: serde_json::Value,
    ) -> StoreResult<Event> {
        let at = now_millis();
        let stored = StoredEvent {
            service: service.to_owned(),
            at,
            kind: kind.to_owned(),
            message: message.to_owned(),
            detail,
        };
        let key = self.key(&format!("event/{service}/{at:016}-{:016x}", nonce()));
        let json = serde_json::to_vec(&stored)?;
        let id = self.write(TxnOp::put(key, json, None))?;
        Ok(Event {
            id: id as u64,
            service: stored.service,
            at,
            kind: stored.kind,
            message: stored.message,
            detail: stored.detail,
        })
    }

    fn events(&self, service: &str, limit: usize) -> StoreResult<Vec<Event>> {
        let options = GetOptions::new()
            .with_sort(SortTarget::Create, SortOrder::Descend)
            .with_limit(limit as i64);
        let kvs = self.list(self.key(&format!("event/{service}/")), Some(options))?;
        kvs.iter().map(stored_event).collect()
    }
}

impl EtcdStore {
    /// The fleet's events after the event `id` (of every service, in the
    /// order they were recorded), at most `limit`. Read from etcd itself,
    /// never from what was read last.
    pub fn events_after(&self, id: u64, limit: usize) -> StoreResult<Vec<Event>> {
        let prefix = self.key("event/");
        let options = GetOptions::new()
            .with_prefix()
            .with_min_create_revision(id as i64 + 1)
            .with_sort(SortTarget::Create, SortOrder::Ascend)
            .with_limit(limit as i64);
        let kvs = self.call(move |mut c| {
            let (prefix, options) = (prefix.clone(), options.clone());
            async move { Ok(c.get(prefix, Some(options)).await?.take_kvs()) }
        })?;
        kvs.iter().map(stored_event).collect()
    }

    /// The id of the last event posted to the webhooks (none yet: 0).
    pub fn webhooks_posted(&self) -> StoreResult<u64> {
        let key = self.key("webhooks/posted");
        let kvs = self.call(move |mut c| {
            let key = key.clone();
            async move { Ok(c.get(key, None).await?.take_kvs()) }
        })?;
        Ok(kvs
            .first()
            .and_then(|kv| String::from_utf8_lossy(kv.value()).parse().ok())
            .unwrap_or(0))
    }
}

/// What follows `prefix` in a key.
/// An event as stored under `event/…` (its id: the key's create revision).
fn stored_event(kv: &KeyValue) -> StoreResult<Event> {
    let stored: StoredEvent = serde_json::from_slice(kv.value())?;
    Ok(Event {
        id: kv.create_revision() as u64,
        service: stored.service,
        at: stored.at,
        kind: stored.kind,
        message: stored.message,
        detail: stored.detail,
    })
}

fn key_rest(kv: &KeyValue, prefix: &str) -> String {
    let key = String::from_utf8_lossy(kv.key());
    key.strip_prefix(prefix).unwrap_or(&key).to_owned()
}
