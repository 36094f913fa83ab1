//! A hello-server the test runs itself, outside Switchyard.

use std::net::SocketAddr;
use std::process::Stdio;
use std::time::Duration;

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

use super::{HELLO, within};

/// A hello-server this test runs itself (not through Switchyard); killed
/// by PID when dropped, whatever happened.
pub struct OwnServer {
    child: Child,
    pub pid: u32,
    pub addr: SocketAddr,
    /// The bound on waiting for it to listen and to exit.
    wait: Duration,
}

impl OwnServer {
    /// Starts hello-server on `port` (0: any free one) and waits, up to
    /// `wait`, until it listens.
    pub async fn start(version: &str, port: u16, wait: Duration) -> OwnServer {
        let mut child = Command::new(HELLO)
            .args(["--port", &port.to_string(), "--version", version])
            .env_remove("SWITCHYARD_STATE_DIR")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("spawn hello-server");
        let pid = child.id().expect("hello-server pid");
        let stdout = child.stdout.take().expect("stdout");
        let mut guard = OwnServer {
            child,
            pid,
            addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            wait,
        };
        let mut lines = BufReader::new(stdout).lines();
        let line = within(wait, "hello-server to listen", lines.next_line())
            .await
            .expect("read hello-server output")
            .expect("hello-server printed where it listens");
        guard.addr = line
            .rsplit_once("listening on ")
            .and_then(|(_, addr)| addr.trim().parse().ok())
            .unwrap_or_else(|| panic!("unexpected first line {line:?}"));
        // It logs every request to stdout: keep the pipe drained.
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
        guard
    }

    pub fn is_running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// SIGKILL and reap.
    pub async fn kill(&mut self) {
        if self.is_running() {
            let _ = kill(Pid::from_raw(self.pid as i32), Signal::SIGKILL);
        }
        let _ = within(self.wait, "hello-server to exit", self.child.wait()).await;
    }
}

impl Drop for OwnServer {
    fn drop(&mut self) {
        if self.is_running() {
            let _ = kill(Pid::from_raw(self.pid as i32), Signal::SIGKILL);
            let _ = self.child.try_wait();
        }
    }
}
