use std::collections::BTreeMap;

use anyhow::{Context, bail};
use clap::{Args, Subcommand};

use super::output::{self, json, table};
use super::{AdminClient, ClientArgs, service_path};
use crate::api::policy::RuleRequest;
use crate::api::services::Change;
use crate::model::{
    Action, ApiVersion, Matcher, Rule, StringMatch, TrafficPolicy, parse_version, rule_label,
};

#[derive(Debug, Args)]
pub struct RouteArgs {
    #[command(subcommand)]
    pub command: RouteCommand,
}

#[derive(Debug, Subcommand)]
pub enum RouteCommand {
    /// Add a rule: every matcher given must hold; the action decides.
    Add(Box<AddArgs>),
    /// Remove a rule by number (see `route ls`) or name.
    Rm(RmArgs),
    /// List the rules in evaluation order.
    Ls(LsArgs),
}

#[derive(Debug, Args)]
pub struct AddArgs {
    pub name: String,
    /// A name for the rule (to remove it by name).
    #[arg(long = "name")]
    pub rule_name: Option<String>,
    /// Where to insert it (1 = first); default last.
    #[arg(long)]
    pub position: Option<usize>,
    /// Header equals: NAME=VALUE.
    #[arg(long)]
    pub header: Vec<String>,
    /// Header starts with: NAME=PREFIX.
    #[arg(long)]
    pub header_prefix: Vec<String>,
    /// Header matches: NAME=REGEX.
    #[arg(long)]
    pub header_regex: Vec<String>,
    /// Header is present: NAME.
    #[arg(long)]
    pub header_present: Vec<String>,
    /// Cookie equals: NAME=VALUE.
    #[arg(long)]
    pub cookie: Vec<String>,
    /// Cookie matches: NAME=REGEX.
    #[arg(long)]
    pub cookie_regex: Vec<String>,
    /// Host equals (case-insensitive, port ignored).
    #[arg(long)]
    pub host: Option<String>,
    /// Host matches a regex.
    #[arg(long)]
    pub host_regex: Option<String>,
    /// Path within the service equals.
    #[arg(long)]
    pub path: Option<String>,
    /// Path within the service starts with.
    #[arg(long)]
    pub path_prefix: Option<String>,
    /// Path within the service matches a regex.
    #[arg(long)]
    pub path_regex: Option<String>,
    /// Method is one of (comma-separated or repeated).
    #[arg(long, value_delimiter = ',')]
    pub method: Vec<String>,
    /// Query parameter equals (raw, not decoded): NAME=VALUE.
    #[arg(long)]
    pub query: Vec<String>,
    /// Query parameter matches: NAME=REGEX.
    #[arg(long)]
    pub query_regex: Vec<String>,
    /// Client address in an IP or CIDR block (repeatable: any of them).
    #[arg(long)]
    pub source: Vec<String>,
    /// The API version the request asks for, read where `switchyard
    /// api-version NAME` says (default header x-api-version): v2 matches
    /// 2, 2.0, 2.1…; v1.1 only 1.1 (and a bare 1).
    #[arg(long, value_name = "VERSION")]
    pub api_version: Option<String>,
    /// Action: send to this release.
    #[arg(long, group = "action")]
    pub to: Option<String>,
    /// Action: answer with this status, without any release.
    #[arg(long, group = "action")]
    pub respond: Option<u16>,
    /// Body of --respond.
    #[arg(long, requires = "respond", default_value = "")]
    pub body: String,
    /// Content type of --respond.
    #[arg(
        long,
        requires = "respond",
        default_value = "text/plain; charset=utf-8"
    )]
    pub content_type: String,
    /// Action: split by weights summing to 100, sticky per client: 1.0.0=90,2.0.0=10.
    #[arg(long, group = "action")]
    pub split: Option<String>,
    #[command(flatten)]
    pub client: ClientArgs,
}

#[derive(Debug, Args)]
pub struct RmArgs {
    pub name: String,
    /// Rule number (1-based) or name.
    pub rule: String,
    #[command(flatten)]
    pub client: ClientArgs,
}

#[derive(Debug, Args)]
pub struct LsArgs {
    pub name: String,
    #[command(flatten)]
    pub client: ClientArgs,
}

pub async fn run(args: RouteArgs) -> anyhow::Result<()> {
    match args.command {
        RouteCommand::Add(a) => add(*a).await,
        RouteCommand::Rm(a) => rm(a).await,
        RouteCommand::Ls(a) => ls(a).await,
    }
}

fn pair<'a>(flag: &str, s: &'a str) -> anyhow::Result<(&'a str, &'a str)> {
    s.split_once('=')
        .with_context(|| format!("--{flag} takes NAME=VALUE, got `{s}`"))
}

fn exact(v: &str) -> StringMatch {
    StringMatch {
        exact: Some(v.to_owned()),
        ..StringMatch::default()
    }
}

fn prefix(v: &str) -> StringMatch {
    StringMatch {
        prefix: Some(v.to_owned()),
        ..StringMatch::default()
    }
}

fn regex(v: &str) -> StringMatch {
    StringMatch {
        regex: Some(v.to_owned()),
        ..StringMatch::default()
    }
}

