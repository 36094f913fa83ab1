//! The accept side every listener shares: connections taken off the
//! listening socket and admitted under the budget's caps. Accept errors
//! (out of file descriptors and the like) back off from 10 ms to 1 s;
//! they and refusals over a cap are logged at most once a second, with a
//! count.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use tokio::net::{TcpListener, TcpStream};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::connections::{Refusal, Slot};
use super::throttle::{Backoff, Throttle};
use super::watch::Watch;
use super::{Connections, Limits, NEXT_LISTENER, REPORT_EVERY};

/// A connection admitted under its budget's caps.
pub(super) struct Admission {
    pub stream: TcpStream,
    pub client: SocketAddr,
    pub slot: Slot,
    pub watch: Arc<Watch>,
}

/// One listening socket, accepting.
pub(super) struct Accepting {
    listener: TcpListener,
    connections: Arc<Connections>,
    /// Tells this listener's connections from another's in the budget.
    pub id: u64,
    failures: Throttle,
    refusals: Throttle,
    backoff: Backoff,
}

impl Accepting {
    /// The socket registered with the runtime; `None` (logged) when it
    /// cannot be.
    pub fn new(listener: std::net::TcpListener, connections: Arc<Connections>) -> Option<Self> {
        let listener = match listener
            .set_nonblocking(true)
            .and_then(|()| TcpListener::from_std(listener))
        {
            Ok(listener) => listener,
            Err(error) => {
                tracing::error!(listener = connections.name(), %error, "cannot register the listening socket");
                return None;
            }
        };
        Some(Self {
            listener,
            connections,
            id: NEXT_LISTENER.fetch_add(1, Ordering::Relaxed),
            failures: Throttle::new(REPORT_EVERY),
            refusals: Throttle::new(REPORT_EVERY),
            backoff: Backoff::default(),
        })
    }

    /// The next connection admitted, or `None` once `stop` is cancelled.
    /// Cancel-safe: dropped while it waits, it loses no connection.
    pub async fn next(&mut self, stop: &CancellationToken) -> Option<Admission> {
        let name = self.connections.name();
        loop {
            let accepted = tokio::select! {
                accepted = self.listener.accept() => accepted,
                () = stop.cancelled() => return None,
            };
            let (stream, client) = match accepted {
                Ok(pair) => pair,
                Err(error) => {
                    self.connections.accept_failed();
                    if let Some(more) = self.failures.note(Instant::now()) {
                        tracing::warn!(
                            listener = name,
                            %error,
                            "accept failed ({more} more failed accepts since the last report); retrying after a pause"
                        );
                    }
                    tokio::select! {
                        () = tokio::time::sleep(self.backoff.next()) => continue,
                        () = stop.cancelled() => return None,
                    }
                }
            };
            self.backoff.reset();
            let unreported = self.failures.take_unreported();
            if unreported > 0 {
                tracing::warn!(
                    listener = name,
                    "accepting again, after {unreported} more failed accepts"
                );
            }
            match self.connections.admit(client.ip(), self.id) {
                Ok((slot, watch)) => {
                    let _ = stream.set_nodelay(true);
                    return Some(Admission {
                        stream,
                        client,
                        slot,
                        watch,
                    });
                }
                Err(refusal) => {
                    if let Some(more) = self.refusals.note(Instant::now()) {
                        tracing::warn!(
                            listener = name,
                            client = %client.ip(),
                            "{} ({more} more refused since the last report)",
                            refusal_message(refusal, self.connections.limits())
                        );
                    }
                }
            }
        }
    }
}

fn refusal_message(refusal: Refusal, limits: &Limits) -> String {
    match refusal {
        Refusal::Total => format!(
            "refused a connection: {} are open, none idle (serve --max-connections)",
            limits.connections
        ),
        Refusal::PerClient => format!(
            "refused a connection: its address has {} open, none idle (serve --max-connections-per-client)",
            limits.per_client
        ),
    }
}
