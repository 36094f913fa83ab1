//! TCP services: each connection is forwarded whole to one release, chosen
//! when it opens (main, the canary by client address, or a pinned
//! address's release). A change of the routing table moves new
//! connections only; an open one keeps its instance until it closes.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

mod activity;

use activity::{Activity, Metered, Side};

use super::{Backend, SharedTable};
use crate::backend::InFlight;
use crate::listener::Admitted;

/// Where one TCP listener's connections go.
pub struct TcpRoute {
    pub table: SharedTable,
    pub service: String,
    /// The release of a pinned address; `None`: the service's own address.
    pub pinned: Option<String>,
    pub connect_timeout: Duration,
    /// A connection that carries nothing either way for this long is
    /// closed (`serve --tcp-idle-timeout`).
    pub idle_timeout: Duration,
}

impl TcpRoute {
    /// The release a new connection from `client` goes to, if any runs.
    fn backend(&self, client: IpAddr) -> Option<Arc<Backend>> {
        let table = self.table.load();
        let service = table.service(&self.service)?;
        match &self.pinned {
            Some(version) => service.versions.get(version).cloned(),
            None => service
                .policy
                .as_ref()
                .and_then(|p| p.canary_for(client))
                .or(service.main.as_ref())
                .cloned(),
        }
    }
}

/// Forwards one client connection to a healthy instance of its release
/// until either side closes (a half-close is passed on: the other
/// direction goes on until it ends too), or the connection is asked to
/// close.
pub async fn forward(
    route: Arc<TcpRoute>,
    mut client: TcpStream,
    peer: SocketAddr,
    admitted: Admitted,
) {
    let Some(backend) = route.backend(peer.ip()) else {
        tracing::debug!(service = %route.service, client = %peer, "no release to forward a TCP connection to; closed");
        return;
    };
    let mut tried = Vec::new();
    let (upstream, mut server) = loop {
        let Some(upstream) = backend.pick(&tried) else {
            tracing::warn!(
                service = %backend.service,
                version = %backend.version,
                client = %peer,
                "no healthy instance took the TCP connection; closed"
            );
            return;
        };
        match tokio::time::timeout(route.connect_timeout, TcpStream::connect(upstream.addr)).await {
            Ok(Ok(stream)) => break (upstream, stream),
            Ok(Err(error)) => {
                tracing::debug!(instance = %upstream.addr, %error, "cannot connect to the instance");
                backend.tcp.connect_failed();
                tried.push(upstream.addr);
            }
            Err(_) => {
                tracing::debug!(instance = %upstream.addr, "connecting to the instance timed out");
                backend.tcp.connect_failed();
                tried.push(upstream.addr);
            }
        }
    };
    let _ = server.set_nodelay(true);
    let _in_flight = InFlight::new(Arc::clone(&backend), upstream);
    if let Some(version) = backend.proxy_header {
        let local = client.local_addr().unwrap_or(peer);
        let header = super::proxy_header::encode(version, peer, local);
        if let Err(error) = server.write_all(&header).await {
            tracing::debug!(%error, "cannot send the PROXY header");
            backend.tcp.connect_failed();
            return;
        }
    }
    backend.tcp.opened();
    let started = Instant::now();
    let activity = Activity::new();
    let (mut from_client, mut from_release) = (
        Metered {
            stream: &mut client,
            side: Side::Client,
            activity: &activity,
            metrics: &backend.tcp,
        },
        Metered {
            stream: &mut server,
            side: Side::Release,
            activity: &activity,
            metrics: &backend.tcp,
        },
    );
    tokio::select! {
        copied = tokio::io::copy_bidirectional(&mut from_client, &mut from_release) => {
            if let Err(error) = copied {
                tracing::debug!(%error, client = %peer, "TCP connection ended with an error");
            }
        }
        () = activity.idle_for(route.idle_timeout) => {
            tracing::debug!(client = %peer, idle = ?route.idle_timeout, "TCP connection idle too long; closed");
        }
        () = admitted.close_asked() => {}
    }
    backend.tcp.closed(started.elapsed());
}
