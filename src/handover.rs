//! Handover (a self-upgrade of serve): a running serve hands its listening sockets and its
//! instances to a new serve process (usually a new binary) without failing
//! a request. The old serve (O) and the new one (N):
//!
//! 1. O holds changes back (those in progress finish first), saves its
//!    shadow summaries and stops managing its instances, leaving them
//!    running, recorded for adoption and in the rotation. It keeps
//!    proxying throughout.
//! 2. O starts N: its own command line, run from the binary given or the
//!    path O was started from, with `--handover-from SOCKET`, a Unix socket
//!    in the state directory.
//! 3. N connects; O checks that N is the process it started (`SO_PEERCRED`)
//!    and passes it the proxy and admin listening sockets and the state
//!    directory's lock file (`SCM_RIGHTS`); N holds the lock from then on
//!    and writes its pid into the file.
//! 4. N restores the committed state and adopts the instances (by pid and
//!    start time) as a restarted serve does, accepts on the sockets, and
//!    answers `ready`.
//! 5. O stops accepting (connections queued on the sockets are N's to
//!    accept), answers `Connection: close` on its keep-alive connections so
//!    each ends after its next response, drains them and exits, without
//!    stopping the instances.
//!
//! If N fails before `ready`, O kills it (SIGKILL: N must not stop the
//! instances on its way out), writes its own pid into the lock file again,
//! takes the instances back as a restarted serve would, and lets changes
//! through again.

mod gate;
mod socket;

pub use gate::ChangeGate;

use std::ffi::OsString;
use std::io;
use std::os::fd::{AsFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use serde::{Deserialize, Serialize};
use tokio::net::{UnixListener, UnixStream};
use tokio_util::sync::CancellationToken;

use crate::controller::Controller;
use crate::store::StateDir;

/// The admin API path that starts a handover.
pub const API_PATH: &str = "/v1/handover";
/// The `serve` flag that makes a serve take over from the one at SOCKET.
pub const FLAG: &str = "--handover-from";

/// How long changes in progress may take to finish before a handover.
const CHANGES_WAIT: Duration = Duration::from_secs(30);
/// How long instances taken back after a failed handover may take to pass
/// a health check (meanwhile the routes from before the handover serve).
const TAKE_BACK_WAIT: Duration = Duration::from_secs(5);
/// How long the new serve may take to connect, and then to be ready
/// (it restores the state and waits for its instances first).
const CONNECT_WAIT: Duration = Duration::from_secs(30);
const READY_WAIT: Duration = Duration::from_secs(60);

#[derive(Debug, thiserror::Error)]
pub enum HandoverError {
    #[error("a handover is already in progress")]
    InProgress,
    #[error("this serve has already handed over to another process")]
    AlreadyDone,
    #[error(
        "changes still in progress after {}; retry the handover when they are done",
        humantime::format_duration(CHANGES_WAIT)
    )]
    ChangesInProgress,
    #[error(
        "an upgrade of {0} is running; hand over when it has ended (`switchyard upgrade NAME --status`) or abort it"
    )]
    UpgradeRunning(String),
    #[error("the new serve ({binary}) did not take over: {cause}. This serve carries on")]
    Failed { binary: String, cause: String },
}

/// What a handover did.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct HandoverReport {
    pub old_pid: u32,
    pub new_pid: u32,
    pub binary: String,
}

/// A handover asked for through the admin API.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct HandoverRequest {
    /// The new serve's binary; default: the path this serve was started from.
    #[serde(default)]
    pub binary: Option<PathBuf>,
}

/// Everything the old serve needs to hand over.
pub struct Handover {
    controller: Arc<Controller>,
    gate: ChangeGate,
    /// Duplicates of the proxy and admin listening sockets, until serve
    /// shuts down (see [`Handover::close_listeners`]).
    listeners: std::sync::Mutex<Option<[OwnedFd; 2]>>,
    /// A duplicate of the TLS listening socket, when serve has one.
    tls_listener: std::sync::Mutex<Option<OwnedFd>>,
    /// The state directory this serve holds; its lock goes to the new serve.
    state_dir: Arc<StateDir>,
    /// The binary this serve was started from, resolved at start (a binary
    /// replaced since then is the new one at that path).
    binary: PathBuf,
    /// This serve's arguments, which the new serve gets too.
    args: Vec<OsString>,
    socket: PathBuf,
    /// Held while a handover runs.
    running: tokio::sync::Mutex<()>,
    done: CancellationToken,
}

impl Handover {
    pub fn new(
        controller: Arc<Controller>,
        gate: ChangeGate,
        listeners: [OwnedFd; 2],
        tls_listener: Option<OwnedFd>,
        state_dir: Arc<StateDir>,
    ) -> io::Result<Self> {
        Ok(Self {
            controller,
            gate,
            listeners: std::sync::Mutex::new(Some(listeners)),
            tls_listener: std::sync::Mutex::new(tls_listener),
            binary: std::env::current_exe()?,
            args: successor_args(std::env::args_os().skip(1)),
            socket: state_dir.path().join("handover.sock"),
            state_dir,
            running: tokio::sync::Mutex::new(()),
            done: CancellationToken::new(),
        })
    }

