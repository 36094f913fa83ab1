//! `switchyard tls add|ls|rm`: the certificates the TLS listener
//! (`serve --tls-listen`) chooses from by the name a client asks for.

use std::path::{Path, PathBuf};

use anyhow::Context;
use clap::{Args, Subcommand};

use super::output;
use super::{AdminClient, ClientArgs};
use crate::api::tls::CertificateUpload;
use crate::tls::{CertificateInfo, HostPattern};

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
            ]
        })
        .collect();
    output::table(&["HOST", "ISSUER", "EXPIRES", "SOURCE", "NAMES"], &rows);
    Ok(())
}

async fn rm(args: RmArgs) -> anyhow::Result<()> {
    let pattern = args.which.pattern()?;
    let client = AdminClient::new(&args.client)?;
    let info: CertificateInfo = client.delete(&certificate_path(&pattern)).await?;
    if args.client.json {
        return output::json(&info);
    }
    println!("certificate for {} removed", shown(&info.host));
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
