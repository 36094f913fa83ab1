//! TCP services' listeners: the service's own listen address (its main,
//! or the canary by client address) and its releases' pinned addresses.
//! Like pinned HTTP addresses, each is part of the revisioned state and
//! runs for as long as the current state has it. A listener that stops
//! only stops accepting: connections it forwarded stay open until they
//! close (a release that is killed waits for them up to the service's TCP
//! drain limit, then its instances stop).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::change::Change;
use super::{Controller, ControllerError};
use crate::error::Result;
use crate::model::{ModelError, Revision, ServiceName};
use crate::proxy::TcpRoute;

/// What one TCP address serves: a service, and a release if pinned.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Serves {
    service: String,
    version: Option<String>,
}

/// A running TCP accept loop; dropping it stops accepting.
struct Running {
    serves: Serves,
    stop: CancellationToken,
    /// A duplicate of its listening socket, for a handover to pass on.
    socket: Option<std::net::TcpListener>,
}

impl Drop for Running {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

/// The TCP listeners, and every connection they forwarded (which outlive
/// their listener).
#[derive(Default)]
pub(super) struct TcpListeners {
    running: std::sync::Mutex<HashMap<SocketAddr, Running>>,
    connections: TaskTracker,
}

impl TcpListeners {
    fn running(&self) -> std::sync::MutexGuard<'_, HashMap<SocketAddr, Running>> {
        self.running.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl Controller {
    /// Sets a TCP service's own listen address (or takes it away with
    /// `None`) and the drain limit of its connections. The address is
    /// bound before anything is committed: one that cannot be bound
    /// changes nothing.
    pub async fn listen(
        &self,
        service: &ServiceName,
        address: Option<SocketAddr>,
        drain: Option<Duration>,
        actor: &str,
    ) -> Result<Revision> {
        let drain_ms = drain.map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
        let committed = self
            .change(service, None, actor, |current| {
                let next = current.state.listen(service, address, drain_ms)?;
                if let Some(addr) = address {
                    self.check_address_free(service, addr)?;
                    let ours = self.tcp.running().get(&addr).is_some_and(|r| {
                        r.serves
                            == Serves {
                                service: service.to_string(),
                                version: None,
                            }
                    });
                    if !ours {
                        let listener = std::net::TcpListener::bind(addr)
                            .map_err(|e| ControllerError::PinBind(addr, e.to_string()))?;
                        self.pins.pending_insert(addr, listener);
                    }
                }
                let action = match (address, drain) {
                    (Some(addr), Some(d)) => format!(
                        "listen on {addr} (TCP drain {})",
                        humantime::format_duration(d)
                    ),
                    (Some(addr), None) => format!("listen on {addr}"),
                    (None, _) => "stop listening".to_owned(),
                };
                Ok(Change::new(action, next))
            })
            .await;
        if let Some(addr) = address {
            self.pins.pending_remove(addr);
        }
        committed
    }

    /// Refuses an address another service listens on or pins.
    pub(super) fn check_address_free(&self, service: &ServiceName, addr: SocketAddr) -> Result<()> {
        for (name, revision) in self.current_map().iter() {
            if name == service {
                continue;
            }
            if revision.state.listen == Some(addr) {
                return Err(ModelError::InvalidSpec(format!(
                    "{addr} is {name}'s listen address already"
                ))
                .into());
            }
            if let Some((_, other)) = revision.state.pins().find(|(a, _)| *a == addr) {
                return Err(ModelError::InvalidSpec(format!(
                    "{addr} is pinned to {name} {other} already"
                ))
                .into());
            }
        }
        Ok(())
    }

    /// The TCP drain limit of `service` (none: until connections close).
    pub(super) fn tcp_drain(&self, service: &ServiceName) -> Option<Option<Duration>> {
        let current = self.current(service)?;
        current
            .state
            .protocol
            .is_tcp()
            .then(|| current.state.tcp_drain_ms.map(Duration::from_millis))
    }

    /// Runs an accept loop for every TCP address in the current state and
    /// stops the others. Called after every change of the routing table.
    pub(super) fn reconcile_tcp(&self) {
        let desired: HashMap<SocketAddr, Serves> = self
            .current_map()
            .iter()
            .filter(|(_, r)| r.state.protocol.is_tcp())
            .flat_map(|(name, revision)| {
                let service = name.to_string();
                let own = revision.state.listen.map(|addr| {
                    (
                        addr,
                        Serves {
                            service: service.clone(),
                            version: None,
                        },
                    )
                });
                let pins = revision.state.pins().map(|(addr, v)| {
                    (
                        addr,
                        Serves {
                            service: service.clone(),
                            version: Some(v.to_string()),
                        },
                    )
                });
                own.into_iter().chain(pins).collect::<Vec<_>>()
            })
            .collect();
        let mut running = self.tcp.running();
        running.retain(|addr, r| desired.get(addr) == Some(&r.serves));
        for (addr, serves) in desired {
            if running.contains_key(&addr) {
                continue;
            }
            let pending = self.pins.pending_remove(addr);
            let listener = match pending.map_or_else(|| std::net::TcpListener::bind(addr), Ok) {
                Ok(l) => l,
                Err(error) => {
                    tracing::error!(%addr, service = %serves.service, %error, "cannot bind the TCP address");
                    continue;
                }
            };
            let settings = &self.mirrors.settings;
            let route = Arc::new(TcpRoute {
                table: Arc::clone(self.routes.shared()),
                service: serves.service.clone(),
                pinned: serves.version.clone(),
                connect_timeout: settings.proxy.connect_timeout,
                idle_timeout: settings.proxy.tcp_idle_timeout,
            });
            let stop = CancellationToken::new();
            let socket = listener.try_clone().ok();
            // Every worker accepts on the address, each with a copy of the
            // socket registered with its own runtime.
            for worker in &settings.workers {
                let listener = match listener.try_clone() {
                    Ok(l) => l,
                    Err(error) => {
                        tracing::error!(%addr, service = %serves.service, %error, "cannot share the TCP address with a worker");
                        continue;
                    }
                };
                let route = Arc::clone(&route);
                worker.spawn(crate::listener::serve_tcp(
                    listener,
                    Arc::clone(&settings.proxy.connections),
                    stop.clone(),
                    self.tcp.connections.clone(),
                    move |stream, client, admitted| {
                        crate::proxy::forward_tcp(Arc::clone(&route), stream, client, admitted)
                    },
                ));
            }
            drop(listener);
            tracing::info!(%addr, service = %serves.service, version = serves.version.as_deref().unwrap_or("main"), "serving TCP address");
            running.insert(
                addr,
                Running {
                    serves,
                    stop,
                    socket,
                },
            );
        }
    }

    /// TCP connections open right now, over every listener.
    pub fn tcp_connections_open(&self) -> usize {
        self.tcp.connections.len()
    }

    /// Duplicates of the listening sockets of TCP services and pinned
    /// addresses, each with its address, for a handover to pass to the new
    /// serve.
    pub fn tcp_listening_sockets(&self) -> Vec<(SocketAddr, std::os::fd::OwnedFd)> {
        let mut sockets: Vec<_> = self
            .tcp
            .running()
            .iter()
            .filter_map(|(addr, r)| {
                let socket = r.socket.as_ref()?.try_clone().ok()?;
                Some((*addr, std::os::fd::OwnedFd::from(socket)))
            })
            .collect();
        sockets.extend(self.pins.sockets());
        sockets
    }

    /// Listening sockets an old serve passed in a handover: the TCP and
    /// pinned listeners of the state about to be restored take them rather
    /// than binding their addresses again.
    pub fn adopt_tcp_listening_sockets(&self, sockets: Vec<(SocketAddr, std::net::TcpListener)>) {
        for (addr, socket) in sockets {
            self.pins.pending_insert(addr, socket);
        }
    }

    /// Stops accepting TCP connections and pinned addresses' (another
    /// serve accepts them now); TCP connections open go on, pinned HTTP
    /// connections are drained.
    pub fn stop_tcp_accepting(&self) {
        self.tcp.running().clear();
        self.pins.stop_accepting();
    }

    /// Waits until every TCP connection forwarded has closed, at most
    /// `limit`; true when they all did.
    pub async fn tcp_connections_closed(&self, limit: Duration) -> bool {
        self.tcp.connections.close();
        tokio::time::timeout(limit, self.tcp.connections.wait())
            .await
            .is_ok()
    }
}
