//! A serve a test does not start through [`Env`]: one expected to refuse.
//! (The serve a handover starts is stopped by [`Env`]'s drop.)

use std::path::Path;
use std::time::Duration;

use super::{Run, SWITCHYARD};

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