    /// Cancelled once another serve has taken over.
    pub fn done(&self) -> &CancellationToken {
        &self.done
    }

    /// Closes the duplicates of the listening sockets (no handover can
    /// follow): once serve's own listeners close too, new connections are
    /// refused instead of waiting in the backlog for a serve that will
    /// never accept them.
    pub fn close_listeners(&self) {
        self.listeners
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take();
        self.tls_listener
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take();
    }

    /// Waits until no handover is running.
    pub async fn settled(&self) {
        drop(self.running.lock().await);
    }

    /// Hands this serve over to a new process started from `binary`
    /// (default: the binary this serve was started from).
    pub async fn start(&self, binary: Option<PathBuf>) -> Result<HandoverReport, HandoverError> {
        let _running = self
            .running
            .try_lock()
            .map_err(|_| HandoverError::InProgress)?;
        if self.done.is_cancelled() {
            return Err(HandoverError::AlreadyDone);
        }
        let binary = binary.unwrap_or_else(|| self.binary.clone());
        tracing::info!(binary = %binary.display(), "handing over to a new serve");
        let upgrading = self.controller.upgrading();
        if !upgrading.is_empty() {
            return Err(HandoverError::UpgradeRunning(upgrading.join(", ")));
        }
        if !self.gate.close(CHANGES_WAIT).await {
            self.gate.open();
            return Err(HandoverError::ChangesInProgress);
        }
        self.controller.save_shadow_stats();
        // The new serve drives the stored rollouts from where they are.
        self.controller.stop_rollout_drivers();
        self.controller.runtime().hand_over().await;
        match self.pass_to_successor(&binary).await {
            Ok(new_pid) => {
                tracing::info!(new_pid, "the new serve took over; draining and exiting");
                self.controller.stop_tcp_accepting();
                self.done.cancel();
                Ok(HandoverReport {
                    old_pid: std::process::id(),
                    new_pid,
                    binary: binary.display().to_string(),
                })
            }
            Err(cause) => {
                tracing::error!(%cause, "handover failed; taking the instances back");
                self.take_back().await;
                self.gate.open();
                Err(HandoverError::Failed {
                    binary: binary.display().to_string(),
                    cause,
                })
            }
        }
    }

    /// Manages the instances again after a failed handover: adopts them as
    /// a restarted serve does. Until they pass a health check, the routes
    /// from before (whose instances never stopped) keep serving.
    async fn take_back(&self) {
        if let Err(error) = self.state_dir.write_pid() {
            tracing::error!(%error, "cannot write this serve's pid into the state lock again");
        }
        let held = self.controller.hold_routes();
        self.controller.runtime().take_back();
        if let Err(error) = self.controller.restore() {
            tracing::error!(%error, "cannot take the instances back");
        }
        self.controller.wait_restored(TAKE_BACK_WAIT).await;
        drop(held);
        if let Err(error) = self.controller.resume_rollouts() {
            tracing::error!(%error, "cannot resume the rollouts");
        }
    }

