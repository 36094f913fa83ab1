//! The limits every listener runs under: the `serve` flags, and what they
//! come to once the file limit is known.

use std::time::Duration;

use super::file_limit::FileLimit;
use super::watch::Timeouts;

/// How serve's listeners treat client connections (the `serve` flags).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListenerSettings {
    /// A client must send a whole request head within this, counted from
    /// the accept for the first request and from its first byte for later
    /// ones; otherwise it gets 408 and the connection is closed.
    pub header_timeout: Duration,
    /// A keep-alive connection with no request for this long is closed.
    pub idle_timeout: Duration,
    /// Open proxy connections at most, pinned addresses included
    /// (`None`: computed from the file limit).
    pub max_connections: Option<usize>,
    /// Open proxy connections per client IP address, IPv6 per /64 (`None`:
    /// a quarter of the total).
    pub max_connections_per_client: Option<usize>,
    /// Open admin API connections at most.
    pub admin_max_connections: usize,
    /// Streams at once on one HTTP/2 connection.
    pub http2_max_streams: u32,
    /// How often a quiet HTTP/2 client is sent a PING (one that does not
    /// answer within 20 s is closed); `None`: never.
    pub http2_keep_alive: Option<Duration>,
    /// A TLS client must finish its handshake within this, counted from
    /// the accept; otherwise the connection is closed.
    pub tls_handshake_timeout: Duration,
}

impl Default for ListenerSettings {
    fn default() -> Self {
        Self {
            header_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(60),
            max_connections: None,
            max_connections_per_client: None,
            admin_max_connections: 64,
            http2_max_streams: 100,
            http2_keep_alive: Some(Duration::from_secs(30)),
            tls_handshake_timeout: Duration::from_secs(10),
        }
    }
}

/// One listener's limits, resolved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limits {
    /// Open connections at most.
    pub connections: usize,
    /// Open connections per client IP address at most.
    pub per_client: usize,
    /// Requests in flight at once (each may hold an upstream connection;
    /// more wait for one to end); `None`: no cap.
    pub requests: Option<usize>,
    pub timeouts: Timeouts,
    pub http2_max_streams: u32,
    pub http2_keep_alive: Option<Duration>,
    /// TLS listeners: the handshake must end within this.
    pub tls_handshake: Duration,
}

/// The proxy's and the admin API's limits, and what the operator should
/// know about them.
#[derive(Debug, Clone)]
pub struct Resolved {
    pub proxy: Limits,
    pub admin: Limits,
    pub warnings: Vec<String>,
}

impl ListenerSettings {
    /// Refuses settings that cannot work.
    pub fn validate(&self) -> Result<(), String> {
        if self.header_timeout.is_zero()
            || self.idle_timeout.is_zero()
            || self.tls_handshake_timeout.is_zero()
        {
            return Err(
                "--header-timeout, --idle-timeout and --tls-handshake-timeout must be longer than 0s"
                    .into(),
            );
        }
        if self.max_connections == Some(0)
            || self.max_connections_per_client == Some(0)
            || self.admin_max_connections == 0
        {
            return Err("--max-connections, --max-connections-per-client and --admin-max-connections must be at least 1".into());
        }
        if let (Some(total), Some(per_client)) =
            (self.max_connections, self.max_connections_per_client)
        {
            if per_client > total {
                return Err(format!(
                    "--max-connections-per-client {per_client} is above --max-connections {total}: lower it or raise the total"
                ));
            }
        }
        if self.http2_max_streams == 0 {
            return Err("--http2-max-streams must be at least 1".into());
        }
        Ok(())
    }

    /// The limits under `files`: flags as given, the rest computed.
    pub fn resolve(&self, files: &FileLimit) -> Resolved {
        let mut warnings = Vec::new();
        let connections = self
            .max_connections
            .unwrap_or_else(|| files.proxy_connections(self.admin_max_connections));
        if let Some(room) = files.too_low_for(connections) {
            warnings.push(format!(
                "the {files} leaves room for about {room} proxy connections, not {connections}: \
                 past that, accepts fail (\"Too many open files\"). Raise the limit or lower --max-connections"
            ));
        }
        let per_client = self
            .max_connections_per_client
            .unwrap_or((connections / 4).max(1))
            .min(connections);
        let timeouts = Timeouts {
            header: self.header_timeout,
            idle: self.idle_timeout,
        };
        let proxy = Limits {
            connections,
            per_client,
            requests: Some(connections),
            timeouts,
            http2_max_streams: self.http2_max_streams,
            http2_keep_alive: self.http2_keep_alive,
            tls_handshake: self.tls_handshake_timeout,
        };
        let admin = Limits {
            connections: self.admin_max_connections,
            per_client: self.admin_max_connections,
            requests: None,
            ..proxy.clone()
        };
        Resolved {
            proxy,
            admin,
            warnings,
        }
    }
}

impl Resolved {
    /// The startup line's account of the limits.
    pub fn summary(&self) -> String {
        format!(
            "proxy at most {} connections ({} per client address), admin API {}; header timeout {}, idle timeout {}",
            self.proxy.connections,
            self.proxy.per_client,
            self.admin.connections,
            humantime::format_duration(self.proxy.timeouts.header),
            humantime::format_duration(self.proxy.timeouts.idle),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn files(n: u64) -> FileLimit {
        FileLimit {
            before: Some(n),
            now: Some(n),
            error: None,
        }
    }

    #[test]
    fn caps_come_from_the_file_limit_unless_given() {
        let settings = ListenerSettings::default();
        let resolved = settings.resolve(&files(1024));
        assert_eq!(resolved.proxy.connections, 352);
        assert_eq!(resolved.proxy.per_client, 88);
        assert_eq!(resolved.proxy.requests, Some(352));
        assert_eq!(resolved.admin.connections, 64);
        assert!(resolved.warnings.is_empty(), "{:?}", resolved.warnings);

        let given = ListenerSettings {
            max_connections: Some(100),
            max_connections_per_client: Some(7),
            ..ListenerSettings::default()
        }
        .resolve(&files(1024));
        assert_eq!((given.proxy.connections, given.proxy.per_client), (100, 7));
    }

    #[test]
    fn a_cap_the_file_limit_cannot_carry_is_warned_about() {
        let resolved = ListenerSettings {
            max_connections: Some(5000),
            ..ListenerSettings::default()
        }
        .resolve(&files(1024));
        assert_eq!(resolved.warnings.len(), 1);
        assert!(resolved.warnings[0].contains("--max-connections"));
        assert_eq!(resolved.proxy.per_client, 1250);
    }

    #[test]
    fn settings_that_cannot_work_are_refused() {
        for bad in [
            ListenerSettings {
                header_timeout: Duration::ZERO,
                ..ListenerSettings::default()
            },
            ListenerSettings {
                max_connections: Some(0),
                ..ListenerSettings::default()
            },
            ListenerSettings {
                max_connections: Some(10),
                max_connections_per_client: Some(11),
                ..ListenerSettings::default()
            },
            ListenerSettings {
                http2_max_streams: 0,
                ..ListenerSettings::default()
            },
        ] {
            assert!(bad.validate().is_err(), "{bad:?}");
        }
        assert!(ListenerSettings::default().validate().is_ok());
    }
}
