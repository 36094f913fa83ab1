//! The listener's own HTTP/1.1 server for one client connection: request
//! heads parsed with `httparse` into a buffer that exists only while a
//! request is read (an idle keep-alive connection holds none), the
//! service called in the connection's task, and the response written
//! with its body's first frames in the same write as its head.
//!
//! It takes plain HTTP/1.1 requests, pipelined ones included. At the first
//! head it does not take (an upgrade, `Expect`, HTTP/1.0, the HTTP/2
//! preface, a head that breaks the syntax or passes the size limit) the
//! connection goes to hyper from that head on, the bytes already read
//! first ([`Ended::Handoff`]): those get hyper's answers, as before.

mod body;
mod request;
mod response;
mod rewind;
mod wire;

pub use body::RequestBody;
pub use rewind::Rewind;
pub use wire::ClientIo;

use std::future::Future;
use std::future::poll_fn;
use std::io::{self, Write};
use std::pin::{Pin, pin};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll, ready};
use std::time::Duration;

use bytes::{Buf, BytesMut};
use http::{Method, Request, Response};
use http_body::Body;
use hyper::service::Service;

use super::BoxError;
use super::inbound::Inbound;
use crate::http1::framing;
use crate::http1::verbatim::WithVerbatimFields;
use request::Parsed;
use response::Out;
use wire::SharedWire;

/// How a connection's own server ended.
pub enum Ended {
    /// The connection is done.
    Closed,
    /// The next head is hyper's to serve: the connection, the bytes read
    /// and not taken first.
    Handoff(Rewind),
}

/// How long a connection closed while its request's body was still
/// coming keeps reading (and dropping) it after the answer, so that the
/// client reads the answer rather than a reset; and how much it drops.
const LINGER: Duration = Duration::from_secs(2);
const LINGER_BYTES: usize = 1024 * 1024;

/// Bytes gathered before they are written: a head and the body frames
/// ready with it go out together.
const WRITE_BATCH: usize = 64 * 1024;

/// Bytes of the next requests read ahead while one is answered.
const PIPELINED: usize = 64 * 1024;

/// A write buffer kept between requests is at most this large.
const KEEP_WRITE: usize = 8 * 1024;

const BAD_REQUEST: &[u8] =
    b"HTTP/1.1 400 Bad Request\r\nconnection: close\r\ncontent-length: 0\r\n\r\n";

/// What the next bytes hold.
// Made once per request and moved once: boxing the head would cost an
// allocation per request.
#[allow(clippy::large_enum_variant)]
enum Next {
    Head(request::Head),
    Handoff,
    Invalid,
    /// The client closed, or the connection was asked to close between
    /// requests.
    Closed,
}

