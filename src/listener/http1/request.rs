//! A client's request head, parsed with `httparse`: the request, how its
//! body is delimited, and whether the connection may carry another one.
//! A head this server does not take is left whole in the buffer for
//! hyper, which answers it as before (upgrades, `Expect`, HTTP/1.0 and
//! HTTP/2, heads that break the syntax or are too large).

use std::mem::MaybeUninit;

use bytes::BytesMut;
use http::header::{self, HeaderName};
use http::{Method, Request, Uri, Version};

use crate::http1::ConnectionTokens;
use crate::http1::fields::Fields;
use crate::http1::framing::Framing;
use crate::http1::{MAX_HEAD, MAX_HEADERS};

/// What the bytes read so far hold.
#[derive(Debug)]
// Made once per request and moved once: boxing the head would cost an
// allocation per request.
#[allow(clippy::large_enum_variant)]
pub(super) enum Parsed {
    /// Not a whole head yet: read more.
    Partial,
    /// A head for hyper: the connection goes to it from this head on.
    Handoff,
    /// A head taken out of the buffer whose target or fields are not
    /// valid: 400, and the connection closes.
    Invalid,
    Request(Head),
}

/// A request head, taken out of the buffer.
#[derive(Debug)]
pub(super) struct Head {
    pub request: Request<()>,
    pub body: Framing,
    /// Whether the client lets the connection carry another request.
    pub keep_alive: bool,
}

/// How the fields read say the body is framed, and what the connection
/// may do next.
struct Framed {
    length: Option<u64>,
    chunked: bool,
    keep_alive: bool,
    /// Whether `connection` names fields besides `close` and `keep-alive`
    /// (they are hop-by-hop too).
    names_fields: bool,
}

pub(super) fn parse(buf: &mut BytesMut) -> Parsed {
    let mut slots = [const { MaybeUninit::uninit() }; MAX_HEADERS];
    let mut parsed = httparse::Request::new(&mut []);
    let len = match httparse::ParserConfig::default().parse_request_with_uninit_headers(
        &mut parsed,
        buf,
        &mut slots,
    ) {
        Ok(httparse::Status::Complete(len)) if len <= MAX_HEAD => len,
        Ok(httparse::Status::Partial) if buf.len() < MAX_HEAD => return Parsed::Partial,
        _ => return Parsed::Handoff,
    };
    if parsed.version != Some(1) {
        return Parsed::Handoff;
    }
    let Some(method) = parsed
        .method
        .and_then(|m| Method::from_bytes(m.as_bytes()).ok())
    else {
        return Parsed::Handoff;
    };
    if method == Method::CONNECT {
        return Parsed::Handoff;
    }
    let Some(framed) = framed(parsed.headers) else {
        return Parsed::Handoff;
    };
    let target = parsed.path.unwrap_or("/");
    let target_at = target.as_ptr() as usize - buf.as_ptr() as usize;
    let target_len = target.len();
    // The hop-by-hop fields are this connection's: they stay out of the
    // request's map, so that none of them costs a hash to add or remove.
    let fields = Fields::kept(parsed.headers, buf, |field| {
        !crate::http1::is_hop_by_hop(field, parsed.headers, framed.names_fields)
    });
    // The target and the field values share the head's bytes.
    let head = buf.split_to(len).freeze();
    let Ok(uri) = Uri::from_maybe_shared(head.slice(target_at..target_at + target_len)) else {
        return Parsed::Invalid;
    };
    let Ok(headers) = fields.to_map(&head, crate::http1::fields::ADDED_TO_REQUESTS) else {
        return Parsed::Invalid;
    };
    let body = match framed {
        Framed { chunked: true, .. } => Framing::chunked(),
        Framed {
            length: Some(length),
            ..
        } => Framing::Length(length),
        _ => Framing::empty(),
    };
    let mut request = Request::new(());
    *request.method_mut() = method;
    *request.uri_mut() = uri;
    *request.version_mut() = Version::HTTP_11;
    *request.headers_mut() = headers;
    Parsed::Request(Head {
        request,
        body,
        keep_alive: framed.keep_alive,
    })
}

