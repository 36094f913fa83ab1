//! Pause and resume a service's traffic. A pause is not a revision, but it
//! is kept in the store until resumed: a restarted serve (after `kill -9`
//! or a handover) holds the service's new requests again. Requests held
//! when serve died are lost with their connections.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::{Controller, ControllerError};
use crate::error::Result;
use crate::model::{RolloutState, ServiceName, now_millis};
use crate::proxy::{PauseGate, SharedPauses};
use crate::store::PauseRecord;

/// The longest hold one may ask for.
pub const MAX_HOLD_LIMIT: Duration = Duration::from_secs(3600);

/// What `switchyard pause` sends.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PauseRequest {
    /// How long one request may be held before it gets 503 (default 30 s).
    #[serde(default)]
    pub max_hold_ms: Option<u64>,
}

/// A paused service.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PauseView {
    pub service: String,
    pub max_hold_ms: u64,
    /// When it was paused (unix ms).
    #[serde(default)]
    pub since: u64,
    /// Requests waiting at the gate right now.
    #[serde(default)]
    pub held: usize,
}

/// What `switchyard resume` resumed.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct ResumeReport {
    /// Held requests let through, when the service's traffic was paused.
    pub released: Option<usize>,
    /// The rollout, when a paused one went on.
    pub rollout: Option<RolloutState>,
}

/// Paused services: the gates the proxy holds their requests at (shared
/// with it), and the lock that keeps the gates and the store in step.
pub(super) struct Pauses {
    pub(super) gates: SharedPauses,
    changes: std::sync::Mutex<()>,
}

impl Pauses {
    pub(super) fn new(gates: SharedPauses) -> Self {
        Self {
            gates,
            changes: std::sync::Mutex::new(()),
        }
    }

