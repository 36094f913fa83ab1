use std::net::SocketAddr;

use crate::model::HealthCheck;

/// One probe: `GET http://ADDR/PATH`; a 2xx or 3xx within the timeout passes.
pub async fn probe(client: &reqwest::Client, addr: SocketAddr, check: &HealthCheck) -> bool {
    let url = format!("http://{addr}{}", check.path);
    match client.get(url).timeout(check.timeout()).send().await {
        Ok(response) => {
            let s = response.status();
            s.is_success() || s.is_redirection()
        }
        Err(_) => false,
    }
}

/// Consecutive results, turned into a health verdict with hysteresis.
#[derive(Debug, Default)]
pub struct Verdict {
    successes: u32,
    failures: u32,
}

impl Verdict {
    /// For an instance adopted from an earlier serve, which was serving
    /// until a moment ago: one passing probe puts it back in rotation.
    pub fn trusting(check: &HealthCheck) -> Self {
        Self {
            successes: check.healthy_threshold.saturating_sub(1),
            failures: 0,
        }
    }

    /// Records a probe; returns the new health when it should flip.
    pub fn record(&mut self, ok: bool, healthy: bool, check: &HealthCheck) -> Option<bool> {
        if ok {
            self.successes = self.successes.saturating_add(1);
            self.failures = 0;
            (!healthy && self.successes >= check.healthy_threshold).then_some(true)
        } else {
            self.failures = self.failures.saturating_add(1);
            self.successes = 0;
            (healthy && self.failures >= check.unhealthy_threshold).then_some(false)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn health_flips_only_after_thresholds_in_a_row() {
        let check = HealthCheck::default(); // 2 to become healthy, 3 to leave
        let mut v = Verdict::default();
        assert_eq!(v.record(true, false, &check), None);
        assert_eq!(v.record(false, false, &check), None);
        assert_eq!(v.record(true, false, &check), None);
        assert_eq!(v.record(true, false, &check), Some(true));
        assert_eq!(v.record(false, true, &check), None);
        assert_eq!(v.record(false, true, &check), None);
        assert_eq!(v.record(true, true, &check), None);
        assert_eq!(v.record(false, true, &check), None);
        assert_eq!(v.record(false, true, &check), None);
        assert_eq!(v.record(false, true, &check), Some(false));
    }

    #[test]
    fn adopted_instance_needs_one_passing_probe() {
        let check = HealthCheck::default();
        let mut v = Verdict::trusting(&check);
        assert_eq!(v.record(true, false, &check), Some(true));
        let mut v = Verdict::trusting(&check);
        assert_eq!(v.record(false, false, &check), None);
        assert_eq!(v.record(true, false, &check), None);
    }
}
