//! Service settings that need no release: host names (`POST …/hosts`,
//! `DELETE …/hosts/{host}`), the rewriting of links through the path
//! prefix (`GET`/`PUT …/rewrite`) and the error page (`GET`/`PUT
//! …/error-page`), HTTPS (`…/https`) and automatic certificates
//! (`…/certificates`). Each change is a revision.

use std::sync::Arc;

use axum::extract::rejection::{JsonRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::{Extension, Json};
use http::HeaderMap;
use serde::{Deserialize, Serialize};

use super::AppState;
use super::services::{ApiResult, BaseQuery, Change, actor, body, change, query, service_name};
use crate::model::{AutoCertificates, ErrorPage, HttpsPolicy, PrefixRewrite};
use crate::tls::{Acme, AcmeRequest};

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct HostRequest {
    pub host: String,
    #[serde(default)]
    pub base_revision: Option<u64>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RewriteRequest {
    pub rewrite: PrefixRewrite,
    #[serde(default)]
    pub base_revision: Option<u64>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ErrorPageRequest {
    /// The page, or `null` for the proxy's neutral one.
    pub page: Option<ErrorPage>,
    #[serde(default)]
    pub base_revision: Option<u64>,
}

pub async fn add_host(
    State(state): State<AppState>,
    Path(name): Path<String>,
    headers: HeaderMap,
    req: Result<Json<HostRequest>, JsonRejection>,
) -> ApiResult<Change> {
    let service = service_name(&name)?;
    let req = body(req)?;
    let revision = state
        .controller
        .set_host(
            &service,
            &req.host,
            true,
            req.base_revision,
            &actor(&headers),
        )
        .await?;
    change(&state, revision)
}

pub async fn remove_host(
    State(state): State<AppState>,
    Path((name, host)): Path<(String, String)>,
    headers: HeaderMap,
    q: Result<Query<BaseQuery>, QueryRejection>,
) -> ApiResult<Change> {
    let service = service_name(&name)?;
    let q = query(q)?;
    let revision = state
        .controller
        .set_host(&service, &host, false, q.base_revision, &actor(&headers))
        .await?;
    change(&state, revision)
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct HttpsRequest {
    pub https: HttpsPolicy,
    #[serde(default)]
    pub base_revision: Option<u64>,
}

pub async fn get_https(
    State(state): State<AppState>,
    Path(name): Path<String>,
) -> ApiResult<HttpsPolicy> {
    let service = state.controller.service_state(&service_name(&name)?)?;
    Ok(Json(service.https))
}

pub async fn set_https(
    State(state): State<AppState>,
    Path(name): Path<String>,
    headers: HeaderMap,
    req: Result<Json<HttpsRequest>, JsonRejection>,
) -> ApiResult<Change> {
    let service = service_name(&name)?;
    let req = body(req)?;
    let revision = state
        .controller
        .set_https(&service, req.https, req.base_revision, &actor(&headers))
        .await?;
    change(&state, revision)
}

pub async fn get_rewrite(
    State(state): State<AppState>,
    Path(name): Path<String>,
) -> ApiResult<PrefixRewrite> {
    let service = state.controller.service_state(&service_name(&name)?)?;
    Ok(Json(service.rewrite))
}

pub async fn set_rewrite(
    State(state): State<AppState>,
    Path(name): Path<String>,
    headers: HeaderMap,
    req: Result<Json<RewriteRequest>, JsonRejection>,
) -> ApiResult<Change> {
    let service = service_name(&name)?;
    let req = body(req)?;
    let revision = state
        .controller
        .set_rewrite(&service, req.rewrite, req.base_revision, &actor(&headers))
        .await?;
    change(&state, revision)
}

pub async fn get_error_page(
    State(state): State<AppState>,
    Path(name): Path<String>,
) -> ApiResult<Option<ErrorPage>> {
    let service = state.controller.service_state(&service_name(&name)?)?;
    Ok(Json(service.error_page))
}

pub async fn set_error_page(
    State(state): State<AppState>,
    Path(name): Path<String>,
    headers: HeaderMap,
    req: Result<Json<ErrorPageRequest>, JsonRejection>,
) -> ApiResult<Change> {
    let service = service_name(&name)?;
    let req = body(req)?;
    let revision = state
        .controller
        .set_error_page(&service, req.page, req.base_revision, &actor(&headers))
        .await?;
    change(&state, revision)
}

/// A service's automatic certificates (`PUT …/certificates`): `null`
/// stops ordering them (the certificates already stored stay).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CertificatesRequest {
    pub certificates: Option<AutoCertificates>,
    #[serde(default)]
    pub base_revision: Option<u64>,
}

pub async fn get_certificates(
    State(state): State<AppState>,
    Path(name): Path<String>,
) -> ApiResult<Option<AutoCertificates>> {
    let service = state.controller.service_state(&service_name(&name)?)?;
    Ok(Json(service.certificates))
}

pub async fn set_certificates(
    State(state): State<AppState>,
    Extension(acme): Extension<Arc<Acme>>,
    Path(name): Path<String>,
    headers: HeaderMap,
    req: Result<Json<CertificatesRequest>, JsonRejection>,
) -> ApiResult<Change> {
    let service = service_name(&name)?;
    let mut req = body(req)?;
    if let Some(auto) = &mut req.certificates {
        // Checked as an order for a name would be, before anything changes.
        let mut probe = AcmeRequest::automatic("example.com", auto);
        acme.check(&mut probe).map_err(crate::Error::from)?;
        auto.email = probe.email;
    }
    let revision = state
        .controller
        .set_auto_certificates(
            &service,
            req.certificates,
            req.base_revision,
            &actor(&headers),
        )
        .await?;
    acme.wake();
    change(&state, revision)
}
