//! Header handling on the way through: hop-by-hop headers stay on their
//! hop, and the upstream learns who asked and under which prefix, from
//! the proxy only: what a client says about its own address (`Forwarded`,
//! `X-Real-IP`) is not passed on.

use std::cell::RefCell;
use std::net::{IpAddr, SocketAddr};

use http::header::{self, HeaderMap, HeaderName, HeaderValue};

const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
const X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
const X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");
const X_FORWARDED_PREFIX: HeaderName = HeaderName::from_static("x-forwarded-prefix");
const X_REAL_IP: HeaderName = HeaderName::from_static("x-real-ip");
const KEEP_ALIVE: HeaderName = HeaderName::from_static("keep-alive");
const PROXY_CONNECTION: HeaderName = HeaderName::from_static("proxy-connection");

/// Whether the request asks to switch protocols (WebSocket and the like).
pub fn is_tunnel_request(headers: &HeaderMap) -> bool {
    headers.contains_key(header::UPGRADE) && connection_has(headers, "upgrade")
}

fn connection_has(headers: &HeaderMap, token: &str) -> bool {
    headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|t| t.trim().eq_ignore_ascii_case(token))
}

const HOP_BY_HOP_COUNT: usize = 6;

/// The hop-by-hop headers every message loses (RFC 9110 7.6.1), besides
/// those its `Connection` header names.
static HOP_BY_HOP: [HeaderName; HOP_BY_HOP_COUNT] = [
    KEEP_ALIVE,
    PROXY_CONNECTION,
    header::TE,
    header::TRAILER,
    header::TRANSFER_ENCODING,
    header::PROXY_AUTHORIZATION,
];

/// Removes the headers that belong to one connection only. With `tunnel`
/// the `Connection: upgrade` and `Upgrade` pair is kept for the next hop.
pub fn strip_hop_by_hop(headers: &mut HeaderMap, tunnel: bool) {
    // One pass over the names first: most messages carry none of these,
    // and a removal costs a hash lookup each.
    let mut connection = false;
    let mut upgrade_header = false;
    let mut fixed = [false; HOP_BY_HOP_COUNT];
    for name in headers.keys() {
        if name == header::CONNECTION {
            connection = true;
        } else if name == header::UPGRADE {
            upgrade_header = true;
        } else if let Some(i) = HOP_BY_HOP.iter().position(|h| h == name) {
            fixed[i] = true;
        }
    }
    if connection {
        // Only the named headers actually present are collected (a lookup
        // by `&str` allocates nothing), so the usual `keep-alive` or
        // `close` costs no allocation.
        let named: Vec<HeaderName> = headers
            .get_all(header::CONNECTION)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .map(str::trim)
            .filter(|t| !t.is_empty() && headers.contains_key(*t))
            .filter_map(|t| HeaderName::from_bytes(t.as_bytes()).ok())
            .filter(|n| !(tunnel && n == header::UPGRADE))
            .collect();
        for name in named {
            headers.remove(name);
        }
        if !tunnel {
            headers.remove(header::CONNECTION);
        }
    }
    for (name, present) in HOP_BY_HOP.iter().zip(fixed) {
        if present {
            headers.remove(name);
        }
    }
    if !tunnel {
        if upgrade_header {
            headers.remove(header::UPGRADE);
        }
    } else {
        headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
    }
}

