//! Header handling on the way through: hop-by-hop headers stay on their
//! hop, and the upstream learns who asked and under which prefix, from
//! the proxy only: what a client says about its own address (`Forwarded`,
//! `X-Real-IP`), the request's id or a mirrored copy's mark is not passed
//! on.

use std::cell::RefCell;
use std::net::{IpAddr, SocketAddr};

use http::header::{self, HeaderMap, HeaderName, HeaderValue};

use super::mirror::X_SWITCHYARD_SHADOW;
use super::request_id::X_REQUEST_ID;

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

/// Which of the names this module handles a message carries, learned in
/// one pass over its fields: most messages carry none of them, and a
/// lookup or removal by name costs a hash each.
#[derive(Default)]
struct Present {
    connection: bool,
    upgrade: bool,
    hop_by_hop: [bool; HOP_BY_HOP_COUNT],
    proxy_set: [bool; PROXY_SET_COUNT],
    host: bool,
}

impl Present {
    fn of(headers: &HeaderMap) -> Self {
        let mut present = Self::default();
        for name in headers.keys() {
            // One match on the name's text: comparing it with each name in
            // turn cost more than the rest of the pass.
            let flag = match name.as_str() {
                "connection" => &mut present.connection,
                "upgrade" => &mut present.upgrade,
                "host" => &mut present.host,
                "keep-alive" => &mut present.hop_by_hop[0],
                "proxy-connection" => &mut present.hop_by_hop[1],
                "te" => &mut present.hop_by_hop[2],
                "trailer" => &mut present.hop_by_hop[3],
                "transfer-encoding" => &mut present.hop_by_hop[4],
                "proxy-authorization" => &mut present.hop_by_hop[5],
                "x-forwarded-for" => &mut present.proxy_set[0],
                "x-real-ip" => &mut present.proxy_set[1],
                "forwarded" => &mut present.proxy_set[2],
                "x-forwarded-proto" => &mut present.proxy_set[3],
                "x-forwarded-host" => &mut present.proxy_set[4],
                "x-forwarded-prefix" => &mut present.proxy_set[5],
                "x-request-id" => &mut present.proxy_set[6],
                "x-switchyard-shadow" => &mut present.proxy_set[7],
                _ => continue,
            };
            *flag = true;
        }
        present
    }
}

/// Removes the headers that belong to one connection only. With `tunnel`
/// the `Connection: upgrade` and `Upgrade` pair is kept for the next hop.
pub fn strip_hop_by_hop(headers: &mut HeaderMap, tunnel: bool) {
    let present = Present::of(headers);
    strip_present(headers, &present, tunnel);
}

fn strip_present(headers: &mut HeaderMap, present: &Present, tunnel: bool) {
    if present.connection {
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
    for (name, present) in HOP_BY_HOP.iter().zip(present.hop_by_hop) {
        if present {
            headers.remove(name);
        }
    }
    if !tunnel {
        if present.upgrade {
            headers.remove(header::UPGRADE);
        }
    } else {
        headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
    }
}

const PROXY_SET_COUNT: usize = 8;

/// The names only the proxy sets on a request to a release: what a client
/// sends under them does not reach the release (`Forwarded` is not written
/// at all, so that an upstream reading it cannot be told a made-up
/// address; a client cannot pass for a mirrored copy).
static PROXY_SET: [HeaderName; PROXY_SET_COUNT] = [
    X_FORWARDED_FOR,
    X_REAL_IP,
    header::FORWARDED,
    X_FORWARDED_PROTO,
    X_FORWARDED_HOST,
    X_FORWARDED_PREFIX,
    X_REQUEST_ID,
    X_SWITCHYARD_SHADOW,
];

/// The names of the fields a [`Forwarding`] writes, in their order.
static FORWARDING: [HeaderName; 6] = [
    X_FORWARDED_FOR,
    X_REAL_IP,
    X_FORWARDED_PROTO,
    X_FORWARDED_HOST,
    X_FORWARDED_PREFIX,
    X_REQUEST_ID,
];
static HTTP: HeaderValue = HeaderValue::from_static("http");
static HTTPS: HeaderValue = HeaderValue::from_static("https");

/// The fields the proxy adds to a request for its release: the client's
/// address (`X-Forwarded-For`, appended to the list the client sent, and
/// `X-Real-IP`), the scheme, host and prefix it asked under
/// (`X-Forwarded-Proto`, `-Host`, `-Prefix`) and the request's id. They
/// travel beside the client's fields and are written after them, not
/// added to the request's map: each addition there costs a hash, on every
/// request. What needs them in a map (a tunnel's request, a mirrored
/// copy) gets them with [`Forwarding::add_to`].
#[derive(Debug)]
pub(crate) struct Forwarding<'r> {
    /// The list the client sent with its address appended; `None` when
    /// the client sent none, and the list is its address alone.
    forwarded_for: Option<HeaderValue>,
    real_ip: HeaderValue,
    https: bool,
    host: Option<&'r HeaderValue>,
    prefix: Option<HeaderValue>,
    request_id: &'r HeaderValue,
    /// How many bytes at the start of the request's path are the
    /// service's prefix, which the release does not see: the request
    /// keeps the client's target, and the release's is written from it
    /// ([`Forwarding::write_target`]) rather than parsed into a new `Uri`.
    prefix_len: usize,
}

