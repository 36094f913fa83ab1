//! `switchyard https NAME [--redirect on|off] [--hsts DURATION|off]
//! [--acme on|off --email E]`: whether cleartext requests to the service
//! are redirected to HTTPS, whether its answers over HTTPS carry HSTS, and
//! whether its host names get certificates from an ACME CA as they are
//! added (shown without a flag). Each change is a revision.

use std::time::Duration;

use anyhow::{Context, bail};
use clap::Args;

use super::output;
use super::{AdminClient, ClientArgs, service_path};
use crate::api::services::Change;
use crate::api::settings::{CertificatesRequest, HttpsRequest};
use crate::model::{AcmeChallenge, AutoCertificates, HttpsPolicy};

#[derive(Debug, Args)]
pub struct HttpsArgs {
    pub name: String,
    /// `on`: answer cleartext requests 308 to the same URL on the TLS
    /// listener (serve --tls-listen); `off`: serve them.
    #[arg(long, value_name = "on|off")]
    pub redirect: Option<String>,
    /// A duration (`1y`, `180d`): answers over HTTPS carry
    /// `Strict-Transport-Security: max-age=…`; `off`: they do not.
    #[arg(long, value_name = "DURATION|off")]
    pub hsts: Option<String>,
    /// `on`: every host name of the service, now and as it is added, gets
    /// a certificate from an ACME CA (ordered and renewed by serve, as
    /// `tls acme` does); `off`: no more are ordered (stored ones stay).
    #[arg(long, value_name = "on|off", requires_if("on", "email"))]
    pub acme: Option<String>,
    /// With `--acme on`: the contact address given to the CA.
    #[arg(long)]
    pub email: Option<String>,
    /// With `--acme on`: the CA's ACME directory URL.
    #[arg(long, value_name = "URL", default_value = crate::tls::LETS_ENCRYPT)]
    pub directory: String,
    /// With `--acme on`: PEM file of the CA certificate the directory's
    /// HTTPS certificate is signed by, for a private ACME CA.
    #[arg(long, value_name = "FILE")]
    pub directory_ca: Option<std::path::PathBuf>,
    /// With `--acme on`: how the CA validates each name (`http-01` on
    /// the cleartext listener, `tls-alpn-01` on the TLS listener).
    #[arg(long, value_name = "http-01|tls-alpn-01", default_value = "http-01")]
    pub challenge: AcmeChallenge,
    #[command(flatten)]
    pub client: ClientArgs,
}

fn on_off(flag: &str, value: &str) -> anyhow::Result<bool> {
    match value {
        "on" => Ok(true),
        "off" => Ok(false),
        other => bail!("--{flag} takes on or off, not `{other}`"),
    }
}

fn hsts(value: &str) -> anyhow::Result<Option<u64>> {
    if value == "off" {
        return Ok(None);
    }
    let age: Duration = humantime::parse_duration(value).map_err(|e| {
        anyhow::anyhow!("--hsts takes a duration such as 1y or 180d, or off; `{value}`: {e}")
    })?;
    if age.is_zero() {
        bail!("--hsts 0s would tell browsers to forget HTTPS; use --hsts off to send no HSTS");
    }
    Ok(Some(age.as_secs()))
}

/// The automatic certificates `--acme on|off` asks for (`None`: no change).
fn auto_certificates(args: &HttpsArgs) -> anyhow::Result<Option<Option<AutoCertificates>>> {
    let Some(acme) = args.acme.as_deref() else {
        return Ok(None);
    };
    if !on_off("acme", acme)? {
        return Ok(Some(None));
    }
    let Some(email) = &args.email else {
        bail!("--acme on needs --email ADDRESS: the contact the CA sends expiry notices to");
    };
    let directory_ca_pem = match &args.directory_ca {
        Some(path) => Some(
            std::fs::read_to_string(path)
                .with_context(|| format!("cannot read the directory CA file {}", path.display()))?,
        ),
        None => None,
    };
    Ok(Some(Some(AutoCertificates {
        email: email.clone(),
        directory: args.directory.clone(),
        directory_ca_pem,
        challenge: args.challenge,
    })))
}

pub async fn run(args: HttpsArgs) -> anyhow::Result<()> {
    let path = format!("{}/https", service_path(&args.name)?);
    let certificates_path = format!("{}/certificates", service_path(&args.name)?);
    let client = AdminClient::new(&args.client)?;
    let redirect = args
        .redirect
        .as_deref()
        .map(|v| on_off("redirect", v))
        .transpose()?;
    let hsts = args.hsts.as_deref().map(hsts).transpose()?;
    let auto = auto_certificates(&args)?;
    if let Some(certificates) = auto {
        let request = CertificatesRequest {
            certificates,
            base_revision: None,
        };
        let change: Change = client.put(&certificates_path, &request).await?;
        if redirect.is_none() && hsts.is_none() {
            return output::change(&args.client, &change);
        }
    }
    let current: HttpsPolicy = client.get(&path).await?;
    if redirect.is_none() && hsts.is_none() {
        let certificates: Option<AutoCertificates> = client.get(&certificates_path).await?;
        if args.client.json {
            return output::json(&serde_json::json!({
                "redirect": current.redirect,
                "hsts_max_age": current.hsts_max_age,
                "certificates": certificates,
            }));
        }
        match certificates {
            Some(auto) => println!("{}: {current}, {auto}", args.name),
            None => println!("{}: {current}", args.name),
        }
        return Ok(());
    }
    let https = HttpsPolicy {
        redirect: redirect.unwrap_or(current.redirect),
        hsts_max_age: hsts.unwrap_or(current.hsts_max_age),
    };
    let request = HttpsRequest {
        https,
        base_revision: None,
    };
    let change: Change = client.put(&path, &request).await?;
    output::change(&args.client, &change)
}