/// The framing the fields call for; `None` for a request this server
/// leaves to hyper: one that asks for another protocol or for `100
/// Continue`, a transfer coding other than chunked alone, both a length
/// and a coding, or a length that is not one number.
fn framed(fields: &[httparse::Header<'_>]) -> Option<Framed> {
    let mut framed = Framed {
        length: None,
        chunked: false,
        keep_alive: true,
        names_fields: false,
    };
    for field in fields {
        let name = field.name.as_bytes();
        let value = field.value;
        if name.eq_ignore_ascii_case(header::CONTENT_LENGTH.as_str().as_bytes()) {
            let length = crate::http1::content_length(value)?;
            if framed.length.is_some_and(|l| l != length) {
                return None;
            }
            framed.length = Some(length);
        } else if name.eq_ignore_ascii_case(header::TRANSFER_ENCODING.as_str().as_bytes()) {
            if framed.chunked || !value.trim_ascii().eq_ignore_ascii_case(b"chunked") {
                return None;
            }
            framed.chunked = true;
        } else if name.eq_ignore_ascii_case(header::CONNECTION.as_str().as_bytes()) {
            let tokens = ConnectionTokens::of(value);
            if tokens.upgrade {
                return None;
            }
            framed.keep_alive &= !tokens.close;
            framed.names_fields |= tokens.names_fields;
        } else if is(name, &header::UPGRADE) || is(name, &header::EXPECT) {
            return None;
        }
    }
    if framed.chunked && framed.length.is_some() {
        return None;
    }
    Some(framed)
}

fn is(name: &[u8], header: &HeaderName) -> bool {
    name.eq_ignore_ascii_case(header.as_str().as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parsed(wire: &[u8]) -> (Parsed, BytesMut) {
        let mut buf = BytesMut::from(wire);
        let parsed = parse(&mut buf);
        (parsed, buf)
    }

    fn taken(wire: &[u8]) -> (Head, BytesMut) {
        match parsed(wire) {
            (Parsed::Request(head), rest) => (head, rest),
            (other, _) => panic!("{:?}: {other:?}", String::from_utf8_lossy(wire)),
        }
    }

    #[test]
    fn a_plain_request_is_taken_whole_and_what_follows_stays() {
        let (head, rest) =
            taken(b"GET /a/b?c=d HTTP/1.1\r\nHost: example.test\r\nX-One: 1\r\n\r\nNEXT");
        assert_eq!(head.request.method(), Method::GET);
        assert_eq!(head.request.uri(), "/a/b?c=d");
        assert_eq!(head.request.headers()["host"], "example.test");
        assert_eq!(head.request.headers()["x-one"], "1");
        assert_eq!(head.body, Framing::empty());
        assert!(head.keep_alive);
        assert_eq!(&rest[..], b"NEXT");
    }

    #[test]
    fn bodies_are_framed_by_length_or_chunks() {
        let (head, _) = taken(b"POST / HTTP/1.1\r\ncontent-length: 12\r\n\r\n");
        assert_eq!(head.body, Framing::Length(12));
        let (head, _) = taken(b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n");
        assert_eq!(head.body, Framing::chunked());
        let (head, _) = taken(b"POST / HTTP/1.1\r\ncontent-length: 3\r\ncontent-length: 3\r\n\r\n");
        assert_eq!(head.body, Framing::Length(3));
    }

    #[test]
    fn hop_by_hop_fields_stay_out_of_the_request() {
        let (head, _) = taken(
            b"POST / HTTP/1.1\r\nConnection: keep-alive, X-Hop\r\nKeep-Alive: timeout=5\r\n\
              X-Hop: 1\r\nTE: trailers\r\nTransfer-Encoding: chunked\r\nX-Kept: 2\r\n\r\n",
        );
        assert_eq!(head.body, Framing::chunked());
        assert!(head.keep_alive);
        let names: Vec<&str> = head.request.headers().keys().map(|n| n.as_str()).collect();
        assert_eq!(names, ["x-kept"]);
    }

    #[test]
    fn connection_close_ends_the_connection_after_the_answer() {
        let (head, _) = taken(b"GET / HTTP/1.1\r\nConnection: keep-alive, Close\r\n\r\n");
        assert!(!head.keep_alive);
    }

    #[test]
    fn a_partial_head_waits_for_more() {
        assert!(matches!(
            parsed(b"GET / HTTP/1.1\r\nHost: a").0,
            Parsed::Partial
        ));
    }

    #[test]
    fn heads_for_hyper_stay_whole_in_the_buffer() {
        for wire in [
            &b"GET /chat HTTP/1.1\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n"[..],
            b"GET / HTTP/1.1\r\nupgrade: h2c\r\n\r\n",
            b"POST / HTTP/1.1\r\nExpect: 100-continue\r\ncontent-length: 1\r\n\r\n",
            b"GET / HTTP/1.0\r\n\r\n",
            b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n",
            b"CONNECT example.test:443 HTTP/1.1\r\n\r\n",
            b"POST / HTTP/1.1\r\ntransfer-encoding: gzip, chunked\r\n\r\n",
            b"POST / HTTP/1.1\r\ntransfer-encoding: chunked\r\ncontent-length: 3\r\n\r\n",
            b"POST / HTTP/1.1\r\ncontent-length: 3\r\ncontent-length: 4\r\n\r\n",
            b"POST / HTTP/1.1\r\ncontent-length: -1\r\n\r\n",
            b"GET / HTTP/1.1\r\nbad header\r\n\r\n",
            b"\x00\x01garbage\r\n\r\n",
        ] {
            let (parsed, rest) = parsed(wire);
            assert!(
                matches!(parsed, Parsed::Handoff),
                "{:?}: {parsed:?}",
                String::from_utf8_lossy(wire)
            );
            assert_eq!(&rest[..], wire, "nothing taken");
        }
    }

    #[test]
    fn a_head_over_the_limit_goes_to_hyper_to_be_refused() {
        let mut wire = b"GET / HTTP/1.1\r\nx-long: ".to_vec();
        wire.resize(MAX_HEAD + 10, b'a');
        assert!(matches!(parsed(&wire).0, Parsed::Handoff));
    }
}
