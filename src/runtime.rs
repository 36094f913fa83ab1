//! Runs releases: starts their instances (local processes, or addresses of
//! instances that run elsewhere), checks their health, restarts the ones
//! that exit, notices crash loops, and drains and stops them.
//!
//! Each release gets a [`ReleaseHandle`]; its instances are tasks owned by
//! the handle, so stopping the handle stops them. What the data plane needs
//! (addresses, health, requests in flight) lives in the release's
//! [`Backend`](crate::proxy::Backend), which the handle keeps current.

pub mod docker;
mod health;
mod instance;
mod log_file;
mod port;
mod process;
mod release_handle;
mod restart_backoff;
mod status;

pub use log_file::{LogChunk, LogFiles};
pub use process::{is_alive, kill_group};
pub use release_handle::{ReleaseHandle, RuntimeSettings};
pub use status::{ExitRecord, Health, InstanceStatus, ReleasePhase, ReleaseStatus, StartError};

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::model::{ContainerSpec, Release, RunSpec};
use crate::store::{InstanceRecord, NodeStore};

/// Why a release could not be made to run.
#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    #[error(
        "could not start {release}: `{command}` failed: {cause}. Check the path, that it is executable, and --cwd"
    )]
    CannotStart {
        release: String,
        command: String,
        cause: String,
    },
    #[error(
        "{release} is in a crash loop: its instances exited {exits}; it receives no traffic.\n{logs}"
    )]
    CrashLoop {
        release: String,
        exits: String,
        logs: String,
    },
    #[error("{release} did not become healthy within {waited:?}: {detail}.\n{logs}")]
    NotReady {
        release: String,
        waited: Duration,
        detail: String,
        logs: String,
    },
    #[error(
        "{release} was stopped: {cause}. An instance that is not recorded would be left running unmanaged by the next serve; \
         free space in the state directory (or fix what the error names), then deploy again"
    )]
    Unrecorded { release: String, cause: String },
    #[error("could not start {release} from image {image}: {cause}")]
    ContainerStart {
        release: String,
        image: String,
        cause: String,
    },
    #[error("cannot read the logs of {release}: {cause}")]
    Logs { release: String, cause: String },
    #[error("cannot resolve upstream `{address}` of {release}: {cause}")]
    BadUpstream {
        release: String,
        address: String,
        cause: String,
    },
}

impl crate::error_kind::Classify for RuntimeError {
    fn kind(&self) -> crate::error_kind::ErrorKind {
        crate::error_kind::ErrorKind::Unprocessable
    }
}

type Key = (String, String);

/// Every release this node runs, by service and version.
pub struct Runtime {
    settings: Arc<RuntimeSettings>,
    store: Arc<dyn NodeStore>,
    health_client: reqwest::Client,
    releases: Mutex<HashMap<Key, Arc<ReleaseHandle>>>,
    /// The Docker Engine (at `DOCKER_HOST`), reached when a container
    /// release first needs it.
    engine: docker::Engine,
    /// Cancelled when another serve takes the instances over.
    handed_over: Mutex<CancellationToken>,
}

impl Runtime {
    pub fn new(settings: RuntimeSettings, store: Arc<dyn NodeStore>) -> Self {
        let health_client = crate::tls::http_client()
            .no_proxy()
            .pool_max_idle_per_host(1)
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .unwrap_or_default();
        Self {
            settings: Arc::new(settings),
            store,
            health_client,
            releases: Mutex::new(HashMap::new()),
            engine: docker::Engine::from_env(),
            handed_over: Mutex::new(CancellationToken::new()),
        }
    }

    pub fn settings(&self) -> &RuntimeSettings {
        &self.settings
    }

    fn map(&self) -> std::sync::MutexGuard<'_, HashMap<Key, Arc<ReleaseHandle>>> {
        self.releases.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn key(release: &Release) -> Key {
        (release.service.to_string(), release.version.to_string())
    }

    /// The handle of a running release.
    pub fn get(&self, service: &str, version: &str) -> Option<Arc<ReleaseHandle>> {
        self.map()
            .get(&(service.to_owned(), version.to_owned()))
            .cloned()
    }

    /// Starts a release (adopting the given still-running instances), or
    /// returns its handle if it already runs.
    pub fn start(&self, release: &Release, adopt: Vec<InstanceRecord>) -> Arc<ReleaseHandle> {
        let mut map = self.map();
        if let Some(handle) = map.get(&Self::key(release)) {
            return Arc::clone(handle);
        }
        let handle = ReleaseHandle::start(
            release.clone(),
            Arc::clone(&self.settings),
            Arc::clone(&self.store),
            self.health_client.clone(),
            self.engine.clone(),
            self.handed_over
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .clone(),
            adopt,
        );
        map.insert(Self::key(release), Arc::clone(&handle));
        handle
    }

