//! The proxy's own HTTP/1.1 client for one connection to an instance:
//! the request's head and body written out, the answer's head parsed,
//! its body framed, all driven by the request's task. The read buffer
//! holds only the bytes read and not yet taken ([`crate::http1::read`]).

use std::future::poll_fn;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use bytes::BytesMut;
use http::{Method, Request, Response};
use http_body::{Body as _, Frame};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;

use super::head::{self, AnswerFields, Parsed, Upload};
use super::{SendError, UpstreamError};
use crate::http1::framing::{self, Decoded, Framing};
use crate::http1::verbatim::VerbatimFields;
use crate::proxy::headers::Forwarding;
use crate::proxy::request_body::RequestBody;

/// A whole body up to this size goes out in the same write as the head.
const WITH_HEAD: usize = 16 * 1024;

/// The socket under the connection.
pub(crate) enum Stream {
    Plain(TcpStream),
    Tls(Box<TlsStream<TcpStream>>),
}

/// Where the connection stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Takes the next request.
    Idle,
    /// An exchange is under way.
    Busy,
    /// Will carry no other request.
    Closed,
}

/// One HTTP/1.1 connection to an instance.
pub(crate) struct Connection {
    io: Stream,
    /// Bytes read and not yet taken.
    read: BytesMut,
    /// The bytes on their way out.
    write: Vec<u8>,
    state: State,
    /// Whether the current exchange lets the connection be kept.
    keep_alive: bool,
}

/// The body of an answer read by [`Connection`].
#[derive(Debug)]
pub(crate) struct Body {
    framing: Framing,
    ended: bool,
    /// The answer's fields that are not in its map.
    pub verbatim: VerbatimFields,
}

impl Body {
    pub(crate) fn is_end_stream(&self) -> bool {
        self.ended || self.framing.is_done()
    }

    pub(crate) fn size_hint(&self) -> http_body::SizeHint {
        match self.framing.remaining() {
            Some(left) if !self.ended => http_body::SizeHint::with_exact(left),
            Some(_) => http_body::SizeHint::with_exact(0),
            None => http_body::SizeHint::default(),
        }
    }
}

/// A request's body on its way out.
struct Outgoing {
    upload: Upload,
    /// Bytes of [`Connection::write`] already written.
    written: usize,
    /// Whether the whole body has been put in the write buffer.
    done: bool,
}

impl Connection {
    pub(crate) fn new(io: Stream) -> Self {
        Self {
            io,
            read: BytesMut::new(),
            write: Vec::new(),
            state: State::Idle,
            keep_alive: true,
        }
    }

    /// Whether the connection can take no other request.
    pub(crate) fn is_closed(&self) -> bool {
        self.state != State::Idle
    }

    /// Whether an idle connection takes a request: not if the instance
    /// closed it (or sent bytes nobody asked for) meanwhile.
    pub(crate) fn poll_ready_now(&mut self, cx: &mut Context<'_>) -> Poll<bool> {
        if self.state != State::Idle || !self.read.is_empty() {
            self.state = State::Closed;
            return Poll::Ready(false);
        }
        let mut byte = [0u8; 1];
        let mut probe = ReadBuf::new(&mut byte);
        match Pin::new(&mut self.io).poll_read(cx, &mut probe) {
            Poll::Pending => Poll::Ready(true),
            Poll::Ready(_) => {
                self.state = State::Closed;
                Poll::Ready(false)
            }
        }
    }

