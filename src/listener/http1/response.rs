//! A response's head written out, and how its body goes: by its length,
//! in chunks when the length is not known, or not at all (to HEAD, 1xx,
//! 204, 304).

use std::cell::RefCell;
use std::io::Write;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use http::header::{self, HeaderMap};
use http::{HeaderValue, StatusCode};
use http_body::SizeHint;

use crate::http1::verbatim::VerbatimFields;

/// How a response's body goes out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Out {
    /// Nothing after the head.
    Nothing,
    /// Exactly this many bytes.
    Length(u64),
    Chunked,
}

/// What writing a response's head decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Written {
    /// How the body follows.
    pub framing: Out,
    /// Whether the connection closes after this response: asked for, or
    /// the response's own `connection` field says so.
    pub close: bool,
}

/// Writes the head of a response to a request (`head_request`: to HEAD)
/// into `out`: status line, fields (the `verbatim` lines, then the
/// map's), the framing the body calls for,
/// `date` unless present, `connection: close` when `close`. One pass
/// over the fields: the framing fields are read as they are written.
pub(super) fn write_head(
    status: StatusCode,
    verbatim: Option<&VerbatimFields>,
    headers: &HeaderMap,
    size: &SizeHint,
    head_request: bool,
    close: bool,
    out: &mut Vec<u8>,
) -> Written {
    out.extend_from_slice(b"HTTP/1.1 ");
    out.extend_from_slice(status.as_str().as_bytes());
    out.push(b' ');
    out.extend_from_slice(status.canonical_reason().unwrap_or("").as_bytes());
    out.extend_from_slice(b"\r\n");
    let bodiless = status.is_informational()
        || status == StatusCode::NO_CONTENT
        || status == StatusCode::NOT_MODIFIED;
    let mut given = None;
    let mut dated = false;
    let mut closing = false;
    if let Some(verbatim) = verbatim {
        // Neither framing nor `connection` among them (see VerbatimFields).
        out.extend_from_slice(verbatim.lines());
        dated = verbatim.dated();
    }
    for (name, value) in headers {
        if name == header::TRANSFER_ENCODING {
            // The framing is this server's to choose.
            continue;
        } else if name == header::CONTENT_LENGTH {
            // A length given is kept when it is one number (the first).
            match crate::http1::content_length(value.as_bytes()) {
                Some(length) if given.is_none() => given = Some(length),
                _ => continue,
            }
        } else if name == header::DATE {
            dated = true;
        } else if name == header::CONNECTION {
            closing |= has_close(value);
            if close && !closing {
                // Replaced by `connection: close` below.
                continue;
            }
        }
        out.extend_from_slice(name.as_str().as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(value.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    let framing = if bodiless || head_request {
        Out::Nothing
    } else if let Some(length) = given {
        Out::Length(length)
    } else if let Some(length) = size.exact() {
        let _ = write!(out, "content-length: {length}\r\n");
        Out::Length(length)
    } else {
        out.extend_from_slice(b"transfer-encoding: chunked\r\n");
        Out::Chunked
    };
    if close && !closing {
        out.extend_from_slice(b"connection: close\r\n");
    }
    if !dated {
        out.extend_from_slice(b"date: ");
        with_date(|date| out.extend_from_slice(date));
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"\r\n");
    Written {
        framing,
        close: close || closing,
    }
}

/// Whether a `connection` value says `close`.
pub(super) fn has_close(value: &HeaderValue) -> bool {
    crate::http1::ConnectionTokens::of(value.as_bytes()).close
}

/// The date of this second, as a `date` field writes it (IMF-fixdate),
/// made once a second per thread.
fn with_date(f: impl FnOnce(&[u8])) {
    thread_local! {
        static DATE: RefCell<(u64, [u8; 29])> = const { RefCell::new((u64::MAX, [0; 29])) };
    }
    let now = SystemTime::now();
    let second = now
        .duration_since(UNIX_EPOCH)
        .unwrap_or(Duration::ZERO)
        .as_secs();
    DATE.with_borrow_mut(|(at, text)| {
        if *at != second {
            let formatted = httpdate::fmt_http_date(now);
            if formatted.len() == text.len() {
                text.copy_from_slice(formatted.as_bytes());
                *at = second;
            }
        }
        f(text);
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    fn head(
        status: u16,
        fields: &[(&str, &str)],
        size: SizeHint,
        head_request: bool,
        close: bool,
    ) -> (String, Out) {
        let mut headers = HeaderMap::new();
        for (name, value) in fields {
            headers.append(
                header::HeaderName::from_bytes(name.as_bytes()).expect("name"),
                HeaderValue::from_str(value).expect("value"),
            );
        }
        let mut out = Vec::new();
        let written = write_head(
            StatusCode::from_u16(status).expect("status"),
            None,
            &headers,
            &size,
            head_request,
            close,
            &mut out,
        );
        (String::from_utf8(out).expect("text"), written.framing)
    }

    #[test]
    fn verbatim_fields_come_first_and_their_date_stands() {
        let mut verbatim = VerbatimFields::with_capacity(64);
        verbatim.push("Server", b"origin");
        verbatim.push("Date", b"Tue, 01 Dec 2026 21:00:00 GMT");
        let mut headers = HeaderMap::new();
        headers.insert("x-request-id", HeaderValue::from_static("ours"));
        let mut out = Vec::new();
        let written = write_head(
            StatusCode::OK,
            Some(&verbatim),
            &headers,
            &SizeHint::with_exact(2),
            false,
            false,
            &mut out,
        );
        assert_eq!(
            String::from_utf8(out).expect("text"),
            "HTTP/1.1 200 OK\r\nServer: origin\r\nDate: Tue, 01 Dec 2026 21:00:00 GMT\r\n\
             x-request-id: ours\r\ncontent-length: 2\r\n\r\n"
        );
        assert_eq!(written.framing, Out::Length(2));
    }

    #[test]
    fn a_known_length_is_written_and_kept() {
        let (text, out) = head(200, &[], SizeHint::with_exact(5), false, false);
        assert!(
            text.starts_with("HTTP/1.1 200 OK\r\ncontent-length: 5\r\n"),
            "{text}"
        );
        assert!(text.contains("\r\ndate: "), "{text}");
        assert!(text.ends_with("\r\n\r\n"));
        assert_eq!(out, Out::Length(5));
        let (text, out) = head(
            200,
            &[("content-length", "7")],
            SizeHint::new(),
            false,
            false,
        );
        assert_eq!(text.matches("content-length").count(), 1, "{text}");
        assert_eq!(out, Out::Length(7));
    }

    #[test]
    fn an_unknown_length_goes_in_chunks() {
        let (text, out) = head(
            200,
            &[("transfer-encoding", "gzip")],
            SizeHint::new(),
            false,
            false,
        );
        assert!(text.contains("transfer-encoding: chunked\r\n"), "{text}");
        assert!(!text.contains("gzip"), "{text}");
        assert_eq!(out, Out::Chunked);
    }

    #[test]
    fn head_204_and_304_answers_carry_no_body() {
        let (text, out) = head(
            200,
            &[("content-length", "9")],
            SizeHint::new(),
            true,
            false,
        );
        assert!(text.contains("content-length: 9"), "{text}");
        assert_eq!(out, Out::Nothing);
        for status in [204, 304] {
            let (text, out) = head(status, &[], SizeHint::new(), false, false);
            assert!(!text.contains("transfer-encoding"), "{text}");
            assert_eq!(out, Out::Nothing);
        }
    }

    #[test]
    fn a_closing_connection_says_so_once_and_a_given_date_is_kept() {
        let (text, _) = head(
            200,
            &[
                ("connection", "keep-alive"),
                ("date", "Tue, 01 Dec 2026 10:00:00 GMT"),
            ],
            SizeHint::with_exact(0),
            false,
            true,
        );
        assert_eq!(text.matches("connection:").count(), 1, "{text}");
        assert!(text.contains("connection: close\r\n"), "{text}");
        assert_eq!(text.matches("date:").count(), 1, "{text}");
        assert!(text.contains("10:00:00 GMT"), "{text}");
    }
}
