//! Client connections per listener budget (`proxy`, which includes the
//! pinned addresses, and `admin`): open, accepted, refused, shed, timed
//! out, failed accepts and TLS handshakes.

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::ConstCounter;

/// One listener budget's numbers at scrape time.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ConnectionSample {
    pub listener: &'static str,
    pub open: usize,
    pub max: usize,
    pub max_per_client: usize,
    pub accepted: u64,
    /// Refused at the total cap, no idle connection to shed.
    pub refused_total: u64,
    /// Refused at the client address's cap, none of its own idle.
    pub refused_per_client: u64,
    /// Idle connections closed to make room for new ones.
    pub shed: u64,
    /// Closed because a request head did not arrive in time (408).
    pub header_timeouts: u64,
    /// Keep-alive connections closed after the idle timeout.
    pub idle_timeouts: u64,
    pub accept_errors: u64,
    /// TLS handshakes that did not end within the handshake timeout.
    pub tls_handshake_timeouts: u64,
    /// TLS handshakes that failed (no certificate for the name, a client
    /// that speaks no TLS, no protocol in common, …).
    pub tls_handshake_failures: u64,
}

/// A counter family: name, help, and how to read it off a sample.
type Family = (&'static str, &'static str, fn(&ConnectionSample) -> u64);

#[derive(Debug)]
pub(super) struct ConnectionCollector {
    pub(super) samples: Vec<ConnectionSample>,
}

impl Collector for ConnectionCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        {
            let mut family = encoder.encode_descriptor(
                "switchyard_connections_open",
                "Client connections open",
                None,
                MetricType::Gauge,
            )?;
            for s in &self.samples {
                family
                    .encode_family(&[("listener", s.listener)])?
                    .encode_gauge(&(s.open as i64))?;
            }
        }
        {
            let mut family = encoder.encode_descriptor(
                "switchyard_connections_max",
                "Client connections allowed open: in all, and per client address",
                None,
                MetricType::Gauge,
            )?;
            for s in &self.samples {
                for (scope, max) in [("total", s.max), ("per_client", s.max_per_client)] {
                    family
                        .encode_family(&[("listener", s.listener), ("scope", scope)])?
                        .encode_gauge(&(max as i64))?;
                }
            }
        }
        {
            let mut family = encoder.encode_descriptor(
                "switchyard_connections_refused",
                "Connections closed at once: a cap was reached and no idle connection could make room",
                None,
                MetricType::Counter,
            )?;
            for s in &self.samples {
                for (reason, n) in [
                    ("total_cap", s.refused_total),
                    ("client_cap", s.refused_per_client),
                ] {
                    ConstCounter::new(n).encode(
                        family.encode_family(&[("listener", s.listener), ("reason", reason)])?,
                    )?;
                }
            }
        }
        let families: [Family; 7] = [
            (
                "switchyard_connections_accepted",
                "Client connections accepted",
                |s| s.accepted,
            ),
            (
                "switchyard_connections_shed",
                "Idle keep-alive connections closed to make room for new ones",
                |s| s.shed,
            ),
            (
                "switchyard_header_timeouts",
                "Connections closed because a request head did not arrive within the header timeout (408)",
                |s| s.header_timeouts,
            ),
            (
                "switchyard_idle_timeouts",
                "Keep-alive connections closed after the idle timeout",
                |s| s.idle_timeouts,
            ),
            (
                "switchyard_accept_errors",
                "Failed accepts (out of file descriptors and the like)",
                |s| s.accept_errors,
            ),
            (
                "switchyard_tls_handshake_timeouts",
                "TLS connections closed because their handshake did not end within the handshake timeout",
                |s| s.tls_handshake_timeouts,
            ),
            (
                "switchyard_tls_handshake_failures",
                "TLS handshakes that failed (no certificate for the name asked, not TLS, nothing in common)",
                |s| s.tls_handshake_failures,
            ),
        ];
        for (name, help, value) in families {
            let mut family = encoder.encode_descriptor(name, help, None, MetricType::Counter)?;
            for s in &self.samples {
                ConstCounter::new(value(s))
                    .encode(family.encode_family(&[("listener", s.listener)])?)?;
            }
        }
        Ok(())
    }
}
