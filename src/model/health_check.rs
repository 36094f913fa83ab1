use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::ModelError;

/// How Switchyard decides that an instance may receive traffic.
///
/// An instance is probed with `GET path`; a 2xx or 3xx answer within
/// `timeout_ms` is a success. It becomes healthy after `healthy_threshold`
/// successes in a row and leaves the rotation after `unhealthy_threshold`
/// failures in a row. Until an instance is healthy for the first time it is
/// probed every 100 ms, so a deploy is not slowed by the interval.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct HealthCheck {
    /// Path probed on each instance.
    pub path: String,
    /// Time between probes once the instance has been healthy.
    pub interval_ms: u64,
    /// How long one probe may take.
    pub timeout_ms: u64,
    /// Successes in a row that make an instance healthy.
    pub healthy_threshold: u32,
    /// Failures in a row that take an instance out of rotation.
    pub unhealthy_threshold: u32,
    /// Probe `GET path` on this port of the instance's host instead of its
    /// own port (a TCP release's HTTP health endpoint).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub port: Option<u16>,
    /// A TCP release's probe as a command (exit 0 passes), run with the
    /// instance's port in `PORT` and `{port}` replaced by it. Without a
    /// command or a port, a TCP release is probed by connecting.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub command: Vec<String>,
}

impl Default for HealthCheck {
    fn default() -> Self {
        Self {
            path: "/".to_owned(),
            interval_ms: 1_000,
            timeout_ms: 2_000,
            healthy_threshold: 2,
            unhealthy_threshold: 3,
            port: None,
            command: Vec::new(),
        }
    }
}

impl HealthCheck {
    pub fn interval(&self) -> Duration {
        Duration::from_millis(self.interval_ms)
    }

    pub fn timeout(&self) -> Duration {
        Duration::from_millis(self.timeout_ms)
    }

    pub fn validate(&self) -> Result<(), ModelError> {
        let bad = |m: &str| Err(ModelError::InvalidSpec(m.to_owned()));
        if !self.path.starts_with('/') {
            return bad("the health check path must start with '/', e.g. /healthz");
        }
        if self.interval_ms < 50 || self.interval_ms > 3_600_000 {
            return bad("the health check interval must be between 50 ms and 1 h");
        }
        if self.timeout_ms < 10 || self.timeout_ms > 600_000 {
            return bad("the health check timeout must be between 10 ms and 10 min");
        }
        if self.healthy_threshold == 0 || self.unhealthy_threshold == 0 {
            return bad("health check thresholds must be at least 1");
        }
        if self.port == Some(0) {
            return bad("the health check port must be between 1 and 65535");
        }
        if self.port.is_some() && !self.command.is_empty() {
            return bad("give a health check port or a health check command, not both");
        }
        if self.command.first().is_some_and(|c| c.is_empty()) {
            return bad("the health check command is empty");
        }
        Ok(())
    }
}
