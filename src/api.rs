//! The admin API: JSON over HTTP, the only way the CLI talks to serve.
//!
//! [`router`] builds the whole app from its state, so tests can call it
//! without a socket. Every request must name the admin API in `Host` and
//! come from no other site's page, and every change must carry JSON or the
//! client header (see [`cross_site`]); with a token configured every
//! request also needs `Authorization: Bearer TOKEN` (401 otherwise,
//! nothing changed). Changes may carry the revision they were based on; a
//! stale one gets 409 with the current revision.
//!
//! The same address serves the [`dashboard`] at `/ui`: its files pass the
//! Host and Origin checks but need no token (they hold no data; the page
//! asks for the token and sends it with every call it makes).

mod admin_hosts;
mod auth;
mod change_gate;
mod cross_site;
mod dashboard;
mod error;
mod handover;
pub mod nodes;
pub mod policy;
pub mod registry;
pub mod rollout;
pub mod services;
pub mod settings;
pub mod shadows;
mod stale;
pub mod tls;
pub mod trends;
mod upgrade_guard;

#[cfg(test)]
mod tests;

pub use admin_hosts::{AdminHosts, BadAdminHost};
pub use change_gate::hold_changes;
pub use cross_site::CLIENT_HEADER;
pub use error::{ApiError, ErrorBody};
pub use stale::STALE_HEADER;
pub use trends::Trends;

use std::sync::Arc;

use axum::extract::{DefaultBodyLimit, State};
use axum::response::IntoResponse;
use axum::routing::{delete, get, post};
use axum::{Extension, Router};

use crate::controller::Controller;
use crate::listener::Listeners;
use crate::metrics::AccessLogSample;
use crate::proxy::AccessLogStats;
use std::sync::atomic::Ordering;

/// What every handler shares.
#[derive(Clone)]
pub struct AppState {
    pub controller: Arc<Controller>,
    pub token: Option<Arc<str>>,
    /// The names requests must address the admin API by.
    pub hosts: Arc<AdminHosts>,
    /// Recent per-release points for the dashboard's charts.
    pub trends: Arc<Trends>,
}

/// The largest request body the admin API reads (413 beyond).
pub const BODY_LIMIT: usize = 2 * 1024 * 1024;

/// Header the CLI uses to say who made a change (recorded in history).
pub const ACTOR_HEADER: &str = "x-switchyard-actor";