/// Serves `io` with `service` until the connection ends or hands over to
/// hyper. `shutdown` asks it to close gracefully: at once between
/// requests, after the response (with `connection: close`) during one.
pub async fn serve<S, B>(
    io: ClientIo,
    service: Arc<S>,
    shutdown: Arc<AtomicBool>,
) -> Result<Ended, BoxError>
where
    S: Service<Request<Inbound>, Response = Response<B>>,
    S::Error: Into<BoxError>,
    B: Body + Unpin + WithVerbatimFields,
    B::Data: Buf,
    B::Error: Into<BoxError> + Send,
{
    let wire = SharedWire::new(io);
    let mut out = Vec::new();
    let mut requests: u64 = 0;
    loop {
        // Each step's values live in a block of their own and each future
        // is made there and awaited outside it, so that the connection's
        // state (held for as long as the connection is open) does not keep
        // them while a later step waits.
        let (response, head_request, keep_alive) = {
            let (call, head_request, keep_alive) = {
                let (request, body, keep_alive) =
                    match poll_fn(|cx| poll_head(&wire, &shutdown, cx)).await? {
                        Next::Head(request::Head {
                            request,
                            body,
                            keep_alive,
                        }) => (request, body, keep_alive),
                        Next::Closed => return Ok(Ended::Closed),
                        Next::Handoff => {
                            return Ok(match wire.into_inner() {
                                Some(wire) => {
                                    Ended::Handoff(Rewind::new(wire.read.freeze(), wire.io))
                                }
                                None => Ended::Closed,
                            });
                        }
                        Next::Invalid => {
                            wire.write_all(BAD_REQUEST).await?;
                            let _ = wire.shutdown().await;
                            return Ok(Ended::Closed);
                        }
                    };
                requests += 1;
                let head_request = request.method() == Method::HEAD;
                let inbound = {
                    let mut w = wire.lock();
                    w.request = requests;
                    let has_body = !body.is_done();
                    w.body = body;
                    if has_body {
                        Inbound::Http1(RequestBody::new(wire.clone(), requests))
                    } else {
                        Inbound::Empty
                    }
                };
                (
                    service.call(request.map(|()| inbound)),
                    head_request,
                    keep_alive,
                )
            };
            let mut call = pin!(call);
            let answered = poll_fn(|cx| match call.as_mut().poll(cx) {
                Poll::Ready(answered) => Poll::Ready(Some(answered)),
                Poll::Pending => poll_client_gone(&wire, cx).map(|()| None),
            })
            .await;
            let Some(answered) = answered else {
                // The client went away: its request is given up.
                return Ok(Ended::Closed);
            };
            (answered.map_err(Into::into)?, head_request, keep_alive)
        };
        // A body the service left unread keeps the connection only when
        // all of it is here already.
        let body_read = take_unread_body(&mut wire.lock());
        let (writing, close) = {
            let (parts, body) = response.into_parts();
            out.clear();
            let written = response::write_head(
                parts.status,
                body.verbatim_fields(),
                &parts.headers,
                &body.size_hint(),
                head_request,
                !body_read
                    || !keep_alive
                    || shutdown.load(Ordering::Acquire)
                    || parts.status == http::StatusCode::SWITCHING_PROTOCOLS,
                &mut out,
            );
            // Its own `connection: close` counts too.
            let close = written.close;
            (write_body(&wire, body, written.framing, &mut out), close)
        };
        let whole = writing.await?;
        if !whole {
            return Ok(Ended::Closed);
        }
        if !body_read {
            linger(&wire).await;
            return Ok(Ended::Closed);
        }
        if close {
            let _ = wire.shutdown().await;
            return Ok(Ended::Closed);
        }
        if out.capacity() > KEEP_WRITE {
            out = Vec::new();
        }
        let mut w = wire.lock();
        if w.read.is_empty() {
            // Nothing of a next request yet: hold no buffer while idle.
            w.read = BytesMut::new();
        }
    }
}

/// Takes what the service left unread of its request's body out of the
/// bytes already read (a body still held reads no more): whether the body
/// is now read to its end.
fn take_unread_body(wire: &mut wire::Wire) -> bool {
    if wire.body.is_done() {
        return true;
    }
    wire.request = 0;
    loop {
        let wire = &mut *wire;
        match wire.body.decode(&mut wire.read) {
            Ok(framing::Decoded::Data(_) | framing::Decoded::Trailers(_)) => {}
            Ok(framing::Decoded::End) => return true,
            Ok(framing::Decoded::NeedMore) | Err(_) => return false,
        }
    }
}

/// Reads until a whole head is in, or the connection is to end or go to
/// hyper.
fn poll_head(
    wire: &SharedWire,
    shutdown: &AtomicBool,
    cx: &mut Context<'_>,
) -> Poll<io::Result<Next>> {
    let mut w = wire.lock();
    loop {
        if !w.read.is_empty() {
            match request::parse(&mut w.read) {
                Parsed::Partial => {}
                Parsed::Handoff => return Poll::Ready(Ok(Next::Handoff)),
                Parsed::Invalid => return Poll::Ready(Ok(Next::Invalid)),
                Parsed::Request(head) => return Poll::Ready(Ok(Next::Head(head))),
            }
        } else if shutdown.load(Ordering::Acquire) {
            return Poll::Ready(Ok(Next::Closed));
        }
        if ready!(w.poll_fill(cx))? == 0 {
            // Closed by the client, between requests or in a head.
            return Poll::Ready(Ok(Next::Closed));
        }
    }
}

