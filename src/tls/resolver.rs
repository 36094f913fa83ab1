//! The certificate a handshake gets, by the name the client asked for
//! (SNI): its own, else its domain's wildcard, else the default, else
//! none (the handshake fails with an alert, nothing else is sent).
//!
//! The whole map is swapped at once: a handshake reads one map from start
//! to end, so replacing a certificate never disturbs one in progress, and
//! connections already open keep the certificate they were made with.

use std::collections::HashMap;
use std::sync::Arc;

use arc_swap::ArcSwap;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;

use super::{Certificate, HostPattern};

/// Chooses a certificate by SNI from the current map.
#[derive(Debug, Default)]
pub struct CertificateResolver {
    current: ArcSwap<Chosen>,
}

#[derive(Debug, Default)]
struct Chosen {
    exact: HashMap<String, Arc<CertifiedKey>>,
    /// By the domain below the `*.`.
    wildcard: HashMap<String, Arc<CertifiedKey>>,
    default: Option<Arc<CertifiedKey>>,
}

impl CertificateResolver {
    /// Makes `certificates` the ones handshakes choose from, all at once.
    pub fn replace<'a>(&self, certificates: impl IntoIterator<Item = &'a Certificate>) {
        let mut chosen = Chosen::default();
        for certificate in certificates {
            let key = Arc::clone(&certificate.key);
            match &certificate.pattern {
                HostPattern::Default => chosen.default = Some(key),
                HostPattern::Exact(host) => {
                    chosen.exact.insert(host.clone(), key);
                }
                HostPattern::Wildcard(domain) => {
                    chosen.wildcard.insert(domain.clone(), key);
                }
            }
        }
        self.current.store(Arc::new(chosen));
    }

    /// The certificate for a client that asked for `server_name`.
    pub fn choose(&self, server_name: Option<&str>) -> Option<Arc<CertifiedKey>> {
        let chosen = self.current.load();
        let Some(name) = server_name else {
            return chosen.default.clone();
        };
        let name = name.trim_end_matches('.').to_ascii_lowercase();
        if let Some(key) = chosen.exact.get(&name) {
            return Some(Arc::clone(key));
        }
        if let Some((_, domain)) = name.split_once('.') {
            if let Some(key) = chosen.wildcard.get(domain) {
                return Some(Arc::clone(key));
            }
        }
        chosen.default.clone()
    }
}

impl ResolvesServerCert for CertificateResolver {
    fn resolve(&self, client_hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        let chosen = self.choose(client_hello.server_name());
        if chosen.is_none() {
            tracing::debug!(
                server_name = client_hello.server_name().unwrap_or("(none)"),
                "TLS handshake refused: no certificate for this name and no default (switchyard tls add)"
            );
        }
        chosen
    }
}
