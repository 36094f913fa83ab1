//! `switchyard error-page NAME --file FILE | --off`: the page end users
//! see when the proxy answers a request to the service itself (shown
//! without a flag). Each change is a revision.

use std::path::PathBuf;

use anyhow::{Context, bail};
use clap::Args;

use super::output;
use super::{AdminClient, ClientArgs, service_path};
use crate::api::services::Change;
use crate::api::settings::ErrorPageRequest;
use crate::model::{ERROR_PAGE_MAX_BYTES, ErrorPage};

#[derive(Debug, Args)]
pub struct ErrorPageArgs {
    pub name: String,
    /// The page: `{status}`, `{reason}` and `{request_id}` in it are
    /// filled in for each answer (at most 64 KiB).
    #[arg(long, conflicts_with = "off")]
    pub file: Option<PathBuf>,
    /// Its Content-Type (default: text/html for .html and .htm files,
    /// text/plain otherwise; charset utf-8).
    #[arg(long, requires = "file")]
    pub content_type: Option<String>,
    /// Back to the proxy's neutral page.
    #[arg(long)]
    pub off: bool,
    #[command(flatten)]
    pub client: ClientArgs,
}

pub async fn run(args: ErrorPageArgs) -> anyhow::Result<()> {
    let path = format!("{}/error-page", service_path(&args.name)?);
    let client = AdminClient::new(&args.client)?;
    let page = match (&args.file, args.off) {
        (Some(file), _) => Some(read(file, args.content_type.clone())?),
        (None, true) => None,
        (None, false) => {
            let page: Option<ErrorPage> = client.get(&path).await?;
            if args.client.json {
                return output::json(&page);
            }
            match page {
                Some(p) => print!("{}", p.template),
                None => println!("{}: the proxy's neutral error page", args.name),
            }
            return Ok(());
        }
    };
    let request = ErrorPageRequest {
        page,
        base_revision: None,
    };
    let change: Change = client.put(&path, &request).await?;
    output::change(&args.client, &change)
}

fn read(file: &PathBuf, content_type: Option<String>) -> anyhow::Result<ErrorPage> {
    let size = std::fs::metadata(file)
        .with_context(|| format!("cannot read {}", file.display()))?
        .len();
    if size > ERROR_PAGE_MAX_BYTES as u64 {
        bail!(
            "{} is {size} bytes; an error page may have at most {ERROR_PAGE_MAX_BYTES}",
            file.display()
        );
    }
    let template = std::fs::read_to_string(file)
        .with_context(|| format!("cannot read {} as UTF-8 text", file.display()))?;
    let html = file
        .extension()
        .and_then(|e| e.to_str())
        .is_some_and(|e| e.eq_ignore_ascii_case("html") || e.eq_ignore_ascii_case("htm"));
    let content_type = content_type.unwrap_or_else(|| {
        if html {
            "text/html; charset=utf-8".to_owned()
        } else {
            "text/plain; charset=utf-8".to_owned()
        }
    });
    let page = ErrorPage {
        template,
        content_type,
    };
    page.validate()?;
    Ok(page)
}