/// Sets `X-Forwarded-For` (appended), `-Proto`, `-Host` and `-Prefix`,
/// and `X-Real-IP` (the client's address, whatever the client sent);
/// drops a client's `Forwarded`, which the proxy does not write, so that
/// an upstream reading it cannot be told a made-up address.
pub fn set_forwarded(
    headers: &mut HeaderMap,
    client: SocketAddr,
    host: Option<&HeaderValue>,
    prefix: &str,
    https: bool,
) {
    let ip = client.ip();
    let ip_value = client_ip_value(ip);
    if headers.contains_key(&X_FORWARDED_FOR) {
        // Several header lines are one comma-separated list; keep every entry.
        let ip = ip.to_string();
        let mut xff: Vec<&str> = headers
            .get_all(&X_FORWARDED_FOR)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .map(str::trim)
            .filter(|v| !v.is_empty())
            .collect();
        xff.push(&ip);
        if let Ok(v) = HeaderValue::from_str(&xff.join(", ")) {
            headers.insert(X_FORWARDED_FOR, v);
        }
    } else {
        headers.insert(X_FORWARDED_FOR, ip_value.clone());
    }
    headers.insert(X_REAL_IP, ip_value);
    headers.remove(header::FORWARDED);
    let proto = if https { "https" } else { "http" };
    headers.insert(X_FORWARDED_PROTO, HeaderValue::from_static(proto));
    if let Some(host) = host {
        headers.insert(X_FORWARDED_HOST, host.clone());
    }
    if prefix.is_empty() {
        headers.remove(&X_FORWARDED_PREFIX);
    } else if let Some(v) = prefix_value(prefix) {
        headers.insert(X_FORWARDED_PREFIX, v);
    }
}

thread_local! {
    /// The last client address and prefix formatted as header values on
    /// this thread: a keep-alive connection sends many requests from one
    /// address to one service, so the values are made once, not per request.
    static LAST_CLIENT: RefCell<Option<(IpAddr, HeaderValue)>> = const { RefCell::new(None) };
    static LAST_PREFIX: RefCell<Option<(Box<str>, HeaderValue)>> = const { RefCell::new(None) };
}

fn client_ip_value(ip: IpAddr) -> HeaderValue {
    LAST_CLIENT.with_borrow_mut(|last| match last {
        Some((cached, value)) if *cached == ip => value.clone(),
        _ => {
            let value = HeaderValue::from_str(&ip.to_string())
                .expect("an IP address is a valid header value");
            *last = Some((ip, value.clone()));
            value
        }
    })
}

