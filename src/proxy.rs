//! The data plane: accepts client traffic (HTTP/1.1 keep-alive, HTTP/2
//! cleartext, upgrades), picks a release from the current routing table and
//! forwards to its least-busy healthy instance over a pooled connection.

mod access_log;
mod body;
mod connection;
mod data_plane;
mod deadline;
mod error_page;
mod forward;
mod headers;
mod idle_sweep;
mod listener;
mod mirror;
mod pause;
mod pool;
mod progress;
mod proxy_header;
mod request_body;
mod request_id;
mod rewrite;
mod tcp;
mod tunnel;

pub use crate::backend::{Backend, Upstream, UpstreamTls};
pub use access_log::{AccessLog, AccessLogStats, AccessLogTarget, AccessLogWriter};
pub use body::{ResponseBody, ResponseBodyError};
pub use data_plane::DataPlane;
pub use error_page::ProxyError;
pub use listener::{ClientTls, serve};
pub use mirror::{Mirror, MirrorSettings};
pub use pause::{PauseGate, SharedPauses};
pub use progress::MinRate;
pub use tcp::{TcpRoute, forward as forward_tcp};

use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;

use crate::listener::Connections;
use crate::routing::RoutingTable;

/// The routing table the proxy reads.
pub type Table = RoutingTable<Backend, Mirror>;

/// Where the proxy finds the current [`Table`]; the controller swaps it whole.
pub type SharedTable = Arc<ArcSwap<Table>>;

/// Settings of the data plane.
#[derive(Debug, Clone)]
pub struct ProxySettings {
    /// From the end of the request body to the response headers.
    pub upstream_timeout: Duration,
    pub connect_timeout: Duration,
    /// A forwarded TCP connection that carries nothing for this long is
    /// closed.
    pub tcp_idle_timeout: Duration,
    /// The floor a client's request body must keep to (else 408).
    pub client_body: MinRate,
    /// The floor an upstream's response body must keep to (else cut).
    pub upstream_body: MinRate,
    pub version_header: bool,
    /// Where each request's line goes (`serve --access-log`), if anywhere.
    pub access_log: Option<AccessLog>,
    /// The data plane's connection budget: the proxy listener and every
    /// pinned address count against it.
    pub connections: Arc<Connections>,
    /// The TLS listener's port, where services that want HTTPS redirect
    /// cleartext requests (`None`: no TLS listener, no redirect).
    pub https_port: Option<u16>,
    /// HTTP-01 answers of pending ACME orders, given on the cleartext
    /// listener before any routing.
    pub acme_challenges: crate::tls::AcmeChallenges,
}

/// Everything a request handler needs.
pub struct Proxy {
    pub table: SharedTable,
    /// Gates of paused services.
    pub pauses: SharedPauses,
    /// `(service, version)` when this proxy serves one release's pinned
    /// address: every request goes to that release, path unchanged.
    pub pinned: Option<(String, String)>,
    pub settings: ProxySettings,
}
