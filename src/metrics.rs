//! Per-release measurements: response counts by status class, upstream
//! failures and timeouts, the client's faults (kept apart from the
//! release's answers), and latency histograms (since start, and over the
//! last minute), recorded by the proxy with atomic adds only. Prometheus
//! text, the JSON summaries of `switchyard status` and the dashboard's
//! trends are read from them.

mod access_log;
mod connections;
mod latency;
mod prometheus;
mod release;
mod tcp;
mod tls;
mod trend;

pub use access_log::AccessLogSample;
pub use connections::ConnectionSample;
pub use latency::{HistogramSnapshot, LatencyHistogram};
pub use prometheus::{ReleaseSample, render};
pub use release::{
    ClientFault, MetricsSnapshot, MinuteCounts, ReleaseMetrics, UpstreamPhase, WindowSummary,
};
pub use tcp::{DURATION_BOUNDS_SECS, TcpMetrics, TcpSnapshot};
pub use tls::TlsSample;
pub use trend::{Trend, TrendPoint};
