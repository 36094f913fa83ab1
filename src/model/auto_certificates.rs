//! A service whose host names get certificates from an ACME CA as they
//! are added (`switchyard https NAME --acme on --email E`): the contact,
//! the CA and how it validates, kept in the service's revisions like its
//! other settings. serve orders a certificate for every host name of
//! such a service that has none.

use std::fmt;

use serde::{Deserialize, Serialize};

/// How an ACME CA checks that serve answers for a name.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum AcmeChallenge {
    /// `http://HOST/.well-known/acme-challenge/TOKEN` on the cleartext
    /// listener (port 80).
    #[default]
    #[serde(rename = "http-01")]
    Http01,
    /// A TLS handshake offering ALPN `acme-tls/1` on the TLS listener
    /// (port 443), answered with a challenge certificate (RFC 8737).
    #[serde(rename = "tls-alpn-01")]
    TlsAlpn01,
}

impl AcmeChallenge {
    pub fn as_str(self) -> &'static str {
        match self {
            AcmeChallenge::Http01 => "http-01",
            AcmeChallenge::TlsAlpn01 => "tls-alpn-01",
        }
    }

    /// What the CA connects to, for errors.
    pub fn listener(self) -> &'static str {
        match self {
            AcmeChallenge::Http01 => "cleartext listener (--listen) on port 80",
            AcmeChallenge::TlsAlpn01 => "TLS listener (--tls-listen) on port 443",
        }
    }
}

impl fmt::Display for AcmeChallenge {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for AcmeChallenge {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s.to_ascii_lowercase().as_str() {
            "http-01" => Ok(AcmeChallenge::Http01),
            "tls-alpn-01" => Ok(AcmeChallenge::TlsAlpn01),
            other => Err(format!(
                "`{other}` is not an ACME challenge: give http-01 or tls-alpn-01"
            )),
        }
    }
}

/// Where a service's certificates are ordered from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AutoCertificates {
    /// The contact address given to the CA.
    pub email: String,
    /// The CA's ACME directory URL.
    pub directory: String,
    /// PEM of the private CA the directory's HTTPS certificate is signed
    /// by, when it is one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub directory_ca_pem: Option<String>,
    #[serde(default)]
    pub challenge: AcmeChallenge,
}

impl fmt::Display for AutoCertificates {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "certificates from {} ({}, {})",
            self.directory, self.email, self.challenge
        )
    }
}
