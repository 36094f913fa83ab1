//! The heads of an HTTP/1.1 exchange with an instance: the request's,
//! written out by the proxy, and the answer's, parsed with `httparse`.

use std::io::Write;
use std::mem::MaybeUninit;

use bytes::BytesMut;
use http::header::{self, HeaderMap, HeaderName};
use http::{Method, Response, StatusCode, Version};

use super::UpstreamError;
use crate::http1::framing::Framing;
use crate::http1::{ConnectionTokens, is_hop_by_hop};
use crate::proxy::headers::Forwarding;

pub(crate) use crate::http1::MAX_HEAD;
use crate::http1::MAX_HEADERS;
use crate::http1::fields::Fields;
use crate::http1::verbatim::VerbatimFields;
use crate::proxy::forward::X_SWITCHYARD_VERSION;
use crate::proxy::request_id::X_REQUEST_ID;
use crate::proxy::rewrite::LINKING;

/// How a request's body goes out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Upload {
    /// No body at all.
    None,
    /// As many bytes as the `content-length` written says.
    Length,
    /// In chunks, its length unknown in advance.
    Chunked,
}

/// Writes the head of a request into `out`: request line, header fields
/// (the framing ones replaced by what the body calls for) and then the
/// proxy's `forwarding` ones, blank line. `length` is the body's length
/// when known, `empty` whether it has none.
pub(crate) fn write_request(
    method: &Method,
    uri: &http::Uri,
    headers: &HeaderMap,
    forwarding: Option<&Forwarding<'_>>,
    empty: bool,
    length: Option<u64>,
    out: &mut Vec<u8>,
) -> Upload {
    out.extend_from_slice(method.as_str().as_bytes());
    out.push(b' ');
    match (forwarding, uri.scheme(), uri.path_and_query()) {
        // The client's request: the release's part of its target.
        (Some(forwarding), _, _) => forwarding.write_target(uri, out),
        (None, None, Some(target)) => out.extend_from_slice(target.as_str().as_bytes()),
        (None, None, None) => out.push(b'/'),
        // A request sent in absolute form goes out in absolute form.
        (None, Some(_), _) => out.extend_from_slice(uri.to_string().as_bytes()),
    }
    out.extend_from_slice(b" HTTP/1.1\r\n");
    let added = forwarding.into_iter().flat_map(Forwarding::fields);
    for (name, value) in headers.iter().chain(added) {
        if name == header::CONTENT_LENGTH || name == header::TRANSFER_ENCODING {
            continue;
        }
        out.extend_from_slice(name.as_str().as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(value.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    let upload = if empty {
        // Methods that usually carry a body say that this one has none.
        if matches!(*method, Method::POST | Method::PUT | Method::PATCH) {
            out.extend_from_slice(b"content-length: 0\r\n");
        }
        Upload::None
    } else if let Some(length) = length {
        let _ = write!(out, "content-length: {length}\r\n");
        Upload::Length
    } else {
        out.extend_from_slice(b"transfer-encoding: chunked\r\n");
        Upload::Chunked
    };
    out.extend_from_slice(b"\r\n");
    upload
}

/// Where an answer's header fields go.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum AnswerFields {
    /// All of them into the answer's map.
    Map,
    /// Into the map only those the proxy reads or replaces ([`MAPPED`],
    /// and with `links` those whose links it rewrites, [`LINKING`]); the
    /// others as lines for the client ([`VerbatimFields`]).
    Verbatim { links: bool },
}

impl AnswerFields {
    /// Whether a field of this name goes into the map.
    fn mapped(self, name: &str) -> bool {
        let among =
            |names: &[HeaderName]| names.iter().any(|n| name.eq_ignore_ascii_case(n.as_str()));
        match self {
            AnswerFields::Map => true,
            AnswerFields::Verbatim { links } => among(&MAPPED) || (links && among(&LINKING)),
        }
    }
}

/// Fields of an answer that stay in its map when the others go verbatim:
/// the length the listener reads, and those the proxy replaces.
const MAPPED: [HeaderName; 4] = [
    header::CONTENT_LENGTH,
    X_REQUEST_ID,
    X_SWITCHYARD_VERSION,
    header::STRICT_TRANSPORT_SECURITY,
];

/// An answer's head, read whole.
#[derive(Debug)]
pub(crate) struct Head {
    pub response: Response<()>,
    /// The fields that are not in the response's map.
    pub verbatim: VerbatimFields,
    /// How its body is delimited.
    pub framing: Framing,
    /// Whether the connection may carry another request after this
    /// answer (neither an HTTP/1.0 answer without keep-alive, nor
    /// `Connection: close`, nor a body that ends with the connection).
    pub keep_alive: bool,
}

/// What the bytes read so far hold.
#[derive(Debug)]
pub(crate) enum Parsed {
    /// Not a whole head yet: read more.
    Partial,
    /// An interim (1xx) answer, taken from the buffer and passed over.
    Interim,
    /// The final answer's head, taken from the buffer.
    Final(Head),
}

/// Parses the answer head at the start of `buf` to a request made with
/// `method`, its fields put where `fields` says; a whole head is taken
/// out of `buf`.
pub(crate) fn parse_response(
    buf: &mut BytesMut,
    method: &Method,
    answer_fields: AnswerFields,
) -> Result<Parsed, UpstreamError> {
    // Slots httparse fills, left uninitialized (100 of them to set up
    // would cost more than parsing a usual head).
    let mut fields = [const { MaybeUninit::uninit() }; MAX_HEADERS];
    let mut parsed = httparse::Response::new(&mut []);
    let parsing = httparse::ParserConfig::default().parse_response_with_uninit_headers(
        &mut parsed,
        buf,
        &mut fields,
    );
    let len = match parsing {
        Ok(httparse::Status::Complete(len)) => len,
        Ok(httparse::Status::Partial) if buf.len() >= MAX_HEAD => {
            return Err(UpstreamError::HeadTooLarge(MAX_HEAD));
        }
        Ok(httparse::Status::Partial) => return Ok(Parsed::Partial),
        Err(httparse::Error::TooManyHeaders) => {
            return Err(UpstreamError::Malformed(format!(
                "its answer has more than {MAX_HEADERS} header fields"
            )));
        }
        Err(e) => {
            return Err(UpstreamError::Malformed(format!("its answer's head: {e}")));
        }
    };
    if len > MAX_HEAD {
        return Err(UpstreamError::HeadTooLarge(MAX_HEAD));
    }
    let code = parsed.code.unwrap_or_default();
    let status = StatusCode::from_u16(code)
        .map_err(|_| UpstreamError::Malformed(format!("its answer's status {code}")))?;
    if status.is_informational() {
        if status == StatusCode::SWITCHING_PROTOCOLS {
            return Err(UpstreamError::Malformed(
                "it switched protocols on a request that asked for none".into(),
            ));
        }
        // 100 Continue, 103 Early Hints: the final answer follows.
        let _ = buf.split_to(len);
        return Ok(Parsed::Interim);
    }
    let version = if parsed.version == Some(0) {
        Version::HTTP_10
    } else {
        Version::HTTP_11
    };
    let said = framing_of(parsed.headers, status, method, version)?;
    let mut verbatim = match answer_fields {
        AnswerFields::Verbatim { .. } => VerbatimFields::with_capacity(len),
        AnswerFields::Map => VerbatimFields::default(),
    };
    // The hop-by-hop fields are not the client's: they stay out of the
    // answer's map, so that none of them costs a hash to add or remove.
    // Verbatim, those the map does not need are written as lines instead.
    let fields = Fields::kept(parsed.headers, buf, |field| {
        if is_hop_by_hop(field, parsed.headers, said.names_fields)
            || (said.drop_length
                && field
                    .name
                    .eq_ignore_ascii_case(header::CONTENT_LENGTH.as_str()))
        {
            return false;
        }
        if !answer_fields.mapped(field.name) {
            verbatim.push(field.name, field.value);
            return false;
        }
        true
    });
    // The header values share the head's bytes (no copy each).
    let head = buf.split_to(len).freeze();
    let headers = fields.to_map(&head, crate::http1::fields::ADDED_TO_ANSWERS)?;
    let (framing, keep_alive) = (said.framing, said.keep_alive);
    let mut response = Response::new(());
    *response.status_mut() = status;
    *response.version_mut() = version;
    *response.headers_mut() = headers;
    Ok(Parsed::Final(Head {
        response,
        verbatim,
        framing,
        keep_alive,
    }))
}

/// What an answer's fields say of its body and its connection.
struct Said {
    framing: Framing,
    /// Whether the connection may carry another request afterwards.
    keep_alive: bool,
    /// A `content-length` beside `transfer-encoding`, which is dropped.
    drop_length: bool,
    /// Whether `connection` names fields besides `close` and `keep-alive`
    /// (they are hop-by-hop too).
    names_fields: bool,
}

/// How the answer's body is delimited (RFC 9112 6.3), and whether the
/// connection can be kept for another request afterwards, read from the
/// fields as parsed. A `content-length` beside `transfer-encoding` is
/// dropped (the latter wins, and the connection is not reused).
fn framing_of(
    fields: &[httparse::Header<'_>],
    status: StatusCode,
    method: &Method,
    version: Version,
) -> Result<Said, UpstreamError> {
    let is = |field: &httparse::Header<'_>, name: &header::HeaderName| {
        field.name.eq_ignore_ascii_case(name.as_str())
    };
    let mut said = Said {
        framing: Framing::UntilClose,
        keep_alive: version == Version::HTTP_11,
        drop_length: false,
        names_fields: false,
    };
    for field in fields.iter().filter(|f| is(f, &header::CONNECTION)) {
        let tokens = ConnectionTokens::of(field.value);
        said.keep_alive |= tokens.keep_alive && version == Version::HTTP_10;
        said.keep_alive &= !tokens.close;
        said.names_fields |= tokens.names_fields;
    }
    if *method == Method::HEAD
        || status == StatusCode::NO_CONTENT
        || status == StatusCode::NOT_MODIFIED
    {
        said.framing = Framing::empty();
        return Ok(said);
    }
    let last_coding = fields.iter().rfind(|f| is(f, &header::TRANSFER_ENCODING));
    let mut length: Option<u64> = None;
    for field in fields.iter().filter(|f| is(f, &header::CONTENT_LENGTH)) {
        if last_coding.is_some() {
            said.drop_length = true;
            said.keep_alive = false;
            break;
        }
        for part in field.value.split(|&b| b == b',') {
            let parsed = crate::http1::content_length(part).ok_or_else(|| {
                UpstreamError::Malformed(format!(
                    "its answer's content-length {:?}",
                    String::from_utf8_lossy(field.value)
                ))
            })?;
            if length.is_some_and(|l| l != parsed) {
                return Err(UpstreamError::Malformed(
                    "its answer has content-length values that differ".into(),
                ));
            }
            length = Some(parsed);
        }
    }
    match (last_coding, length) {
        (Some(coding), _) => {
            let chunked = coding
                .value
                .rsplit(|&b| b == b',')
                .next()
                .is_some_and(|last| last.trim_ascii().eq_ignore_ascii_case(b"chunked"));
            if chunked {
                said.framing = Framing::chunked();
            } else {
                // A coding other than chunked last: the body ends with the
                // connection.
                said.keep_alive = false;
            }
        }
        (None, Some(length)) => said.framing = Framing::Length(length),
        (None, None) => said.keep_alive = false,
    }
    Ok(said)
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    fn parse(wire: &[u8], method: Method) -> (Result<Parsed, UpstreamError>, BytesMut) {
        let mut buf = BytesMut::from(wire);
        let parsed = parse_response(&mut buf, &method, AnswerFields::Map);
        (parsed, buf)
    }

    fn head(wire: &[u8], method: Method) -> (Head, BytesMut) {
        head_with(wire, method, AnswerFields::Map)
    }

    fn head_with(wire: &[u8], method: Method, fields: AnswerFields) -> (Head, BytesMut) {
        let mut buf = BytesMut::from(wire);
        match parse_response(&mut buf, &method, fields) {
            Ok(Parsed::Final(head)) => (head, buf),
            other => panic!("not a final head: {other:?}"),
        }
    }

    #[test]
    fn a_head_with_a_length_is_taken_out_and_its_body_left() {
        let (head, rest) = head(
            b"HTTP/1.1 201 Created\r\nContent-Length: 5\r\nX-A: 1\r\nx-a: 2\r\n\r\nhello",
            Method::GET,
        );
        assert_eq!(head.response.status(), StatusCode::CREATED);
        assert_eq!(head.framing, Framing::Length(5));
        assert!(head.keep_alive);
        let values: Vec<_> = head.response.headers().get_all("x-a").iter().collect();
        assert_eq!(values, ["1", "2"]);
        assert_eq!(&rest[..], b"hello");
    }

    #[test]
    fn an_answers_hop_by_hop_fields_stay_out_of_its_map() {
        let (head, _) = head(
            b"HTTP/1.1 200 OK\r\nConnection: keep-alive, X-Hop\r\nKeep-Alive: timeout=5\r\n\
              X-Hop: 1\r\nX-Kept: 2\r\nTransfer-Encoding: chunked\r\nTrailer: x-sum\r\n\
              Upgrade: h2c\r\n\r\n",
            Method::GET,
        );
        assert_eq!(head.framing, Framing::chunked());
        assert!(head.keep_alive);
        let names: Vec<&str> = head.response.headers().keys().map(|n| n.as_str()).collect();
        assert_eq!(names, ["x-kept"]);
    }

    #[test]
    fn verbatim_the_fields_nobody_reads_become_lines_and_the_rest_stay_mapped() {
        let (head, rest) = head_with(
            b"HTTP/1.1 200 OK\r\nServer: origin\r\nContent-Length: 2\r\nConnection: X-Hop\r\n\
               X-Hop: 1\r\nX-Request-Id: theirs\r\nset-cookie: a=1\r\nDate:Tue, 01 Dec 2026 \
               21:00:00 GMT\r\nStrict-Transport-Security: max-age=1\r\n\r\nok",
            Method::GET,
            AnswerFields::Verbatim { links: false },
        );
        assert_eq!(
            std::str::from_utf8(head.verbatim.lines()).expect("text"),
            "Server: origin\r\nset-cookie: a=1\r\nDate: Tue, 01 Dec 2026 21:00:00 GMT\r\n"
        );
        assert!(head.verbatim.dated());
        let mapped: Vec<_> = head.response.headers().keys().map(|n| n.as_str()).collect();
        assert_eq!(
            mapped,
            [
                "content-length",
                "x-request-id",
                "strict-transport-security"
            ]
        );
        assert_eq!(head.framing, Framing::Length(2));
        assert_eq!(&rest[..], b"ok");
    }

    #[test]
    fn verbatim_with_links_to_rewrite_the_linking_fields_stay_mapped() {
        let (head, _) = head_with(
            b"HTTP/1.1 302 Found\r\nServer: origin\r\nLocation: /next\r\nRefresh: 1\r\n\
               Content-Location: /here\r\nSet-Cookie: a=1\r\nContent-Length: 0\r\n\r\n",
            Method::GET,
            AnswerFields::Verbatim { links: true },
        );
        assert_eq!(head.verbatim.lines(), b"Server: origin\r\n");
        let mapped: Vec<_> = head.response.headers().keys().map(|n| n.as_str()).collect();
        assert_eq!(
            mapped,
            [
                "location",
                "refresh",
                "content-location",
                "set-cookie",
                "content-length"
            ]
        );
    }

    #[test]
    fn partial_heads_wait_for_more() {
        assert!(matches!(
            parse(b"HTTP/1.1 200 OK\r\ncontent-le", Method::GET).0,
            Ok(Parsed::Partial)
        ));
    }

    #[test]
    fn interim_answers_are_passed_over_but_a_switch_of_protocols_is_refused() {
        let wire: &[u8] =
            b"HTTP/1.1 103 Early Hints\r\nlink: </a.css>\r\n\r\nHTTP/1.1 204 No Content\r\n\r\n";
        let (parsed, mut rest) = parse(wire, Method::GET);
        assert!(matches!(parsed, Ok(Parsed::Interim)));
        let parsed = parse_response(&mut rest, &Method::GET, AnswerFields::Map).expect("final");
        let Parsed::Final(head) = parsed else {
            panic!("not final: {parsed:?}")
        };
        assert_eq!(head.response.status(), StatusCode::NO_CONTENT);
        assert!(head.framing.is_done());
        let (switched, _) = parse(
            b"HTTP/1.1 101 Switching Protocols\r\nupgrade: x\r\n\r\n",
            Method::GET,
        );
        assert!(matches!(switched, Err(UpstreamError::Malformed(_))));
    }

    #[test]
    fn oversized_heads_and_too_many_fields_are_refused() {
        let mut wire = b"HTTP/1.1 200 OK\r\nx-big: ".to_vec();
        wire.resize(MAX_HEAD + 10, b'a');
        let (parsed, _) = parse(&wire, Method::GET);
        let error = parsed.expect_err("too large");
        assert!(
            matches!(error, UpstreamError::HeadTooLarge(MAX_HEAD)),
            "{error}"
        );
        assert!(error.to_string().contains("larger than"), "{error}");

        let mut many = b"HTTP/1.1 200 OK\r\n".to_vec();
        for i in 0..=MAX_HEADERS {
            many.extend_from_slice(format!("x-{i}: v\r\n").as_bytes());
        }
        many.extend_from_slice(b"\r\n");
        let (parsed, _) = parse(&many, Method::GET);
        assert!(matches!(parsed, Err(UpstreamError::Malformed(_))));
    }

    #[test]
    fn bodies_are_framed_by_method_status_and_fields() {
        let cases: [(&[u8], Method, Framing, bool); 8] = [
            (
                b"HTTP/1.1 200 OK\r\ncontent-length: 9\r\n\r\n",
                Method::HEAD,
                Framing::empty(),
                true,
            ),
            (
                b"HTTP/1.1 304 Not Modified\r\ncontent-length: 9\r\n\r\n",
                Method::GET,
                Framing::empty(),
                true,
            ),
            (
                b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n",
                Method::GET,
                Framing::chunked(),
                true,
            ),
            (
                b"HTTP/1.1 200 OK\r\ntransfer-encoding: gzip, chunked\r\ncontent-length: 3\r\n\r\n",
                Method::GET,
                Framing::chunked(),
                false,
            ),
            (
                b"HTTP/1.1 200 OK\r\ntransfer-encoding: gzip\r\n\r\n",
                Method::GET,
                Framing::UntilClose,
                false,
            ),
            (
                b"HTTP/1.1 200 OK\r\n\r\n",
                Method::GET,
                Framing::UntilClose,
                false,
            ),
            (
                b"HTTP/1.1 200 OK\r\nconnection: Close\r\ncontent-length: 1\r\n\r\n",
                Method::GET,
                Framing::Length(1),
                false,
            ),
            (
                b"HTTP/1.0 200 OK\r\ncontent-length: 1\r\n\r\n",
                Method::GET,
                Framing::Length(1),
                false,
            ),
        ];
        for (wire, method, framing, keep_alive) in cases {
            let (head, _) = head(wire, method);
            let wire = String::from_utf8_lossy(wire);
            assert_eq!(
                (head.framing, head.keep_alive),
                (framing, keep_alive),
                "{wire}"
            );
            if framing == Framing::chunked() {
                assert!(
                    !head.response.headers().contains_key(header::CONTENT_LENGTH),
                    "{wire}"
                );
            }
        }
        let (kept, _) = head(
            b"HTTP/1.0 200 OK\r\nconnection: keep-alive\r\ncontent-length: 1\r\n\r\n",
            Method::GET,
        );
        assert!(kept.keep_alive);
        for bad in [
            &b"HTTP/1.1 200 OK\r\ncontent-length: 1\r\ncontent-length: 2\r\n\r\n"[..],
            b"HTTP/1.1 200 OK\r\ncontent-length: -1\r\n\r\n",
            b"HTTP/1.1 200 OK\r\ncontent-length: 1x\r\n\r\n",
        ] {
            assert!(
                matches!(parse(bad, Method::GET).0, Err(UpstreamError::Malformed(_))),
                "{}",
                String::from_utf8_lossy(bad)
            );
        }
    }

    #[test]
    fn request_heads_say_how_their_body_is_framed() {
        let mut headers = HeaderMap::new();
        headers.insert(header::HOST, HeaderValue::from_static("example.com"));
        headers.insert(header::CONTENT_LENGTH, HeaderValue::from_static("99"));
        headers.insert(
            header::TRANSFER_ENCODING,
            HeaderValue::from_static("chunked"),
        );
        let uri: http::Uri = "/a?b=c".parse().expect("uri");
        let written = |method: Method, empty, length| {
            let mut out = Vec::new();
            let upload = write_request(&method, &uri, &headers, None, empty, length, &mut out);
            (upload, String::from_utf8(out).expect("text"))
        };
        assert_eq!(
            written(Method::GET, true, Some(0)),
            (
                Upload::None,
                "GET /a?b=c HTTP/1.1\r\nhost: example.com\r\n\r\n".to_owned()
            )
        );
        assert_eq!(
            written(Method::POST, true, Some(0)).1,
            "POST /a?b=c HTTP/1.1\r\nhost: example.com\r\ncontent-length: 0\r\n\r\n"
        );
        assert_eq!(
            written(Method::PUT, false, Some(12)),
            (
                Upload::Length,
                "PUT /a?b=c HTTP/1.1\r\nhost: example.com\r\ncontent-length: 12\r\n\r\n".to_owned()
            )
        );
        assert_eq!(
            written(Method::POST, false, None),
            (
                Upload::Chunked,
                "POST /a?b=c HTTP/1.1\r\nhost: example.com\r\ntransfer-encoding: chunked\r\n\r\n"
                    .to_owned()
            )
        );
        let mut out = Vec::new();
        use crate::http1::framing::{write_chunk, write_last_chunk};
        write_chunk(b"hello", &mut out);
        write_chunk(b"", &mut out);
        let mut trailers = HeaderMap::new();
        trailers.insert("x-sum", HeaderValue::from_static("5"));
        write_last_chunk(Some(&trailers), &mut out);
        assert_eq!(out, b"5\r\nhello\r\n0\r\nx-sum: 5\r\n\r\n");
    }
}
