//! The configuration of `switchyard serve`: every field documented, with
//! defaults that run on one machine with nothing else installed.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use crate::listener::ListenerSettings;
use crate::proxy::MinRate;

/// What `serve` runs with.
#[derive(Debug, Clone)]
pub struct ServeConfig {
    /// Where clients send traffic (the proxy listener).
    pub listen: SocketAddr,
    /// Where the admin API listens. Loopback unless a token is set.
    pub admin: SocketAddr,
    /// Holds `switchyard.db` and the instances' logs.
    pub state_dir: PathBuf,
    /// Bearer token every admin request must carry (read from `--token-file`).
    pub token: Option<String>,
    /// Names the admin API answers to besides its own address (and
    /// `localhost` on loopback): `NAME` or `NAME:PORT` (`--admin-host`).
    pub admin_hosts: Vec<String>,
    /// How long a release being removed may take to finish in-flight requests.
    pub drain_timeout: Duration,
    /// Time between SIGTERM and SIGKILL when an instance stops.
    pub stop_grace: Duration,
    /// How long the proxy waits for an upstream's response headers, from
    /// the end of the request body (then 504).
    pub upstream_timeout: Duration,
    /// How long the proxy waits to connect to an upstream instance (then
    /// it tries another; 502 when none connects).
    pub connect_timeout: Duration,
    /// How long a forwarded TCP connection may carry nothing either way
    /// before it is closed.
    pub tcp_idle_timeout: Duration,
    /// The least a client's request body must bring in every interval
    /// (then 408, counted as the client's fault).
    pub client_body_min_rate: MinRate,
    /// The least an upstream's response body must bring in every interval
    /// (then the client's connection is cut, counted against the release).
    pub upstream_body_min_rate: MinRate,
    /// Adds `x-switchyard-version` to every proxied response.
    pub version_header: bool,
    /// A log file is rotated when it grows past this many bytes.
    pub log_max_bytes: u64,
    /// Exits within this window that put a release in crash-loop...
    pub crash_window: Duration,
    /// ...when there are at least this many of them.
    pub crash_limit: usize,
    /// Mirrored copies waiting per shadow; more are dropped and counted.
    pub shadow_queue: usize,
    /// Mirrored copies in flight per shadow at once.
    pub shadow_concurrency: usize,
    /// Timeouts and connection caps of every listener.
    pub listeners: ListenerSettings,
}

impl ServeConfig {
    /// Refuses settings that would be unsafe or cannot work.
    pub fn validate(&self) -> Result<(), String> {
        if !self.admin.ip().is_loopback() && self.token.is_none() {
            return Err(format!(
                "the admin API would listen on {} without a token: anyone who can reach it could change routing. \
                 Pass --token-file FILE (the file holds the bearer token) or bind it to 127.0.0.1",
                self.admin
            ));
        }
        if self.token.as_deref().is_some_and(|t| t.trim().is_empty()) {
            return Err("the token file is empty: write a long random token into it".into());
        }
        crate::api::AdminHosts::new(self.admin, &self.admin_hosts).map_err(|e| e.to_string())?;
        if self.shadow_queue == 0 || self.shadow_concurrency == 0 {
            return Err("--shadow-queue and --shadow-concurrency must be at least 1".into());
        }
        if self.connect_timeout.is_zero() || self.upstream_timeout.is_zero() {
            return Err(
                "--connect-timeout and --upstream-timeout must be longer than zero, e.g. 2s and 60s"
                    .into(),
            );
        }
        if self.tcp_idle_timeout.is_zero() {
            return Err(
                "--tcp-idle-timeout must be longer than zero, e.g. 1h; make it long for protocols whose clients stay quiet between requests"
                    .into(),
            );
        }
        if self.crash_limit < 2 {
            return Err("the crash-loop limit must be at least 2 exits".into());
        }
        self.listeners.validate()
    }

    /// Defaults for a state directory (used by `serve` and by tests).
    pub fn with_state_dir(state_dir: PathBuf) -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            admin: SocketAddr::from(([127, 0, 0, 1], 8081)),
            state_dir,
            token: None,
            admin_hosts: Vec::new(),
            drain_timeout: Duration::from_secs(30),
            stop_grace: Duration::from_secs(10),
            upstream_timeout: Duration::from_secs(60),
            connect_timeout: Duration::from_secs(2),
            tcp_idle_timeout: Duration::from_secs(3600),
            client_body_min_rate: MinRate {
                bytes: 1024,
                interval: Duration::from_secs(10),
            },
            upstream_body_min_rate: MinRate {
                bytes: 1,
                interval: Duration::from_secs(60),
            },
            version_header: true,
            log_max_bytes: 10 * 1024 * 1024,
            crash_window: Duration::from_secs(60),
            crash_limit: 3,
            shadow_queue: 256,
            shadow_concurrency: 16,
            listeners: ListenerSettings::default(),
        }
    }
}
