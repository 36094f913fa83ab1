//! While an upgrade holds a service, manual changes to it wait: a deploy,
//! assign, kill, rollback or policy change made between two upgrade steps
//! would move the service under the plan that was checked. Reading, the
//! upgrade's own controls, registering releases, letting held traffic
//! go (`resume`) and starting a new shadow-report window stay open.

use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use http::{Method, StatusCode};

use super::{ApiError, AppState};
use crate::model::ServiceName;

/// The last path segments under `/v1/services/NAME/` that stay open.
const OPEN: &[&str] = &[
    "upgrade",
    "upgrade/continue",
    "upgrade/abort",
    "resume",
    "registry",
    "shadows/reset",
];

pub async fn refuse_during_upgrade(
    State(state): State<AppState>,
    req: Request,
    next: Next,
) -> Response {
    if req.method() == Method::GET || req.method() == Method::HEAD {
        return next.run(req).await;
    }
    let Some(rest) = req.uri().path().strip_prefix("/v1/services/") else {
        return next.run(req).await;
    };
    let (name, tail) = rest.split_once('/').unwrap_or((rest, ""));
    if OPEN.contains(&tail) {
        return next.run(req).await;
    }
    let Ok(service) = name.parse::<ServiceName>() else {
        return next.run(req).await;
    };
    match state.controller.active_upgrade(&service) {
        None => next.run(req).await,
        Some(upgrade) => {
            let at = upgrade
                .current_step()
                .map_or_else(String::new, |s| format!(", {s}"));
            ApiError::new(
                StatusCode::CONFLICT,
                format!(
                    "{service} is being upgraded to {} ({}{at}); changes to it wait until the upgrade ends: follow it with `switchyard upgrade {service} --status`, or stop it with `switchyard upgrade {service} --abort`",
                    upgrade.to, upgrade.status
                ),
            )
            .into_response()
        }
    }
}
