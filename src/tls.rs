//! TLS at the edge: certificates per host name (from files, kept in the
//! store), chosen by SNI while the handshake runs, replaced without
//! dropping a connection; and the client side serve and the CLI use to
//! reach `https://` addresses.
//!
//! - [`Certificate`]: a PEM chain and key, checked against each other and
//!   against the host name they are for, and what `tls ls` shows of them.
//! - [`CertificateResolver`]: the map the handshake reads (swapped whole,
//!   so a replacement never disturbs a handshake in progress).
//! - [`Certificates`]: the store's certificates and the resolver kept in
//!   agreement; what the admin API changes.
//! - [`Acme`]: certificates ordered from an ACME CA (HTTP-01 answered by
//!   the proxy's cleartext listener) and renewed before they expire.
//! - [`server_config`]: rustls settings of the TLS listeners (TLS 1.2 and
//!   1.3, ALPN `h2` and `http/1.1`), on the `ring` provider.

mod acme;
mod certificate;
mod certificates;
mod client;
mod host_pattern;
mod resolver;

pub use acme::{
    Acme, AcmeChallenges, AcmeError, AcmeFleet, AcmeOrder, AcmeRequest, AcmeState,
    CHALLENGE_PREFIX, EventSink as AcmeEventSink, LETS_ENCRYPT, OtherNodes as AcmeOtherNodes,
};
pub use certificate::{Certificate, CertificateInfo, CertificateSource, format_time};
pub use certificates::Certificates;
pub use client::{ClientTrust, client_config};
pub use host_pattern::HostPattern;
pub use resolver::{ACME_TLS_ALPN, CertificateResolver};

use std::sync::Arc;

use rustls::ServerConfig;
use rustls::crypto::CryptoProvider;

use crate::store::StoreError;

/// The protocols the TLS listeners offer, most preferred first (a client
/// that offers only `acme-tls/1` is an ACME CA validating a challenge).
pub const ALPN: [&[u8]; 3] = [b"h2", b"http/1.1", ACME_TLS_ALPN];

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error(
        "`{0}` is not a host name a certificate can be for: give a DNS name such as app.example.com, a wildcard such as *.example.com, or --default"
    )]
    BadHost(String),
    #[error("the certificate file holds no PEM certificate (-----BEGIN CERTIFICATE-----): {0}")]
    NoCertificate(String),
    #[error(
        "the key file holds no PEM private key (-----BEGIN PRIVATE KEY----- or an RSA/EC key): {0}"
    )]
    NoKey(String),
    #[error("the certificate cannot be read: {0}; give a PEM X.509 certificate")]
    BadCertificate(String),
    #[error(
        "the key does not go with the certificate ({0}): give the key the certificate was issued for"
    )]
    KeyMismatch(String),
    #[error(
        "the certificate is for {names}, not {host}: give a certificate whose names include {host}"
    )]
    NotForHost { host: String, names: String },
    #[error("the certificate expired at {0}: renew it, then add it again")]
    Expired(String),
    #[error("no certificate for {0}; `switchyard tls ls` shows the ones there are")]
    NotFound(String),
    #[error("cannot read the CA file {path}: {reason}; give a PEM file of the CA certificates")]
    BadCaFile { path: String, reason: String },
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl From<TlsError> for crate::Error {
    fn from(e: TlsError) -> Self {
        crate::Error::part(e)
    }
}

impl From<AcmeError> for crate::Error {
    fn from(e: AcmeError) -> Self {
        crate::Error::part(e)
    }
}

impl crate::error_kind::Classify for AcmeError {
    fn kind(&self) -> crate::error_kind::ErrorKind {
        use crate::error_kind::ErrorKind;
        match self {
            AcmeError::BadRequest(_) => ErrorKind::BadRequest,
            AcmeError::NotFound(_) => ErrorKind::NotFound,
            AcmeError::Busy(_) => ErrorKind::Conflict,
            _ => ErrorKind::Internal,
        }
    }
}

impl crate::error_kind::Classify for TlsError {
    fn kind(&self) -> crate::error_kind::ErrorKind {
        use crate::error_kind::ErrorKind;
        match self {
            TlsError::NotFound(_) => ErrorKind::NotFound,
            TlsError::Store(_) => ErrorKind::Internal,
            _ => ErrorKind::BadRequest,
        }
    }
}

/// The crypto every TLS part of serve and the CLI uses: `ring` (see
/// DESIGN.md: the default `aws-lc-rs` is a heavy C build, and two
/// providers in one process make rustls panic unless one is installed).
pub fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Makes `ring` the process's default provider, for whatever builds a
/// rustls configuration without naming one. Idempotent.
pub fn install_default_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// A reqwest client builder; every client serve builds starts here, so
/// that rustls has its provider (`ring`) whatever the client reaches.
///
/// It trusts the system's roots that load, none included: reqwest's own
/// loading fails on a machine without any (a container built `FROM
/// scratch`), and serve must start there; only `https://` addresses then
/// fail, each saying its certificate is not trusted.
pub fn http_client() -> reqwest::ClientBuilder {
    install_default_provider();
    let builder = reqwest::Client::builder();
    match client_config(&ClientTrust::default(), &[b"h2", b"http/1.1"]) {
        Ok(config) => builder.tls_backend_preconfigured(config),
        Err(_) => builder,
    }
}

/// The settings of a TLS listener whose certificates `resolver` chooses.
pub fn server_config(resolver: Arc<CertificateResolver>) -> Arc<ServerConfig> {
    let mut config = ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .expect("ring supports TLS 1.2 and 1.3")
        .with_no_client_auth()
        .with_cert_resolver(resolver);
    config.alpn_protocols = ALPN.iter().map(|p| p.to_vec()).collect();
    Arc::new(config)
}
