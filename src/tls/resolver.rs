//! The certificate a handshake gets, by the name the client asked for
//! (SNI): its own, else its domain's wildcard, else the default, else
//! none (the handshake fails with an alert, nothing else is sent).
//!
//! The whole map is swapped at once: a handshake reads one map from start
//! to end, so replacing a certificate never disturbs one in progress, and
//! connections already open keep the certificate they were made with.
//!
//! A handshake that offers only the ALPN protocol `acme-tls/1` is an ACME
//! CA validating a TLS-ALPN-01 challenge (RFC 8737): it gets the challenge
//! certificate of the name while an order for it runs, and nothing
//! otherwise; the listener closes such a connection after the handshake.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};

use arc_swap::ArcSwap;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;

use super::{Certificate, HostPattern};

/// Chooses a certificate by SNI from the current map.
#[derive(Debug, Default)]
pub struct CertificateResolver {
    current: ArcSwap<Chosen>,
    /// TLS-ALPN-01 challenge certificates of orders under way, by name.
    challenges: Mutex<HashMap<String, Arc<CertifiedKey>>>,
}

/// The ALPN protocol of TLS-ALPN-01 validation (RFC 8737).
pub const ACME_TLS_ALPN: &[u8] = b"acme-tls/1";

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

    fn challenges(&self) -> MutexGuard<'_, HashMap<String, Arc<CertifiedKey>>> {
        self.challenges.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Answers TLS-ALPN-01 validation of `host` with `key` (until
    /// [`CertificateResolver::end_challenge`]).
    pub fn start_challenge(&self, host: &str, key: Arc<CertifiedKey>) {
        self.challenges().insert(host.to_ascii_lowercase(), key);
    }

    pub fn end_challenge(&self, host: &str) {
        self.challenges().remove(&host.to_ascii_lowercase());
    }

    /// The challenge certificate for a validation of `server_name`.
    fn challenge(&self, server_name: Option<&str>) -> Option<Arc<CertifiedKey>> {
        let name = server_name?.trim_end_matches('.').to_ascii_lowercase();
        self.challenges().get(&name).cloned()
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
        let validation = client_hello
            .alpn()
            .is_some_and(|mut offered| offered.any(|p| p == ACME_TLS_ALPN));
        if validation {
            let challenge = self.challenge(client_hello.server_name());
            if challenge.is_none() {
                tracing::debug!(
                    server_name = client_hello.server_name().unwrap_or("(none)"),
                    "TLS-ALPN-01 validation refused: no ACME order for this name is under way"
                );
            }
            return challenge;
        }
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
