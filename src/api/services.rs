use std::collections::BTreeMap;
use std::sync::Arc;

use axum::Json;
use axum::extract::rejection::{JsonRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use http::{HeaderMap, StatusCode};
use serde::{Deserialize, Serialize};

use super::{ACTOR_HEADER, ApiError, AppState};
use crate::controller::{DeployRequest, HandChange, ReleaseStatusView, ServiceView};
use crate::error::Error;
use crate::model::{Revision, ServiceName};
use crate::runtime::LogChunk;

pub(super) type ApiResult<T> = Result<Json<T>, ApiError>;

/// What a change returns: the revision it made and the service after it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Change {
    pub revision: Revision,
    pub service: ServiceView,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AssignRequest {
    pub version: String,
    #[serde(default)]
    pub base_revision: Option<u64>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct RollbackRequest {
    /// The revision to return to; default the one before the current.
    #[serde(default)]
    pub revision: Option<u64>,
    #[serde(default)]
    pub base_revision: Option<u64>,
}

#[derive(Debug, Deserialize)]
pub struct BaseQuery {
    pub(super) base_revision: Option<u64>,
}

#[derive(Debug, Deserialize)]
pub struct HistoryQuery {
    limit: Option<usize>,
}

#[derive(Debug, Deserialize)]
pub struct LogsQuery {
    lines: Option<usize>,
    /// `SLOT:OFFSET,…` from a previous answer, to follow.
    after: Option<String>,
}

pub(super) fn service_name(name: &str) -> Result<ServiceName, ApiError> {
    name.parse::<ServiceName>()
        .map_err(|e| ApiError::from(Error::from(e)))
}

/// The JSON body, or a JSON error that says what was wrong with it: 413
/// past [`BODY_LIMIT`](super::BODY_LIMIT), 400 for anything else.
pub(super) fn body<T>(json: Result<Json<T>, JsonRejection>) -> Result<T, ApiError> {
    json.map(|Json(t)| t).map_err(|e| {
        if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
            ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                format!(
                    "the request body is larger than the admin API reads ({} bytes); send a smaller one",
                    super::BODY_LIMIT
                ),
            )
        } else {
            ApiError::bad_request(format!("invalid request body: {}", e.body_text()))
        }
    })
}

/// The query string, or a JSON 400 that says what was wrong with it.
pub(super) fn query<T>(q: Result<Query<T>, QueryRejection>) -> Result<T, ApiError> {
    q.map(|Query(t)| t)
        .map_err(|e| ApiError::bad_request(format!("invalid query string: {}", e.body_text())))
}

pub(super) fn actor(headers: &HeaderMap) -> String {
    headers
        .get(ACTOR_HEADER)
        .and_then(|v| v.to_str().ok())
        .filter(|v| !v.is_empty())
        .unwrap_or("api")
        .chars()
        .take(100)
        .collect()
}

/// Runs a change in a task of its own, so that it completes (or cleans up
/// after itself) even if the client goes away mid-way.
async fn run_to_end<F>(change: F) -> Result<Revision, ApiError>
where
    F: std::future::Future<Output = crate::Result<Revision>> + Send + 'static,
{
    tokio::spawn(change)
        .await
        .map_err(|e| {
            ApiError::new(
                http::StatusCode::INTERNAL_SERVER_ERROR,
                format!("the change failed inside switchyard: {e}"),
            )
        })?
        .map_err(ApiError::from)
}

pub(super) fn change(state: &AppState, revision: Revision) -> ApiResult<Change> {
    let service = state.controller.service(&revision.service)?;
    Ok(Json(Change { revision, service }))
}

pub async fn status(State(state): State<AppState>) -> Json<serde_json::Value> {
    Json(serde_json::json!({
        "version": env!("CARGO_PKG_VERSION"),
        "services": state.controller.services().len(),
    }))
}

/// The last minute of every release of a service.
pub async fn release_status(
    State(state): State<AppState>,
    Path(name): Path<String>,
) -> ApiResult<Vec<ReleaseStatusView>> {
    Ok(Json(state.controller.status(&service_name(&name)?)?))
}

pub async fn list(State(state): State<AppState>) -> Json<Vec<ServiceView>> {
    Json(state.controller.services())
}

pub async fn show(
    State(state): State<AppState>,
    Path(name): Path<String>,
) -> ApiResult<ServiceView> {
    Ok(Json(state.controller.service(&service_name(&name)?)?))
}

