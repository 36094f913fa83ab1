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
use crate::tls::{
    Acme, AcmeError, AcmeOrder, AcmeRequest, CertificateInfo, CertificateSource, Certificates,
    HostPattern,
};

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
    Extension(acme): Extension<Arc<Acme>>,
) -> ApiResult<Vec<CertificateInfo>> {
    let orders = acme.list();
    let mut list = certificates.list();
    for info in &mut list {
        info.last_error = orders
            .iter()
            .find(|o| o.host() == info.host)
            .and_then(|o| o.last_error.clone());
    }
    Ok(Json(list))
}

/// Starts an ACME order (`POST /v1/tls/acme`); its progress is at
/// `GET /v1/tls/acme/{host}`.
pub async fn acme_order(
    Extension(acme): Extension<Arc<Acme>>,
    req: Result<Json<AcmeRequest>, JsonRejection>,
) -> ApiResult<AcmeOrder> {
    let req = body(req)?;
    Ok(Json(acme.start(req).map_err(crate::Error::from)?))
}

pub async fn acme_list(Extension(acme): Extension<Arc<Acme>>) -> ApiResult<Vec<AcmeOrder>> {
    Ok(Json(acme.list()))
}

pub async fn acme_show(
    Extension(acme): Extension<Arc<Acme>>,
    Path(host): Path<String>,
) -> ApiResult<AcmeOrder> {
    let host = host.to_ascii_lowercase();
    match acme.order_of(&host) {
        Some(order) => Ok(Json(order)),
        None => Err(crate::Error::from(AcmeError::NotFound(host)).into()),
    }
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

/// What `DELETE /v1/tls/certificates/{host}` removed.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Removed {
    pub host: String,
    /// The certificate, when there was one.
    pub certificate: Option<CertificateInfo>,
    /// Whether the host's ACME order was forgotten (not renewed; one
    /// running is cancelled and stores nothing).
    pub order_cancelled: bool,
}

pub async fn remove(
    Extension(certificates): Extension<Arc<Certificates>>,
    Extension(acme): Extension<Arc<Acme>>,
    Path(host): Path<String>,
) -> ApiResult<Removed> {
    let pattern = pattern(&host)?;
    let host = pattern.to_string();
    // The order first: once it is forgotten, a running one stores nothing.
    let order_cancelled = acme.forget(&host).map_err(crate::Error::from)?;
    let certificate = match certificates.remove(&pattern) {
        Ok(info) => Some(info),
        Err(crate::tls::TlsError::NotFound(_)) if order_cancelled => None,
        Err(error) => return Err(crate::Error::from(error).into()),
    };
    Ok(Json(Removed {
        host,
        certificate,
        order_cancelled,
    }))
}
