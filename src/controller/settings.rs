//! Service settings that need no release: host names, the rewriting of
//! links through the path prefix, and the error page. Each change is a
//! revision, made the way every other verb makes one.

use super::Controller;
use super::change::Change;
use crate::error::Result;
use crate::model::{
    AutoCertificates, ErrorPage, HttpsPolicy, PrefixRewrite, Revision, ServiceName, ServiceState,
};

impl Controller {
    /// Routes `host` to the service too (`routed`), refused when another
    /// service has it; or stops routing it there.
    pub async fn set_host(
        &self,
        service: &ServiceName,
        host: &str,
        routed: bool,
        base_revision: Option<u64>,
        actor: &str,
    ) -> Result<Revision> {
        self.change_setting(service, base_revision, actor, |state| {
            let (verb, next) = if routed {
                ("add", state.add_host(service, host)?)
            } else {
                ("remove", state.remove_host(service, host)?)
            };
            Ok((
                format!("{verb} host {}", host.trim().to_ascii_lowercase()),
                next,
            ))
        })
        .await
    }

    /// Replaces the service's HTTPS policy (redirect, HSTS).
    pub async fn set_https(
        &self,
        service: &ServiceName,
        https: HttpsPolicy,
        base_revision: Option<u64>,
        actor: &str,
    ) -> Result<Revision> {
        self.change_setting(service, base_revision, actor, |state| {
            Ok((format!("https: {https}"), state.with_https(https)))
        })
        .await
    }

    /// Orders certificates for the service's host names from an ACME CA
    /// as they are added (`Some`), or stops.
    pub async fn set_auto_certificates(
        &self,
        service: &ServiceName,
        certificates: Option<AutoCertificates>,
        base_revision: Option<u64>,
        actor: &str,
    ) -> Result<Revision> {
        self.change_setting(service, base_revision, actor, |state| {
            let action = match &certificates {
                Some(auto) => format!("https: {auto}"),
                None => "https: no automatic certificates".to_owned(),
            };
            Ok((action, state.with_certificates(certificates)))
        })
        .await
    }

    /// Turns the rewriting of links through the path prefix on or off.
    pub async fn set_rewrite(
        &self,
        service: &ServiceName,
        rewrite: PrefixRewrite,
        base_revision: Option<u64>,
        actor: &str,
    ) -> Result<Revision> {
        self.change_setting(service, base_revision, actor, |state| {
            Ok((
                format!("prefix rewrite {rewrite}"),
                state.with_rewrite(rewrite),
            ))
        })
        .await
    }

    /// Replaces the service's error page (`None`: the neutral one).
    pub async fn set_error_page(
        &self,
        service: &ServiceName,
        page: Option<ErrorPage>,
        base_revision: Option<u64>,
        actor: &str,
    ) -> Result<Revision> {
        self.change_setting(service, base_revision, actor, |state| {
            let action = match &page {
                Some(p) => format!(
                    "error page ({} bytes, {})",
                    p.template.len(),
                    p.content_type
                ),
                None => "neutral error page".to_owned(),
            };
            Ok((action, state.with_error_page(page)?))
        })
        .await
    }

    /// Commits the state `change` makes of the current one, as a revision
    /// named by the action it returns.
    async fn change_setting(
        &self,
        service: &ServiceName,
        base_revision: Option<u64>,
        actor: &str,
        change: impl FnOnce(&ServiceState) -> Result<(String, ServiceState)>,
    ) -> Result<Revision> {
        self.change(service, base_revision, actor, |current| {
            let (action, next) = change(&current.state)?;
            Ok(Change::new(action, next))
        })
        .await
    }
}
