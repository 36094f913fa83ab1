use serde::{Deserialize, Serialize};

use super::ModelError;

/// The largest error page a service may have: it is stored in every
/// revision and held by the proxy.
pub const ERROR_PAGE_MAX_BYTES: usize = 64 * 1024;

/// The page end users see when the proxy answers a request to the service
/// itself (unknown release, no healthy instance, upstream failure or
/// timeout, …). `{status}` becomes the status code, `{reason}` its
/// reason phrase and `{request_id}` the request's id.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorPage {
    pub template: String,
    /// `Content-Type` of the page, e.g. `text/html; charset=utf-8`.
    pub content_type: String,
}

impl ErrorPage {
    pub fn validate(&self) -> Result<(), ModelError> {
        if self.template.len() > ERROR_PAGE_MAX_BYTES {
            return Err(ModelError::InvalidErrorPage(format!(
                "the page is {} bytes; it may have at most {ERROR_PAGE_MAX_BYTES}",
                self.template.len()
            )));
        }
        let media = self.content_type.split(';').next().unwrap_or("").trim();
        let plausible = media.split_once('/').is_some_and(|(kind, sub)| {
            !kind.is_empty()
                && !sub.is_empty()
                && media
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"/.+-_".contains(&b))
        });
        if !plausible || http::HeaderValue::from_str(&self.content_type).is_err() {
            return Err(ModelError::InvalidErrorPage(format!(
                "`{}` is not a content type; use one such as text/html; charset=utf-8",
                self.content_type
            )));
        }
        Ok(())
    }

    /// The page for one answer.
    pub fn render(&self, status: u16, reason: &str, request_id: &str) -> String {
        self.template
            .replace("{status}", &status.to_string())
            .replace("{reason}", reason)
            .replace("{request_id}", request_id)
    }
}

/// Whether answers to requests through a path prefix (`/services/NAME/`,
/// `/services/NAME_VERSION/`) have what points back at the application
/// rewritten to go through that prefix: `Location`, `Content-Location`,
/// `Refresh` and the `Path` of `Set-Cookie`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PrefixRewrite {
    #[default]
    On,
    Off,
}

impl PrefixRewrite {
    pub fn is_on(self) -> bool {
        self == PrefixRewrite::On
    }
}

impl std::fmt::Display for PrefixRewrite {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            PrefixRewrite::On => "on",
            PrefixRewrite::Off => "off",
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn page(template: &str, content_type: &str) -> ErrorPage {
        ErrorPage {
            template: template.into(),
            content_type: content_type.into(),
        }
    }

    #[test]
    fn placeholders_are_filled() {
        let p = page("<h1>{status} {reason}</h1><p>{request_id}</p>", "text/html");
        assert_eq!(
            p.render(503, "Service Unavailable", "abc"),
            "<h1>503 Service Unavailable</h1><p>abc</p>"
        );
    }

    #[test]
    fn large_pages_and_odd_content_types_are_refused() {
        assert!(page("x", "text/html; charset=utf-8").validate().is_ok());
        assert!(
            page(&"x".repeat(ERROR_PAGE_MAX_BYTES + 1), "text/html")
                .validate()
                .is_err()
        );
        assert!(page("x", "html").validate().is_err());
        assert!(page("x", "text/html\r\nx: y").validate().is_err());
    }
}