impl Forwarding<'_> {
    /// The release's request target: `uri`'s path and query without the
    /// service's prefix, and `/` first when what is left does not start
    /// with it (`/services/NAME?q` asks for `/?q`).
    pub(crate) fn write_target(&self, uri: &http::Uri, out: &mut Vec<u8>) {
        let rest = self.rest_of(uri);
        if !rest.starts_with('/') {
            out.push(b'/');
        }
        out.extend_from_slice(rest.as_bytes());
    }

    /// The release's request target as a `Uri`, for a request that goes
    /// out from its parts (a mirrored copy, hyper's client).
    pub(crate) fn target(&self, uri: &http::Uri) -> http::Uri {
        let rest = self.rest_of(uri);
        let target = if rest.starts_with('/') {
            rest.parse()
        } else {
            ["/", rest].concat().parse()
        };
        // What follows the prefix starts at a segment's end, so it is the
        // rest of a valid target after a `/` or at a `?` (or nothing).
        target.expect("the rest of a valid target after its prefix is a valid target")
    }

    fn rest_of<'u>(&self, uri: &'u http::Uri) -> &'u str {
        let path = uri.path_and_query().map_or("/", |p| p.as_str());
        path.get(self.prefix_len..).unwrap_or("")
    }

    /// The fields, in the order they are written.
    pub(crate) fn fields(&self) -> impl Iterator<Item = (&HeaderName, &HeaderValue)> {
        let proto = if self.https { &HTTPS } else { &HTTP };
        let values = [
            Some(self.forwarded_for.as_ref().unwrap_or(&self.real_ip)),
            Some(&self.real_ip),
            Some(proto),
            self.host,
            self.prefix.as_ref(),
            Some(self.request_id),
        ];
        FORWARDING
            .iter()
            .zip(values)
            .filter_map(|(name, value)| Some((name, value?)))
    }

    /// Sets the fields in `headers`, for a request sent from a map.
    pub(crate) fn add_to(&self, headers: &mut HeaderMap) {
        for (name, value) in self.fields() {
            headers.insert(name.clone(), value.clone());
        }
    }
}

