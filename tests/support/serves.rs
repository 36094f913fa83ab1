//! Serves a test does not start through [`Env`]: the one a handover
//! starts (no child of the harness), and a serve expected to refuse.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

use super::{Env, Run, SWITCHYARD, pid_alive};

/// Stops, when dropped, every serve of `state_dir` still running: after a
/// handover the serve is no longer the harness's child, so it is found by
/// its command line and stopped by PID (SIGTERM, which stops its
/// instances; SIGKILL if it lingers).
pub struct StopServes {
    state_dir: PathBuf,
}

impl StopServes {
    pub fn of(env: &Env) -> StopServes {
        StopServes {
            state_dir: env.state_dir.clone(),
        }
    }

    /// The live serves of the state dir.
    pub fn pids(&self) -> Vec<u32> {
        let wanted = self.state_dir.as_os_str().as_encoded_bytes();
        let mut pids = Vec::new();
        let Ok(entries) = std::fs::read_dir("/proc") else {
            return pids;
        };
        for entry in entries.flatten() {
            let Some(pid) = entry.file_name().to_str().and_then(|s| s.parse().ok()) else {
                continue;
            };
            let Ok(cmdline) = std::fs::read(format!("/proc/{pid}/cmdline")) else {
                continue;
            };
            let args: Vec<&[u8]> = cmdline.split(|b| *b == 0).collect();
            if args.get(1) == Some(&&b"serve"[..]) && args.contains(&wanted) && pid_alive(pid) {
                pids.push(pid);
            }
        }
        pids
    }
}

impl Drop for StopServes {
    fn drop(&mut self) {
        let pids = self.pids();
        for pid in &pids {
            let _ = kill(Pid::from_raw(*pid as i32), Signal::SIGTERM);
        }
        let deadline = Instant::now() + Duration::from_secs(20);
        while pids.iter().any(|p| pid_alive(*p)) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        for pid in pids.into_iter().filter(|p| pid_alive(*p)) {
            let _ = kill(Pid::from_raw(pid as i32), Signal::SIGKILL);
        }
    }
}

/// Runs `switchyard serve` on `state_dir` expecting it to exit at once
/// (within 30 s; killed otherwise). Its proxy address is a port the test
/// holds, so even if the check it expects were gone serve could not get
/// as far as binding the admin address.
pub async fn serve_exits(state_dir: &Path, extra: &[&str]) -> Run {
    let held = std::net::TcpListener::bind("127.0.0.1:0").expect("bind a loopback port");
    let listen = held.local_addr().expect("address").to_string();
    let child = tokio::process::Command::new(SWITCHYARD)
        .arg("serve")
        .args(["--listen", &listen, "--state-dir"])
        .arg(state_dir)
        .args(extra)
        .stdin(std::process::Stdio::null())
        .kill_on_drop(true)
        .output();
    let out = tokio::time::timeout(Duration::from_secs(30), child)
        .await
        .expect("serve should exit at once")
        .expect("run serve");
    Run::from(out)
}
