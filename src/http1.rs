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
