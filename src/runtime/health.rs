use std::net::SocketAddr;

use crate::model::HealthCheck;

/// Where an instance's health is asked: the client and the URL's start
/// (`http://ADDR`, or `https://HOST:PORT` for a TLS upstream, whose client
/// resolves HOST to the instance's address and trusts its CA).
#[derive(Debug, Clone)]
pub struct HealthTarget {
    pub client: reqwest::Client,
    pub base: String,
}

impl HealthTarget {
    pub fn plain(client: &reqwest::Client, addr: SocketAddr) -> Self {
        Self {
            client: client.clone(),
            base: format!("http://{addr}"),
        }
    }

    /// Over TLS to `addr`, asking for `server_name` with `config`'s trust.
    pub fn tls(
        addr: SocketAddr,
        server_name: &str,
        config: rustls::ClientConfig,
    ) -> reqwest::Result<Self> {
        let mut builder = crate::tls::http_client()
            .no_proxy()
            .pool_max_idle_per_host(1)
            .redirect(reqwest::redirect::Policy::none())
            .tls_backend_preconfigured(config);
        let host = if server_name.parse::<std::net::IpAddr>().is_ok() {
            addr.ip().to_string()
        } else {
            builder = builder.resolve(server_name, addr);
            server_name.to_owned()
        };
        let host = if host.contains(':') {
            format!("[{host}]")
        } else {
            host
        };
        Ok(Self {
            client: builder.build()?,
            base: format!("https://{host}:{}", addr.port()),
        })
    }
}

/// One probe: `GET BASE/PATH`; a 2xx or 3xx within the timeout passes.
/// A failure says why, as the deploy error shows it (a TLS upstream whose
/// certificate cannot be verified: the verification error, and how to
/// trust a private CA).
pub async fn probe(target: &HealthTarget, check: &HealthCheck) -> Result<(), String> {
    let (client, url) = (&target.client, format!("{}{}", target.base, check.path));
    match client.get(&url).timeout(check.timeout()).send().await {
        Ok(response) => {
            let s = response.status();
            if s.is_success() || s.is_redirection() {
                Ok(())
            } else {
                Err(format!("GET {url} answered {s}"))
            }
        }
        Err(error) => Err(failure(&url, &error)),
    }
}

/// Why a health check request failed, on one line.
fn failure(url: &str, error: &reqwest::Error) -> String {
    let mut causes = Vec::new();
    let mut source: Option<&dyn std::error::Error> = Some(error);
    while let Some(cause) = source {
        let text = cause.to_string();
        if !causes.iter().any(|c: &String| c.contains(&text)) {
            causes.push(text);
        }
        source = cause.source();
    }
    let chain = causes.join(": ");
    if error.is_timeout() {
        return format!("GET {url} got no answer in time");
    }
    let certificate = causes.iter().any(|c| {
        c.contains("invalid peer certificate") || c.contains("certificate") && c.contains("verif")
    });
    if certificate {
        format!(
            "GET {url}: the upstream's TLS certificate cannot be verified ({chain}); \
             if a private CA signed it, give that CA with --upstream-ca FILE"
        )
    } else {
        format!("GET {url}: {chain}")
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