/// Prometheus text format.
async fn metrics(
    State(state): State<AppState>,
    listeners: Option<Extension<Listeners>>,
    access_log: Option<Extension<Arc<AccessLogStats>>>,
    certificates: Option<Extension<Arc<crate::tls::Certificates>>>,
    acme: Option<Extension<Arc<crate::tls::Acme>>>,
) -> impl IntoResponse {
    let tls = certificates.map(|Extension(certificates)| crate::metrics::TlsSample {
        acme_failures: acme.map_or(0, |Extension(acme)| acme.failures()),
        expiries: certificates
            .list()
            .into_iter()
            .map(|c| (c.host, c.not_after))
            .collect(),
    });
    let connections = listeners
        .map(|Extension(listeners)| listeners.0.iter().map(|c| c.sample()).collect())
        .unwrap_or_default();
    (
        [(
            http::header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        crate::metrics::render(
            state.controller.release_samples(),
            state.controller.all_shadow_reports(),
            connections,
            access_log.map(|Extension(stats)| AccessLogSample {
                written: stats.written.load(Ordering::Relaxed),
                dropped: stats.dropped.load(Ordering::Relaxed),
            }),
            tls,
        ),
    )
}

pub fn router(state: AppState) -> Router {
    let api = Router::new()
        .route("/v1/status", get(services::status))
        .route("/v1/nodes", get(nodes::list))
        .route("/metrics", get(metrics))
        .route("/v1/services", get(services::list))
        .route(
            "/v1/services/{name}",
            get(services::show).delete(services::kill_all),
        )
        .route("/v1/services/{name}/releases", post(services::deploy))
        .route(
            "/v1/services/{name}/registry",
            get(registry::list).post(registry::register),
        )
        .route(
            "/v1/services/{name}/registry/{version}",
            delete(registry::unregister),
        )
        .route(
            "/v1/services/{name}/api-version",
            get(registry::get_api_version).put(registry::set_api_version),
        )
        .route("/v1/services/{name}/plan", get(registry::plan))
        .route(
            "/v1/services/{name}/upgrade",
            post(registry::upgrade).get(registry::upgrade_status),
        )
        .route(
            "/v1/services/{name}/upgrade/continue",
            post(registry::upgrade_continue),
        )
        .route(
            "/v1/services/{name}/upgrade/abort",
            post(registry::upgrade_abort),
        )
        .route("/v1/services/{name}/hosts", post(settings::add_host))
        .route(
            "/v1/services/{name}/hosts/{host}",
            delete(settings::remove_host),
        )
        .route(
            "/v1/services/{name}/https",
            get(settings::get_https).put(settings::set_https),
        )
        .route(
            "/v1/services/{name}/certificates",
            get(settings::get_certificates).put(settings::set_certificates),
        )
        .route(
            "/v1/services/{name}/rewrite",
            get(settings::get_rewrite).put(settings::set_rewrite),
        )
        .route(
            "/v1/services/{name}/error-page",
            get(settings::get_error_page).put(settings::set_error_page),
        )
        .route("/v1/services/{name}/pause", post(registry::pause))
        .route("/v1/services/{name}/pins/{version}", post(registry::pin))
        .route("/v1/services/{name}/listen", post(registry::listen))
        .route("/v1/services/{name}/resume", post(registry::resume))
        .route(
            "/v1/services/{name}/releases/{version}",
            delete(services::kill),
        )
        .route(
            "/v1/services/{name}/releases/{version}/logs",
            get(services::logs),
        )
        .route("/v1/services/{name}/assign", post(services::assign))
        .route("/v1/services/{name}/history", get(services::history))
        .route("/v1/services/{name}/rollback", post(services::rollback))
        .route(
            "/v1/services/{name}/shadows/{version}",
            post(shadows::set_shadow),
        )
        .route("/v1/services/{name}/shadows/report", get(shadows::report))
        .route("/v1/services/{name}/shadows/reset", post(shadows::reset))
        .route("/v1/services/{name}/shadows/history", get(shadows::history))
        .route("/v1/services/{name}/compare", post(shadows::set_compare))
        .route(crate::handover::API_PATH, post(handover::start))
        .route("/v1/services/{name}/canary", post(policy::canary))
        .route("/v1/services/{name}/abort", post(policy::abort))
        .route("/v1/services/{name}/green", post(policy::green))
        .route("/v1/services/{name}/promote", post(policy::promote))
        .route(
            "/v1/services/{name}/policy",
            get(policy::get_policy).put(policy::put_policy),
        )
        .route("/v1/services/{name}/rules", post(policy::add_rule))
        .route(
            "/v1/services/{name}/rules/{selector}",
            delete(policy::remove_rule),
        )
        .route("/v1/services/{name}/routes", get(policy::routes))
        .route("/v1/services/{name}/status", get(services::release_status))
        .route(
            "/v1/services/{name}/rollout",
            get(rollout::status).post(rollout::start),
        )
        .route("/v1/services/{name}/rollout/resume", post(rollout::resume))
        .route("/v1/services/{name}/rollout/abort", post(rollout::abort))
        .route("/v1/services/{name}/rollout/pause", post(rollout::pause))
        .route(
            "/v1/services/{name}/rollout/promote",
            post(rollout::promote),
        )
        .route("/v1/services/{name}/rollout/retry", post(rollout::retry))
        .route("/v1/services/{name}/events", get(rollout::events))
        .route("/v1/services/{name}/trends", get(trends::show))
        .route("/v1/tls/certificates", get(tls::list))
        .route("/v1/tls/acme", get(tls::acme_list).post(tls::acme_order))
        .route("/v1/tls/acme/{host}", get(tls::acme_show))
        .route(
            "/v1/tls/certificates/{host}",
            axum::routing::put(tls::put).delete(tls::remove),
        )
        // Last, so that every route above answers a wrong method in JSON too.
        .method_not_allowed_fallback(error::method_not_allowed)
        .fallback(error::no_such_endpoint)
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            upgrade_guard::refuse_during_upgrade,
        ))
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            auth::require_token,
        ))
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            stale::mark_stale,
        ));
    dashboard::routes()
        .method_not_allowed_fallback(error::method_not_allowed)
        .merge(api)
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            cross_site::refuse_cross_site,
        ))
        .layer(DefaultBodyLimit::max(BODY_LIMIT))
        .with_state(state)
}
