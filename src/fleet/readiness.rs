//! Readiness across the fleet: what one node reports of a release it runs
//! (how many of its instances are healthy, its phase, and why it failed),
//! and the fleet's verdict on a release from every live node's report. A
//! release is ready for the fleet when every live node reports all its
//! instances healthy; a node that reports it failed fails it, by name.

use std::fmt;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::runtime::{ReleaseHandle, ReleasePhase};

/// Where a release stands on one node.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum NodePhase {
    /// Not every instance is healthy yet (or any more).
    Starting,
    /// Every instance healthy.
    Ready,
    /// In a crash loop, unable to start, or not ready within its ready
    /// timeout: waiting longer will not help.
    Failed,
}

impl fmt::Display for NodePhase {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            NodePhase::Starting => "starting",
            NodePhase::Ready => "ready",
            NodePhase::Failed => "failed",
        })
    }
}

/// What one node reports of one release it runs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReleaseReadiness {
    pub service: String,
    pub version: String,
    /// Its instances on this node that are healthy.
    pub healthy: u32,
    /// Its instances this node runs (the release's replicas).
    pub expected: u32,
    pub phase: NodePhase,
    /// The runtime's word for it and each instance's health.
    pub detail: String,
    /// Why it failed, when it did.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failure: Option<String>,
    /// The last lines of its instances' logs, when it failed.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub logs: String,
    /// The revision of the service this node routes by.
    pub revision: u64,
}

impl ReleaseReadiness {
    /// `service@version`, the key of a release in a node's report.
    pub fn key(service: &str, version: &str) -> String {
        format!("{service}@{version}")
    }

    /// A release as the local runtime sees it; one that has not been ready
    /// since it started here, longer than its ready timeout, has failed.
    pub fn of(handle: &ReleaseHandle, revision: u64) -> Self {
        let status = handle.status();
        let phase = status.phase();
        let ready_timeout = Duration::from_millis(handle.release.spec.ready_timeout_ms);
        let failure = match phase {
            ReleasePhase::Ready => None,
            ReleasePhase::CrashLoop => Some(format!(
                "crash loop: its instances exited {}",
                status.exits_summary()
            )),
            ReleasePhase::Failed => Some(format!(
                "cannot start: {}",
                status
                    .start_error
                    .as_ref()
                    .map_or_else(|| "the release stopped".to_owned(), ToString::to_string)
            )),
            _ if !status.was_ready && handle.started.elapsed() > ready_timeout => Some(format!(
                "not healthy within its ready timeout of {} ({}; exits: {})",
                humantime::format_duration(ready_timeout),
                status.health_summary(),
                status.exits_summary()
            )),
            _ => None,
        };
        let phase_here = match (&failure, phase) {
            (Some(_), _) => NodePhase::Failed,
            (None, ReleasePhase::Ready) => NodePhase::Ready,
            (None, _) => NodePhase::Starting,
        };
        Self {
            service: handle.release.service.to_string(),
            version: handle.release.version.to_string(),
            healthy: status.healthy() as u32,
            expected: status.instances.len() as u32,
            phase: phase_here,
            detail: format!("{phase}: {}", status.health_summary()),
            logs: if failure.is_some() {
                handle.last_log_lines()
            } else {
                String::new()
            },
            failure,
            revision,
        }
    }

    /// `2/2`, or `0/2 failed`: as `switchyard nodes` shows it.
    pub fn counts(&self) -> String {
        match self.phase {
            NodePhase::Ready => format!("{}/{}", self.healthy, self.expected),
            phase => format!("{}/{} {phase}", self.healthy, self.expected),
        }
    }
}

/// The fleet's verdict on one release.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FleetVerdict {
    /// Ready on every live node.
    Ready,
    /// Not yet ready on these nodes (each with what it reports).
    Waiting(Vec<String>),
    /// Failed on a node: waiting longer will not help.
    Failed {
        node: String,
        why: String,
        logs: String,
    },
}

/// Judges a release from what each live node reports of it (`None`: the
/// node does not run it yet). With `revision`, a node counts as ready only
/// once it routes by that revision of the service or a later one.
pub fn judge(reports: &[(String, Option<ReleaseReadiness>)], revision: u64) -> FleetVerdict {
    let mut waiting = Vec::new();
    for (node, report) in reports {
        match report {
            Some(r) if r.phase == NodePhase::Failed => {
                return FleetVerdict::Failed {
                    node: node.clone(),
                    why: r.failure.clone().unwrap_or_else(|| r.detail.clone()),
                    logs: r.logs.clone(),
                };
            }
            Some(r) if r.phase == NodePhase::Ready && r.revision >= revision => {}
            Some(r) if r.phase == NodePhase::Ready => waiting.push(format!(
                "{node}: ready, still at revision {} of {}",
                r.revision, r.service
            )),
            Some(r) => waiting.push(format!("{node}: {} ({})", r.counts(), r.detail)),
            None => waiting.push(format!("{node}: not running it yet")),
        }
    }
    if waiting.is_empty() {
        FleetVerdict::Ready
    } else {
        FleetVerdict::Waiting(waiting)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report(phase: NodePhase, healthy: u32, revision: u64) -> ReleaseReadiness {
        ReleaseReadiness {
            service: "hello".into(),
            version: "1.0.0".into(),
            healthy,
            expected: 2,
            phase,
            detail: format!("{phase}"),
            failure: (phase == NodePhase::Failed).then(|| "crash loop".to_owned()),
            logs: if phase == NodePhase::Failed {
                "no database here\n".into()
            } else {
                String::new()
            },
            revision,
        }
    }

    #[test]
    fn a_release_is_ready_when_every_node_reports_every_instance_healthy() {
        let reports = vec![
            ("one".to_owned(), Some(report(NodePhase::Ready, 2, 3))),
            ("two".to_owned(), Some(report(NodePhase::Ready, 2, 4))),
        ];
        assert_eq!(judge(&reports, 3), FleetVerdict::Ready);
        assert_eq!(judge(&[], 3), FleetVerdict::Ready);
    }

    #[test]
    fn a_node_that_does_not_run_it_or_is_behind_keeps_it_waiting() {
        let reports = vec![
            ("one".to_owned(), Some(report(NodePhase::Ready, 2, 3))),
            ("two".to_owned(), None),
            ("three".to_owned(), Some(report(NodePhase::Starting, 1, 3))),
            ("four".to_owned(), Some(report(NodePhase::Ready, 2, 2))),
        ];
        let FleetVerdict::Waiting(nodes) = judge(&reports, 3) else {
            panic!("waiting");
        };
        assert_eq!(nodes.len(), 3, "{nodes:?}");
        assert!(nodes[0].starts_with("two: not running"), "{nodes:?}");
        assert!(nodes[1].starts_with("three: 1/2 starting"), "{nodes:?}");
        assert!(nodes[2].starts_with("four: ready, still at revision 2"));
    }

    #[test]
    fn a_node_that_failed_fails_the_release_by_name_with_its_log_lines() {
        let reports = vec![
            ("one".to_owned(), None),
            ("two".to_owned(), Some(report(NodePhase::Failed, 0, 3))),
        ];
        assert_eq!(
            judge(&reports, 0),
            FleetVerdict::Failed {
                node: "two".into(),
                why: "crash loop".into(),
                logs: "no database here\n".into(),
            }
        );
    }
}
