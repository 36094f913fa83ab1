//! Pinned addresses: a release's own listen port, for long-lived clients
//! that must keep talking to the release they started with. The address
//! is part of the release's entry in the revisioned state; a listener runs
//! for every pinned release in the current state and stops when the
//! release leaves it (kill, rollback) or the pin is removed.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use super::change::Change;
use super::{Controller, ControllerError};
use crate::error::Result;
use crate::model::{Revision, ServiceName, parse_version};
use crate::proxy::Proxy;

/// How long a pinned listener that stops lets open connections finish.
const PIN_DRAIN: Duration = Duration::from_secs(10);

/// A running listener of one pinned address; dropping it stops it.
pub(super) struct PinnedListener {
    service: String,
    version: String,
    stop: CancellationToken,
    /// A duplicate of its listening socket, for a handover to pass on.
    socket: Option<std::net::TcpListener>,
}

impl Drop for PinnedListener {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

/// Pinned addresses: a listener per address, serving one release, and
/// the addresses bound for a pin about to commit. Dropping it closes
/// every pinned listener (each stops as its `PinnedListener` drops).
#[derive(Default)]
pub(super) struct Pins {
    listeners: std::sync::Mutex<HashMap<SocketAddr, PinnedListener>>,
    pending: std::sync::Mutex<HashMap<SocketAddr, std::net::TcpListener>>,
}

impl Pins {
    fn listeners(&self) -> std::sync::MutexGuard<'_, HashMap<SocketAddr, PinnedListener>> {
        self.listeners.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn pending(&self) -> std::sync::MutexGuard<'_, HashMap<SocketAddr, std::net::TcpListener>> {
        self.pending.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Holds a listener bound for a change about to commit.
    pub(super) fn pending_insert(&self, addr: SocketAddr, listener: std::net::TcpListener) {
        self.pending().insert(addr, listener);
    }

    /// Duplicates of the pinned listening sockets, each with its address.
    pub(super) fn sockets(&self) -> Vec<(SocketAddr, std::os::fd::OwnedFd)> {
        self.listeners()
            .iter()
            .filter_map(|(addr, l)| {
                let socket = l.socket.as_ref()?.try_clone().ok()?;
                Some((*addr, std::os::fd::OwnedFd::from(socket)))
            })
            .collect()
    }

    /// Stops accepting on every pinned address (another serve does now).
    pub(super) fn stop_accepting(&self) {
        self.listeners().clear();
    }

    /// Takes back a listener bound for a change (closed when dropped).
    pub(super) fn pending_remove(&self, addr: SocketAddr) -> Option<std::net::TcpListener> {
        self.pending().remove(&addr)
    }
}

impl Controller {
    /// Pins `version` to `address` (or unpins it with `None`). The address
    /// is bound before anything is committed: one that cannot be bound
    /// changes nothing.
    pub async fn pin(
        &self,
        service: &ServiceName,
        version: &str,
        address: Option<SocketAddr>,
        actor: &str,
    ) -> Result<Revision> {
        let version = parse_version(version)?;
        let committed = self
            .change(service, None, actor, |current| {
                self.bind_pin(service, &version, current, address)
            })
            .await;
        // A listener bound for a change that did not commit is closed.
        if let Some(addr) = address {
            self.pins.pending().remove(&addr);
        }
        committed
    }

    /// The pinned state, once `address` (if any) is free for `version`
    /// and bound, held for the commit in `pending_pins`.
    fn bind_pin(
        &self,
        service: &ServiceName,
        version: &semver::Version,
        current: &crate::model::Revision,
        address: Option<SocketAddr>,
    ) -> Result<Change> {
        let next = current.state.pin(service, version, address)?;
        if let Some(addr) = address {
            self.check_address_free(service, addr)?;
            let ours = current.state.pins().any(|(a, v)| a == addr && v == version);
            if !ours {
                let listener = std::net::TcpListener::bind(addr)
                    .map_err(|e| ControllerError::PinBind(addr, e.to_string()))?;
                self.pins.pending().insert(addr, listener);
            }
        }
        let action = match address {
            Some(addr) => format!("pin {version} to {addr}"),
            None => format!("unpin {version}"),
        };
        Ok(Change::new(action, next))
    }

    /// Runs a listener for every pinned address in the current state and
    /// stops the others. Called after every change of the routing table.
    pub(super) fn reconcile_pins(&self) {
        let desired: HashMap<SocketAddr, (String, String)> = self
            .current_map()
            .iter()
            .filter(|(_, revision)| revision.state.protocol.is_http())
            .flat_map(|(name, revision)| {
                revision
                    .state
                    .pins()
                    .map(|(addr, v)| (addr, (name.to_string(), v.to_string())))
                    .collect::<Vec<_>>()
            })
            .collect();
        let mut pins = self.pins.listeners();
        pins.retain(|addr, l| {
            desired
                .get(addr)
                .is_some_and(|(s, v)| *s == l.service && *v == l.version)
        });
        for (addr, (service, version)) in desired {
            if pins.contains_key(&addr) {
                continue;
            }
            let pending = self.pins.pending().remove(&addr);
            let listener = match pending.map_or_else(|| std::net::TcpListener::bind(addr), Ok) {
                Ok(l) => l,
                Err(error) => {
                    tracing::error!(%addr, %service, %version, %error, "cannot bind the pinned address");
                    continue;
                }
            };
            let stop = CancellationToken::new();
            let socket = listener.try_clone().ok();
            let proxy = Arc::new(Proxy {
                table: Arc::clone(self.routes.shared()),
                pauses: Arc::clone(&self.pauses.gates),
                pinned: Some((service.clone(), version.clone())),
                settings: self.mirrors.settings.proxy.clone(),
            });
            tokio::spawn(crate::proxy::serve(
                listener,
                proxy,
                crate::listener::Drain {
                    stop: stop.clone(),
                    linger: Duration::ZERO,
                    close: CancellationToken::new(),
                    timeout: PIN_DRAIN,
                },
                None,
            ));
            tracing::info!(%addr, %service, %version, "serving pinned address");
            pins.insert(
                addr,
                PinnedListener {
                    service,
                    version,
                    stop,
                    socket,
                },
            );
        }
    }
}
