//! An answer's header fields carried as the lines the client gets, not in
//! a map: the proxy's own client writes there the fields of an instance's
//! answer that the proxy neither reads nor replaces, and the listener's
//! own server copies the lines out after the status line. Each field
//! costs a copy of its bytes instead of a name lookup, a validation, a
//! hash and an insert into a map that is only iterated once to write it.
//!
//! Only an answer that goes to a client of the own HTTP/1.1 server and is
//! not compared with a shadow's carries fields so, and never those the
//! proxy reads or replaces (framing, the request's id, the version, HSTS,
//! and the links it rewrites): anything that reads an answer's fields
//! reads its map.

/// Header fields written out as `name: value\r\n` lines, the names as the
/// instance spelled them.
#[derive(Debug, Default)]
pub struct VerbatimFields {
    lines: Vec<u8>,
    /// Whether one of the fields is a `date`.
    dated: bool,
}

impl VerbatimFields {
    /// Room for the fields of a head of `len` bytes.
    pub(crate) fn with_capacity(len: usize) -> Self {
        Self {
            lines: Vec::with_capacity(len),
            dated: false,
        }
    }

    /// Adds a field parsed from an instance's answer (its name a token,
    /// its value free of line breaks: `httparse` saw to both).
    pub(crate) fn push(&mut self, name: &str, value: &[u8]) {
        self.dated |= name.eq_ignore_ascii_case(http::header::DATE.as_str());
        self.lines.extend_from_slice(name.as_bytes());
        self.lines.extend_from_slice(b": ");
        self.lines.extend_from_slice(value);
        self.lines.extend_from_slice(b"\r\n");
    }

    /// The lines, each ended by CRLF.
    pub fn lines(&self) -> &[u8] {
        &self.lines
    }

    /// Whether the fields include a `date`.
    pub fn dated(&self) -> bool {
        self.dated
    }
}

/// A response body that may carry its answer's fields as lines
/// ([`VerbatimFields`]), which the listener's own HTTP/1.1 server writes
/// after the status line, before the fields of the response's map.
pub trait WithVerbatimFields {
    fn verbatim_fields(&self) -> Option<&VerbatimFields> {
        None
    }
}

impl WithVerbatimFields for axum::body::Body {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fields_are_written_as_lines_in_the_order_they_came() {
        let mut fields = VerbatimFields::with_capacity(64);
        fields.push("Content-Type", b"text/plain");
        fields.push("X-Empty", b"");
        fields.push("X-Time", b"12:30");
        assert_eq!(
            fields.lines(),
            b"Content-Type: text/plain\r\nX-Empty: \r\nX-Time: 12:30\r\n"
        );
        assert!(!fields.dated());
    }

    #[test]
    fn a_date_among_the_fields_is_noticed_whatever_its_case() {
        let mut fields = VerbatimFields::default();
        fields.push("DATE", b"Tue, 01 Dec 2026 21:00:00 GMT");
        assert!(fields.dated());
    }
}