    /// Starts the new serve, passes it the listening sockets and waits for
    /// its `ready`; on failure it is killed. Returns its pid.
    async fn pass_to_successor(&self, binary: &Path) -> Result<u32, String> {
        let _ = std::fs::remove_file(&self.socket);
        let listener = UnixListener::bind(&self.socket)
            .map_err(|e| format!("cannot listen on {}: {e}", self.socket.display()))?;
        let _remove = RemoveOnDrop(&self.socket);
        let mut child = tokio::process::Command::new(binary)
            .args(&self.args)
            .arg(FLAG)
            .arg(&self.socket)
            .stdin(Stdio::null())
            .kill_on_drop(false)
            .spawn()
            .map_err(|e| format!("cannot start it: {e}"))?;
        let pid = child.id().ok_or_else(|| "it exited at once".to_owned())?;
        let talk = async {
            let (mut stream, _) = tokio::time::timeout(CONNECT_WAIT, listener.accept())
                .await
                .map_err(|_| format!("it did not connect within {CONNECT_WAIT:?}"))?
                .map_err(|e| format!("accepting its connection failed: {e}"))?;
            let peer = rustix::net::sockopt::socket_peercred(&stream)
                .map_err(|e| format!("cannot tell who connected: {e}"))?;
            if u32::try_from(peer.pid.as_raw_nonzero().get()).ok() != Some(pid) {
                return Err(format!(
                    "pid {} connected instead of the new serve (pid {pid})",
                    peer.pid.as_raw_nonzero()
                ));
            }
            let listeners = self
                .listeners
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .as_ref()
                .map(|[proxy, admin]| (proxy.try_clone(), admin.try_clone()));
            let Some((Ok(proxy), Ok(admin))) = listeners else {
                return Err("the listening sockets are closed: serve is shutting down".to_owned());
            };
            let tls = self
                .tls_listener
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .as_ref()
                .map(OwnedFd::try_clone)
                .transpose()
                .map_err(|e| format!("cannot pass the TLS listening socket: {e}"))?;
            let tcp = self.controller.tcp_listening_sockets();
            let fds = [proxy.as_fd(), admin.as_fd(), self.state_dir.lock_fd()];
            let tls = tls.as_ref().map(AsFd::as_fd);
            let sent = if tcp.is_empty() {
                socket::send(&stream, fds, tls).await
            } else {
                let tcp: Vec<_> = tcp.iter().map(|(addr, fd)| (*addr, fd.as_fd())).collect();
                socket::send_with_tcp(&stream, fds, tls, &tcp).await
            };
            sent.map_err(|e| format!("cannot pass the listening sockets and the state lock: {e}"))?;
            tokio::time::timeout(READY_WAIT, socket::hear_ready(&mut stream))
                .await
                .map_err(|_| format!("it was not ready within {READY_WAIT:?}"))?
                .map_err(|e| e.to_string())
        };
        let talked = tokio::select! {
            talked = talk => talked,
            status = child.wait() => Err(match status {
                Ok(status) => format!("it exited ({status}); its log is with this serve's"),
                Err(e) => format!("it ended: {e}"),
            }),
        };
        match talked {
            Ok(()) => Ok(pid),
            Err(cause) => {
                // Not SIGTERM: a serve stopping on SIGTERM stops its instances.
                if let Ok(raw) = i32::try_from(pid) {
                    let _ = kill(Pid::from_raw(raw), Signal::SIGKILL);
                }
                let _ = child.wait().await;
                Err(cause)
            }
        }
    }
}

/// The arguments for the new serve: this serve's, less its own
/// `--handover-from`.
fn successor_args(args: impl Iterator<Item = OsString>) -> Vec<OsString> {
    let mut out = Vec::new();
    let mut skip_value = false;
    for arg in args {
        if skip_value {
            skip_value = false;
            continue;
        }
        if arg == FLAG {
            skip_value = true;
            continue;
        }
        if arg
            .to_str()
            .is_some_and(|a| a.starts_with(&format!("{FLAG}=")))
        {
            continue;
        }
        out.push(arg);
    }
    out
}

struct RemoveOnDrop<'a>(&'a Path);

impl Drop for RemoveOnDrop<'_> {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(self.0);
    }
}

/// The new serve's side: the listening sockets and the state lock it took
/// over, and the old serve, which waits for `ready`.
pub struct Successor {
    pub proxy: std::net::TcpListener,
    pub admin: std::net::TcpListener,
    /// The state directory's open lock file (`None` from a serve that
    /// held no lock).
    pub lock: Option<OwnedFd>,
    /// The TLS listening socket, from a serve that had one.
    pub tls: Option<std::net::TcpListener>,
    /// The TCP services' listening sockets, by address.
    pub tcp: Vec<(std::net::SocketAddr, std::net::TcpListener)>,
    pub old: OldServe,
}

/// The line to the serve that hands over.
pub struct OldServe {
    stream: UnixStream,
}

impl Successor {
    /// Connects to the serve handing over at `socket` and receives its
    /// listening sockets and state lock.
    pub async fn connect(socket: &Path) -> io::Result<Self> {
        let stream = UnixStream::connect(socket).await?;
        let passed = socket::receive(&stream).await?;
        let tcp = if passed.tcp_follows {
            socket::receive_tcp(&stream)
                .await?
                .into_iter()
                .map(|(addr, fd)| (addr, std::net::TcpListener::from(fd)))
                .collect()
        } else {
            Vec::new()
        };
        Ok(Self {
            tcp,
            proxy: std::net::TcpListener::from(passed.proxy),
            admin: std::net::TcpListener::from(passed.admin),
            lock: passed.lock,
            tls: passed.tls.map(std::net::TcpListener::from),
            old: OldServe { stream },
        })
    }
}

impl OldServe {
    /// Tells the old serve that this one accepts now; it drains and exits.
    pub async fn ready(mut self) -> io::Result<()> {
        socket::say_ready(&mut self.stream).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_new_serve_gets_the_same_arguments_but_its_own_socket() {
        let args = [
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--handover-from",
            "/old.sock",
            "--handover-from=/older.sock",
            "--workers",
            "1",
        ]
        .map(OsString::from);
        assert_eq!(
            successor_args(args.into_iter()),
            ["serve", "--listen", "127.0.0.1:0", "--workers", "1"].map(OsString::from)
        );
    }
}
