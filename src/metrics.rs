//! Per-release measurements: response counts by status class, upstream
//! failures, and latency histograms (since start, and over the last
//! minute), recorded by the proxy with atomic adds only. Prometheus text,
//! the JSON summaries of `switchyard status` and the dashboard's trends
//! are read from them.

mod connections;
mod latency;
mod prometheus;
mod release;
mod trend;

pub use connections::ConnectionSample;
pub use latency::{HistogramSnapshot, LatencyHistogram};
pub use prometheus::{ReleaseSample, render};
pub use release::{MetricsSnapshot, ReleaseMetrics, WindowSummary};
pub use trend::{Trend, TrendPoint};
