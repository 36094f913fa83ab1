use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::docker::Engine;
use super::instance::{self, InstanceCtx};
use super::{LogFiles, ReleasePhase, ReleaseStatus, RuntimeError, StartError};
use crate::backend::Backend;
use crate::model::{Release, RunSpec};
use crate::store::{InstanceRecord, NodeStore};

/// How the runtime runs instances.
#[derive(Debug, Clone)]
pub struct RuntimeSettings {
    /// Logs go under `state_dir/logs`.
    pub state_dir: PathBuf,
    /// Time between SIGTERM and SIGKILL.
    pub stop_grace: Duration,
    /// How long a release being removed may finish its requests in flight.
    pub drain_timeout: Duration,
    /// Log files rotate past this size.
    pub log_max_bytes: u64,
    /// `crash_limit` exits within `crash_window` make a crash loop.
    pub crash_window: Duration,
    pub crash_limit: usize,
}

/// A running release. Its instance tasks belong to it: dropping or stopping
/// the handle stops them (and their processes).
pub struct ReleaseHandle {
    pub release: Release,
    pub backend: Arc<Backend>,
    pub logs: LogFiles,
    /// When this serve started (or adopted) it.
    pub started: std::time::Instant,
    status: Arc<watch::Sender<ReleaseStatus>>,
    cancel: CancellationToken,
    tasks: TaskTracker,
}

/// How long draining waits before it trusts the in-flight count.
const DRAIN_SETTLE: Duration = Duration::from_millis(100);

/// Lines of each instance's log shown when a deploy fails.
const FAILURE_LOG_LINES: usize = 10;

impl ReleaseHandle {
    pub(super) fn start(
        release: Release,
        settings: Arc<RuntimeSettings>,
        store: Arc<dyn NodeStore>,
        health_client: reqwest::Client,
        engine: Engine,
        handed_over: CancellationToken,
        adopt: Vec<InstanceRecord>,
    ) -> Arc<Self> {
        let replicas = release.spec.replicas;
        let service = release.service.to_string();
        let version = release.version.to_string();
        let backend = Arc::new(
            Backend::new(&service, &version, replicas as usize)
                .with_proxy_header(release.spec.proxy_protocol),
        );
        let logs = LogFiles::new(&settings.state_dir, &service, &version);
        let (status, _) = watch::channel(ReleaseStatus::new(replicas));
        let handle = Arc::new(Self {
            release,
            backend,
            logs,
            started: std::time::Instant::now(),
            status: Arc::new(status),
            cancel: CancellationToken::new(),
            tasks: TaskTracker::new(),
        });
        let shared = Arc::new(handle.release.clone());
        for slot in 0..replicas {
            let ctx = InstanceCtx {
                slot,
                release: Arc::clone(&shared),
                settings: Arc::clone(&settings),
                store: Arc::clone(&store),
                health_client: health_client.clone(),
                backend: Arc::clone(&handle.backend),
                logs: handle.logs.clone(),
                status: Arc::clone(&handle.status),
                cancel: handle.cancel.clone(),
                handed_over: handed_over.clone(),
                engine: engine.clone(),
            };
            let adopted = adopt.iter().find(|r| r.slot == slot).cloned();
            handle.tasks.spawn(instance::run(ctx, adopted));
        }
        handle.tasks.close();
        handle
    }

    pub fn status(&self) -> ReleaseStatus {
        self.status.borrow().clone()
    }

    pub fn name(&self) -> String {
        format!("{} {}", self.release.service, self.release.version)
    }

    /// Waits until every instance is healthy. Fails at once on a crash loop
    /// or a command that cannot start, and after `timeout` otherwise; the
    /// error carries the exits and the last log lines.
    pub async fn wait_ready(&self, timeout: Duration) -> Result<(), RuntimeError> {
        let mut rx = self.status.subscribe();
        let waited = tokio::time::timeout(timeout, async {
            loop {
                let phase = rx.borrow_and_update().phase();
                match phase {
                    ReleasePhase::Ready | ReleasePhase::Failed | ReleasePhase::CrashLoop => {
                        return phase;
                    }
                    _ => {}
                }
                if rx.changed().await.is_err() {
                    return ReleasePhase::Failed;
                }
            }
        })
        .await;
        let status = self.status();
        let release = self.name();
        match waited {
            Ok(ReleasePhase::Ready) => Ok(()),
            Ok(ReleasePhase::CrashLoop) => Err(RuntimeError::CrashLoop {
                release,
                exits: status.exits_summary(),
                logs: self.last_log_lines(),
            }),
            Ok(_) => {
                let cause = match status.start_error {
                    Some(StartError::Unrecorded(cause)) => {
                        return Err(RuntimeError::Unrecorded { release, cause });
                    }
                    Some(StartError::Launch(cause)) => cause,
                    None => "the release stopped".into(),
                };
                Err(match &self.release.spec.run {
                    RunSpec::Container(spec) => RuntimeError::ContainerStart {
                        release,
                        image: spec.image.clone(),
                        cause,
                    },
                    _ => RuntimeError::CannotStart {
                        release,
                        command: self.command_line(),
                        cause,
                    },
                })
            }
            Err(_) => Err(RuntimeError::NotReady {
                release,
                waited: timeout,
                detail: format!(
                    "{} (health check GET {}; exits: {})",
                    status.health_summary(),
                    self.release.spec.health.path,
                    status.exits_summary()
                ),
                logs: self.last_log_lines(),
            }),
        }
    }

    fn command_line(&self) -> String {
        match &self.release.spec.run {
            RunSpec::Process { command, .. } => command.join(" "),
            RunSpec::External { upstreams, .. } => upstreams.join(" "),
            RunSpec::Container(spec) => spec.image.clone(),
        }
    }

    /// The last lines of each instance's log, headed by the file they
    /// come from (what a failed deploy shows).
    pub fn last_log_lines(&self) -> String {
        let mut out = String::new();
        for slot in self.logs.slots() {
            if let Ok(chunk) = self.logs.tail(slot, FAILURE_LOG_LINES) {
                out.push_str(&format!(
                    "--- last lines of instance {slot} ({}) ---\n",
                    self.logs.path(slot).display()
                ));
                for line in chunk.lines {
                    out.push_str(&line);
                    out.push('\n');
                }
            }
        }
        out
    }

    /// Waits until no request is in flight, at most `timeout`.
    pub async fn drain(&self, timeout: Duration) {
        let deadline = tokio::time::Instant::now() + timeout;
        // A request that read the previous routing table an instant before
        // the swap may not be counted yet; give it time to show up.
        tokio::time::sleep(DRAIN_SETTLE.min(timeout)).await;
        while self.backend.in_flight() > 0 && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        if self.backend.in_flight() > 0 {
            tracing::warn!(
                release = %self.name(),
                in_flight = self.backend.in_flight(),
                "drain timeout passed with requests still in flight"
            );
        }
    }

    /// Waits until the instance tasks have ended (after a stop or a hand-over).
    pub(super) async fn ended(&self) {
        self.tasks.wait().await;
    }

    /// Stops every instance (SIGTERM, then SIGKILL after the grace period)
    /// and waits for them.
    pub async fn stop(&self) {
        self.cancel.cancel();
        self.tasks.wait().await;
    }
}

impl Drop for ReleaseHandle {
    fn drop(&mut self) {
        self.cancel.cancel();
    }
}
