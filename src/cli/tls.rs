//! `switchyard tls add|ls|rm`: the certificates the TLS listener
//! (`serve --tls-listen`) chooses from by the name a client asks for.

use std::path::{Path, PathBuf};

use anyhow::Context;
use clap::{Args, Subcommand};

use super::output;
use super::{AdminClient, ClientArgs};
use crate::api::tls::{CertificateUpload, Removed};
use crate::model::AcmeChallenge;
use crate::tls::{AcmeOrder, AcmeRequest, AcmeState, CertificateInfo, HostPattern};

#[derive(Debug, Args)]
pub struct TlsArgs {
    #[command(subcommand)]
    pub command: TlsCommand,
}

#[derive(Debug, Subcommand)]
pub enum TlsCommand {
    /// Store a certificate for a host name (replacing its last one, with
    /// no connection dropped).
    Add(AddArgs),
    /// List the certificates: host, issuer, expiry, source.
    Ls(LsArgs),
    /// Remove a host's certificate.
    Rm(RmArgs),
    /// Order a certificate from an ACME CA (Let's Encrypt by default),
    /// validated over HTTP-01 by serve's cleartext listener (or
    /// TLS-ALPN-01 by its TLS listener), stored and
    /// served at once, and renewed by serve when a third of its lifetime
    /// is left. Waits for the order and shows its progress.
    Acme(AcmeArgs),
}

#[derive(Debug, Args)]
pub struct AcmeArgs {
    /// The host names the certificate is for (the first is the one it is
    /// kept under). The CA must reach serve at http://HOST/ for each
    /// (https://HOST/ for tls-alpn-01).
    #[arg(required = true, value_name = "HOST")]
    pub hosts: Vec<String>,
    /// The contact address given to the CA (expiry notices).
    #[arg(long)]
    pub email: String,
    /// The CA's ACME directory URL.
    #[arg(long, value_name = "URL", default_value = crate::tls::LETS_ENCRYPT)]
    pub directory: String,
    /// PEM file of the CA certificate the directory's HTTPS certificate is
    /// signed by, for a private ACME CA.
    #[arg(long, value_name = "FILE")]
    pub directory_ca: Option<PathBuf>,
    /// How the CA validates the names: `http-01` (a request to the
    /// cleartext listener, port 80) or `tls-alpn-01` (a TLS handshake
    /// with the TLS listener, port 443; for a serve with no port 80).
    #[arg(long, value_name = "http-01|tls-alpn-01", default_value = "http-01")]
    pub challenge: AcmeChallenge,
    /// Start the order and return without waiting for it.
    #[arg(long)]
    pub no_wait: bool,
    #[command(flatten)]
    pub client: ClientArgs,
}

/// Which certificate: a host name, a wildcard, or the default one.
#[derive(Debug, Args)]
pub struct Which {
    /// A host name (app.example.com) or a wildcard (*.example.com).
    #[arg(required_unless_present = "default", conflicts_with = "default")]
    pub host: Option<String>,
    /// The default certificate: for names with none of their own, and
    /// clients that name no host (without one, their handshake fails).
    #[arg(long)]
    pub default: bool,
}

impl Which {
    fn pattern(&self) -> anyhow::Result<HostPattern> {
        match &self.host {
            Some(host) => Ok(host.parse()?),
            None => Ok(HostPattern::Default),
        }
    }
}

#[derive(Debug, Args)]
pub struct AddArgs {
    #[command(flatten)]
    pub which: Which,
    /// PEM file of the certificate, then any intermediates.
    #[arg(long, value_name = "FILE")]
    pub cert: PathBuf,
    /// PEM file of its private key.
    #[arg(long, value_name = "FILE")]
    pub key: PathBuf,
    #[command(flatten)]
    pub client: ClientArgs,
}

#[derive(Debug, Args)]
pub struct LsArgs {
    #[command(flatten)]
    pub client: ClientArgs,
}

#[derive(Debug, Args)]
pub struct RmArgs {
    #[command(flatten)]
    pub which: Which,
    #[command(flatten)]
    pub client: ClientArgs,
}

pub async fn run(args: TlsArgs) -> anyhow::Result<()> {
    match args.command {
        TlsCommand::Add(args) => add(args).await,
        TlsCommand::Ls(args) => ls(args).await,
        TlsCommand::Rm(args) => rm(args).await,
        TlsCommand::Acme(args) => acme(args).await,
    }
}

fn read(path: &Path, what: &str) -> anyhow::Result<String> {
    std::fs::read_to_string(path)
        .with_context(|| format!("cannot read the {what} file {}", path.display()))
}

/// The admin API path of one certificate (`*` spelled so a URL keeps it).
fn certificate_path(pattern: &HostPattern) -> String {
    format!(
        "/v1/tls/certificates/{}",
        pattern.to_string().replace('*', "%2A")
    )
}