fn prefix_value(prefix: &str) -> Option<HeaderValue> {
    LAST_PREFIX.with_borrow_mut(|last| match last {
        Some((cached, value)) if **cached == *prefix => Some(value.clone()),
        _ => {
            let value = HeaderValue::from_str(prefix).ok()?;
            *last = Some((prefix.into(), value.clone()));
            Some(value)
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hop_by_hop_headers_do_not_travel() {
        let mut h = HeaderMap::new();
        h.insert(
            header::CONNECTION,
            HeaderValue::from_static("keep-alive, x-secret"),
        );
        h.insert("x-secret", HeaderValue::from_static("1"));
        h.insert("keep-alive", HeaderValue::from_static("timeout=5"));
        h.insert("x-kept", HeaderValue::from_static("1"));
        strip_hop_by_hop(&mut h, false);
        assert_eq!(h.len(), 1, "{h:?}");
        assert!(h.contains_key("x-kept"));
    }

    #[test]
    fn tunnel_request_keeps_its_upgrade_pair() {
        let mut h = HeaderMap::new();
        h.insert(header::CONNECTION, HeaderValue::from_static("Upgrade"));
        h.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
        assert!(is_tunnel_request(&h));
        strip_hop_by_hop(&mut h, true);
        assert_eq!(
            h.get(header::UPGRADE).map(|v| v.as_bytes()),
            Some(&b"websocket"[..])
        );
        assert_eq!(
            h.get(header::CONNECTION).map(|v| v.as_bytes()),
            Some(&b"upgrade"[..])
        );
    }

    #[test]
    fn a_request_over_tls_is_forwarded_as_https() {
        let mut h = HeaderMap::new();
        h.insert(X_FORWARDED_PROTO, HeaderValue::from_static("http"));
        let client = SocketAddr::from(([127, 0, 0, 1], 5555));
        set_forwarded(&mut h, client, None, "", true);
        assert_eq!(h[&X_FORWARDED_PROTO], "https");
    }

    #[test]
    fn forwarded_for_is_appended() {
        let mut h = HeaderMap::new();
        h.insert(X_FORWARDED_FOR, HeaderValue::from_static("10.0.0.1"));
        let client = SocketAddr::from(([127, 0, 0, 1], 5555));
        set_forwarded(
            &mut h,
            client,
            Some(&HeaderValue::from_static("a.example.com")),
            "/services/x",
            false,
        );
        assert_eq!(h[&X_FORWARDED_FOR], "10.0.0.1, 127.0.0.1");
        assert_eq!(h[&X_FORWARDED_PROTO], "http");
        assert_eq!(h[&X_FORWARDED_HOST], "a.example.com");
        assert_eq!(h[&X_FORWARDED_PREFIX], "/services/x");
    }

    #[test]
    fn connection_named_headers_and_upgrade_header_do_not_travel() {
        let mut h = HeaderMap::new();
        h.append(header::CONNECTION, HeaderValue::from_static("close"));
        h.append(header::CONNECTION, HeaderValue::from_static("X-A, ,x-b"));
        h.insert("x-a", HeaderValue::from_static("1"));
        h.insert("x-b", HeaderValue::from_static("1"));
        h.insert(header::UPGRADE, HeaderValue::from_static("h2c"));
        h.insert(header::TE, HeaderValue::from_static("trailers"));
        h.insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain"));
        strip_hop_by_hop(&mut h, false);
        assert_eq!(h.keys().collect::<Vec<_>>(), [header::CONTENT_TYPE]);
    }

    #[test]
    fn forwarded_values_follow_the_client_and_prefix() {
        let mut h = HeaderMap::new();
        let one = SocketAddr::from(([10, 0, 0, 1], 1));
        let two = SocketAddr::from(([10, 0, 0, 2], 2));
        set_forwarded(&mut h, one, None, "/services/a", false);
        assert_eq!(h[&X_FORWARDED_FOR], "10.0.0.1");
        assert_eq!(h[&X_FORWARDED_PREFIX], "/services/a");
        let mut h = HeaderMap::new();
        set_forwarded(&mut h, two, None, "/services/b", false);
        assert_eq!(h[&X_FORWARDED_FOR], "10.0.0.2");
        assert_eq!(h[&X_FORWARDED_PREFIX], "/services/b");
        set_forwarded(&mut h, one, None, "", false);
        assert_eq!(h[&X_FORWARDED_FOR], "10.0.0.2, 10.0.0.1");
        assert!(!h.contains_key(&X_FORWARDED_PREFIX));
    }

    #[test]
    fn client_forwarded_and_real_ip_are_replaced_by_the_proxys_own() {
        let mut h = HeaderMap::new();
        h.insert(header::FORWARDED, HeaderValue::from_static("for=6.6.6.6"));
        h.append(X_REAL_IP, HeaderValue::from_static("6.6.6.6"));
        h.append(X_REAL_IP, HeaderValue::from_static("7.7.7.7"));
        let client = SocketAddr::from(([10, 0, 0, 9], 1));
        set_forwarded(&mut h, client, None, "", false);
        assert!(!h.contains_key(header::FORWARDED), "{h:?}");
        assert_eq!(
            h.get_all(&X_REAL_IP).iter().collect::<Vec<_>>(),
            ["10.0.0.9"]
        );
    }

    #[test]
    fn forwarded_for_keeps_every_incoming_line() {
        let client = SocketAddr::from(([127, 0, 0, 1], 5555));
        let mut h = HeaderMap::new();
        h.append(X_FORWARDED_FOR, HeaderValue::from_static("10.0.0.1"));
        h.append(
            X_FORWARDED_FOR,
            HeaderValue::from_static("10.0.0.2, 10.0.0.3"),
        );
        set_forwarded(&mut h, client, None, "", false);
        assert_eq!(
            h.get_all(&X_FORWARDED_FOR).iter().collect::<Vec<_>>(),
            ["10.0.0.1, 10.0.0.2, 10.0.0.3, 127.0.0.1"]
        );
    }
}
