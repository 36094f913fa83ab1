//! `serve`'s flags for how its listeners treat client connections.

use std::time::Duration;

use clap::Args;

use crate::listener::ListenerSettings;

/// Timeouts and connection caps of the proxy, pinned and admin listeners.
#[derive(Debug, Args)]
pub struct LimitArgs {
    /// A client must send a whole request head within this (counted from
    /// the accept for a connection's first request); otherwise it gets 408
    /// and the connection is closed.
    #[arg(long, value_parser = humantime::parse_duration, default_value = "10s")]
    pub header_timeout: Duration,
    /// A keep-alive connection with no request for this long is closed.
    #[arg(long, value_parser = humantime::parse_duration, default_value = "60s")]
    pub idle_timeout: Duration,
    /// Open proxy connections at most, pinned addresses included. Default:
    /// computed from the open-files limit, leaving files for upstream
    /// connections, the admin API and the rest.
    #[arg(long, value_name = "N")]
    pub max_connections: Option<usize>,
    /// Open proxy connections per client IP address (IPv6: per /64).
    /// Default: a quarter of --max-connections.
    #[arg(long, value_name = "N")]
    pub max_connections_per_client: Option<usize>,
    /// Open admin API connections at most.
    #[arg(long, value_name = "N", default_value_t = 64)]
    pub admin_max_connections: usize,
    /// Streams at once on one HTTP/2 client connection.
    #[arg(long, value_name = "N", default_value_t = 100)]
    pub http2_max_streams: u32,
    /// How often a quiet HTTP/2 client is sent a PING (one that does not
    /// answer within 20s is closed); 0s: never.
    #[arg(long, value_parser = humantime::parse_duration, default_value = "30s")]
    pub http2_keep_alive: Duration,
    /// A TLS client must finish its handshake within this (counted from
    /// the accept); otherwise the connection is closed.
    #[arg(long, value_parser = humantime::parse_duration, default_value = "10s")]
    pub tls_handshake_timeout: Duration,
    /// An idle connection to an instance, kept for the next request, is
    /// closed after this long unused.
    #[arg(long, value_parser = longer_than_zero, default_value = "60s")]
    pub upstream_idle_timeout: Duration,
}

impl LimitArgs {
    pub fn settings(&self) -> ListenerSettings {
        ListenerSettings {
            header_timeout: self.header_timeout,
            idle_timeout: self.idle_timeout,
            max_connections: self.max_connections,
            max_connections_per_client: self.max_connections_per_client,
            admin_max_connections: self.admin_max_connections,
            http2_max_streams: self.http2_max_streams,
            http2_keep_alive: (!self.http2_keep_alive.is_zero()).then_some(self.http2_keep_alive),
            tls_handshake_timeout: self.tls_handshake_timeout,
        }
    }
}

/// A duration such as `60s` or `2m`, longer than zero.
fn longer_than_zero(text: &str) -> Result<Duration, String> {
    match humantime::parse_duration(text) {
        Ok(duration) if duration.is_zero() => Err("must be longer than 0s".into()),
        Ok(duration) => Ok(duration),
        Err(error) => Err(format!("{error}; give a duration such as 60s or 2m")),
    }
}
