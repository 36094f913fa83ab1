//! The names the admin API answers to.
//!
//! A web page can reach a loopback port too: by DNS rebinding (the page's
//! own name made to resolve to 127.0.0.1, so its requests carry that name
//! in `Host`) or by a plain cross-site request (which carries the page's
//! `Origin`). Both name something other than the admin API's own address,
//! so the admin API answers only a request whose `Host`, and whose
//! `Origin` when it has one, is one of these names.

use std::net::{IpAddr, SocketAddr};

use http::Uri;
use http::uri::Authority;

/// One name the admin API answers to.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Name {
    /// Lower case; an IPv6 address in brackets, as `Host` carries it.
    host: String,
    /// `None`: any port (a name given without one, say behind a proxy).
    port: Option<u16>,
}

/// Every name the admin API answers to: the address it listens on (with
/// its port), `localhost` at that port when it listens on loopback, and
/// the names given with `serve --admin-host`.
#[derive(Debug, Clone)]
pub struct AdminHosts {
    names: Vec<Name>,
    /// Listening on every address (0.0.0.0 or ::): any IP address at this
    /// port, since no page can rebind a bare address.
    any_ip_at: Option<u16>,
}

#[derive(Debug, thiserror::Error)]
#[error(
    "--admin-host `{0}` is not a host name: give NAME or NAME:PORT (no scheme, no path), e.g. --admin-host switchyard.internal"
)]
pub struct BadAdminHost(String);

impl AdminHosts {
    /// The names of an admin API listening on `bound` (its real port, once
    /// bound), plus `extra` names (`NAME` for any port, or `NAME:PORT`).
    pub fn new(bound: SocketAddr, extra: &[String]) -> Result<Self, BadAdminHost> {
        let (ip, port) = (bound.ip(), bound.port());
        let mut names = Vec::new();
        if !ip.is_unspecified() {
            let host = match ip {
                IpAddr::V4(v4) => v4.to_string(),
                IpAddr::V6(v6) => format!("[{v6}]"),
            };
            names.push(Name {
                host,
                port: Some(port),
            });
        }
        if ip.is_loopback() || ip.is_unspecified() {
            names.push(Name {
                host: "localhost".into(),
                port: Some(port),
            });
        }
        for given in extra {
            names.push(parse_name(given).ok_or_else(|| BadAdminHost(given.clone()))?);
        }
        Ok(Self {
            names,
            any_ip_at: ip.is_unspecified().then_some(port),
        })
    }

    /// Whether a `Host` value names the admin API (no port: 80).
    pub fn allows_host(&self, host: &str) -> bool {
        host.parse::<Authority>()
            .is_ok_and(|authority| self.allows(&authority, 80))
    }

    /// Whether an `Origin` value is the admin API's own, that is a page it
    /// served itself. `null` (an opaque origin) never is.
    pub fn allows_origin(&self, origin: &str) -> bool {
        let Ok(uri) = origin.parse::<Uri>() else {
            return false;
        };
        let default_port = match uri.scheme_str() {
            Some("http") => 80,
            Some("https") => 443,
            _ => return false,
        };
        let bare = matches!(uri.path(), "" | "/") && uri.query().is_none();
        bare && uri
            .authority()
            .is_some_and(|authority| self.allows(authority, default_port))
    }

    fn allows(&self, authority: &Authority, default_port: u16) -> bool {
        if authority.as_str().contains('@') {
            return false;
        }
        let host = authority.host().to_ascii_lowercase();
        let port = authority.port_u16().unwrap_or(default_port);
        let bare_ip = host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .parse::<IpAddr>()
            .is_ok();
        if bare_ip && self.any_ip_at == Some(port) {
            return true;
        }
        self.names
            .iter()
            .any(|name| name.host == host && name.port.is_none_or(|p| p == port))
    }

    /// The names, for an error message: `127.0.0.1:8081, localhost:8081`.
    pub fn describe(&self) -> String {
        let mut shown: Vec<String> = self
            .any_ip_at
            .map(|port| format!("any IP address at port {port}"))
            .into_iter()
            .collect();
        shown.extend(self.names.iter().map(|name| match name.port {
            Some(port) => format!("{}:{port}", name.host),
            None => name.host.clone(),
        }));
        shown.join(", ")
    }
}

/// `NAME` or `NAME:PORT`, nothing else.
fn parse_name(given: &str) -> Option<Name> {
    let authority = given.parse::<Authority>().ok()?;
    if authority.as_str().contains('@') || authority.host().is_empty() {
        return None;
    }
    Some(Name {
        host: authority.host().to_ascii_lowercase(),
        port: authority.port_u16(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn loopback() -> AdminHosts {
        AdminHosts::new("127.0.0.1:8081".parse().expect("addr"), &[]).expect("hosts")
    }

    #[test]
    fn loopback_answers_to_its_address_and_localhost_at_its_port() {
        let hosts = loopback();
        assert!(hosts.allows_host("127.0.0.1:8081"));
        assert!(hosts.allows_host("LOCALHOST:8081"));
        assert!(!hosts.allows_host("127.0.0.1"), "port 80 is another server");
        assert!(!hosts.allows_host("localhost:8080"));
        assert!(!hosts.allows_host("attacker.example:8081"));
        assert!(!hosts.allows_host("attacker.example@127.0.0.1:8081"));
        assert!(!hosts.allows_host(""));
    }

    #[test]
    fn an_origin_counts_only_when_it_is_the_admin_api_itself() {
        let hosts = loopback();
        assert!(hosts.allows_origin("http://127.0.0.1:8081"));
        assert!(hosts.allows_origin("http://localhost:8081"));
        assert!(!hosts.allows_origin("http://attacker.example:8081"));
        assert!(
            !hosts.allows_origin("http://127.0.0.1:8080"),
            "the proxy's pages are not the admin API's"
        );
        assert!(!hosts.allows_origin("null"));
        assert!(!hosts.allows_origin("file://"));
        assert!(!hosts.allows_origin("http://127.0.0.1:8081/page"));
    }

    #[test]
    fn admin_host_names_may_leave_out_the_port() {
        let bound = "127.0.0.1:8081".parse().expect("addr");
        let extra = [
            "Switchyard.Internal".to_owned(),
            "ops.example:9000".to_owned(),
        ];
        let hosts = AdminHosts::new(bound, &extra).expect("hosts");
        assert!(hosts.allows_host("switchyard.internal"));
        assert!(hosts.allows_host("switchyard.internal:8081"));
        assert!(hosts.allows_origin("https://switchyard.internal"));
        assert!(hosts.allows_host("ops.example:9000"));
        assert!(!hosts.allows_host("ops.example"));
        assert!(hosts.describe().contains("switchyard.internal"));
        for bad in ["http://x", "x/y", "a@b", ""] {
            assert!(AdminHosts::new(bound, &[bad.to_owned()]).is_err(), "{bad}");
        }
    }

    #[test]
    fn every_address_means_any_ip_literal_but_no_other_name() {
        let hosts = AdminHosts::new("0.0.0.0:8081".parse().expect("addr"), &[]).expect("hosts");
        assert!(hosts.allows_host("192.0.2.7:8081"));
        assert!(hosts.allows_host("[::1]:8081"));
        assert!(hosts.allows_host("localhost:8081"));
        assert!(!hosts.allows_host("192.0.2.7:8080"));
        assert!(!hosts.allows_host("attacker.example:8081"));
        let v6 = AdminHosts::new("[::1]:8081".parse().expect("addr"), &[]).expect("hosts");
        assert!(v6.allows_host("[::1]:8081"));
    }
}
