use std::fmt;
use std::net::SocketAddr;

use serde::{Deserialize, Serialize};

/// An instance's health as the health checks see it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Health {
    /// Started, not yet healthy.
    Starting,
    Healthy,
    /// Out of rotation after failed checks.
    Unhealthy,
    /// The process exited; a restart is pending.
    Exited,
    Stopped,
}

impl fmt::Display for Health {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Health::Starting => "starting",
            Health::Healthy => "healthy",
            Health::Unhealthy => "unhealthy",
            Health::Exited => "exited",
            Health::Stopped => "stopped",
        })
    }
}

/// How one exit of an instance ended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExitRecord {
    /// Unix ms.
    pub at: u64,
    /// Exit code, or the signal that ended it, as text (`code 1`, `signal 9`).
    pub how: String,
}

/// One instance, as `ls` shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InstanceStatus {
    pub slot: u32,
    pub addr: Option<SocketAddr>,
    pub pid: Option<u32>,
    /// The container's id, for a container release.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub container: Option<String>,
    pub health: Health,
    pub restarts: u32,
    /// Kept from the previous serve (re-adopted after a restart).
    pub adopted: bool,
    /// Exited too often within the crash window; cleared once healthy.
    pub crash_loop: bool,
    pub last_exits: Vec<ExitRecord>,
    /// Why the last health check failed, while it fails.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_check_error: Option<String>,
}

/// A release's condition, summed up from its instances.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ReleasePhase {
    Starting,
    /// Every instance healthy.
    Ready,
    /// Some instances healthy.
    Degraded,
    /// No instance healthy.
    Unhealthy,
    /// Instances keep exiting.
    CrashLoop,
    /// The command could not be started at all.
    Failed,
}

impl fmt::Display for ReleasePhase {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ReleasePhase::Starting => "starting",
            ReleasePhase::Ready => "ready",
            ReleasePhase::Degraded => "degraded",
            ReleasePhase::Unhealthy => "unhealthy",
            ReleasePhase::CrashLoop => "crash-loop",
            ReleasePhase::Failed => "failed",
        })
    }
}

/// Why a release's instance could not be started at all.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum StartError {
    /// The command or the container could not be started.
    Launch(String),
    /// It started, but could not be recorded in the state database, so it
    /// was stopped: a restarted serve would not have known it.
    Unrecorded(String),
}

impl fmt::Display for StartError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StartError::Launch(cause) | StartError::Unrecorded(cause) => f.write_str(cause),
        }
    }
}

/// What the runtime knows of a release right now.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReleaseStatus {
    pub instances: Vec<InstanceStatus>,
    /// Set when the first instance could not be started.
    pub start_error: Option<StartError>,
    /// Set once every instance has been healthy at the same time.
    pub was_ready: bool,
}

impl ReleaseStatus {
    pub fn new(replicas: u32) -> Self {
        Self {
            instances: (0..replicas)
                .map(|slot| InstanceStatus {
                    slot,
                    addr: None,
                    pid: None,
                    container: None,
                    health: Health::Starting,
                    restarts: 0,
                    adopted: false,
                    crash_loop: false,
                    last_exits: Vec::new(),
                    last_check_error: None,
                })
                .collect(),
            ..Self::default()
        }
    }

    pub fn healthy(&self) -> usize {
        self.instances
            .iter()
            .filter(|i| i.health == Health::Healthy)
            .count()
    }

    pub fn crash_loop(&self) -> bool {
        self.instances.iter().any(|i| i.crash_loop)
    }

    pub fn phase(&self) -> ReleasePhase {
        let healthy = self.healthy();
        if self.start_error.is_some() {
            ReleasePhase::Failed
        } else if self.crash_loop() {
            ReleasePhase::CrashLoop
        } else if healthy == self.instances.len() {
            ReleasePhase::Ready
        } else if healthy > 0 {
            ReleasePhase::Degraded
        } else if self.was_ready {
            ReleasePhase::Unhealthy
        } else {
            ReleasePhase::Starting
        }
    }

    /// `code 1, code 1, signal 9`: the recent exits of every instance.
    pub fn exits_summary(&self) -> String {
        let all: Vec<&str> = self
            .instances
            .iter()
            .flat_map(|i| i.last_exits.iter().map(|e| e.how.as_str()))
            .collect();
        if all.is_empty() {
            "never".to_owned()
        } else {
            all.join(", ")
        }
    }

    /// `0: healthy, 1: starting`: each instance's health.
    pub fn health_summary(&self) -> String {
        self.instances
            .iter()
            .map(|i| match &i.last_check_error {
                Some(error) if i.health != Health::Healthy => {
                    format!("instance {}: {} (last check: {error})", i.slot, i.health)
                }
                _ => format!("instance {}: {}", i.slot, i.health),
            })
            .collect::<Vec<_>>()
            .join(", ")
    }
}
