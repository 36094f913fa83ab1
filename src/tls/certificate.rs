//! One certificate as serve keeps it: the PEM chain and key as given,
//! the rustls key the handshake uses, and what `tls ls` shows.

use std::fmt;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::sign::CertifiedKey;
use serde::{Deserialize, Serialize};

use super::{HostPattern, TlsError, provider};

/// Where a certificate came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CertificateSource {
    /// Given by the operator (`tls add`).
    File,
    /// Ordered from an ACME CA.
    Acme,
}

impl CertificateSource {
    pub fn as_str(self) -> &'static str {
        match self {
            CertificateSource::File => "file",
            CertificateSource::Acme => "acme",
        }
    }
}

impl fmt::Display for CertificateSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for CertificateSource {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "file" => Ok(CertificateSource::File),
            "acme" => Ok(CertificateSource::Acme),
            other => Err(format!("unknown certificate source `{other}`")),
        }
    }
}

/// What `tls ls` shows of a certificate.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CertificateInfo {
    /// The name it is kept under: a host, `*.domain`, or `*` (the default).
    pub host: String,
    /// The DNS names the certificate itself is for.
    pub names: Vec<String>,
    /// The issuer's common name (or its whole name when it has none).
    pub issuer: String,
    /// Validity, in seconds since the Unix epoch.
    pub not_before: i64,
    pub not_after: i64,
    pub source: CertificateSource,
    /// When it was stored (ms since the Unix epoch).
    pub updated_at: u64,
    /// Why its last ACME renewal failed (the certificate is still served).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
}

/// A checked certificate: its chain and key parsed, the key matching the
/// chain's first certificate.
#[derive(Debug, Clone)]
pub struct Certificate {
    pub pattern: HostPattern,
    pub info: CertificateInfo,
    pub key: Arc<CertifiedKey>,
    /// The PEM text as given, which is what the store keeps.
    pub cert_pem: String,
    pub key_pem: String,
}

impl Certificate {
    /// Parses and checks a PEM chain and key for `pattern`: the key must
    /// be the certificate's and the certificate must name the host.
    pub fn parse(
        pattern: HostPattern,
        cert_pem: &str,
        key_pem: &str,
        source: CertificateSource,
        updated_at: u64,
    ) -> Result<Certificate, TlsError> {
        let chain = CertificateDer::pem_slice_iter(cert_pem.as_bytes())
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| TlsError::NoCertificate(e.to_string()))?;
        let Some(leaf) = chain.first() else {
            return Err(TlsError::NoCertificate("it is empty".into()));
        };
        let (names, issuer, not_before, not_after) = describe(leaf)?;
        let private = PrivateKeyDer::from_pem_slice(key_pem.as_bytes())
            .map_err(|e| TlsError::NoKey(e.to_string()))?;
        let key = CertifiedKey::from_der(chain, private, &provider())
            .map_err(|e| TlsError::KeyMismatch(e.to_string()))?;
        if !pattern.covered_by(names.iter().map(String::as_str)) {
            return Err(TlsError::NotForHost {
                host: pattern.to_string(),
                names: if names.is_empty() {
                    "no DNS name".to_owned()
                } else {
                    names.join(", ")
                },
            });
        }
        Ok(Certificate {
            info: CertificateInfo {
                host: pattern.to_string(),
                names,
                issuer,
                not_before,
                not_after,
                source,
                updated_at,
                last_error: None,
            },
            pattern,
            key: Arc::new(key),
            cert_pem: cert_pem.to_owned(),
            key_pem: key_pem.to_owned(),
        })
    }

    /// Refuses a certificate that is no longer valid at `now`.
    pub fn check_not_expired(&self, now: SystemTime) -> Result<(), TlsError> {
        let now = now
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX));
        if self.info.not_after < now {
            return Err(TlsError::Expired(format_time(self.info.not_after)));
        }
        Ok(())
    }
}

/// A time in seconds since the epoch, as RFC 3339 (UTC).
pub fn format_time(seconds: i64) -> String {
    let time = UNIX_EPOCH + Duration::from_secs(u64::try_from(seconds).unwrap_or(0));
    humantime::format_rfc3339_seconds(time).to_string()
}

/// The DNS names, issuer and validity of a DER certificate.
fn describe(der: &CertificateDer<'_>) -> Result<(Vec<String>, String, i64, i64), TlsError> {
    let (_, cert) = x509_parser::parse_x509_certificate(der.as_ref())
        .map_err(|e| TlsError::BadCertificate(e.to_string()))?;
    let mut names = Vec::new();
    if let Ok(Some(san)) = cert.subject_alternative_name() {
        for name in &san.value.general_names {
            if let x509_parser::extensions::GeneralName::DNSName(dns) = name {
                names.push(dns.to_ascii_lowercase());
            }
        }
    }
    let issuer = cert
        .issuer()
        .iter_common_name()
        .next()
        .and_then(|cn| cn.as_str().ok())
        .map_or_else(|| cert.issuer().to_string(), str::to_owned);
    let validity = cert.validity();
    Ok((
        names,
        issuer,
        validity.not_before.timestamp(),
        validity.not_after.timestamp(),
    ))
}
