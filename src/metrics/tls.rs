//! The TLS certificates' expiry and the ACME orders and renewals that
//! failed.

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;

/// The certificates and ACME counts at scrape time.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TlsSample {
    /// ACME orders and renewals that failed since serve started.
    pub acme_failures: u64,
    /// Each certificate's host and end of validity (seconds since the epoch).
    pub expiries: Vec<(String, i64)>,
}

#[derive(Debug)]
pub(super) struct TlsCollector {
    pub(super) sample: TlsSample,
}

impl Collector for TlsCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let family = encoder.encode_descriptor(
            "switchyard_tls_acme_failures",
            "ACME orders and renewals that failed (the old certificate, if any, is kept)",
            None,
            MetricType::Counter,
        )?;
        ConstCounter::new(self.sample.acme_failures).encode(family)?;
        let mut family = encoder.encode_descriptor(
            "switchyard_tls_certificate_expiry_seconds",
            "When each stored certificate stops being valid, in seconds since the Unix epoch",
            None,
            MetricType::Gauge,
        )?;
        for (host, not_after) in &self.sample.expiries {
            let labels = [("host", host.as_str())];
            ConstGauge::new(*not_after).encode(family.encode_family(&labels)?)?;
        }
        Ok(())
    }
}