async fn add(args: AddArgs) -> anyhow::Result<()> {
    let pattern = args.which.pattern()?;
    let upload = CertificateUpload {
        cert_pem: read(&args.cert, "certificate")?,
        key_pem: read(&args.key, "key")?,
    };
    let client = AdminClient::new(&args.client)?;
    let info: CertificateInfo = client.put(&certificate_path(&pattern), &upload).await?;
    if args.client.json {
        return output::json(&info);
    }
    println!(
        "certificate for {} stored: issued by {}, expires {}",
        shown(&info.host),
        info.issuer,
        crate::tls::format_time(info.not_after)
    );
    Ok(())
}

async fn ls(args: LsArgs) -> anyhow::Result<()> {
    let client = AdminClient::new(&args.client)?;
    let certificates: Vec<CertificateInfo> = client.get("/v1/tls/certificates").await?;
    if args.client.json {
        return output::json(&certificates);
    }
    if certificates.is_empty() {
        println!("no certificates; add one with `switchyard tls add HOST --cert FILE --key FILE`");
        return Ok(());
    }
    let rows: Vec<Vec<String>> = certificates
        .iter()
        .map(|c| {
            vec![
                shown(&c.host),
                c.issuer.clone(),
                crate::tls::format_time(c.not_after),
                c.source.to_string(),
                c.names.join(","),
                c.last_error.clone().unwrap_or_else(|| "-".into()),
            ]
        })
        .collect();
    output::table(
        &["HOST", "ISSUER", "EXPIRES", "SOURCE", "NAMES", "LAST ERROR"],
        &rows,
    );
    Ok(())
}

async fn rm(args: RmArgs) -> anyhow::Result<()> {
    let pattern = args.which.pattern()?;
    let client = AdminClient::new(&args.client)?;
    let removed: Removed = client.delete(&certificate_path(&pattern)).await?;
    if args.client.json {
        return output::json(&removed);
    }
    if removed.certificate.is_some() {
        println!("certificate for {} removed", shown(&removed.host));
    }
    if removed.order_cancelled {
        println!(
            "ACME order for {} forgotten: it is not renewed, and nothing it was doing is stored",
            removed.host
        );
    }
    Ok(())
}

/// How long `tls acme` waits for an order before it gives up waiting
/// (serve's own limit per order is shorter).
const ACME_WAIT: std::time::Duration = std::time::Duration::from_secs(180);

async fn acme(args: AcmeArgs) -> anyhow::Result<()> {
    let directory_ca_pem = match &args.directory_ca {
        Some(path) => Some(read(path, "directory CA")?),
        None => None,
    };
    let request = AcmeRequest {
        hosts: args.hosts.clone(),
        email: args.email.clone(),
        directory: args.directory.clone(),
        directory_ca_pem,
        challenge: args.challenge,
    };
    let client = AdminClient::new(&args.client)?;
    let mut order: AcmeOrder = client.post("/v1/tls/acme", &request).await?;
    let host = order.host().to_owned();
    let path = format!("/v1/tls/acme/{host}");
    let deadline = tokio::time::Instant::now() + ACME_WAIT;
    let mut shown_step = String::new();
    while order.state == AcmeState::Ordering && !args.no_wait {
        if order.step != shown_step && !args.client.json {
            eprintln!("{host}: {}", order.step);
            shown_step = order.step.clone();
        }
        if tokio::time::Instant::now() > deadline {
            anyhow::bail!(
                "the order for {host} is still running after {}s; `switchyard tls ls` shows when it is done",
                ACME_WAIT.as_secs()
            );
        }
        tokio::time::sleep(std::time::Duration::from_millis(250)).await;
        order = client.get(&path).await?;
    }
    if args.client.json {
        return output::json(&order);
    }
    match order.state {
        AcmeState::Ordering => println!(
            "order for {host} started; `switchyard tls ls` shows the certificate when it is stored"
        ),
        AcmeState::Valid => {
            let certificates: Vec<CertificateInfo> = client.get("/v1/tls/certificates").await?;
            match certificates.iter().find(|c| c.host == host) {
                Some(info) => println!(
                    "certificate for {host} stored: issued by {}, expires {}",
                    info.issuer,
                    crate::tls::format_time(info.not_after)
                ),
                None => println!("certificate for {host} stored"),
            }
        }
        AcmeState::Failed => anyhow::bail!(
            "the order for {host} failed: {}",
            order.last_error.as_deref().unwrap_or("no reason given")
        ),
    }
    Ok(())
}

/// A host as `tls ls` shows it (the default by that word).
fn shown(host: &str) -> String {
    if host == "*" {
        "* (default)".to_owned()
    } else {
        host.to_owned()
    }
}
