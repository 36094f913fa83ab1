//! Where the services' desired state lives: the state directory's SQLite
//! file (one serve), or an etcd cluster a fleet of serves shares
//! (`serve --store etcd://HOST:PORT[,HOST:PORT…][/PREFIX]`).

use std::fmt;
use std::str::FromStr;

/// The key prefix a fleet's state is kept under when the URL names none.
pub const DEFAULT_PREFIX: &str = "/switchyard";

/// Where `serve` keeps the services' desired state.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum StoreLocation {
    /// `switchyard.db` in the state directory.
    #[default]
    StateDir,
    /// An etcd cluster, shared by every node of a fleet.
    Etcd(EtcdLocation),
}

/// An etcd cluster's members and the key prefix of one fleet in it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EtcdLocation {
    /// `HOST:PORT` of each member given.
    pub endpoints: Vec<String>,
    /// Every key of the fleet starts with it (no trailing slash).
    pub prefix: String,
}

impl fmt::Display for EtcdLocation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "etcd://{}{}", self.endpoints.join(","), self.prefix)
    }
}

impl FromStr for StoreLocation {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let Some(rest) = text.strip_prefix("etcd://") else {
            return Err(format!(
                "unknown store {text:?}: give etcd://HOST:PORT[,HOST:PORT…][/PREFIX], \
                 or leave --store out to keep the state in --state-dir"
            ));
        };
        let (members, prefix) = match rest.find('/') {
            Some(at) => (&rest[..at], rest[at..].trim_end_matches('/')),
            None => (rest, DEFAULT_PREFIX),
        };
        let prefix = if prefix.is_empty() {
            DEFAULT_PREFIX
        } else {
            prefix
        };
        let mut endpoints = Vec::new();
        for member in members.split(',') {
            let Some((host, port)) = member.rsplit_once(':') else {
                return Err(format!(
                    "the etcd member {member:?} in {text} has no port: give HOST:PORT, e.g. 127.0.0.1:2379"
                ));
            };
            if host.is_empty() || port.parse::<u16>().map_or(true, |p| p == 0) {
                return Err(format!(
                    "the etcd member {member:?} in {text} is not HOST:PORT with a port from 1 to 65535, e.g. 127.0.0.1:2379"
                ));
            }
            endpoints.push(member.to_owned());
        }
        if prefix.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err(format!(
                "the key prefix {prefix:?} in {text} holds spaces or control characters; give one such as /switchyard"
            ));
        }
        Ok(StoreLocation::Etcd(EtcdLocation {
            endpoints,
            prefix: prefix.to_owned(),
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn etcd(text: &str) -> EtcdLocation {
        match text.parse::<StoreLocation>().expect("a store") {
            StoreLocation::Etcd(location) => location,
            StoreLocation::StateDir => panic!("not etcd"),
        }
    }

    #[test]
    fn an_etcd_url_names_its_members_and_prefix() {
        let location = etcd("etcd://10.0.0.1:2379,10.0.0.2:2379/team/a/");
        assert_eq!(location.endpoints, ["10.0.0.1:2379", "10.0.0.2:2379"]);
        assert_eq!(location.prefix, "/team/a");
        assert_eq!(
            location.to_string(),
            "etcd://10.0.0.1:2379,10.0.0.2:2379/team/a"
        );
    }

    #[test]
    fn an_etcd_url_without_a_prefix_gets_the_default_one() {
        assert_eq!(etcd("etcd://localhost:2379").prefix, DEFAULT_PREFIX);
        assert_eq!(etcd("etcd://localhost:2379/").prefix, DEFAULT_PREFIX);
    }

    #[test]
    fn a_member_without_a_port_or_another_scheme_is_refused_saying_what_to_give() {
        let error = "etcd://localhost"
            .parse::<StoreLocation>()
            .expect_err("no port");
        assert!(error.contains("HOST:PORT"), "{error}");
        let error = "etcd://a:1,b:0"
            .parse::<StoreLocation>()
            .expect_err("port 0");
        assert!(error.contains("1 to 65535"), "{error}");
        let error = "redis://x:1"
            .parse::<StoreLocation>()
            .expect_err("not etcd");
        assert!(error.contains("etcd://HOST:PORT"), "{error}");
    }
}