    /// Stops a release: with `drain`, waits (bounded by the drain timeout)
    /// for its requests in flight to finish first. Route traffic away from
    /// it before calling this.
    pub async fn stop(&self, service: &str, version: &str, drain: bool) {
        let handle = self.map().remove(&(service.to_owned(), version.to_owned()));
        if let Some(handle) = handle {
            if drain {
                handle.drain(self.settings.drain_timeout).await;
            }
            handle.stop().await;
        }
    }

    /// Stops a TCP release once its connections closed (at most `limit`;
    /// none: however long they stay), in the background: its connections
    /// may last for days, and whoever removed it need not wait.
    pub fn stop_when_closed(&self, service: &str, version: &str, limit: Option<Duration>) {
        let handle = self.map().remove(&(service.to_owned(), version.to_owned()));
        if let Some(handle) = handle {
            tokio::spawn(async move {
                // Ten years stands for "no limit" without overflowing a deadline.
                let limit = limit.unwrap_or(Duration::from_secs(10 * 365 * 86_400));
                handle.drain(limit).await;
                handle.stop().await;
            });
        }
    }

    /// Stops every release (serve is shutting down).
    pub async fn stop_all(&self) {
        let handles: Vec<_> = self.map().drain().map(|(_, h)| h).collect();
        let stops = handles.iter().map(|h| h.stop());
        futures_util::future::join_all(stops).await;
    }

    /// Lets another serve take every instance over: this runtime stops
    /// managing them (no more health checks, restarts or records) but
    /// leaves them running, recorded for adoption, and in the data plane's
    /// rotation as they were, so this serve can keep proxying until it has
    /// handed its listeners over too. Returns once every instance task has
    /// ended.
    pub async fn hand_over(&self) {
        self.handed_over
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .cancel();
        let handles = self.running();
        futures_util::future::join_all(handles.iter().map(|h| h.ended())).await;
    }

    /// Undoes [`Runtime::hand_over`] when the other serve did not take
    /// over: forgets the handles (their processes keep running) so that
    /// [`Controller::restore`](crate::controller::Controller::restore) can
    /// adopt the instances again.
    pub fn take_back(&self) {
        *self.handed_over.lock().unwrap_or_else(|p| p.into_inner()) = CancellationToken::new();
        self.map().clear();
    }

    /// Stops (SIGTERM, then SIGKILL after the stop grace, in the
    /// background) every instance process of this state directory that
    /// none of `records` names: found by its marks, started by an earlier
    /// serve that never recorded it. Call before any release starts here,
    /// so that no instance of this serve is taken for one.
    pub fn stop_unrecorded_processes(&self, records: &[InstanceRecord]) {
        for stray in process::sweep::unrecorded(&self.settings.state_dir, records) {
            tracing::warn!(pid = stray.pid, instance = %stray.instance, "stopping an instance process that no record names");
            process::stop_group_in_background(stray.pid, stray.ticks, self.settings.stop_grace);
        }
    }

    /// Stops the recorded process of an instance that should not run
    /// (in the background, as [`Runtime::stop_unrecorded_processes`]).
    pub fn stop_orphan(&self, record: &InstanceRecord) {
        if is_alive(record.pid, record.start_ticks) {
            tracing::warn!(service = %record.service, version = %record.version, pid = record.pid, "stopping orphaned instance");
            process::stop_group_in_background(
                record.pid,
                record.start_ticks,
                self.settings.stop_grace,
            );
        }
    }

    pub fn running(&self) -> Vec<Arc<ReleaseHandle>> {
        self.map().values().cloned().collect()
    }

    /// Runs a container release's hook as a one-off container of its image
    /// (see [`docker::HookJob`]).
    pub async fn run_container_hook(
        &self,
        spec: &ContainerSpec,
        job: &docker::HookJob<'_>,
    ) -> Result<docker::HookEnd, docker::DockerError> {
        docker::run_hook(&self.engine, spec, job).await
    }

    /// In the background, stops and removes the containers an earlier serve
    /// of this state directory left behind for releases that should no
    /// longer run (or for slots beyond their replicas). Call once the
    /// releases that should run have been started: their containers are
    /// adopted by their instances.
    pub fn remove_stray_containers(&self) {
        let keep: HashSet<docker::sweep::Slot> = self
            .map()
            .values()
            .filter(|h| matches!(h.release.spec.run, RunSpec::Container(_)))
            .flat_map(|h| {
                let (service, version) =
                    (h.release.service.to_string(), h.release.version.to_string());
                (0..h.release.spec.replicas)
                    .map(move |slot| (service.clone(), version.clone(), slot))
            })
            .collect();
        let before = crate::model::now_millis() as i64 / 1000;
        tokio::spawn(docker::remove_strays(
            self.engine.clone(),
            self.settings.state_dir.clone(),
            keep,
            before,
            self.settings.stop_grace,
        ));
    }
}
