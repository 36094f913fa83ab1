//! The end-to-end harness: a real `switchyard serve` in a fresh temp dir,
//! driven through the real CLI and real sockets on 127.0.0.1.
//!
//! Every [`Env`] stops what it started when dropped, even when the test
//! fails: every serve of its state dir (the one it started and any that
//! took over from it) gets SIGTERM, and once they have exited no instance
//! may still run: serve stops its instances itself, so one left running
//! fails the test (unless the test killed serve with `kill -9` and left it
//! dead). Only then is whatever is left killed by PID.

#![allow(dead_code)]

pub mod abuse;
pub mod browser;
pub mod component;
pub mod etcd;
pub mod file_limit;
pub mod fleet;
pub mod http1;
pub mod httpbin;
pub mod listing;
pub mod load;
pub mod metrics;
pub mod own_server;
pub mod pebble;
pub mod prometheus;
pub mod raw_http;
pub mod serves;
pub mod tls;
pub mod tmpfs;
pub mod webhooks;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

pub const SWITCHYARD: &str = env!("CARGO_BIN_EXE_switchyard");
pub const HELLO: &str = env!("CARGO_BIN_EXE_hello-server");

/// An answer read whole: status, headers and body as text.
#[derive(Debug)]
pub struct Reply {
    pub status: u16,
    pub headers: reqwest::header::HeaderMap,
    pub body: String,
}

impl Reply {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {} {}", self.status, self.body))
    }
}

/// Sends a request and reads the whole answer, each within `wait`;
/// transport errors and waits run out are `Err`.
pub async fn try_reply(request: reqwest::RequestBuilder, wait: Duration) -> Result<Reply, String> {
    let response = tokio::time::timeout(wait, request.send())
        .await
        .map_err(|_| "no response within the wait".to_owned())?
        .map_err(|e| format!("{e:?}"))?;
    let status = response.status().as_u16();
    let headers = response.headers().clone();
    let body = tokio::time::timeout(wait, response.text())
        .await
        .map_err(|_| "no body within the wait".to_owned())?
        .map_err(|e| format!("body: {e:?}"))?;
    Ok(Reply {
        status,
        headers,
        body,
    })
}

/// Like [`try_reply`], panicking on a transport error.
pub async fn reply(request: reqwest::RequestBuilder, wait: Duration) -> Reply {
    try_reply(request, wait)
        .await
        .unwrap_or_else(|e| panic!("request through the proxy: {e}"))
}

/// `x-switchyard-version` of an answer: the release that answered, or ""
/// when the proxy answered itself.
pub fn version_header(headers: &reqwest::header::HeaderMap) -> String {
    headers
        .get("x-switchyard-version")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_owned()
}

/// Awaits `fut`, panicking with `what` when it takes longer than `wait`.
pub async fn within<T>(wait: Duration, what: &str, fut: impl std::future::Future<Output = T>) -> T {
    tokio::time::timeout(wait, fut)
        .await
        .unwrap_or_else(|_| panic!("timed out: {what}"))
}

/// Whether a process with this PID exists and is not a zombie.
pub fn pid_alive(pid: impl Into<u64>) -> bool {
    let pid = pid.into();
    std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|stat| {
        stat.rsplit_once(')')
            .is_some_and(|(_, rest)| !rest.trim_start().starts_with('Z'))
    })
}

/// Milliseconds since the Unix epoch, as the admin API reports times.
pub fn now_millis() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock after 1970")
        .as_millis() as u64
}

/// What a CLI run printed and how it ended.
#[derive(Debug)]
pub struct Run {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl From<std::process::Output> for Run {
    fn from(out: std::process::Output) -> Run {
        Run {
            code: out.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }
}

impl Run {
    pub fn ok(self) -> Self {
        assert_eq!(
            self.code, 0,
            "command failed:\nstdout: {}\nstderr: {}",
            self.stdout, self.stderr
        );
        self
    }

