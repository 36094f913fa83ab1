//! Local processes: starting them with their port, log file and marks,
//! telling a live process from a reused pid, and stopping a process group.

pub(super) mod sweep;

use std::collections::BTreeMap;
use std::fs::File;
use std::io;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;
use tokio::process::{Child, Command};

/// The environment variables that mark an instance process: which state
/// directory's serve started it, and as which instance. A restarted serve
/// finds unrecorded instances by them ([`sweep`]).
pub mod mark {
    pub const STATE_DIR: &str = "SWITCHYARD_STATE_DIR";
    pub const SERVICE: &str = "SWITCHYARD_SERVICE";
    pub const VERSION: &str = "SWITCHYARD_VERSION";
    pub const INSTANCE: &str = "SWITCHYARD_INSTANCE";
}

/// What one instance process is started with.
pub struct Launch<'a> {
    pub command: &'a [String],
    pub env: &'a BTreeMap<String, String>,
    pub cwd: &'a Path,
    pub port: u16,
    pub log: File,
    pub service: &'a str,
    pub version: &'a str,
    pub slot: u32,
    pub state_dir: &'a Path,
}

/// The program to run: a relative path with a `/` in it resolves against
/// the working directory; a bare name is looked up on `PATH`.
pub fn program_path(command: &str, cwd: &Path) -> PathBuf {
    let p = Path::new(command);
    if p.is_relative() && command.contains('/') {
        cwd.join(p)
    } else {
        p.to_path_buf()
    }
}

/// Starts the process in its own process group (so stopping it reaches its
/// children, and a signal to serve's terminal does not), with stdout and
/// stderr appended to its log file. The process outlives serve if serve is
/// killed, so a restarted serve can adopt it.
pub fn spawn(launch: Launch<'_>) -> io::Result<Child> {
    let port = launch.port.to_string();
    let args = launch.command[1..]
        .iter()
        .map(|a| a.replace("{port}", &port));
    let stderr = launch.log.try_clone()?;
    let mut cmd = Command::new(program_path(&launch.command[0], launch.cwd));
    cmd.args(args)
        .current_dir(launch.cwd)
        .envs(launch.env)
        .env("PORT", &port)
        .env(mark::SERVICE, launch.service)
        .env(mark::VERSION, launch.version)
        .env(mark::INSTANCE, launch.slot.to_string())
        .env(mark::STATE_DIR, launch.state_dir)
        .stdin(Stdio::null())
        .stdout(Stdio::from(launch.log))
        .stderr(Stdio::from(stderr))
        .process_group(0)
        .kill_on_drop(false);
    cmd.spawn()
}

/// What `/proc/PID/stat` tells of a live process (not a zombie).
struct Stat {
    /// The process group it is in.
    group: u32,
    /// Its start time in clock ticks since boot.
    ticks: u64,
}

fn stat(pid: u32) -> Option<Stat> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let after_comm = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = after_comm.split_whitespace().collect();
    if fields.first() == Some(&"Z") {
        return None;
    }
    Some(Stat {
        group: fields.get(2)?.parse().ok()?,
        ticks: fields.get(19)?.parse().ok()?,
    })
}

/// The process's start time in clock ticks since boot, from `/proc`.
pub fn start_ticks(pid: u32) -> Option<u64> {
    stat(pid).map(|s| s.ticks)
}

/// Whether `pid` is still the process that was started at `ticks` (and
/// not a zombie, nor a new process that reused the pid).
pub fn is_alive(pid: u32, ticks: u64) -> bool {
    start_ticks(pid) == Some(ticks)
}

/// Sends a signal to the process group led by `pid`.
pub fn kill_group(pid: u32, signal: Signal) {
    if let Ok(raw) = i32::try_from(pid) {
        let _ = killpg(Pid::from_raw(raw), signal);
    }
}

/// In the background, stops the process group of a process this serve
/// does not manage (SIGTERM, then SIGKILL after `grace`), unless `pid` is
/// no longer the process started at `ticks`.
pub fn stop_group_in_background(pid: u32, ticks: u64, grace: Duration) {
    if !is_alive(pid, ticks) {
        return;
    }
    kill_group(pid, Signal::SIGTERM);
    tokio::spawn(async move {
        let deadline = tokio::time::Instant::now() + grace;
        while is_alive(pid, ticks) && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        if is_alive(pid, ticks) {
            kill_group(pid, Signal::SIGKILL);
        }
    });
}

/// An instance process: our own child, or one adopted from an earlier serve.
pub enum Proc {
    Child(Child),
    Adopted { pid: u32, ticks: u64 },
}

impl Proc {
    pub fn pid(&self) -> Option<u32> {
        match self {
            Proc::Child(c) => c.id(),
            Proc::Adopted { pid, .. } => Some(*pid),
        }
    }

    /// Waits for the process to end and says how it ended.
    pub async fn wait(&mut self) -> String {
        match self {
            Proc::Child(child) => match child.wait().await {
                Ok(status) => describe_exit(status),
                Err(e) => format!("unknown ({e})"),
            },
            Proc::Adopted { pid, ticks } => {
                while is_alive(*pid, *ticks) {
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
                "exited (adopted; code unknown)".to_owned()
            }
        }
    }

    /// SIGTERM to the group, then SIGKILL after `grace`.
    pub async fn terminate(&mut self, grace: Duration) {
        let Some(pid) = self.pid() else {
            return;
        };
        kill_group(pid, Signal::SIGTERM);
        if tokio::time::timeout(grace, self.wait()).await.is_err() {
            kill_group(pid, Signal::SIGKILL);
            let _ = tokio::time::timeout(Duration::from_secs(5), self.wait()).await;
        }
    }
}

fn describe_exit(status: std::process::ExitStatus) -> String {
    use std::os::unix::process::ExitStatusExt;
    match (status.code(), status.signal()) {
        (Some(code), _) => format!("code {code}"),
        (None, Some(signal)) => format!("signal {signal}"),
        _ => "unknown".to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn own_process_is_alive_and_a_wrong_start_time_is_not() {
        let pid = std::process::id();
        let ticks = start_ticks(pid).expect("own stat");
        assert!(is_alive(pid, ticks));
        assert!(!is_alive(pid, ticks + 1));
    }

    #[test]
    fn relative_programs_resolve_against_the_working_directory() {
        let cwd = Path::new("/srv/app");
        assert_eq!(
            program_path("./server", cwd),
            PathBuf::from("/srv/app/./server")
        );
        assert_eq!(program_path("python3", cwd), PathBuf::from("python3"));
        assert_eq!(program_path("/bin/true", cwd), PathBuf::from("/bin/true"));
    }
}
