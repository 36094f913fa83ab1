//! serve started under a low open-files limit (`prlimit`), as an operator's
//! system with the common default of 1,024 would start it.

use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::Command;

use super::{Env, SWITCHYARD, Serve, within};

impl Env {
    /// Starts serve on free ports through `prlimit --nofile=SOFT:HARD`
    /// and waits, up to `wait`, until it prints its addresses; returns what
    /// it printed up to then.
    pub async fn launch_with_file_limit(
        &mut self,
        soft: u64,
        hard: u64,
        wait: Duration,
    ) -> Vec<String> {
        let mut child = Command::new("prlimit")
            .arg(format!("--nofile={soft}:{hard}"))
            .arg("--")
            .arg(SWITCHYARD)
            .args(["serve", "--listen", "127.0.0.1:0", "--admin", "127.0.0.1:0"])
            .arg("--state-dir")
            .arg(&self.state_dir)
            .args(&self.extra_args)
            .env("SWITCHYARD_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("run prlimit (util-linux) to start serve under a file limit");
        let log = Arc::new(Mutex::new(String::new()));
        let stderr = child.stderr.take().expect("stderr");
        let sink = Arc::clone(&log);
        tokio::spawn(async move {
            let mut lines = BufReader::new(stderr).lines();
            while let Ok(Some(line)) = lines.next_line().await {
                sink.lock().expect("log lock").push_str(&(line + "\n"));
            }
        });
        let mut lines = BufReader::new(child.stdout.take().expect("stdout")).lines();
        let mut banner = Vec::new();
        let printed = within(wait, "serve to print its addresses", async {
            while let Ok(Some(line)) = lines.next_line().await {
                banner.push(line);
                if banner.iter().any(|l| l.contains("admin API listening on")) {
                    return true;
                }
            }
            false
        })
        .await;
        assert!(
            printed,
            "serve did not start: {banner:?}\n{}",
            log.lock().expect("log lock")
        );
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
        let url = |what: &str| {
            banner
                .iter()
                .find_map(|l| {
                    l.split_once(&format!("{what} listening on "))?
                        .1
                        .split_whitespace()
                        .next()
                })
                .map(str::to_owned)
                .unwrap_or_else(|| panic!("no {what} address in {banner:?}"))
        };
        let (proxy, admin) = (url("proxy"), url("admin API"));
        self.serve = Some(Serve {
            child,
            proxy_addr: proxy.trim_start_matches("http://").to_owned(),
            admin_addr: admin.trim_start_matches("http://").to_owned(),
            proxy,
            admin,
            log,
        });
        banner
    }
}