impl AddArgs {
    fn matchers(&self) -> anyhow::Result<Vec<Matcher>> {
        let mut out = Vec::new();
        let header = |name: &str, value| Matcher::Header {
            name: name.to_ascii_lowercase(),
            value,
        };
        for h in &self.header {
            let (n, v) = pair("header", h)?;
            out.push(header(n, exact(v)));
        }
        for h in &self.header_prefix {
            let (n, v) = pair("header-prefix", h)?;
            out.push(header(n, prefix(v)));
        }
        for h in &self.header_regex {
            let (n, v) = pair("header-regex", h)?;
            out.push(header(n, regex(v)));
        }
        for n in &self.header_present {
            out.push(header(n, StringMatch::default()));
        }
        for c in &self.cookie {
            let (n, v) = pair("cookie", c)?;
            out.push(Matcher::Cookie {
                name: n.to_owned(),
                value: exact(v),
            });
        }
        for c in &self.cookie_regex {
            let (n, v) = pair("cookie-regex", c)?;
            out.push(Matcher::Cookie {
                name: n.to_owned(),
                value: regex(v),
            });
        }
        if let Some(h) = &self.host {
            out.push(Matcher::Host { value: exact(h) });
        }
        if let Some(h) = &self.host_regex {
            out.push(Matcher::Host { value: regex(h) });
        }
        if let Some(p) = &self.path {
            out.push(Matcher::Path { value: exact(p) });
        }
        if let Some(p) = &self.path_prefix {
            out.push(Matcher::Path { value: prefix(p) });
        }
        if let Some(p) = &self.path_regex {
            out.push(Matcher::Path { value: regex(p) });
        }
        if !self.method.is_empty() {
            out.push(Matcher::Method {
                methods: self
                    .method
                    .iter()
                    .map(|m| m.trim().to_ascii_uppercase())
                    .collect(),
            });
        }
        for q in &self.query {
            let (n, v) = pair("query", q)?;
            out.push(Matcher::Query {
                name: n.to_owned(),
                value: exact(v),
            });
        }
        for q in &self.query_regex {
            let (n, v) = pair("query-regex", q)?;
            out.push(Matcher::Query {
                name: n.to_owned(),
                value: regex(v),
            });
        }
        if !self.source.is_empty() {
            out.push(Matcher::Source {
                cidrs: self.source.clone(),
            });
        }
        if let Some(v) = &self.api_version {
            let version = ApiVersion::parse_lenient(v).with_context(|| {
                format!("--api-version `{v}` is not an API version; give it as v2, v1.1, 2 or 2.0")
            })?;
            out.push(Matcher::ApiVersion { version });
        }
        Ok(out)
    }

    fn action(&self) -> anyhow::Result<Action> {
        if let Some(to) = &self.to {
            return Ok(Action::Route {
                to: parse_version(to)?,
            });
        }
        if let Some(status) = self.respond {
            return Ok(Action::Respond {
                status,
                body: self.body.clone(),
                content_type: self.content_type.clone(),
            });
        }
        if let Some(split) = &self.split {
            let mut weights = BTreeMap::new();
            for part in split.split(',') {
                let (v, w) = pair("split", part.trim())?;
                let w: u8 = w.parse().with_context(|| {
                    format!("--split weight `{w}` is not a number from 0 to 100")
                })?;
                weights.insert(parse_version(v)?, w);
            }
            return Ok(Action::Split { weights });
        }
        bail!("what should the rule do? give --to VERSION, --respond STATUS or --split V=W,V=W")
    }
}

async fn add(args: AddArgs) -> anyhow::Result<()> {
    let path = service_path(&args.name)?;
    let rule = Rule {
        name: args.rule_name.clone().unwrap_or_default(),
        matches: args.matchers()?,
        action: args.action()?,
    };
    let client = AdminClient::new(&args.client)?;
    let change: Change = client
        .post(
            &format!("{path}/rules"),
            &RuleRequest {
                rule,
                position: args.position,
                base_revision: None,
            },
        )
        .await?;
    output::change(&args.client, &change)
}

async fn rm(args: RmArgs) -> anyhow::Result<()> {
    let path = service_path(&args.name)?;
    // `.` and `..` would be read as a path step (and name another resource).
    if matches!(args.rule.as_str(), "" | "." | "..") {
        bail!(
            "`{}` is not a rule; give its number or name (`switchyard route ls {}`)",
            args.rule,
            args.name
        );
    }
    let selector = path_segment(&args.rule);
    let client = AdminClient::new(&args.client)?;
    let change: Change = client.delete(&format!("{path}/rules/{selector}")).await?;
    output::change(&args.client, &change)
}

/// `s` percent-encoded as one URL path segment (rule names may hold
/// spaces, slashes, anything).
fn path_segment(s: &str) -> String {
    s.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
                char::from(b).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

async fn ls(args: LsArgs) -> anyhow::Result<()> {
    let path = service_path(&args.name)?;
    let client = AdminClient::new(&args.client)?;
    let policy: TrafficPolicy = client.get(&format!("{path}/policy")).await?;
    if args.client.json {
        return json(&policy.rules);
    }
    let rows: Vec<Vec<String>> = policy
        .rules
        .iter()
        .enumerate()
        .map(|(i, r)| vec![rule_label(i, r), r.describe_matches(), r.action.to_string()])
        .collect();
    table(&["RULE", "WHEN", "ACTION"], &rows);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rule_selectors_stay_one_path_segment() {
        assert_eq!(path_segment("beta-1_x.y~"), "beta-1_x.y~");
        assert_eq!(path_segment("beta testers"), "beta%20testers");
        assert_eq!(path_segment("../x/é%"), "..%2Fx%2F%C3%A9%25");
    }
}
