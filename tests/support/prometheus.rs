//! A real Prometheus server (Debian's `prometheus`) for a test: it scrapes
//! serve's admin `/metrics` every second, listens on a free loopback port,
//! keeps its data in the test's temp dir, and is killed by PID when
//! dropped.

use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use tokio::process::{Child, Command};

use super::component;

/// A running Prometheus.
pub struct Prometheus {
    child: Child,
    /// `http://127.0.0.1:PORT`.
    pub url: String,
    log: std::path::PathBuf,
}

/// A port free at the time of asking (Prometheus takes no port 0 and
/// says nothing of the port it got).
fn free_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind a loopback port");
    listener.local_addr().expect("address").port()
}

impl Prometheus {
    /// Starts Prometheus scraping `admin` (serve's admin address,
    /// `127.0.0.1:PORT`) under `dir`, and waits until it is ready. None
    /// when the run opts out of Prometheus (see [`component`]).
    pub async fn start(test: &str, dir: &Path, admin: &str) -> Option<Prometheus> {
        if !component::command(test, "prometheus") {
            return None;
        }
        let config = dir.join("prometheus.yml");
        std::fs::write(
            &config,
            format!(
                "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n\
                 scrape_configs:\n  - job_name: switchyard\n    scrape_interval: 1s\n    \
                 metrics_path: /metrics\n    static_configs:\n      - targets: ['{admin}']\n"
            ),
        )
        .expect("write prometheus.yml");
        let log = dir.join("prometheus.log");
        let port = free_port();
        let child = Command::new("prometheus")
            .arg(format!("--config.file={}", config.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.join("tsdb").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).expect("prometheus log file"))
            .kill_on_drop(true)
            .spawn()
            .expect("spawn prometheus");
        let prometheus = Prometheus {
            child,
            url: format!("http://127.0.0.1:{port}"),
            log,
        };
        prometheus.wait_ready().await;
        Some(prometheus)
    }

    async fn wait_ready(&self) {
        let client = reqwest::Client::builder()
            .no_proxy()
            .build()
            .expect("client");
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let ready = client
                .get(format!("{}/-/ready", self.url))
                .send()
                .await
                .is_ok_and(|r| r.status().is_success());
            if ready {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "prometheus did not get ready within 60 s:\n{}",
                self.log()
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// What Prometheus logged.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// The value of an instant query of one series, if it has one now.
    pub async fn value(&self, query: &str) -> Option<f64> {
        let client = reqwest::Client::builder()
            .no_proxy()
            .build()
            .expect("client");
        let mut url = reqwest::Url::parse(&format!("{}/api/v1/query", self.url)).expect("url");
        url.query_pairs_mut().append_pair("query", query);
        let answer: serde_json::Value = client.get(url).send().await.ok()?.json().await.ok()?;
        answer["data"]["result"][0]["value"][1]
            .as_str()?
            .parse()
            .ok()
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        if let Some(pid) = self.child.id() {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid as i32),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
    }
}
