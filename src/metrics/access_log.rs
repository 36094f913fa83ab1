//! The access log's lines: written, and dropped because the writer was
//! behind (or its file could not be written).

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::ConstCounter;

/// The access log's counters at scrape time.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct AccessLogSample {
    pub written: u64,
    pub dropped: u64,
}

#[derive(Debug)]
pub(super) struct AccessLogCollector {
    pub(super) sample: AccessLogSample,
}

impl Collector for AccessLogCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        for (name, help, value) in [
            (
                "switchyard_access_log_lines",
                "Access-log lines written",
                self.sample.written,
            ),
            (
                "switchyard_access_log_dropped",
                "Access-log lines dropped: the writer was behind (its queue full) or could not write",
                self.sample.dropped,
            ),
        ] {
            let family = encoder.encode_descriptor(name, help, None, MetricType::Counter)?;
            ConstCounter::new(value).encode(family)?;
        }
        Ok(())
    }
}
