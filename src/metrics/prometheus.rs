//! Prometheus text for the admin API's `/metrics`, built at scrape time
//! from the live counts (collectors over a snapshot, so the hot paths only
//! ever touch their own atomics).

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::registry::Registry;

use prometheus_client::metrics::MetricType;

use super::access_log::{AccessLogCollector, AccessLogSample};
use super::connections::{ConnectionCollector, ConnectionSample};
use super::tls::{TlsCollector, TlsSample};
use super::{ClientFault, MetricsSnapshot, UpstreamPhase};
use crate::shadow::ShadowReport;

/// One release's numbers at scrape time.
#[derive(Debug, Clone)]
pub struct ReleaseSample {
    pub service: String,
    pub version: String,
    pub role: String,
    pub metrics: MetricsSnapshot,
    pub in_flight: usize,
    pub healthy: usize,
    pub instances: usize,
    /// A TCP release's connection counters.
    pub tcp: Option<super::TcpSnapshot>,
}

/// A gauge family: name, help, and how to read it off a sample.
type Gauge = (&'static str, &'static str, fn(&ReleaseSample) -> usize);

/// Request counts, errors, latency and instances per release.
#[derive(Debug)]
struct ReleaseCollector {
    samples: Vec<ReleaseSample>,
}

/// Bucket bounds of the exported latency histogram, in seconds.
const LATENCY_BOUNDS: [f64; 16] = [
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
    30.0,
    60.0,
    f64::INFINITY,
];

/// A counter family per release: name, help, the label that tells its
/// counts apart ("" for one count per release), and the counts by the
/// values of that label.
type Counters = (
    &'static str,
    &'static str,
    &'static str,
    fn(&MetricsSnapshot) -> Vec<(&'static str, u64)>,
);

const COUNTERS: [Counters; 5] = [
    (
        "switchyard_requests",
        "Answers through the proxy by release and status class",
        "class",
        |m| {
            ["1xx", "2xx", "3xx", "4xx", "5xx"]
                .into_iter()
                .zip(m.responses)
                .collect()
        },
    ),
    (
        "switchyard_upstream_errors",
        "Requests the proxy could not get answered (its own 502, 503, 504)",
        "",
        |m| vec![("", m.upstream_errors)],
    ),
    (
        "switchyard_broken_responses",
        "Answers the upstream broke off after they began (body stalled or cut): errors of the release",
        "",
        |m| vec![("", m.broken_responses)],
    ),
    (
        "switchyard_upstream_timeouts",
        "Upstream timeouts by phase: connect (--connect-timeout), header (--upstream-timeout), body (--upstream-body-min-rate)",
        "phase",
        |m| {
            UpstreamPhase::ALL
                .map(|p| (p.label(), m.upstream_timeouts(p)))
                .to_vec()
        },
    ),
    (
        "switchyard_client_faults",
        "Requests ended by their client: bad_body (400), slow_body (408, --client-body-min-rate), aborted (499); not among switchyard_requests_total and never errors of the release",
        "fault",
        |m| {
            ClientFault::ALL
                .map(|f| (f.label(), m.client_faults(f)))
                .to_vec()
        },
    ),
];

impl ReleaseCollector {
    fn encode_counters(
        &self,
        encoder: &mut DescriptorEncoder,
        (name, help, label, counts): &Counters,
    ) -> Result<(), std::fmt::Error> {
        let mut family = encoder.encode_descriptor(name, help, None, MetricType::Counter)?;
        for s in &self.samples {
            for (value, count) in counts(&s.metrics) {
                let release = [
                    ("service", s.service.as_str()),
                    ("version", s.version.as_str()),
                ];
                let counter = ConstCounter::new(count);
                if label.is_empty() {
                    counter.encode(family.encode_family(&release)?)?;
                } else {
                    let labels = [release[0], release[1], (label, value)];
                    counter.encode(family.encode_family(&labels)?)?;
                }
            }
        }
        Ok(())
    }
}

impl Collector for ReleaseCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        for counters in &COUNTERS {
            self.encode_counters(&mut encoder, counters)?;
        }
        {
            let mut family = encoder.encode_descriptor(
                "switchyard_request_duration_seconds",
                "Time to the response headers",
                None,
                MetricType::Histogram,
            )?;
            for s in &self.samples {
                let labels = [
                    ("service", s.service.as_str()),
                    ("version", s.version.as_str()),
                ];
                let h = &s.metrics.latency;
                let mut previous = 0;
                let buckets: Vec<(f64, u64)> = LATENCY_BOUNDS
                    .iter()
                    .map(|b| {
                        let at_most = if b.is_finite() {
                            h.count_at_most((b * 1e6) as u64)
                        } else {
                            h.count()
                        };
                        let in_bucket = at_most - previous;
                        previous = at_most;
                        (*b, in_bucket)
                    })
                    .collect();
                family
                    .encode_family(&labels)?
                    .encode_histogram::<prometheus_client::encoding::NoLabelSet>(
                        h.sum_micros as f64 / 1e6,
                        h.count(),
                        &buckets,
                        None,
                    )?;
            }
        }
        let gauges: [Gauge; 3] = [
            (
                "switchyard_requests_in_flight",
                "Requests being answered",
                |s| s.in_flight,
            ),
            (
                "switchyard_instances_healthy",
                "Instances in rotation",
                |s| s.healthy,
            ),
            ("switchyard_instances", "Instances the release runs", |s| {
                s.instances
            }),
        ];
        for (name, help, value) in gauges {
            let mut family = encoder.encode_descriptor(name, help, None, MetricType::Gauge)?;
            for s in &self.samples {
                let labels = [
                    ("service", s.service.as_str()),
                    ("version", s.version.as_str()),
                    ("role", s.role.as_str()),
                ];
                family
                    .encode_family(&labels)?
                    .encode_gauge(&(value(s) as i64))?;
            }
        }
        self.encode_tcp(&mut encoder)
    }
}