    pub fn failed(self) -> Self {
        assert_ne!(
            self.code, 0,
            "command should have failed:\nstdout: {}\nstderr: {}",
            self.stdout, self.stderr
        );
        self
    }
}

/// A reqwest client builder with rustls's provider (`ring`) installed:
/// the crate's reqwest has TLS without a provider of its own.
pub fn http_client() -> reqwest::ClientBuilder {
    switchyard::tls::http_client()
}

/// A running serve.
pub struct Serve {
    child: Child,
    pub proxy: String,
    pub admin: String,
    pub proxy_addr: String,
    pub admin_addr: String,
    /// The TLS proxy listener's `host:port` (serve --tls-listen).
    pub tls_addr: Option<String>,
    /// serve's stderr (its logs), collected in the background.
    log: std::sync::Arc<std::sync::Mutex<String>>,
    /// What serve printed on stdout up to its addresses.
    pub banner: Vec<String>,
    /// What serve printed on stdout after them (an access log to `-`).
    stdout: std::sync::Arc<std::sync::Mutex<String>>,
}

/// One test's world: a temp dir, a serve, and clients for both sides.
pub struct Env {
    pub dir: tempfile::TempDir,
    pub state_dir: PathBuf,
    pub serve: Option<Serve>,
    pub http: reqwest::Client,
    pub token: Option<String>,
    extra_args: Vec<String>,
    /// A command serve is started through (`prlimit …`), or none.
    launcher: Vec<String>,
    /// Environment variables serve is started with, beside the test's own.
    pub serve_vars: Vec<(String, String)>,
    /// Set by [`Env::kill9`] until serve is launched again: its instances
    /// outlive it on purpose.
    orphaned: bool,
}

impl Env {
    /// A fresh env with serve started on free ports.
    pub async fn start() -> Env {
        Self::start_with(&[]).await
    }

    /// A fresh env whose serve gets extra arguments.
    pub async fn start_with(extra: &[&str]) -> Env {
        let mut env = Self::new(extra);
        env.launch("127.0.0.1:0", "127.0.0.1:0").await;
        env
    }

    /// A fresh env whose serve requires `token` (in a `--token-file` in
    /// the env's dir); the env's clients send it.
    pub async fn start_with_token(token: &str) -> Env {
        let mut env = Self::new(&[]);
        let file = env.dir.path().join("token");
        std::fs::write(&file, token).expect("write the token file");
        env.extra_args
            .extend(["--token-file".to_owned(), file.display().to_string()]);
        env.token = Some(token.to_owned());
        env.launch("127.0.0.1:0", "127.0.0.1:0").await;
        env
    }

    /// An env without a running serve (call [`Env::launch`]).
    pub fn new(extra: &[&str]) -> Env {
        let dir = tempfile::tempdir().expect("temp dir");
        let state_dir = dir
            .path()
            .canonicalize()
            .expect("canonical temp dir")
            .join("state");
        let http = http_client()
            .no_proxy()
            .pool_max_idle_per_host(64)
            .build()
            .expect("http client");
        Env {
            dir,
            state_dir,
            serve: None,
            http,
            token: None,
            extra_args: extra.iter().map(|s| s.to_string()).collect(),
            launcher: Vec::new(),
            serve_vars: Vec::new(),
            orphaned: false,
        }
    }

    /// Starts serve and waits until it prints its addresses.
    pub async fn launch(&mut self, listen: &str, admin: &str) {
        let serve = self
            .try_launch(listen, admin)
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        self.serve = Some(serve);
        self.orphaned = false;
    }

