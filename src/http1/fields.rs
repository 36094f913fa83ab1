//! Header fields out of a head `httparse` parsed: their places noted while
//! the buffer is borrowed, then taken as slices of the head's bytes once
//! it is split off (no copy of any value).

use bytes::{Bytes, BytesMut};
use http::header::{HeaderMap, HeaderName, HeaderValue};

use super::{MAX_HEAD, MAX_HEADERS, WireError};

/// Header fields the proxy may add to a request's map on its way to a
/// release: a `host`, with room to spare (the forwarding fields and the
/// request's id are written beside the map, not into it). A map built too
/// small would grow, moving every field, on the request path.
pub(crate) const ADDED_TO_REQUESTS: usize = 2;
/// Header fields the proxy may add to an answer on its way back: the
/// request's id, the version, a cookie, `strict-transport-security`.
pub(crate) const ADDED_TO_ANSWERS: usize = 4;

/// Where each parsed field's name and value lie in the buffer, so that
/// the fields can be built once the head is split off it. A head is at
/// most [`MAX_HEAD`] bytes, so every place fits in 16 bits (which keeps
/// this small enough to set up for every head).
pub(crate) struct Fields {
    /// Name start, name length, value start, value length.
    at: [(u16, u16, u16, u16); MAX_HEADERS],
    count: usize,
}

impl Fields {
    /// The places of `parsed`, fields of a head of at most [`MAX_HEAD`]
    /// bytes at the start of `buf`.
    pub(crate) fn of(parsed: &[httparse::Header<'_>], buf: &[u8]) -> Self {
        Self::kept(parsed, buf, |_| true)
    }

    /// The places of the fields of `parsed` that `keep` keeps.
    pub(crate) fn kept(
        parsed: &[httparse::Header<'_>],
        buf: &[u8],
        mut keep: impl FnMut(&httparse::Header<'_>) -> bool,
    ) -> Self {
        let base = buf.as_ptr() as usize;
        let offset = |part: &[u8]| (part.as_ptr() as usize - base) as u16;
        // Filled where it is returned to, not built aside and copied there.
        let mut fields = Self {
            at: [(0, 0, 0, 0); MAX_HEADERS],
            count: 0,
        };
        for field in parsed.iter().filter(|f| keep(f)) {
            debug_assert!(field.value.as_ptr() as usize + field.value.len() - base <= MAX_HEAD);
            fields.at[fields.count] = (
                offset(field.name.as_bytes()),
                field.name.len() as u16,
                offset(field.value),
                field.value.len() as u16,
            );
            fields.count += 1;
        }
        fields
    }

    /// The fields, their values sharing `head`'s bytes, in a map with
    /// room for `added` more.
    pub(crate) fn to_map(&self, head: &Bytes, added: usize) -> Result<HeaderMap, WireError> {
        let mut headers = HeaderMap::with_capacity(self.count + added);
        for &(name_at, name_len, value_at, value_len) in &self.at[..self.count] {
            let (name_at, value_at) = (usize::from(name_at), usize::from(value_at));
            let name = &head[name_at..name_at + usize::from(name_len)];
            let value = head.slice(value_at..value_at + usize::from(value_len));
            let (Ok(name), Ok(value)) = (
                HeaderName::from_bytes(name),
                HeaderValue::from_maybe_shared(value),
            ) else {
                return Err(WireError::Malformed(format!(
                    "its header field {:?}",
                    String::from_utf8_lossy(name)
                )));
            };
            headers.append(name, value);
        }
        Ok(headers)
    }
}

/// Parses a chunked body's trailer section at the start of `buf` (after
/// its last chunk): the fields, once whole, taken out of `buf`.
pub(crate) fn parse_trailers(buf: &mut BytesMut) -> Result<Option<HeaderMap>, WireError> {
    let mut fields = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let (len, found) = match httparse::parse_headers(buf, &mut fields) {
        Ok(httparse::Status::Complete((len, _))) if len > MAX_HEAD => {
            return Err(WireError::TooLarge(MAX_HEAD));
        }
        Ok(httparse::Status::Complete((len, found))) => (len, Fields::of(found, buf)),
        Ok(httparse::Status::Partial) if buf.len() >= MAX_HEAD => {
            return Err(WireError::TooLarge(MAX_HEAD));
        }
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(e) => {
            return Err(WireError::Malformed(format!("its trailer fields: {e}")));
        }
    };
    let section = buf.split_to(len).freeze();
    found.to_map(&section, 0).map(Some)
}