/// A TCP counter family: name, help, and its values by label.
type TcpCounters = (
    &'static str,
    &'static str,
    &'static str,
    fn(&super::TcpSnapshot) -> Vec<(&'static str, u64)>,
);

const TCP_COUNTERS: [TcpCounters; 3] = [
    (
        "switchyard_tcp_connections",
        "TCP connections forwarded to the release",
        "",
        |t| vec![("", t.total)],
    ),
    (
        "switchyard_tcp_bytes",
        "Bytes forwarded: in (client to release) and out (release to client), counted when a connection closes",
        "direction",
        |t| vec![("in", t.bytes_in), ("out", t.bytes_out)],
    ),
    (
        "switchyard_tcp_connect_failures",
        "Connections to an instance that could not be opened",
        "",
        |t| vec![("", t.connect_failures)],
    ),
];

impl ReleaseCollector {
    /// The TCP releases' families (none when no release speaks TCP).
    fn encode_tcp(&self, encoder: &mut DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let tcp: Vec<(&ReleaseSample, &super::TcpSnapshot)> = self
            .samples
            .iter()
            .filter_map(|s| s.tcp.as_ref().map(|t| (s, t)))
            .collect();
        if tcp.is_empty() {
            return Ok(());
        }
        for (name, help, label, values) in TCP_COUNTERS {
            let mut family = encoder.encode_descriptor(name, help, None, MetricType::Counter)?;
            for (s, t) in &tcp {
                for (value, count) in values(t) {
                    let release = [
                        ("service", s.service.as_str()),
                        ("version", s.version.as_str()),
                    ];
                    let counter = ConstCounter::new(count);
                    if label.is_empty() {
                        counter.encode(family.encode_family(&release)?)?;
                    } else {
                        let labels = [release[0], release[1], (label, value)];
                        counter.encode(family.encode_family(&labels)?)?;
                    }
                }
            }
        }
        {
            let mut family = encoder.encode_descriptor(
                "switchyard_tcp_connections_open",
                "TCP connections open to the release",
                None,
                MetricType::Gauge,
            )?;
            for (s, t) in &tcp {
                let labels = [
                    ("service", s.service.as_str()),
                    ("version", s.version.as_str()),
                ];
                family
                    .encode_family(&labels)?
                    .encode_gauge(&i64::try_from(t.open).unwrap_or(i64::MAX))?;
            }
        }
        let mut family = encoder.encode_descriptor(
            "switchyard_tcp_connection_duration_seconds",
            "How long closed TCP connections lasted",
            None,
            MetricType::Histogram,
        )?;
        for (s, t) in &tcp {
            let labels = [
                ("service", s.service.as_str()),
                ("version", s.version.as_str()),
            ];
            let buckets: Vec<(f64, u64)> = super::DURATION_BOUNDS_SECS
                .iter()
                .copied()
                .chain([f64::INFINITY])
                .zip(t.durations.iter().copied())
                .collect();
            family
                .encode_family(&labels)?
                .encode_histogram::<prometheus_client::encoding::NoLabelSet>(
                    t.duration_sum_ms as f64 / 1e3,
                    t.durations.iter().sum(),
                    &buckets,
                    None,
                )?;
        }
        Ok(())
    }
}

/// A counter family: name, help, and how to read it off a report.
type Family = (&'static str, &'static str, fn(&ShadowReport) -> u64);

/// Shadow counters per service and version.
#[derive(Debug)]
struct ShadowCollector {
    reports: Vec<ShadowReport>,
}

impl Collector for ShadowCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let families: [Family; 5] = [
            (
                "switchyard_shadow_mirrored",
                "Copies of requests sent to a shadow",
                |r| r.mirrored,
            ),
            (
                "switchyard_shadow_dropped",
                "Copies dropped because the shadow's queue was full",
                |r| r.dropped,
            ),
            (
                "switchyard_shadow_too_large",
                "Requests not mirrored because their body passed the limit",
                |r| r.too_large,
            ),
            (
                "switchyard_shadow_errors",
                "Copies the shadow answered with a 5xx or failed to answer (counts of the current report window)",
                |r| r.shadow_errors,
            ),
            (
                "switchyard_shadow_mismatched",
                "Compared answers with a real difference from main's",
                |r| r.compared - r.matched,
            ),
        ];
        for (name, help, value) in families {
            let counter = ConstCounter::new(0u64);
            let mut family = encoder.encode_descriptor(name, help, None, counter.metric_type())?;
            for r in &self.reports {
                let labels = [
                    ("service", r.service.as_str()),
                    ("version", r.version.as_str()),
                ];
                ConstCounter::new(value(r)).encode(family.encode_family(&labels)?)?;
            }
        }
        Ok(())
    }
}

