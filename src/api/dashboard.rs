//! The dashboard: a page in the operator's browser that shows every
//! service live and steers it through this same admin API (its script
//! calls `/v1/…` as the CLI does, so refusals read the same). Its files
//! are compiled into the binary: plain HTML, CSS and JavaScript, no CDN,
//! no build step.
//!
//! The files carry no data, so they need no token: the page asks for the
//! token and its script sends it. They pass the same Host and Origin
//! checks as the API, so a page that rebinds its name to this address
//! gets nothing, and they go out with a Content-Security-Policy that lets
//! them run only their own script and talk only to this origin, never
//! inside another site's frame.

use axum::Router;
use axum::extract::Path;
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::get;
use http::{HeaderValue, StatusCode, header};

use super::{ApiError, AppState};

/// One file of the page.
struct Asset {
    name: &'static str,
    content_type: &'static str,
    body: &'static str,
}

const INDEX: Asset = Asset {
    name: "index.html",
    content_type: "text/html; charset=utf-8",
    body: include_str!("dashboard/index.html"),
};

const fn script(name: &'static str, body: &'static str) -> Asset {
    Asset {
        name,
        content_type: "text/javascript; charset=utf-8",
        body,
    }
}

/// Everything under `/ui/` besides the page itself.
const FILES: &[Asset] = &[
    Asset {
        name: "style.css",
        content_type: "text/css; charset=utf-8",
        body: include_str!("dashboard/style.css"),
    },
    Asset {
        name: "icon.svg",
        content_type: "image/svg+xml",
        body: include_str!("dashboard/icon.svg"),
    },
    script("app.js", include_str!("dashboard/app.js")),
    script("api.js", include_str!("dashboard/api.js")),
    script("dom.js", include_str!("dashboard/dom.js")),
    script("format.js", include_str!("dashboard/format.js")),
    script("chart.js", include_str!("dashboard/chart.js")),
    script("dialog.js", include_str!("dashboard/dialog.js")),
    script("actions.js", include_str!("dashboard/actions.js")),
    script("releases.js", include_str!("dashboard/releases.js")),
    script("services.js", include_str!("dashboard/services.js")),
    script("service.js", include_str!("dashboard/service.js")),
    script("traffic.js", include_str!("dashboard/traffic.js")),
    script("progress.js", include_str!("dashboard/progress.js")),
    script("records.js", include_str!("dashboard/records.js")),
];

/// Only this origin's own files run, and only this origin is talked to.
const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; script-src 'self'; style-src 'self'; \
     img-src 'self'; connect-src 'self'; base-uri 'none'; form-action 'none'; \
     frame-ancestors 'none'";

/// `/` leads to the dashboard at `/ui`.
pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/", get(|| async { Redirect::to("/ui") }))
        .route("/ui", get(index))
        .route("/ui/", get(index))
        .route("/ui/{file}", get(file))
}

async fn index() -> Response {
    serve(&INDEX)
}

async fn file(Path(name): Path<String>) -> Response {
    match FILES.iter().find(|asset| asset.name == name) {
        Some(asset) => serve(asset),
        None => ApiError::new(
            StatusCode::NOT_FOUND,
            format!("the dashboard has no file `{name}`; open it at /ui"),
        )
        .into_response(),
    }
}

fn serve(asset: &Asset) -> Response {
    let mut response = asset.body.into_response();
    let headers = response.headers_mut();
    for (name, value) in [
        (header::CONTENT_TYPE, asset.content_type),
        (header::CONTENT_SECURITY_POLICY, CONTENT_SECURITY_POLICY),
        (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        (header::X_FRAME_OPTIONS, "DENY"),
        (header::REFERRER_POLICY, "no-referrer"),
        (header::CACHE_CONTROL, "no-cache"),
    ] {
        headers.insert(name, HeaderValue::from_static(value));
    }
    headers.insert(
        "cross-origin-opener-policy",
        HeaderValue::from_static("same-origin"),
    );
    headers.insert(
        "cross-origin-resource-policy",
        HeaderValue::from_static("same-origin"),
    );
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_script_the_page_imports_is_served() {
        let served: Vec<&str> = FILES.iter().map(|a| a.name).collect();
        let mut sources = vec![INDEX.body];
        sources.extend(FILES.iter().map(|a| a.body));
        for source in sources {
            for line in source.lines() {
                for marker in ["from './", "src=\"/ui/", "href=\"/ui/"] {
                    if let Some((_, rest)) = line.split_once(marker) {
                        let name = rest.split(['\'', '"']).next().unwrap_or_default();
                        assert!(
                            served.contains(&name),
                            "{name} is referenced but not served"
                        );
                    }
                }
            }
        }
    }

    #[test]
    fn files_go_out_with_the_security_headers() {
        let response = serve(&INDEX);
        let headers = response.headers();
        let csp = headers[header::CONTENT_SECURITY_POLICY]
            .to_str()
            .expect("ascii");
        assert!(csp.contains("frame-ancestors 'none'") && csp.contains("script-src 'self'"));
        assert_eq!(headers[header::X_CONTENT_TYPE_OPTIONS], "nosniff");
        assert_eq!(headers[header::X_FRAME_OPTIONS], "DENY");
        assert!(!INDEX.body.contains("<script>"), "no inline script");
    }
}