    /// Sends `req` and reads the answer's head, its fields put where
    /// `answer_fields` says; interim answers are passed over. A request whose head could not be written at all comes back in
    /// the error. An answer that comes before the request's body went out
    /// whole ends the upload there (and the connection after the answer).
    ///
    /// Not an `async fn` (see "one future per request" in
    /// docs/architecture.md): the head is written into the buffer before
    /// the first wait, and the future holds the request's parts once.
    pub(crate) fn send<'a>(
        &'a mut self,
        req: Request<RequestBody>,
        forwarding: Option<&Forwarding<'_>>,
        answer_fields: AnswerFields,
    ) -> impl Future<Output = Result<Response<Body>, SendError>> + use<'a> {
        let refused = self.state != State::Idle;
        let (parts, mut body) = req.into_parts();
        let empty = body.is_end_stream();
        let mut out = Outgoing {
            upload: Upload::None,
            written: 0,
            done: true,
        };
        if !refused {
            self.state = State::Busy;
            self.keep_alive = true;
            let length = body.size_hint().exact();
            self.write.clear();
            let upload = head::write_request(
                &parts.method,
                &parts.uri,
                &parts.headers,
                forwarding,
                empty,
                length,
                &mut self.write,
            );
            out.upload = upload;
            out.done = upload == Upload::None;
            // A small body held whole goes with the head.
            if let RequestBody::Full(Some(bytes)) = &body {
                if !out.done && bytes.len() <= WITH_HEAD {
                    match upload {
                        Upload::Chunked => {
                            framing::write_chunk(bytes, &mut self.write);
                            framing::write_last_chunk(None, &mut self.write);
                        }
                        _ => self.write.extend_from_slice(bytes),
                    }
                    body = RequestBody::empty();
                    out.done = true;
                }
            }
        }
        async move {
            if refused {
                return Err(SendError {
                    unsent: Some(Box::new(Request::from_parts(parts, body))),
                    unanswered: None,
                    error: UpstreamError::Closed,
                });
            }
            // The head first: a connection that takes none of it has not
            // received the request, which can go elsewhere.
            if let Err(error) = poll_fn(|cx| self.poll_write_out(cx, &mut out.written)).await {
                self.state = State::Closed;
                let unsent = (out.written == 0).then(|| Box::new(Request::from_parts(parts, body)));
                return Err(SendError {
                    unsent,
                    unanswered: None,
                    error: UpstreamError::Io(error),
                });
            }
            let head = poll_fn(|cx| {
                if let Err(error) = self.poll_upload(cx, &mut body, &mut out) {
                    return Poll::Ready(Err(error));
                }
                self.poll_head(cx, &parts.method, answer_fields)
            })
            .await;
            let head = match head {
                Ok(head) => head,
                Err(error) => {
                    self.state = State::Closed;
                    // Kept until the answer came, so that it can go again.
                    let unanswered =
                        empty.then(|| Box::new(Request::from_parts(parts, RequestBody::empty())));
                    return Err(SendError {
                        unsent: None,
                        unanswered,
                        error,
                    });
                }
            };
            let whole = out.done && out.written == self.write.len();
            self.keep_alive = head.keep_alive && whole;
            let body = Body {
                framing: head.framing,
                ended: false,
                verbatim: head.verbatim,
            };
            if body.framing.is_done() {
                self.finish();
            }
            Ok(head.response.map(|()| body))
        }
    }

    /// Reads the next frame of the answer's body.
    pub(crate) fn poll_body(
        &mut self,
        body: &mut Body,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<bytes::Bytes>, UpstreamError>>> {
        if body.ended {
            return Poll::Ready(None);
        }
        loop {
            let decoded = match body.framing.decode(&mut self.read) {
                Ok(decoded) => decoded,
                Err(error) => {
                    body.ended = true;
                    self.state = State::Closed;
                    return Poll::Ready(Some(Err(error.into())));
                }
            };
            match decoded {
                Decoded::Data(data) => {
                    if body.framing.is_done() {
                        self.finish();
                    }
                    return Poll::Ready(Some(Ok(Frame::data(data))));
                }
                Decoded::Trailers(trailers) => {
                    body.ended = true;
                    self.finish();
                    return Poll::Ready(Some(Ok(Frame::trailers(trailers))));
                }
                Decoded::End => {
                    body.ended = true;
                    self.finish();
                    return Poll::Ready(None);
                }
                Decoded::NeedMore => {}
            }
            match ready!(self.poll_read_body(cx)) {
                Ok(0) if body.framing == Framing::UntilClose => {
                    body.ended = true;
                    self.state = State::Closed;
                    return Poll::Ready(None);
                }
                Ok(0) => {
                    body.ended = true;
                    self.state = State::Closed;
                    return Poll::Ready(Some(Err(UpstreamError::ClosedInBody)));
                }
                Ok(_) => {}
                Err(error) => {
                    body.ended = true;
                    self.state = State::Closed;
                    return Poll::Ready(Some(Err(UpstreamError::Io(error))));
                }
            }
        }
    }

    /// The answer was read to its end: the connection takes the next
    /// request if both sides let it (and nothing else came). The read
    /// buffer is let go: an idle connection holds none.
    fn finish(&mut self) {
        if self.state != State::Busy {
            return;
        }
        if self.keep_alive && self.read.is_empty() {
            self.state = State::Idle;
            self.read = BytesMut::new();
        } else {
            self.state = State::Closed;
        }
    }

    /// Reads the answer's head, passing over interim answers.
    fn poll_head(
        &mut self,
        cx: &mut Context<'_>,
        method: &Method,
        answer_fields: AnswerFields,
    ) -> Poll<Result<head::Head, UpstreamError>> {
        loop {
            if !self.read.is_empty() {
                match head::parse_response(&mut self.read, method, answer_fields)? {
                    Parsed::Final(head) => return Poll::Ready(Ok(head)),
                    Parsed::Interim => continue,
                    Parsed::Partial => {}
                }
            }
            match ready!(self.poll_read_more(cx)) {
                Ok(0) => return Poll::Ready(Err(UpstreamError::Closed)),
                Ok(_) => {}
                Err(error) => return Poll::Ready(Err(UpstreamError::Io(error))),
            }
        }
    }

    /// Moves the request's body out as far as it goes now.
    fn poll_upload(
        &mut self,
        cx: &mut Context<'_>,
        body: &mut RequestBody,
        out: &mut Outgoing,
    ) -> Result<(), UpstreamError> {
        loop {
            if out.written < self.write.len() {
                match self.poll_write_out(cx, &mut out.written) {
                    Poll::Ready(Ok(())) => {}
                    Poll::Ready(Err(error)) => return Err(UpstreamError::Io(error)),
                    Poll::Pending => return Ok(()),
                }
            }
            if out.done {
                return Ok(());
            }
            let frame = match Pin::new(&mut *body).poll_frame(cx) {
                Poll::Pending => return Ok(()),
                Poll::Ready(frame) => frame,
            };
            self.write.clear();
            out.written = 0;
            match frame {
                Some(Ok(frame)) => match frame.into_data() {
                    Ok(data) => match out.upload {
                        Upload::Chunked => framing::write_chunk(&data, &mut self.write),
                        _ => self.write.extend_from_slice(&data),
                    },
                    Err(frame) => {
                        if out.upload == Upload::Chunked {
                            framing::write_last_chunk(frame.trailers_ref(), &mut self.write);
                        }
                        out.done = true;
                    }
                },
                None => {
                    if out.upload == Upload::Chunked {
                        framing::write_last_chunk(None, &mut self.write);
                    }
                    out.done = true;
                }
                Some(Err(error)) => return Err(UpstreamError::Upload(Box::new(error))),
            }
        }
    }

    /// Writes the write buffer from `written` on, and flushes it.
    fn poll_write_out(
        &mut self,
        cx: &mut Context<'_>,
        written: &mut usize,
    ) -> Poll<io::Result<()>> {
        while *written < self.write.len() {
            let n = ready!(Pin::new(&mut self.io).poll_write(cx, &self.write[*written..]))?;
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            *written += n;
        }
        Pin::new(&mut self.io).poll_flush(cx)
    }

    /// Reads what has come of an answer's head into the read buffer: the
    /// count, 0 at the close.
    fn poll_read_more(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<usize>> {
        crate::http1::read::poll_read(&mut self.io, &mut self.read, cx)
    }

    /// Reads what has come of an answer's body: the count, 0 at the close.
    fn poll_read_body(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<usize>> {
        crate::http1::read::poll_read_body(&mut self.io, &mut self.read, cx)
    }
}

impl AsyncRead for Stream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Stream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_write(cx, buf),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_flush(cx),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_shutdown(cx),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;
    use http::HeaderMap;
    use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
    use tokio::net::TcpListener;
    use tokio::task::JoinHandle;

    use super::*;

    /// What an instance does after reading a request.
    enum Then {
        /// Writes these bytes and waits for the next request.
        Answer(&'static [u8]),
        /// Writes these bytes and closes the connection.
        AnswerAndClose(&'static [u8]),
    }

    /// A connection to an instance that reads each request (head, and body
    /// by its `content-length`) and acts out `script`; its task returns
    /// the requests it read.
    async fn connected(script: Vec<Then>) -> (Connection, JoinHandle<Vec<String>>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let instance = tokio::spawn(async move {
            let (stream, _) = listener.accept().await.expect("accept");
            let mut stream = BufReader::new(stream);
            let mut seen = Vec::new();
            for step in script {
                let mut request = String::new();
                let mut length = 0;
                loop {
                    let mut line = String::new();
                    if stream.read_line(&mut line).await.expect("read") == 0 {
                        return seen;
                    }
                    if let Some(value) = line.strip_prefix("content-length: ") {
                        length = value.trim().parse().expect("length");
                    }
                    request.push_str(&line);
                    if line == "\r\n" {
                        break;
                    }
                }
                let mut body = vec![0; length];
                tokio::io::AsyncReadExt::read_exact(&mut stream, &mut body)
                    .await
                    .expect("body");
                request.push_str(&String::from_utf8_lossy(&body));
                seen.push(request);
                match step {
                    Then::Answer(bytes) => stream.get_mut().write_all(bytes).await.expect("write"),
                    Then::AnswerAndClose(bytes) => {
                        stream.get_mut().write_all(bytes).await.expect("write");
                        return seen;
                    }
                }
            }
            seen
        });
        let stream = TcpStream::connect(addr).await.expect("connect");
        (Connection::new(Stream::Plain(stream)), instance)
    }

    fn get(path: &str) -> Request<RequestBody> {
        let mut req = Request::new(RequestBody::empty());
        *req.uri_mut() = path.parse().expect("path");
        req
    }

    /// Reads a body to its end: its bytes, its trailers, how it failed.
    async fn read_body(
        conn: &mut Connection,
        mut body: Body,
    ) -> (Vec<u8>, Option<HeaderMap>, Option<UpstreamError>) {
        let mut data = Vec::new();
        let mut trailers = None;
        while let Some(frame) = poll_fn(|cx| conn.poll_body(&mut body, cx)).await {
            match frame {
                Ok(frame) => match frame.into_data() {
                    Ok(bytes) => data.extend_from_slice(&bytes),
                    Err(frame) => trailers = frame.into_trailers().ok(),
                },
                Err(error) => return (data, trailers, Some(error)),
            }
        }
        assert!(body.is_end_stream());
        (data, trailers, None)
    }

    #[tokio::test]
    async fn answers_read_whole_leave_the_connection_for_the_next_request() {
        let (mut conn, instance) = connected(vec![
            Then::Answer(
                b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n\
                  5;ext=1\r\nhello\r\n0\r\nx-sum: 5\r\n\r\n",
            ),
            Then::Answer(b"HTTP/1.1 201 Created\r\ncontent-length: 2\r\n\r\nok"),
            Then::Answer(b"HTTP/1.1 204 No Content\r\n\r\n"),
        ])
        .await;
        let response = conn
            .send(get("/one"), None, AnswerFields::Map)
            .await
            .map_err(|e| e.error)
            .expect("answer");
        assert_eq!(response.status(), 200);
        assert!(conn.is_closed(), "busy until the body is read");
        let (data, trailers, error) = read_body(&mut conn, response.into_body()).await;
        assert_eq!(data, b"hello");
        assert_eq!(trailers.expect("trailers")["x-sum"], "5");
        assert!(error.is_none(), "{error:?}");
        assert!(!conn.is_closed());
        assert_eq!(
            poll_fn(|cx| Poll::Ready(conn.poll_ready_now(cx))).await,
            Poll::Ready(true)
        );

        let mut post = Request::new(RequestBody::Full(Some(Bytes::from_static(b"payload"))));
        *post.method_mut() = Method::POST;
        *post.uri_mut() = "/two".parse().expect("path");
        let response = conn
            .send(post, None, AnswerFields::Map)
            .await
            .map_err(|e| e.error)
            .expect("answer");
        assert_eq!(response.status(), 201);
        let (data, _, error) = read_body(&mut conn, response.into_body()).await;
        assert_eq!((data.as_slice(), error.is_none()), (&b"ok"[..], true));

        let response = conn
            .send(get("/three"), None, AnswerFields::Map)
            .await
            .map_err(|e| e.error)
            .expect("answer");
        assert_eq!(response.status(), 204);
        assert!(response.body().is_end_stream());
        assert!(!conn.is_closed(), "an empty answer is read at once");
        drop(conn);
        let seen = instance.await.expect("instance");
        assert_eq!(seen[0], "GET /one HTTP/1.1\r\n\r\n");
        assert_eq!(
            seen[1],
            "POST /two HTTP/1.1\r\ncontent-length: 7\r\n\r\npayload"
        );
        assert_eq!(seen.len(), 3);
    }

    #[tokio::test]
    async fn an_instance_closing_mid_body_breaks_the_body_and_the_connection() {
        let (mut conn, _instance) = connected(vec![Then::AnswerAndClose(
            b"HTTP/1.1 200 OK\r\ncontent-length: 10\r\n\r\nhalf",
        )])
        .await;
        let response = conn
            .send(get("/"), None, AnswerFields::Map)
            .await
            .map_err(|e| e.error)
            .expect("answer");
        let (data, _, error) = read_body(&mut conn, response.into_body()).await;
        assert_eq!(data, b"half");
        assert!(
            matches!(error, Some(UpstreamError::ClosedInBody)),
            "{error:?}"
        );
        assert!(conn.is_closed());
    }

    #[tokio::test]
    async fn an_instance_closing_before_it_answers_is_a_lost_request() {
        let (mut conn, _instance) =
            connected(vec![Then::AnswerAndClose(b"HTTP/1.1 200 OK\r\ncontent-")]).await;
        let failed = conn
            .send(get("/"), None, AnswerFields::Map)
            .await
            .expect_err("no answer");
        assert!(
            matches!(failed.error, UpstreamError::Closed),
            "{}",
            failed.error
        );
        assert!(failed.unsent.is_none(), "the request went out");
        let again = failed
            .unanswered
            .expect("a request without a body comes back");
        assert_eq!(again.uri(), "/");
        assert!(conn.is_closed());
    }

    #[tokio::test]
    async fn answers_without_a_length_end_with_the_connection() {
        let (mut conn, _instance) = connected(vec![Then::AnswerAndClose(
            b"HTTP/1.1 200 OK\r\n\r\nread until the end",
        )])
        .await;
        let response = conn
            .send(get("/"), None, AnswerFields::Map)
            .await
            .map_err(|e| e.error)
            .expect("answer");
        let (data, _, error) = read_body(&mut conn, response.into_body()).await;
        assert_eq!(data, b"read until the end");
        assert!(error.is_none(), "{error:?}");
        assert!(conn.is_closed(), "never reused");
    }

    #[tokio::test]
    async fn an_idle_connection_the_instance_closed_is_not_ready() {
        let (mut conn, instance) = connected(vec![Then::AnswerAndClose(
            b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok",
        )])
        .await;
        let response = conn
            .send(get("/"), None, AnswerFields::Map)
            .await
            .map_err(|e| e.error)
            .expect("answer");
        let (data, _, _) = read_body(&mut conn, response.into_body()).await;
        assert_eq!(data, b"ok");
        assert!(!conn.is_closed(), "the close was not said");
        instance.await.expect("instance closed");
        assert_eq!(
            poll_fn(|cx| Poll::Ready(conn.poll_ready_now(cx))).await,
            Poll::Ready(false)
        );
        assert!(conn.is_closed());
    }

    #[tokio::test]
    async fn an_oversized_head_is_refused_with_its_reason() {
        static HUGE: std::sync::LazyLock<&'static [u8]> = std::sync::LazyLock::new(|| {
            let mut answer = b"HTTP/1.1 200 OK\r\nx-big: ".to_vec();
            answer.resize(head::MAX_HEAD * 2, b'a');
            answer.leak()
        });
        let (mut conn, _instance) = connected(vec![Then::Answer(*HUGE)]).await;
        let failed = conn
            .send(get("/"), None, AnswerFields::Map)
            .await
            .expect_err("refused");
        assert!(
            matches!(failed.error, UpstreamError::HeadTooLarge(_)),
            "{}",
            failed.error
        );
        assert!(conn.is_closed());
    }
}
