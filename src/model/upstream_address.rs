//! The address of an external release's instance: `HOST:PORT` (cleartext
//! HTTP) or `https://HOST:PORT` (TLS, verified, with HOST as the SNI name).

use std::fmt;

/// One upstream address of an external release, parsed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UpstreamAddress {
    /// Reached over TLS.
    pub tls: bool,
    /// The host name or IP address (no brackets for IPv6).
    pub host: String,
    pub port: u16,
}

impl UpstreamAddress {
    /// Parses `HOST:PORT` or `https://HOST:PORT`.
    pub fn parse(text: &str) -> Result<UpstreamAddress, String> {
        let bad = || {
            format!(
                "upstream `{text}` is not HOST:PORT or https://HOST:PORT, e.g. 10.0.0.5:8080 or https://api.internal:443"
            )
        };
        let (tls, rest) = match text.strip_prefix("https://") {
            Some(rest) => (true, rest.trim_end_matches('/')),
            None => (false, text),
        };
        let (host, port) = rest.rsplit_once(':').ok_or_else(bad)?;
        let host = host.trim_start_matches('[').trim_end_matches(']');
        let port = port.parse::<u16>().map_err(|_| bad())?;
        if host.is_empty() || port == 0 || host.contains('/') {
            return Err(bad());
        }
        Ok(UpstreamAddress {
            tls,
            host: host.to_owned(),
            port,
        })
    }

    /// `HOST:PORT` as a resolver takes it.
    pub fn host_port(&self) -> String {
        if self.host.contains(':') {
            format!("[{}]:{}", self.host, self.port)
        } else {
            format!("{}:{}", self.host, self.port)
        }
    }
}

impl fmt::Display for UpstreamAddress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.tls {
            f.write_str("https://")?;
        }
        f.write_str(&self.host_port())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cleartext_and_tls_addresses_are_told_apart() {
        let plain = UpstreamAddress::parse("10.0.0.5:8080").expect("plain");
        assert_eq!(
            (plain.tls, plain.host.as_str(), plain.port),
            (false, "10.0.0.5", 8080)
        );
        let tls = UpstreamAddress::parse("https://api.internal:8443").expect("tls");
        assert_eq!(
            (tls.tls, tls.host.as_str(), tls.port),
            (true, "api.internal", 8443)
        );
        assert_eq!(tls.to_string(), "https://api.internal:8443");
        let v6 = UpstreamAddress::parse("https://[::1]:443").expect("v6");
        assert_eq!(v6.host_port(), "[::1]:443");
    }

    #[test]
    fn what_is_not_an_address_is_refused() {
        for bad in [
            "127.0.0.1",
            "https://host",
            "http://a:80",
            "a:0",
            ":80",
            "https://a:80/x",
        ] {
            assert!(UpstreamAddress::parse(bad).is_err(), "{bad}");
        }
    }
}
