//! Certificates for the TLS listener: `GET /v1/tls/certificates`,
//! `PUT /v1/tls/certificates/{host}` (PEM chain and key in JSON) and
//! `DELETE /v1/tls/certificates/{host}`; `{host}` is a name, a wildcard
//! (`*.example.com`) or `*` for the default certificate.

use std::sync::Arc;

use axum::extract::Path;
use axum::extract::rejection::JsonRejection;
use axum::{Extension, Json};
use serde::{Deserialize, Serialize};

use super::ApiError;
use super::services::{ApiResult, body};
use crate::tls::{CertificateInfo, CertificateSource, Certificates, HostPattern};

/// A certificate to store, as PEM text.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CertificateUpload {
    /// The certificate, then any intermediates.
    pub cert_pem: String,
    pub key_pem: String,
}

fn pattern(host: &str) -> Result<HostPattern, ApiError> {
    host.parse()
        .map_err(|e: crate::tls::TlsError| ApiError::from(crate::Error::from(e)))
}

pub async fn list(
    Extension(certificates): Extension<Arc<Certificates>>,
) -> ApiResult<Vec<CertificateInfo>> {
    Ok(Json(certificates.list()))
}

pub async fn put(
    Extension(certificates): Extension<Arc<Certificates>>,
    Path(host): Path<String>,
    req: Result<Json<CertificateUpload>, JsonRejection>,
) -> ApiResult<CertificateInfo> {
    let pattern = pattern(&host)?;
    let req = body(req)?;
    let info = certificates
        .add(
            pattern,
            &req.cert_pem,
            &req.key_pem,
            CertificateSource::File,
        )
        .map_err(crate::Error::from)?;
    Ok(Json(info))
}

pub async fn remove(
    Extension(certificates): Extension<Arc<Certificates>>,
    Path(host): Path<String>,
) -> ApiResult<CertificateInfo> {
    let pattern = pattern(&host)?;
    let info = certificates.remove(&pattern).map_err(crate::Error::from)?;
    Ok(Json(info))
}