    /// Starts serve; the error carries what serve printed when it fails.
    pub async fn try_launch(&mut self, listen: &str, admin: &str) -> Result<Serve, String> {
        let mut command = match self.launcher.split_first() {
            Some((program, args)) => {
                let mut command = Command::new(program);
                command.args(args).arg(SWITCHYARD);
                command
            }
            None => Command::new(SWITCHYARD),
        };
        let mut child = command
            .arg("serve")
            .args(["--listen", listen, "--admin", admin])
            .arg("--state-dir")
            .arg(&self.state_dir)
            .args(&self.extra_args)
            .env("SWITCHYARD_LOG", "info")
            .envs(self.serve_vars.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("spawn switchyard serve");
        let log = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
        let stderr = child.stderr.take().expect("stderr");
        let sink = log.clone();
        tokio::spawn(async move {
            let mut lines = BufReader::new(stderr).lines();
            while let Ok(Some(line)) = lines.next_line().await {
                sink.lock().expect("log lock").push_str(&(line + "\n"));
            }
        });
        let stdout = child.stdout.take().expect("stdout");
        let mut lines = BufReader::new(stdout).lines();
        let (mut proxy, mut admin_url, mut banner) = (None, None, Vec::new());
        let mut tls_addr = None;
        let deadline = Instant::now() + Duration::from_secs(30);
        while proxy.is_none() || admin_url.is_none() {
            let line = tokio::time::timeout_at(deadline.into(), lines.next_line()).await;
            match line {
                Ok(Ok(Some(line))) => {
                    if let Some(url) = line.strip_prefix("switchyard: proxy listening on ") {
                        proxy = Some(url.to_owned());
                    } else if let Some(url) =
                        line.strip_prefix("switchyard: TLS proxy listening on https://")
                    {
                        tls_addr = Some(url.to_owned());
                    } else if let Some(url) =
                        line.strip_prefix("switchyard: admin API listening on ")
                    {
                        admin_url = Some(url.to_owned());
                    }
                    banner.push(line);
                }
                _ => {
                    let _ = child.kill().await;
                    let status = child.wait().await.ok();
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    return Err(format!(
                        "serve did not start (exit {status:?}):\n{}",
                        log.lock().expect("log lock")
                    ));
                }
            }
        }
        // Keep draining stdout so serve never blocks on a full pipe.
        let stdout = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
        let sink = stdout.clone();
        tokio::spawn(async move {
            while let Ok(Some(line)) = lines.next_line().await {
                sink.lock().expect("stdout lock").push_str(&(line + "\n"));
            }
        });
        let proxy = proxy.expect("proxy url");
        let admin = admin_url.expect("admin url");
        Ok(Serve {
            child,
            proxy_addr: proxy.trim_start_matches("http://").to_owned(),
            admin_addr: admin
                .trim_start_matches("http://")
                .trim_start_matches("https://")
                .to_owned(),
            tls_addr,
            proxy,
            admin,
            log,
            banner,
            stdout,
        })
    }

    /// The TLS proxy listener's address (serve --tls-listen).
    pub fn tls_addr(&self) -> std::net::SocketAddr {
        self.serve()
            .tls_addr
            .as_deref()
            .expect("serve printed its TLS listener")
            .parse()
            .expect("a socket address")
    }

    /// The cleartext proxy listener's port.
    pub fn proxy_port(&self) -> u16 {
        self.serve()
            .proxy_addr
            .rsplit_once(':')
            .and_then(|(_, port)| port.parse().ok())
            .expect("the proxy's port")
    }

    /// What serve printed on stdout after its addresses.
    pub fn serve_stdout(&self) -> String {
        self.serve().stdout.lock().expect("stdout lock").clone()
    }

    pub fn serve(&self) -> &Serve {
        self.serve.as_ref().expect("serve is running")
    }

    pub fn proxy(&self) -> &str {
        &self.serve().proxy
    }

    pub fn admin(&self) -> &str {
        &self.serve().admin
    }

    /// serve's log so far, without terminal colour codes.
    pub fn serve_log(&self) -> String {
        strip_colours(&self.serve().log.lock().expect("log lock"))
    }

    pub fn serve_pid(&self) -> u32 {
        self.serve().child.id().expect("serve pid")
    }

    /// `kill -9` serve; its instances keep running.
    pub async fn kill9(&mut self) {
        if let Some(mut serve) = self.serve.take() {
            let _ = serve.child.start_kill();
            let _ = serve.child.wait().await;
            self.orphaned = true;
        }
    }

    /// `kill -9` serve, then start it again on the same addresses and the
    /// same state dir (its instances keep running and are adopted).
    pub async fn kill9_and_restart(&mut self) {
        let (proxy, admin) = (
            self.serve().proxy_addr.clone(),
            self.serve().admin_addr.clone(),
        );
        self.kill9().await;
        self.launch(&proxy, &admin).await;
    }

    /// Waits until every release in `ls` is ready.
    pub async fn all_ready(&self, timeout: Duration) {
        self.eventually("every release is ready", timeout, || async {
            listing::all_ready(&self.ls().await)
        })
        .await;
    }

    /// SIGTERM serve and wait for it to exit; panics unless it exits
    /// within [`SHUTDOWN_WAIT`] having stopped every instance (none may
    /// outlive it). Returns how it exited.
    pub async fn stop(&mut self) -> std::process::ExitStatus {
        self.sigterm();
        self.wait_stopped().await
    }

    /// Sends serve SIGTERM, and no more.
    pub fn sigterm(&self) {
        kill(Pid::from_raw(self.serve_pid() as i32), Signal::SIGTERM).expect("SIGTERM to serve");
    }

    /// Waits for serve to exit (after [`Env::sigterm`]); see [`Env::stop`].
    pub async fn wait_stopped(&mut self) -> std::process::ExitStatus {
        let mut serve = self.serve.take().expect("serve is running");
        let status = match tokio::time::timeout(SHUTDOWN_WAIT, serve.child.wait()).await {
            Ok(status) => status.expect("wait for serve"),
            Err(_) => {
                let _ = serve.child.kill().await;
                panic!(
                    "serve did not exit within {SHUTDOWN_WAIT:?} of SIGTERM:\n{}",
                    strip_colours(&serve.log.lock().expect("log lock"))
                );
            }
        };
        let left = instance_pids(&self.state_dir);
        assert!(
            left.is_empty(),
            "serve exited ({status}) leaving instances running: {}\nserve log:\n{}",
            describe_pids(&left),
            strip_colours(&serve.log.lock().expect("log lock"))
        );
        status
    }

    /// `/metrics` of the admin API, as text.
    pub async fn metrics(&self) -> String {
        let mut request = self.http.get(format!("{}/metrics", self.admin()));
        if let Some(token) = &self.token {
            request = request.bearer_auth(token);
        }
        let reply = reply(request, Duration::from_secs(30)).await;
        assert_eq!(reply.status, 200, "GET /metrics: {}", reply.body);
        reply.body
    }

    /// `switchyard_requests_in_flight` of a release: requests the proxy
    /// has sent to it and not yet answered.
    pub async fn in_flight(&self, service: &str, version: &str) -> u64 {
        let labels = format!("{{service=\"{service}\",version=\"{version}\",");
        let metrics = self.metrics().await;
        metrics
            .lines()
            .find_map(|line| {
                line.strip_prefix("switchyard_requests_in_flight")
                    .filter(|rest| rest.starts_with(&labels))
                    .and_then(|rest| rest.rsplit_once(' '))
                    .and_then(|(_, value)| value.parse().ok())
            })
            .unwrap_or_else(|| panic!("no in-flight gauge of {service} {version}:\n{metrics}"))
    }

    /// Waits until `n` requests are in flight to the release (by the
    /// in-flight gauge).
    pub async fn wait_in_flight(&self, service: &str, version: &str, n: u64) {
        self.eventually(
            &format!("{n} requests in flight to {service} {version}"),
            Duration::from_secs(30),
            || async { self.in_flight(service, version).await >= n },
        )
        .await;
    }

    /// Waits until `n` requests are held at the paused service's gate (by
    /// `held` in `ls --json`).
    pub async fn wait_held(&self, service: &str, n: u64) {
        self.eventually(
            &format!("{n} requests held by the pause of {service}"),
            Duration::from_secs(30),
            || async {
                let ls = self.ls().await;
                listing::service(&ls, service)["paused"]["held"]
                    .as_u64()
                    .is_some_and(|held| held >= n)
            },
        )
        .await;
    }

    /// The CLI against this serve, not started yet: in the test's folder,
    /// with this env's admin address and token (no other), stdin closed,
    /// killed when dropped. For a CLI run in the background.
    pub fn cli_command(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(SWITCHYARD);
        cmd.args(args)
            .current_dir(self.dir.path())
            .env("SWITCHYARD_ADMIN", self.admin())
            .env_remove("SWITCHYARD_TOKEN")
            .stdin(Stdio::null())
            .kill_on_drop(true);
        if let Some(token) = &self.token {
            cmd.env("SWITCHYARD_TOKEN", token);
        }
        cmd
    }

    /// Runs the CLI against this serve.
    pub async fn cli(&self, args: &[&str]) -> Run {
        self.cli_with(&[], args).await
    }

    /// Runs the CLI against this serve with extra environment variables.
    pub async fn cli_with(&self, vars: &[(&str, &str)], args: &[&str]) -> Run {
        let mut cmd = self.cli_command(args);
        cmd.envs(vars.iter().copied());
        let out = tokio::time::timeout(Duration::from_secs(120), cmd.output())
            .await
            .expect("CLI finished within 120 s")
            .expect("run CLI");
        Run::from(out)
    }

    /// `switchyard deploy NAME VERSION [extra…] -- hello-server --port {port} --version VERSION [server_args…]`
    pub async fn deploy(
        &self,
        name: &str,
        version: &str,
        extra: &[&str],
        server_args: &[&str],
    ) -> Run {
        let mut args = vec!["deploy", name, version, "--health", "/healthz"];
        args.extend_from_slice(extra);
        args.extend_from_slice(&["--", HELLO, "--port", "{port}", "--version", version]);
        args.extend_from_slice(server_args);
        self.cli(&args).await
    }

    /// `switchyard deploy NAME VERSION --upstream ADDR… --health /healthz [extra…]`:
    /// an external release of servers the test runs itself.
    pub async fn deploy_external(
        &self,
        name: &str,
        version: &str,
        upstreams: &[SocketAddr],
        extra: &[&str],
    ) -> Run {
        let upstreams: Vec<String> = upstreams.iter().map(SocketAddr::to_string).collect();
        let mut args = vec!["deploy", name, version];
        for upstream in &upstreams {
            args.extend_from_slice(&["--upstream", upstream]);
        }
        args.extend_from_slice(&["--health", "/healthz"]);
        args.extend_from_slice(extra);
        self.cli(&args).await
    }

    /// `ls --json` parsed.
    pub async fn ls(&self) -> serde_json::Value {
        let run = self.cli(&["ls", "--json"]).await.ok();
        serde_json::from_str(&run.stdout).expect("ls --json is JSON")
    }

    /// `history NAME --json` parsed.
    pub async fn history(&self, name: &str) -> serde_json::Value {
        let run = self.cli(&["history", name, "--json"]).await.ok();
        serde_json::from_str(&run.stdout).expect("history --json is JSON")
    }

    /// GET through the proxy: (status, x-switchyard-version, body).
    pub async fn get(&self, path: &str) -> (u16, String, String) {
        let response = self
            .http
            .get(format!("{}{path}", self.proxy()))
            .send()
            .await
            .unwrap_or_else(|e| panic!("GET {path} through the proxy failed: {e}"));
        let status = response.status().as_u16();
        let version = version_header(response.headers());
        let body = response
            .text()
            .await
            .unwrap_or_else(|e| panic!("GET {path}: the body of a {status} was cut short: {e}"));
        (status, version, body)
    }

    /// Waits until `check` passes (polling), or panics with `what`.
    pub async fn eventually<F, Fut>(&self, what: &str, timeout: Duration, mut check: F)
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = bool>,
    {
        let deadline = Instant::now() + timeout;
        loop {
            if check().await {
                return;
            }
            if Instant::now() > deadline {
                panic!(
                    "timed out waiting for: {what}\nserve log:\n{}",
                    self.serve
                        .as_ref()
                        .map(|_| self.serve_log())
                        .unwrap_or_default()
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// serve's log line about the request with this id: the operator's
    /// side of an answer the proxy made itself (its cause, in words).
    pub async fn hint_for(&self, request_id: &str) -> String {
        assert!(!request_id.is_empty(), "the answer carries no x-request-id");
        let mut found = String::new();
        self.eventually(
            &format!("serve logs request {request_id}"),
            Duration::from_secs(30),
            || {
                let line = self
                    .serve_log()
                    .lines()
                    .find(|l| l.contains(request_id))
                    .map(str::to_owned);
                let seen = line.is_some();
                found = line.unwrap_or_default();
                async move { seen }
            },
        )
        .await;
        found
    }

    /// PIDs of live processes started for this env's state dir, sorted.
    pub fn instance_pids(&self) -> Vec<u32> {
        instance_pids(&self.state_dir)
    }
}

/// Processes whose environment names `state_dir` as their Switchyard
/// state (not zombies), sorted.
pub fn instance_pids(state_dir: &Path) -> Vec<u32> {
    let marker = format!("SWITCHYARD_STATE_DIR={}", state_dir.display());
    let mut pids = Vec::new();
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return pids;
    };
    for entry in entries.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<u32>().ok())
        else {
            continue;
        };
        let Ok(environ) = std::fs::read(format!("/proc/{pid}/environ")) else {
            continue;
        };
        if pid_alive(pid) && environ.split(|b| *b == 0).any(|kv| kv == marker.as_bytes()) {
            pids.push(pid);
        }
    }
    pids.sort_unstable();
    pids
}

/// How long serve may take to exit after SIGTERM: its drain and its
/// instances' stop grace, with room to spare.
pub const SHUTDOWN_WAIT: Duration = Duration::from_secs(60);

/// PIDs of the `switchyard serve` processes of `state_dir` (the one a test
/// started, or one that took over from it), found by their command line.
pub fn serve_pids(state_dir: &Path) -> Vec<u32> {
    let wanted = state_dir.as_os_str().as_encoded_bytes();
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
    pids.sort_unstable();
    pids
}

/// PIDs with their command lines, for a failure message.
pub fn describe_pids(pids: &[u32]) -> String {
    pids.iter()
        .map(|pid| {
            let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
            let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
            format!("{pid} ({})", cmdline.trim())
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// The text without terminal colour codes.
pub fn strip_colours(log: &str) -> String {
    let mut out = String::with_capacity(log.len());
    let mut chars = log.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

impl Env {
    /// SIGTERM every serve of this state dir and waits for them to exit;
    /// says what went wrong: a serve that would not exit, or instances
    /// that outlived their serve.
    fn shut_down(&mut self) -> Vec<String> {
        let mut problems = Vec::new();
        let mut pids = serve_pids(&self.state_dir);
        if let Some(pid) = self.serve.as_ref().and_then(|s| s.child.id()) {
            if !pids.contains(&pid) {
                pids.push(pid);
            }
        }
        let had_serve = !pids.is_empty();
        for pid in &pids {
            let _ = kill(Pid::from_raw(*pid as i32), Signal::SIGTERM);
        }
        let deadline = Instant::now() + SHUTDOWN_WAIT;
        loop {
            // Reap the child, so that it does not linger as a zombie.
            if let Some(serve) = self.serve.as_mut() {
                let _ = serve.child.try_wait();
            }
            if !pids.iter().any(|p| pid_alive(*p)) {
                break;
            }
            if Instant::now() > deadline {
                let alive: Vec<u32> = pids.iter().copied().filter(|p| pid_alive(*p)).collect();
                problems.push(format!(
                    "serve did not exit within {SHUTDOWN_WAIT:?} of SIGTERM: {}",
                    describe_pids(&alive)
                ));
                for pid in alive {
                    let _ = kill(Pid::from_raw(pid as i32), Signal::SIGKILL);
                }
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        if let Some(serve) = self.serve.as_mut() {
            let _ = serve.child.start_kill();
        }
        let left = instance_pids(&self.state_dir);
        if !left.is_empty() && (had_serve || !self.orphaned) {
            problems.push(format!(
                "instances outlived their serve: {}",
                describe_pids(&left)
            ));
        }
        problems
    }
}

impl Drop for Env {
    fn drop(&mut self) {
        let problems = self.shut_down();
        for pid in instance_pids(&self.state_dir) {
            let _ = kill(Pid::from_raw(pid as i32), Signal::SIGKILL);
        }
        if !problems.is_empty() && !std::thread::panicking() {
            let log = self
                .serve
                .as_ref()
                .map(|s| strip_colours(&s.log.lock().expect("log lock")))
                .unwrap_or_default();
            panic!("{}\nserve log:\n{log}", problems.join("\n"));
        }
    }
}
