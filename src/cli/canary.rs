use clap::Args;

use super::output;
use super::{AdminClient, ClientArgs, service_path};
use crate::api::policy::CanaryRequest;
use crate::api::services::Change;
use crate::model::{TrafficPolicy, parse_version};

#[derive(Debug, Args)]
pub struct CanaryArgs {
    pub name: String,
    pub version: String,
    /// Share of clients sent to VERSION, 0 to 100. Raising it keeps every
    /// client already in; lowering it removes only those above the line.
    #[arg(long)]
    pub percent: u8,
    /// Header that carries the client key, e.g. x-user-id.
    #[arg(long)]
    pub sticky_header: Option<String>,
    /// Application cookie that carries the client key.
    #[arg(long)]
    pub sticky_cookie: Option<String>,
    /// Name of the cookie Switchyard sets for clients without a key.
    #[arg(long)]
    pub cookie_name: Option<String>,
    /// Never set a cookie: clients without a key are bucketed by address.
    #[arg(long)]
    pub no_cookie: bool,
    /// GROUP in murmur3("GROUP:KEY"); default the service name (use an
    /// Unleash flag's group id to get the same population).
    #[arg(long)]
    pub group: Option<String>,
    #[command(flatten)]
    pub client: ClientArgs,
}

pub async fn run(args: CanaryArgs) -> anyhow::Result<()> {
    let path = service_path(&args.name)?;
    let version = parse_version(&args.version)?;
    let client = AdminClient::new(&args.client)?;
    let sticky_given = args.sticky_header.is_some()
        || args.sticky_cookie.is_some()
        || args.cookie_name.is_some()
        || args.no_cookie
        || args.group.is_some();
    let sticky = if sticky_given {
        let current: TrafficPolicy = client.get(&format!("{path}/policy")).await?;
        let mut sticky = current.sticky;
        if args.sticky_header.is_some() {
            sticky.header = args.sticky_header.clone();
        }
        if args.sticky_cookie.is_some() {
            sticky.cookie = args.sticky_cookie.clone();
        }
        if let Some(name) = &args.cookie_name {
            sticky.set_cookie = name.clone();
        }
        if args.no_cookie {
            sticky.set_cookie.clear();
        }
        if args.group.is_some() {
            sticky.group = args.group.clone();
        }
        Some(sticky)
    } else {
        None
    };
    let change: Change = client
        .post(
            &format!("{path}/canary"),
            &CanaryRequest {
                version: version.to_string(),
                percent: args.percent,
                sticky,
                base_revision: None,
            },
        )
        .await?;
    output::change(&args.client, &change)
}