    /// Serializes pause and resume.
    fn changing(&self) -> std::sync::MutexGuard<'_, ()> {
        self.changes.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl Controller {
    /// Holds the service's new requests until resumed.
    pub fn pause(&self, service: &ServiceName, req: PauseRequest) -> Result<PauseView> {
        self.require(service)?;
        let max_hold = Duration::from_millis(req.max_hold_ms.unwrap_or(30_000));
        if max_hold.is_zero() || max_hold > MAX_HOLD_LIMIT {
            return Err(ControllerError::BadHold.into());
        }
        let _changing = self.pauses.changing();
        if self.pauses.gates.load().contains_key(service.as_str()) {
            return Err(ControllerError::AlreadyPaused(service.to_string()).into());
        }
        let record = PauseRecord {
            service: service.to_string(),
            max_hold_ms: max_hold.as_millis() as u64,
            since: now_millis(),
        };
        self.store.save_pause(&record)?;
        self.close_gate(&record);
        self.record_event(
            service.as_str(),
            "traffic-paused",
            &format!("traffic paused (max hold {} ms)", record.max_hold_ms),
            serde_json::Value::Null,
        );
        Ok(PauseView {
            service: record.service,
            max_hold_ms: record.max_hold_ms,
            since: record.since,
            held: 0,
        })
    }

    /// The service's pause, when it is paused.
    pub(super) fn pause_view(&self, service: &str) -> Option<PauseView> {
        self.pauses.gates.load().get(service).map(|gate| PauseView {
            service: service.to_owned(),
            max_hold_ms: gate.max_hold.as_millis() as u64,
            since: gate.since,
            held: gate.held(),
        })
    }

    /// Takes the store's pause of `service` when another node paused or
    /// resumed it: its gate here closes, or opens letting the requests it
    /// held go (the node that resumed it recorded the event).
    pub fn follow_pause(&self, service: &ServiceName) -> Result<()> {
        let record = self
            .store
            .pauses()?
            .into_iter()
            .find(|p| p.service == service.as_str());
        let _changing = self.pauses.changing();
        let here = self.pauses.gates.load().contains_key(service.as_str());
        match record {
            Some(record) if !here && self.current(service).is_some() => {
                tracing::info!(%service, "traffic paused through another node");
                self.close_gate(&record);
            }
            None if here => {
                let mut gate = None;
                self.pauses.gates.rcu(|current| {
                    let mut next = HashMap::clone(current);
                    gate = next.remove(service.as_str());
                    next
                });
                if let Some(gate) = gate {
                    let released = gate.open();
                    tracing::info!(%service, released, "traffic resumed through another node");
                }
            }
            _ => {}
        }
        Ok(())
    }

    /// Closes the gates of the services paused in the store (serve is
    /// starting; call after the revisions are loaded). A pause of a
    /// service that is gone is forgotten.
    pub(super) fn restore_pauses(&self) -> Result<()> {
        let _changing = self.pauses.changing();
        for record in self.store.pauses()? {
            let known = record
                .service
                .parse::<ServiceName>()
                .is_ok_and(|name| self.current(&name).is_some());
            if known {
                tracing::info!(service = %record.service, since = record.since, "traffic stays paused");
                self.close_gate(&record);
            } else {
                self.store.delete_pause(&record.service)?;
            }
        }
        Ok(())
    }

    /// Puts a closed gate in front of the service. Call with
    /// `pause_changes` held.
    fn close_gate(&self, record: &PauseRecord) {
        let gate = Arc::new(PauseGate::new(
            Duration::from_millis(record.max_hold_ms),
            record.since,
        ));
        self.pauses.gates.rcu(|current| {
            let mut next = HashMap::clone(current);
            next.insert(record.service.clone(), Arc::clone(&gate));
            next
        });
    }

    /// Forgets the pause in the store, then removes the service's gate and
    /// opens it: how many held requests went, or `None` when it was not
    /// paused. When the store cannot forget it, nothing changes.
    fn try_open_gate(&self, service: &ServiceName) -> Result<Option<usize>> {
        let _changing = self.pauses.changing();
        if !self.pauses.gates.load().contains_key(service.as_str()) {
            return Ok(None);
        }
        self.store.delete_pause(service.as_str())?;
        Ok(self.remove_gate(service))
    }

    /// Like [`Controller::try_open_gate`], but the gate opens even when the
    /// store cannot forget the pause (an upgrade must not leave traffic
    /// held); that is logged.
    pub(super) fn open_gate(&self, service: &ServiceName) -> Option<usize> {
        match self.try_open_gate(service) {
            Ok(released) => released,
            Err(error) => {
                tracing::error!(%service, %error, "cannot forget the pause in the store; a restarted serve would hold the traffic again until `switchyard resume`");
                let _changing = self.pauses.changing();
                self.remove_gate(service)
            }
        }
    }

    /// Removes the service's gate and opens it. Call with `pause_changes`
    /// held.
    fn remove_gate(&self, service: &ServiceName) -> Option<usize> {
        let mut gate = None;
        self.pauses.gates.rcu(|current| {
            let mut next = HashMap::clone(current);
            gate = next.remove(service.as_str());
            next
        });
        let released = gate.map(|g| g.open());
        if let Some(n) = released {
            self.record_event(
                service.as_str(),
                "traffic-resumed",
                &format!("traffic resumed; {n} held requests let through"),
                serde_json::Value::Null,
            );
        }
        released
    }

    /// Lets held traffic through (oldest first) and a paused rollout go
    /// on; refused when neither is paused.
    pub fn resume_all(&self, service: &ServiceName) -> Result<ResumeReport> {
        self.require(service)?;
        let released = self.try_open_gate(service)?;
        let rollout = match self.resume(service) {
            Ok(state) => Some(state),
            Err(e)
                if matches!(
                    e.downcast_ref::<ControllerError>(),
                    Some(ControllerError::NoRollout(_) | ControllerError::NotPaused(_))
                ) =>
            {
                None
            }
            Err(other) if released.is_none() => return Err(other),
            Err(_) => None,
        };
        if released.is_none() && rollout.is_none() {
            return Err(ControllerError::NothingToResume(service.to_string()).into());
        }
        Ok(ResumeReport { released, rollout })
    }
}