pub async fn deploy(
    State(state): State<AppState>,
    Path(name): Path<String>,
    headers: HeaderMap,
    req: Result<Json<DeployRequest>, JsonRejection>,
) -> ApiResult<Change> {
    let service = service_name(&name)?;
    let req = body(req)?;
    let actor = actor(&headers);
    // The deploy runs to its end even if the client goes away, so it never
    // leaves half-started instances behind.
    let controller = Arc::clone(&state.controller);
    let revision = run_to_end(async move {
        // A plain deploy enters as shadow or standby beside a rollout;
        // `--promote` would fight it.
        let promote = req.promote.then(|| req.version.clone());
        let deploy = controller.deploy(&service, req, &actor);
        match &promote {
            Some(version) => {
                let hand = HandChange::MakeMain {
                    version,
                    verb: "deploy --promote",
                };
                controller.by_hand(&service, hand, deploy).await
            }
            None => deploy.await,
        }
    })
    .await?;
    change(&state, revision)
}

pub async fn assign(
    State(state): State<AppState>,
    Path(name): Path<String>,
    headers: HeaderMap,
    req: Result<Json<AssignRequest>, JsonRejection>,
) -> ApiResult<Change> {
    let service = service_name(&name)?;
    let req = body(req)?;
    let actor = actor(&headers);
    let hand = HandChange::MakeMain {
        version: &req.version,
        verb: "assign",
    };
    let assign = state
        .controller
        .assign(&service, &req.version, req.base_revision, &actor);
    let revision = state.controller.by_hand(&service, hand, assign).await?;
    change(&state, revision)
}

pub async fn kill(
    State(state): State<AppState>,
    Path((name, version)): Path<(String, String)>,
    q: Result<Query<BaseQuery>, QueryRejection>,
    headers: HeaderMap,
) -> ApiResult<Change> {
    let service = service_name(&name)?;
    let q = query(q)?;
    let controller = Arc::clone(&state.controller);
    let actor = actor(&headers);
    let revision = run_to_end(async move {
        let kill = controller.kill(&service, &version, q.base_revision, &actor);
        let hand = HandChange::Kill { version: &version };
        controller.by_hand(&service, hand, kill).await
    })
    .await?;
    change(&state, revision)
}

pub async fn kill_all(
    State(state): State<AppState>,
    Path(name): Path<String>,
    q: Result<Query<BaseQuery>, QueryRejection>,
    headers: HeaderMap,
) -> ApiResult<Change> {
    let service = service_name(&name)?;
    let q = query(q)?;
    let controller = Arc::clone(&state.controller);
    let actor = actor(&headers);
    let revision = run_to_end(async move {
        let kill = controller.kill_all(&service, q.base_revision, &actor);
        controller
            .by_hand(&service, HandChange::KillAll, kill)
            .await
    })
    .await?;
    change(&state, revision)
}

pub async fn history(
    State(state): State<AppState>,
    Path(name): Path<String>,
    q: Result<Query<HistoryQuery>, QueryRejection>,
) -> ApiResult<Vec<Revision>> {
    let service = service_name(&name)?;
    let q = query(q)?;
    Ok(Json(
        state
            .controller
            .history(&service, q.limit.unwrap_or(100).min(10_000))?,
    ))
}

pub async fn rollback(
    State(state): State<AppState>,
    Path(name): Path<String>,
    headers: HeaderMap,
    req: Result<Json<RollbackRequest>, JsonRejection>,
) -> ApiResult<Change> {
    let service = service_name(&name)?;
    let req = body(req)?;
    let controller = Arc::clone(&state.controller);
    let actor = actor(&headers);
    let revision = run_to_end(async move {
        let rollback = controller.rollback(&service, req.revision, req.base_revision, &actor);
        controller
            .by_hand(&service, HandChange::Rollback, rollback)
            .await
    })
    .await?;
    change(&state, revision)
}

pub async fn logs(
    State(state): State<AppState>,
    Path((name, version)): Path<(String, String)>,
    q: Result<Query<LogsQuery>, QueryRejection>,
) -> ApiResult<Vec<LogChunk>> {
    let service = service_name(&name)?;
    let q = query(q)?;
    let mut after = BTreeMap::new();
    for pair in q
        .after
        .as_deref()
        .unwrap_or("")
        .split(',')
        .filter(|p| !p.is_empty())
    {
        let parsed = pair
            .split_once(':')
            .and_then(|(s, o)| Some((s.parse::<u32>().ok()?, o.parse::<u64>().ok()?)));
        let (slot, offset) = parsed.ok_or_else(|| {
            ApiError::bad_request(format!("`after` takes SLOT:OFFSET pairs, got `{pair}`"))
        })?;
        after.insert(slot, offset);
    }
    Ok(Json(state.controller.logs(
        &service,
        &version,
        q.lines.unwrap_or(50).min(100_000),
        &after,
    )?))
}
