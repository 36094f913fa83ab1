//! What a service's clients speak: HTTP (routed per request) or their own
//! wire protocol over TCP (routed per connection).

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// A service's protocol, set by its first release; every release of the
/// service speaks the same one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Protocol {
    /// Requests routed one by one, through the proxy's listener.
    #[default]
    Http,
    /// Connections forwarded whole, through the service's own listen
    /// address and its releases' pinned addresses.
    Tcp,
}

impl Protocol {
    pub fn is_http(&self) -> bool {
        *self == Protocol::Http
    }

    pub fn is_tcp(&self) -> bool {
        *self == Protocol::Tcp
    }
}

impl fmt::Display for Protocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Protocol::Http => "http",
            Protocol::Tcp => "tcp",
        })
    }
}

impl FromStr for Protocol {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.to_ascii_lowercase().as_str() {
            "http" => Ok(Protocol::Http),
            "tcp" => Ok(Protocol::Tcp),
            _ => Err(format!("unknown protocol `{s}`: use http or tcp")),
        }
    }
}

/// The PROXY protocol header (HAProxy's specification) a TCP release
/// gets at the start of each connection, so it sees the client's address.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ProxyHeader {
    /// The human-readable line: `PROXY TCP4 SRC DST SPORT DPORT\r\n`.
    V1,
    /// The binary header.
    V2,
}

impl fmt::Display for ProxyHeader {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ProxyHeader::V1 => "v1",
            ProxyHeader::V2 => "v2",
        })
    }
}

impl FromStr for ProxyHeader {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.to_ascii_lowercase().as_str() {
            "v1" | "1" => Ok(ProxyHeader::V1),
            "v2" | "2" => Ok(ProxyHeader::V2),
            _ => Err(format!(
                "unknown PROXY protocol version `{s}`: use v1 or v2"
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn protocols_read_and_print_the_same() {
        for p in [Protocol::Http, Protocol::Tcp] {
            assert_eq!(p.to_string().parse::<Protocol>(), Ok(p));
        }
        assert!("udp".parse::<Protocol>().is_err());
        assert_eq!("V2".parse::<ProxyHeader>(), Ok(ProxyHeader::V2));
    }
}
