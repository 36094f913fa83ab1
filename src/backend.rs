//! A release and its instances as the data plane sees them: shared by the
//! runtime, which fills the slots and flips health, and the proxy, which
//! picks an instance per request. Neither knows the other through it.

mod upstream;

pub use upstream::{ConnectionPool, Upstream, UpstreamTls};

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use arc_swap::ArcSwap;
use http::HeaderValue;

use crate::metrics::{ReleaseMetrics, TcpMetrics};
use crate::model::ProxyHeader;

/// A release as the data plane sees it: its instances (one slot per
/// replica, replaced when an instance restarts) and its requests in flight,
/// which is what draining waits on.
#[derive(Debug)]
pub struct Backend {
    pub service: String,
    pub version: String,
    pub(crate) version_header: HeaderValue,
    slots: ArcSwap<Vec<Option<Arc<Upstream>>>>,
    in_flight: AtomicUsize,
    rotation: AtomicUsize,
    /// What the proxy measured of this release's answers.
    pub metrics: ReleaseMetrics,
    /// What the TCP forwarder measured of this release's connections.
    pub tcp: TcpMetrics,
    /// The PROXY protocol header a TCP release's connections start with.
    pub proxy_header: Option<ProxyHeader>,
}

impl Backend {
    pub fn new(service: &str, version: &str, replicas: usize) -> Self {
        Self {
            service: service.to_owned(),
            version: version.to_owned(),
            version_header: HeaderValue::from_str(version)
                .unwrap_or_else(|_| HeaderValue::from_static("invalid")),
            slots: ArcSwap::from_pointee(vec![None; replicas]),
            in_flight: AtomicUsize::new(0),
            rotation: AtomicUsize::new(0),
            metrics: ReleaseMetrics::default(),
            tcp: TcpMetrics::default(),
            proxy_header: None,
        }
    }

    /// The same backend, whose TCP connections start with `header`.
    pub fn with_proxy_header(self, header: Option<ProxyHeader>) -> Self {
        Self {
            proxy_header: header,
            ..self
        }
    }

    /// Puts an instance into a slot (or empties it).
    pub fn set_slot(&self, slot: usize, upstream: Option<Arc<Upstream>>) {
        self.slots.rcu(|slots| {
            let mut next = Vec::clone(slots);
            if next.len() <= slot {
                next.resize(slot + 1, None);
            }
            next[slot] = upstream.clone();
            next
        });
    }

    pub fn upstreams(&self) -> Vec<Arc<Upstream>> {
        self.slots.load().iter().flatten().cloned().collect()
    }

    pub fn healthy_count(&self) -> usize {
        self.slots
            .load()
            .iter()
            .flatten()
            .filter(|u| u.is_healthy())
            .count()
    }

    pub fn in_flight(&self) -> usize {
        self.in_flight.load(Ordering::Relaxed)
    }

    /// The healthy instance with the fewest requests in flight, not among
    /// `tried`. Ties go round-robin so equal instances share the load.
    pub fn pick(&self, tried: &[SocketAddr]) -> Option<Arc<Upstream>> {
        let slots = self.slots.load();
        let n = slots.len();
        if n == 0 {
            return None;
        }
        let start = self.rotation.fetch_add(1, Ordering::Relaxed) % n;
        let mut best: Option<&Arc<Upstream>> = None;
        for i in 0..n {
            let Some(u) = &slots[(start + i) % n] else {
                continue;
            };
            if !u.is_healthy() || tried.contains(&u.addr) {
                continue;
            }
            if best.is_none_or(|b| u.in_flight() < b.in_flight()) {
                best = Some(u);
            }
        }
        best.cloned()
    }
}

/// Counts a request against a backend and an instance until dropped.
pub struct InFlight {
    backend: Arc<Backend>,
    upstream: Arc<Upstream>,
}

impl InFlight {
    pub fn new(backend: Arc<Backend>, upstream: Arc<Upstream>) -> Self {
        backend.in_flight.fetch_add(1, Ordering::Relaxed);
        upstream.enter();
        Self { backend, upstream }
    }

    /// The release the request counts against.
    pub fn backend(&self) -> &Backend {
        &self.backend
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.backend.in_flight.fetch_sub(1, Ordering::Relaxed);
        self.upstream.leave();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn upstream(port: u16, healthy: bool) -> Arc<Upstream> {
        let u = Arc::new(Upstream::new(SocketAddr::from(([127, 0, 0, 1], port))));
        u.set_healthy(healthy);
        u
    }

    #[test]
    fn pick_prefers_fewest_in_flight_among_healthy() {
        let b = Backend::new("s", "1.0.0", 3);
        let (a, c, sick) = (upstream(1, true), upstream(2, true), upstream(3, false));
        b.set_slot(0, Some(a.clone()));
        b.set_slot(1, Some(c.clone()));
        b.set_slot(2, Some(sick));
        a.enter();
        for _ in 0..10 {
            assert_eq!(b.pick(&[]).map(|u| u.addr), Some(c.addr));
        }
        assert_eq!(b.pick(&[c.addr]).map(|u| u.addr), Some(a.addr));
        assert!(b.pick(&[a.addr, c.addr]).is_none());
    }
}