/// Writes `body` after the head in `out`, framed as `framing` says:
/// whether it went out whole (a body that breaks off, or gives more or
/// less than its length, leaves the connection to be closed).
///
/// Not an `async fn` (see "one future per request" in
/// docs/architecture.md); the body is `Unpin`, so it is polled in place.
#[allow(clippy::manual_async_fn)] // on purpose: see above
fn write_body<'a, B>(
    wire: &'a SharedWire,
    mut body: B,
    framing: Out,
    out: &'a mut Vec<u8>,
) -> impl Future<Output = io::Result<bool>> + 'a
where
    B: Body + Unpin + 'a,
    B::Data: Buf,
    B::Error: Into<BoxError> + Send,
{
    async move {
        let chunked = framing == Out::Chunked;
        let mut left = match framing {
            Out::Length(length) => Some(length),
            Out::Nothing | Out::Chunked => None,
        };
        let mut ended = framing == Out::Nothing || body.is_end_stream();
        let mut last_chunk_written = false;
        while !ended {
            let step = poll_fn(|cx| match Pin::new(&mut body).poll_frame(cx) {
                // Write what is gathered while the body has nothing more yet.
                Poll::Pending if !out.is_empty() => Poll::Ready(Step::Write),
                Poll::Pending => poll_client_gone(wire, cx).map(|()| Step::Gone),
                Poll::Ready(frame) => Poll::Ready(Step::Frame(frame)),
            })
            .await;
            let frame = match step {
                Step::Write => {
                    wire.write_all(out).await?;
                    out.clear();
                    continue;
                }
                Step::Gone => return Ok(false),
                Step::Frame(frame) => frame,
            };
            let frame = match frame {
                None => break,
                Some(Err(error)) => {
                    {
                        let error: BoxError = error.into();
                        tracing::debug!(%error, "a response body broke off; closing the client connection");
                    }
                    wire.write_all(out).await?;
                    return Ok(false);
                }
                Some(Ok(frame)) => frame,
            };
            match frame.into_data() {
                Ok(mut data) => {
                    let len = data.remaining();
                    if let Some(left) = &mut left {
                        if len as u64 > *left {
                            tracing::debug!("a response body is longer than its content-length");
                            wire.write_all(out).await?;
                            return Ok(false);
                        }
                        *left -= len as u64;
                    }
                    if chunked && len > 0 {
                        let _ = write!(out, "{len:x}\r\n");
                    }
                    while data.has_remaining() {
                        let chunk = data.chunk();
                        let n = chunk.len();
                        out.extend_from_slice(chunk);
                        data.advance(n);
                    }
                    if chunked && len > 0 {
                        out.extend_from_slice(b"\r\n");
                    }
                    ended = body.is_end_stream();
                }
                Err(frame) => {
                    if let (true, Ok(trailers)) = (chunked, frame.into_trailers()) {
                        framing::write_last_chunk(Some(&trailers), out);
                        last_chunk_written = true;
                    }
                    ended = true;
                }
            }
            if out.len() >= WRITE_BATCH {
                wire.write_all(out).await?;
                out.clear();
            }
        }
        if chunked && !last_chunk_written {
            framing::write_last_chunk(None, out);
        }
        wire.write_all(out).await?;
        out.clear();
        Ok(left.is_none_or(|left| left == 0))
    }
}

/// What writing a response body does next.
enum Step<F> {
    /// Write what is gathered: the body has nothing more yet.
    Write,
    /// The client went away.
    Gone,
    Frame(Option<F>),
}

/// Whether the client closed its connection (or it broke) while a
/// response is awaited or on its way: ready when it did. Bytes it sends
/// meanwhile (a pipelined request) are kept, up to [`PIPELINED`]; while
/// the request's body is still being read, the body does the reading.
fn poll_client_gone(wire: &SharedWire, cx: &mut Context<'_>) -> Poll<()> {
    let mut w = wire.lock();
    while w.body.is_done() && w.read.len() < PIPELINED {
        match ready!(w.poll_fill(cx)) {
            Ok(0) | Err(_) => return Poll::Ready(()),
            Ok(_) => {}
        }
    }
    Poll::Pending
}

