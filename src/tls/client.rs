//! The client side: what serve and the CLI trust when they reach an
//! `https://` address (the system's roots, plus CA files given by the
//! operator for a private CA).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;
use rustls::{ClientConfig, RootCertStore};

use super::{TlsError, provider};

/// Which certificate authorities a client trusts.
#[derive(Debug, Clone, Default)]
pub struct ClientTrust {
    /// PEM files of CA certificates trusted besides the system's roots.
    pub ca_files: Vec<PathBuf>,
    /// PEM text of CA certificates trusted besides the system's roots
    /// (an external release's `upstream_ca`).
    pub ca_pem: Option<String>,
}

impl ClientTrust {
    /// The system's roots (those that load) and every CA file's.
    pub fn roots(&self) -> Result<RootCertStore, TlsError> {
        let mut roots = RootCertStore::empty();
        let system = rustls_native_certs::load_native_certs();
        for error in &system.errors {
            tracing::debug!(%error, "a system CA certificate could not be loaded");
        }
        let (_, ignored) = roots.add_parsable_certificates(system.certs);
        if ignored > 0 {
            tracing::debug!(
                ignored,
                "system CA certificates rustls cannot use were left out"
            );
        }
        if let Some(pem) = &self.ca_pem {
            for cert in CertificateDer::pem_slice_iter(pem.as_bytes()) {
                let added = cert
                    .map_err(|e| e.to_string())
                    .and_then(|cert| roots.add(cert).map_err(|e| e.to_string()));
                added.map_err(|reason| TlsError::BadCaFile {
                    path: "(upstream CA)".into(),
                    reason,
                })?;
            }
        }
        for file in &self.ca_files {
            for cert in read_ca_file(file)? {
                roots.add(cert).map_err(|e| TlsError::BadCaFile {
                    path: file.display().to_string(),
                    reason: e.to_string(),
                })?;
            }
        }
        Ok(roots)
    }
}

/// A client configuration (ring provider, TLS 1.2 and 1.3) trusting
/// `trust`, offering the protocols in `alpn`.
pub fn client_config(trust: &ClientTrust, alpn: &[&[u8]]) -> Result<ClientConfig, TlsError> {
    let mut config = ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .expect("ring supports TLS 1.2 and 1.3")
        .with_root_certificates(Arc::new(trust.roots()?))
        .with_no_client_auth();
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    Ok(config)
}

fn read_ca_file(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let bad = |reason: String| TlsError::BadCaFile {
        path: path.display().to_string(),
        reason,
    };
    let text = std::fs::read(path).map_err(|e| bad(e.to_string()))?;
    let certs = CertificateDer::pem_slice_iter(&text)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| bad(e.to_string()))?;
    if certs.is_empty() {
        return Err(bad("it holds no PEM certificate".into()));
    }
    Ok(certs)
}