/// Readies a request's fields for its release: the hop-by-hop ones go
/// (with `tunnel`, the `Upgrade` pair stays), so do those only the proxy
/// sets; a request without `Host` gets the host it was for. Returns the
/// fields the proxy adds, which the request's head carries after its own.
pub(crate) fn forward_request<'r>(
    headers: &mut HeaderMap,
    tunnel: bool,
    client: SocketAddr,
    host: Option<&'r HeaderValue>,
    prefix: &str,
    https: bool,
    request_id: &'r HeaderValue,
) -> Forwarding<'r> {
    let present = Present::of(headers);
    strip_present(headers, &present, tunnel);
    let ip = client.ip();
    let real_ip = client_ip_value(ip);
    let forwarded_for = present.proxy_set[0]
        .then(|| {
            // Several header lines are one comma-separated list; keep every
            // entry.
            let ip = ip.to_string();
            let mut xff: Vec<&str> = headers
                .get_all(&X_FORWARDED_FOR)
                .iter()
                .filter_map(|v| v.to_str().ok())
                .map(str::trim)
                .filter(|v| !v.is_empty())
                .collect();
            xff.push(&ip);
            HeaderValue::from_str(&xff.join(", ")).ok()
        })
        .flatten();
    for (name, present) in PROXY_SET.iter().zip(present.proxy_set) {
        if present {
            headers.remove(name);
        }
    }
    if !present.host {
        if let Some(h) = host {
            headers.insert(header::HOST, h.clone());
        }
    }
    Forwarding {
        forwarded_for,
        real_ip,
        https,
        host,
        prefix: (!prefix.is_empty()).then(|| prefix_value(prefix)).flatten(),
        request_id,
        prefix_len: prefix.len(),
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

    /// The fields a request with `h` goes to its release with.
    fn forwarded(
        h: &mut HeaderMap,
        client: SocketAddr,
        host: Option<&HeaderValue>,
        prefix: &str,
        https: bool,
    ) -> HeaderMap {
        let id = HeaderValue::from_static("id-1");
        let forwarding = forward_request(h, false, client, host, prefix, https, &id);
        let mut sent = h.clone();
        forwarding.add_to(&mut sent);
        sent
    }

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
        h = forwarded(&mut h, client, None, "", true);
        assert_eq!(h[&X_FORWARDED_PROTO], "https");
    }

    #[test]
    fn forwarded_for_is_appended() {
        let mut h = HeaderMap::new();
        h.insert(X_FORWARDED_FOR, HeaderValue::from_static("10.0.0.1"));
        let client = SocketAddr::from(([127, 0, 0, 1], 5555));
        h = forwarded(
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
        h = forwarded(&mut h, one, None, "/services/a", false);
        assert_eq!(h[&X_FORWARDED_FOR], "10.0.0.1");
        assert_eq!(h[&X_FORWARDED_PREFIX], "/services/a");
        let mut h = HeaderMap::new();
        h = forwarded(&mut h, two, None, "/services/b", false);
        assert_eq!(h[&X_FORWARDED_FOR], "10.0.0.2");
        assert_eq!(h[&X_FORWARDED_PREFIX], "/services/b");
        h = forwarded(&mut h, one, None, "", false);
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
        h = forwarded(&mut h, client, None, "", false);
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
        h = forwarded(&mut h, client, None, "", false);
        assert_eq!(
            h.get_all(&X_FORWARDED_FOR).iter().collect::<Vec<_>>(),
            ["10.0.0.1, 10.0.0.2, 10.0.0.3, 127.0.0.1"]
        );
    }

    #[test]
    fn what_only_the_proxy_sets_is_taken_from_the_client_and_written_once() {
        let mut h = HeaderMap::new();
        for name in &PROXY_SET {
            h.append(name.clone(), HeaderValue::from_static("client"));
        }
        h.insert(header::ACCEPT, HeaderValue::from_static("*/*"));
        let client = SocketAddr::from(([10, 0, 0, 9], 1));
        let host = HeaderValue::from_static("a.example");
        let id = HeaderValue::from_static("id-7");
        let forwarding = forward_request(&mut h, false, client, Some(&host), "/p", false, &id);
        assert_eq!(
            h.keys().collect::<Vec<_>>(),
            [header::ACCEPT, header::HOST],
            "{h:?}"
        );
        let written: Vec<(&str, &str)> = forwarding
            .fields()
            .map(|(n, v)| (n.as_str(), v.to_str().expect("text")))
            .collect();
        assert_eq!(
            written,
            [
                ("x-forwarded-for", "client, 10.0.0.9"),
                ("x-real-ip", "10.0.0.9"),
                ("x-forwarded-proto", "http"),
                ("x-forwarded-host", "a.example"),
                ("x-forwarded-prefix", "/p"),
                ("x-request-id", "id-7"),
            ]
        );
    }

    #[test]
    fn the_releases_target_is_the_clients_without_the_prefix() {
        let id = HeaderValue::from_static("id");
        let client: SocketAddr = "10.0.0.9:1".parse().expect("addr");
        for (prefix, asked, target) in [
            ("/services/app", "/services/app/a/b?c=d", "/a/b?c=d"),
            ("/services/app", "/services/app", "/"),
            ("/services/app", "/services/app?x=1", "/?x=1"),
            ("/services/app", "http://h.example/services/app/x", "/x"),
            ("", "/a?b", "/a?b"),
        ] {
            let forwarding = forward_request(
                &mut HeaderMap::new(),
                false,
                client,
                None,
                prefix,
                false,
                &id,
            );
            let uri: http::Uri = asked.parse().expect("uri");
            let mut written = Vec::new();
            forwarding.write_target(&uri, &mut written);
            assert_eq!(written, target.as_bytes(), "{asked}");
            assert_eq!(forwarding.target(&uri), target, "{asked}");
        }
    }

    #[test]
    fn each_name_handled_is_found_in_its_place() {
        for (i, name) in HOP_BY_HOP.iter().enumerate() {
            let mut h = HeaderMap::new();
            h.insert(name, HeaderValue::from_static("1"));
            assert!(Present::of(&h).hop_by_hop[i], "{name}");
        }
        for (i, name) in PROXY_SET.iter().enumerate() {
            let mut h = HeaderMap::new();
            h.insert(name, HeaderValue::from_static("1"));
            assert!(Present::of(&h).proxy_set[i], "{name}");
        }
    }

    #[test]
    fn the_hop_by_hop_names_are_those_of_the_wire() {
        let mut names: Vec<&str> = HOP_BY_HOP.iter().map(HeaderName::as_str).collect();
        names.extend(["connection", "upgrade"]);
        names.sort_unstable();
        let mut wire = crate::http1::HOP_BY_HOP.to_vec();
        wire.sort_unstable();
        assert_eq!(names, wire);
    }
}
