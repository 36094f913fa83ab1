//! The HTTP/1.1 wire format both sides of the proxy speak: the listener's
//! own server for client connections and the proxy's own client for
//! connections to instances. Header fields are taken out of a parsed head
//! without copying ([`fields`]), bodies are delimited by a length, chunks
//! or the close of the connection ([`framing`]), read into buffers no
//! larger than what they hold ([`read`]); an answer's fields can go to
//! the client as written lines, without a map ([`verbatim`]).

pub(crate) mod fields;
pub(crate) mod framing;
pub(crate) mod read;
pub(crate) mod verbatim;

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
    if digits.is_empty() {
        return None;
    }
    digits.iter().try_fold(0u64, |length, &digit| {
        if !digit.is_ascii_digit() {
            return None;
        }
        length.checked_mul(10)?.checked_add(u64::from(digit - b'0'))
    })
}

/// What a `connection` field's value says: `close`, `keep-alive`,
/// `upgrade`, and whether it names any other field (which is then
/// hop-by-hop too).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(crate) struct ConnectionTokens {
    pub close: bool,
    pub keep_alive: bool,
    pub upgrade: bool,
    pub names_fields: bool,
}

impl ConnectionTokens {
    pub(crate) fn of(value: &[u8]) -> Self {
        let mut tokens = Self::default();
        for token in value.split(|&b| b == b',').map(<[u8]>::trim_ascii) {
            if token.eq_ignore_ascii_case(b"close") {
                tokens.close = true;
            } else if token.eq_ignore_ascii_case(b"keep-alive") {
                tokens.keep_alive = true;
            } else if token.eq_ignore_ascii_case(b"upgrade") {
                tokens.upgrade = true;
            } else if !token.is_empty() {
                tokens.names_fields = true;
            }
        }
        tokens
    }
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
/// when `named`: some `connection` field names another field,
/// [`ConnectionTokens::names_fields`]).
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connection_tokens_are_read_whatever_their_case_and_spacing() {
        assert_eq!(
            ConnectionTokens::of(b" Keep-Alive , CLOSE,,upgrade"),
            ConnectionTokens {
                close: true,
                keep_alive: true,
                upgrade: true,
                names_fields: false,
            }
        );
        assert!(ConnectionTokens::of(b"close, X-Hop").names_fields);
        assert_eq!(ConnectionTokens::of(b""), ConnectionTokens::default());
    }
}