/// The metrics page.
pub fn render(
    releases: Vec<ReleaseSample>,
    shadow_reports: Vec<ShadowReport>,
    connections: Vec<ConnectionSample>,
    access_log: Option<AccessLogSample>,
    tls: Option<TlsSample>,
) -> String {
    let mut registry = Registry::default();
    registry.register_collector(Box::new(ReleaseCollector { samples: releases }));
    registry.register_collector(Box::new(ShadowCollector {
        reports: shadow_reports,
    }));
    registry.register_collector(Box::new(ConnectionCollector {
        samples: connections,
    }));
    if let Some(sample) = access_log {
        registry.register_collector(Box::new(AccessLogCollector { sample }));
    }
    if let Some(sample) = tls {
        registry.register_collector(Box::new(TlsCollector { sample }));
    }
    let mut out = String::new();
    // Writing to a String cannot fail.
    let _ = prometheus_client::encoding::text::encode(&mut out, &registry);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::shadow::ShadowStats;

    #[test]
    fn release_counters_are_labelled_by_release_and_kind() {
        use crate::metrics::ReleaseMetrics;
        let m = ReleaseMetrics::default();
        m.record(200, false, std::time::Duration::from_millis(1));
        m.record(502, true, std::time::Duration::from_millis(1));
        m.record_client_fault(ClientFault::SlowBody);
        m.record_upstream_timeout(UpstreamPhase::Body);
        m.record_broken_response();
        let sample = ReleaseSample {
            service: "hello".into(),
            version: "1.0.0".into(),
            role: "main".into(),
            metrics: m.snapshot(),
            in_flight: 0,
            healthy: 1,
            instances: 1,
            tcp: None,
        };
        let text = render(vec![sample], vec![], vec![], None, None);
        for line in [
            r#"switchyard_requests_total{service="hello",version="1.0.0",class="2xx"} 1"#,
            r#"switchyard_requests_total{service="hello",version="1.0.0",class="5xx"} 1"#,
            r#"switchyard_upstream_errors_total{service="hello",version="1.0.0"} 1"#,
            r#"switchyard_broken_responses_total{service="hello",version="1.0.0"} 1"#,
            r#"switchyard_upstream_timeouts_total{service="hello",version="1.0.0",phase="body"} 1"#,
            r#"switchyard_upstream_timeouts_total{service="hello",version="1.0.0",phase="connect"} 0"#,
            r#"switchyard_client_faults_total{service="hello",version="1.0.0",fault="slow_body"} 1"#,
            r#"switchyard_client_faults_total{service="hello",version="1.0.0",fault="bad_body"} 0"#,
        ] {
            assert!(text.contains(line), "no `{line}` in:\n{text}");
        }
    }

    #[test]
    fn shadow_counts_are_labelled_by_service_and_version() {
        let mut stats = ShadowStats {
            mirrored: 7,
            dropped: 2,
            ..ShadowStats::default()
        };
        stats.record("GET /", &[]);
        let text = render(
            vec![],
            vec![stats.report("hello", "2.0.0")],
            vec![],
            None,
            None,
        );
        assert!(
            text.contains(r#"switchyard_shadow_mirrored_total{service="hello",version="2.0.0"} 7"#),
            "{text}"
        );
        assert!(
            text.contains(r#"switchyard_shadow_dropped_total{service="hello",version="2.0.0"} 2"#)
        );
        assert!(
            text.contains(
                r#"switchyard_shadow_mismatched_total{service="hello",version="2.0.0"} 0"#
            )
        );
    }

    #[test]
    fn connection_counts_are_labelled_by_listener_and_reason() {
        let sample = ConnectionSample {
            listener: "proxy",
            open: 3,
            max: 352,
            max_per_client: 88,
            accepted: 10,
            refused_total: 1,
            refused_per_client: 2,
            shed: 4,
            header_timeouts: 5,
            idle_timeouts: 6,
            accept_errors: 7,
            tls_handshake_timeouts: 8,
            tls_handshake_failures: 9,
        };
        let text = render(vec![], vec![], vec![sample], None, None);
        for line in [
            r#"switchyard_connections_open{listener="proxy"} 3"#,
            r#"switchyard_connections_max{listener="proxy",scope="per_client"} 88"#,
            r#"switchyard_connections_refused_total{listener="proxy",reason="total_cap"} 1"#,
            r#"switchyard_connections_refused_total{listener="proxy",reason="client_cap"} 2"#,
            r#"switchyard_connections_shed_total{listener="proxy"} 4"#,
            r#"switchyard_header_timeouts_total{listener="proxy"} 5"#,
            r#"switchyard_idle_timeouts_total{listener="proxy"} 6"#,
            r#"switchyard_tls_handshake_timeouts_total{listener="proxy"} 8"#,
            r#"switchyard_tls_handshake_failures_total{listener="proxy"} 9"#,
            r#"switchyard_accept_errors_total{listener="proxy"} 7"#,
        ] {
            assert!(text.contains(line), "{line} missing from\n{text}");
        }
    }
}
