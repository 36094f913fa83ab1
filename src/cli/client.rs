use anyhow::{Context, anyhow, bail};
use reqwest::{Method, RequestBuilder};
use serde::Serialize;
use serde::de::DeserializeOwned;

use super::ClientArgs;
use crate::api::{ACTOR_HEADER, CLIENT_HEADER, ErrorBody};
use crate::model::{ServiceName, parse_version};
use crate::tls::{ClientTrust, client_config};

/// The TLS error under a failed request, if that is what failed (an
/// I/O error's inner error is looked into too: that is where the
/// connector puts it).
fn tls_error(error: &reqwest::Error) -> Option<String> {
    let mut cause: Option<&(dyn std::error::Error + 'static)> = Some(error);
    while let Some(e) = cause {
        if let Some(tls) = e.downcast_ref::<rustls::Error>() {
            return Some(tls.to_string());
        }
        cause = match e.downcast_ref::<std::io::Error>() {
            Some(io) => io
                .get_ref()
                .map(|inner| inner as &(dyn std::error::Error + 'static)),
            None => e.source(),
        };
    }
    None
}

/// The admin API path of a service, once the name the user typed is known
/// to be valid. Unchecked, a name such as `hello/releases/1.0.0#` or a
/// version such as `../../hello` would send the request to another
/// resource (and, say, kill a release nobody named).
pub fn service_path(name: &str) -> anyhow::Result<String> {
    let name: ServiceName = name.parse()?;
    Ok(format!("/v1/services/{name}"))
}

/// The admin API path of one release, checked like [`service_path`].
pub fn release_path(name: &str, version: &str) -> anyhow::Result<String> {
    let version = parse_version(version)?;
    Ok(format!("{}/releases/{version}", service_path(name)?))
}

/// A client of serve's admin API.
pub struct AdminClient {
    base: String,
    token: Option<String>,
    http: reqwest::Client,
    actor: String,
}

impl AdminClient {
    pub fn new(args: &ClientArgs) -> anyhow::Result<Self> {
        let base = args.admin.trim_end_matches('/').to_owned();
        if !base.starts_with("http://") && !base.starts_with("https://") {
            bail!(
                "--admin must be a URL such as http://127.0.0.1:8081, got `{}`",
                args.admin
            );
        }
        let mut http = reqwest::Client::builder().no_proxy();
        if base.starts_with("https://") {
            let trust = ClientTrust {
                ca_files: args.ca.iter().cloned().collect(),
                ca_pem: None,
            };
            http = http.tls_backend_preconfigured(client_config(&trust, &[b"http/1.1"])?);
        }
        let http = http.build().context("cannot build the HTTP client")?;
        let actor = std::env::var("USER")
            .or_else(|_| std::env::var("LOGNAME"))
            .unwrap_or_else(|_| "cli".into());
        Ok(Self {
            base,
            token: args.token.clone(),
            http,
            actor,
        })
    }

    /// A request with the headers every one carries: who acts, and the
    /// client header that changes without a body need.
    fn request(&self, method: Method, path: &str) -> RequestBuilder {
        let rb = self
            .http
            .request(method, format!("{}{path}", self.base))
            .header(ACTOR_HEADER, &self.actor)
            .header(CLIENT_HEADER, "cli");
        match &self.token {
            Some(t) => rb.bearer_auth(t),
            None => rb,
        }
    }

    async fn send<T: DeserializeOwned>(&self, rb: RequestBuilder) -> anyhow::Result<T> {
        let response = rb.send().await.map_err(|e| {
            if let Some(tls) = tls_error(&e) {
                anyhow!(
                    "cannot make a TLS connection to the admin API at {}: {tls}. \
                     If its certificate is from a private CA, trust that CA with --ca FILE or SWITCHYARD_CA",
                    self.base
                )
            } else if e.is_connect() {
                anyhow!(
                    "cannot reach the Switchyard admin API at {}: is `switchyard serve` running? \
                     Point to it with --admin URL or SWITCHYARD_ADMIN",
                    self.base
                )
            } else {
                anyhow!("request to the admin API at {} failed: {e}", self.base)
            }
        })?;
        let status = response.status();
        if let Some(stale) = response
            .headers()
            .get(crate::api::STALE_HEADER)
            .and_then(|v| v.to_str().ok())
        {
            eprintln!(
                "warning: the node at {} answered from the last state it has: {stale}",
                self.base
            );
        }
        let bytes = response
            .bytes()
            .await
            .context("reading the admin API's answer")?;
        if status.is_success() {
            return serde_json::from_slice(&bytes).with_context(|| {
                format!(
                    "the admin API answered something unexpected: {}",
                    String::from_utf8_lossy(&bytes)
                )
            });
        }
        match serde_json::from_slice::<ErrorBody>(&bytes) {
            Ok(body) => Err(anyhow!("{}", body.error)),
            Err(_) => Err(anyhow!(
                "the admin API answered {status}: {}",
                String::from_utf8_lossy(&bytes)
            )),
        }
    }

    pub async fn get<T: DeserializeOwned>(&self, path: &str) -> anyhow::Result<T> {
        self.send(self.request(Method::GET, path)).await
    }

    pub async fn post<B: Serialize, T: DeserializeOwned>(
        &self,
        path: &str,
        body: &B,
    ) -> anyhow::Result<T> {
        self.send(self.request(Method::POST, path).json(body)).await
    }

    pub async fn put<B: Serialize, T: DeserializeOwned>(
        &self,
        path: &str,
        body: &B,
    ) -> anyhow::Result<T> {
        self.send(self.request(Method::PUT, path).json(body)).await
    }

    pub async fn delete<T: DeserializeOwned>(&self, path: &str) -> anyhow::Result<T> {
        self.send(self.request(Method::DELETE, path)).await
    }
}