/// Ends the write side, then reads and drops what the client still sends
/// (its unread body), within [`LINGER`] and [`LINGER_BYTES`].
async fn linger(wire: &SharedWire) {
    let _ = wire.shutdown().await;
    let _ = tokio::time::timeout(LINGER, async {
        let mut dropped = 0;
        while dropped < LINGER_BYTES {
            let read = poll_fn(|cx| {
                let mut w = wire.lock();
                w.read.clear();
                // A body still held never takes these bytes for its own.
                w.request = 0;
                w.poll_fill(cx)
            })
            .await;
            match read {
                Ok(0) | Err(_) => break,
                Ok(n) => dropped += n,
            }
        }
    })
    .await;
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use http::HeaderValue;
    use http_body::Frame;
    use http_body_util::{BodyExt, Full, StreamBody};
    use tokio::io::{AsyncReadExt, AsyncWriteExt, DuplexStream};

    impl WithVerbatimFields for Full<Bytes> {}

    async fn written(frames: Vec<Frame<Bytes>>, framing: Out) -> (String, bool) {
        let (ours, mut theirs) = tokio::io::duplex(1 << 20);
        let wire = SharedWire::new(Box::new(ours));
        let body = StreamBody::new(futures_util::stream::iter(
            frames.into_iter().map(Ok::<_, io::Error>),
        ));
        let mut out = Vec::new();
        let whole = write_body(&wire, body, framing, &mut out)
            .await
            .expect("written");
        drop(wire);
        let mut text = String::new();
        theirs.read_to_string(&mut text).await.expect("read");
        (text, whole)
    }

    #[tokio::test]
    async fn chunked_bodies_end_with_their_trailers() {
        let mut trailers = http::HeaderMap::new();
        trailers.insert("x-sum", HeaderValue::from_static("5"));
        let (text, whole) = written(
            vec![
                Frame::data(Bytes::from_static(b"hel")),
                Frame::data(Bytes::new()),
                Frame::data(Bytes::from_static(b"lo")),
                Frame::trailers(trailers),
            ],
            Out::Chunked,
        )
        .await;
        assert_eq!(text, "3\r\nhel\r\n2\r\nlo\r\n0\r\nx-sum: 5\r\n\r\n");
        assert!(whole);
    }

    #[tokio::test]
    async fn a_body_shorter_or_longer_than_its_length_is_not_whole() {
        let (_, whole) = written(
            vec![Frame::data(Bytes::from_static(b"short"))],
            Out::Length(9),
        )
        .await;
        assert!(!whole, "shorter");
        let (text, whole) = written(
            vec![Frame::data(Bytes::from_static(b"too long"))],
            Out::Length(3),
        )
        .await;
        assert!(!whole, "longer");
        assert!(
            text.is_empty(),
            "nothing past the length goes out: {text:?}"
        );
        let (text, whole) = written(
            vec![Frame::data(Bytes::from_static(b"exact"))],
            Out::Length(5),
        )
        .await;
        assert_eq!((text.as_str(), whole), ("exact", true));
    }

    /// Serves `io` with a service that answers each request with its path
    /// and its body.
    fn echo_server(io: DuplexStream) -> tokio::task::JoinHandle<Result<Ended, BoxError>> {
        let service = Arc::new(hyper::service::service_fn(
            |req: Request<Inbound>| async move {
                let path = req.uri().path().to_owned();
                let body = req.into_body().collect().await?.to_bytes();
                let text = format!("{path} {}", String::from_utf8_lossy(&body));
                Ok::<_, BoxError>(Response::new(Full::new(Bytes::from(text))))
            },
        ));
        tokio::spawn(serve(Box::new(io), service, Arc::default()))
    }

    #[tokio::test]
    async fn pipelined_requests_are_answered_in_order_and_a_head_for_hyper_is_handed_over_whole() {
        let (ours, mut theirs) = tokio::io::duplex(1 << 16);
        let server = echo_server(ours);
        let handed = b"POST /c HTTP/1.1\r\nExpect: 100-continue\r\ncontent-length: 2\r\n\r\n";
        let mut wire =
            b"GET /a HTTP/1.1\r\n\r\nPOST /b HTTP/1.1\r\ntransfer-encoding: chunked\r\n\r\n\
            2\r\nhi\r\n0\r\n\r\n"
                .to_vec();
        wire.extend_from_slice(handed);
        theirs.write_all(&wire).await.expect("write");
        let ended = server.await.expect("joined").expect("served");
        let Ended::Handoff(mut rest) = ended else {
            panic!("the Expect request is hyper's");
        };
        let mut read = vec![0; handed.len()];
        rest.read_exact(&mut read)
            .await
            .expect("the handed-over head");
        assert_eq!(read, handed, "every byte read ahead comes first");
        let mut answers = vec![0; 4096];
        let n = theirs.read(&mut answers).await.expect("answers");
        let answers = String::from_utf8_lossy(&answers[..n]);
        let a = answers.find("\r\n\r\n/a ").expect("answer to /a");
        let b = answers
            .find("\r\n\r\n/b hi")
            .expect("answer to /b with its body");
        assert!(a < b, "{answers}");
    }

    #[tokio::test]
    async fn a_graceful_shutdown_closes_an_idle_connection_at_once() {
        let (ours, _theirs) = tokio::io::duplex(1 << 16);
        let shutdown = Arc::new(AtomicBool::new(true));
        let service = Arc::new(hyper::service::service_fn(|_: Request<Inbound>| async {
            Ok::<_, BoxError>(Response::new(Full::new(Bytes::new())))
        }));
        let ended = serve(Box::new(ours), service, shutdown)
            .await
            .expect("served");
        assert!(matches!(ended, Ended::Closed));
    }
}
