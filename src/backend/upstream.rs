use std::any::Any;
use std::net::SocketAddr;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use rustls::pki_types::ServerName;
use tokio_rustls::TlsConnector;

/// The connections a data plane keeps open to one instance. The data plane
/// brings its own (see [`Upstream::pool`]), so that this module knows
/// nothing of how requests are forwarded.
pub trait ConnectionPool: Any + Send + Sync + std::fmt::Debug {
    /// Drops every idle connection (the instance stopped being healthy).
    fn clear(&self);
    fn as_any(&self) -> &dyn Any;
}

/// One instance as the data plane sees it: an address, a health flag the
/// runtime flips, a count of requests in flight, and its own connection
/// pool, so that replacing an instance drops exactly its connections.
#[derive(Debug)]
pub struct Upstream {
    pub addr: SocketAddr,
    /// TLS to the instance (an `https://` external upstream).
    pub tls: Option<UpstreamTls>,
    healthy: AtomicBool,
    in_flight: AtomicUsize,
    pool: OnceLock<Box<dyn ConnectionPool>>,
}

/// How the proxy speaks TLS to one upstream: its trust, and the name it
/// asks for (SNI) and verifies.
#[derive(Clone)]
pub struct UpstreamTls {
    pub connector: TlsConnector,
    pub server_name: ServerName<'static>,
}

impl std::fmt::Debug for UpstreamTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UpstreamTls")
            .field("server_name", &self.server_name)
            .finish_non_exhaustive()
    }
}

impl Upstream {
    pub fn new(addr: SocketAddr) -> Self {
        Self::with_tls(addr, None)
    }

    pub fn with_tls(addr: SocketAddr, tls: Option<UpstreamTls>) -> Self {
        Self {
            addr,
            tls,
            healthy: AtomicBool::new(false),
            in_flight: AtomicUsize::new(0),
            pool: OnceLock::new(),
        }
    }

    pub fn is_healthy(&self) -> bool {
        self.healthy.load(Ordering::Acquire)
    }

    pub fn set_healthy(&self, healthy: bool) {
        self.healthy.store(healthy, Ordering::Release);
        if !healthy && let Some(pool) = self.pool.get() {
            pool.clear();
        }
    }

    pub fn in_flight(&self) -> usize {
        self.in_flight.load(Ordering::Relaxed)
    }

    pub fn enter(&self) {
        self.in_flight.fetch_add(1, Ordering::Relaxed);
    }

    pub fn leave(&self) {
        self.in_flight.fetch_sub(1, Ordering::Relaxed);
    }

    /// This instance's pool of type `P`, made on first use. One data plane
    /// uses one pool type, so a second type is a bug.
    pub fn pool<P: ConnectionPool + Default>(&self) -> &P {
        self.pool
            .get_or_init(|| Box::<P>::default())
            .as_any()
            .downcast_ref()
            .expect("an upstream serves one data plane, with one pool type")
    }
}
