//! Prometheus text for the admin API's `/metrics`, built at scrape time
//! from the live counts (a collector over a snapshot, so the hot paths
//! only ever touch their own counters).

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::registry::Registry;

use crate::shadow::ShadowReport;

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
                "Copies the shadow failed to answer",
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
pub fn render(shadow_reports: Vec<ShadowReport>) -> String {
    let mut registry = Registry::default();
    registry.register_collector(Box::new(ShadowCollector {
        reports: shadow_reports,
    }));
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
    fn shadow_counts_are_labelled_by_service_and_version() {
        let mut stats = ShadowStats {
            mirrored: 7,
            dropped: 2,
            ..ShadowStats::default()
        };
        stats.record("GET /", &[]);
        let text = render(vec![stats.report("hello", "2.0.0")]);
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
}
