//! The HTTP/1.1 wire format both sides of the proxy speak: the listener's
//! own server for client connections and the proxy's own client for
//! connections to instances. Header fields are taken out of a parsed head
//! without copying ([`fields`]), bodies are delimited by a length, chunks
//! or the close of the connection ([`framing`]), read into buffers no
//! larger than what they hold ([`read`]).

pub(crate) mod fields;
pub(crate) mod framing;
pub(crate) mod read;

/// Bytes on the wire that break HTTP/1.1: what was wrong, in words that
/// complete "… is not valid HTTP/1.1: ", or a section over its size limit.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum WireError {
    #[error("{0}")]
    Malformed(String),
    #[error("a section is larger than {0} bytes")]
    TooLarge(usize),
}

/// The most header fields a head (or a trailer section) may carry.
pub(crate) const MAX_HEADERS: usize = 100;

/// The largest head (or trailer section) taken from the wire.
pub(crate) const MAX_HEAD: usize = 64 * 1024;

/// A `content-length` value: one number, digits only (spaces around
/// allowed); `None` for anything else.
pub(crate) fn content_length(value: &[u8]) -> Option<u64> {
    let digits = value.trim_ascii();
    if digits.is_empty() || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    std::str::from_utf8(digits).ok()?.parse().ok()
}

/// The names of the fields that belong to one connection only (RFC 9110
/// 7.6.1), besides those a `connection` field names. On the own server's
/// and the own client's paths they never enter a message's map.
pub(crate) const HOP_BY_HOP: [&str; 8] = [
    "connection",
    "upgrade",
    "keep-alive",
    "proxy-connection",
    "te",
    "trailer",
    "transfer-encoding",
    "proxy-authorization",
];

/// Whether `field`, one of `fields`, belongs to one connection only: its
/// name is hop-by-hop, or a `connection` field names it (looked for only
/// when `named`: some `connection` field names more than `close` and
/// `keep-alive`).
pub(crate) fn is_hop_by_hop(
    field: &httparse::Header<'_>,
    fields: &[httparse::Header<'_>],
    named: bool,
) -> bool {
    HOP_BY_HOP
        .iter()
        .any(|name| field.name.eq_ignore_ascii_case(name))
        || (named
            && fields
                .iter()
                .filter(|f| f.name.eq_ignore_ascii_case(HOP_BY_HOP[0]))
                .flat_map(|f| f.value.split(|&b| b == b','))
                .any(|token| {
                    token
                        .trim_ascii()
                        .eq_ignore_ascii_case(field.name.as_bytes())
                }))
}
