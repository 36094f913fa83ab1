//! One HTTP/1.1 connection to an instance, driven by the request that uses
//! it: the request's own task writes the request and reads the answer
//! (head and body) with the proxy's own client ([`http1`]), so no task of
//! the connection's own is woken in between (and none is spawned for it).
//! A connection idle in the pool is looked at by the next request that
//! takes it, which is when a close by the instance is noticed.
//!
//! A connection that may become a tunnel (`101 Switching Protocols`) is
//! hyper's, run by a task of its own, which hands the stream over.

mod head;
mod http1;

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use futures_util::FutureExt;
use futures_util::future::Either;
use http::{Request, Response};
use http_body::{Body as _, Frame, SizeHint};
use hyper::body::Incoming;
use hyper::client::conn::http1::SendRequest;

use super::headers::Forwarding;
use super::request_body::RequestBody;
use crate::http1::verbatim::VerbatimFields;

pub(crate) use head::AnswerFields;
pub(crate) use http1::Stream;

/// An upstream HTTP/1.1 connection.
pub(crate) enum UpstreamConnection {
    /// The proxy's own client, polled in place by whoever uses it. Boxed
    /// once per connection, so that handing it along with each answer
    /// moves a pointer.
    Http1(Box<http1::Connection>),
    /// hyper's client, run by a task of its own (a connection that may
    /// become a tunnel).
    Tunnel(SendRequest<RequestBody>),
}

/// The body of an answer from an instance, read through the connection it
/// came on.
#[derive(Debug)]
pub(crate) enum UpstreamBody {
    Http1(http1::Body),
    Tunnel(Incoming),
}

/// Why an exchange with an instance failed.
#[derive(Debug, thiserror::Error)]
pub enum UpstreamError {
    #[error("the instance closed the connection before it answered")]
    Closed,
    #[error("the instance closed the connection before the answer's body was complete")]
    ClosedInBody,
    #[error("the connection to the instance failed: {0}")]
    Io(#[source] std::io::Error),
    #[error("the instance's answer is not valid HTTP/1.1: {0}")]
    Malformed(String),
    #[error(
        "the instance's answer head is larger than {0} bytes (status line and header fields); \
         the instance must send a smaller head"
    )]
    HeadTooLarge(usize),
    #[error("the request's body could not be sent: {0}")]
    Upload(#[source] Box<dyn std::error::Error + Send + Sync>),
    #[error(transparent)]
    Hyper(#[from] hyper::Error),
}

impl From<crate::http1::WireError> for UpstreamError {
    fn from(error: crate::http1::WireError) -> Self {
        match error {
            crate::http1::WireError::Malformed(what) => UpstreamError::Malformed(what),
            crate::http1::WireError::TooLarge(limit) => UpstreamError::HeadTooLarge(limit),
        }
    }
}

/// A request that failed: the error, and the request itself when none of
/// it went out (to be sent elsewhere). The request is boxed: a failure is
/// rare, and every exchange's result is sized for it.
pub(crate) struct SendError {
    pub unsent: Option<Box<Request<RequestBody>>>,
    /// A request without a body that went out but got no answer at all:
    /// the same request, to be sent again when its method is safe.
    pub unanswered: Option<Box<Request<RequestBody>>>,
    pub error: UpstreamError,
}

impl fmt::Debug for UpstreamConnection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            UpstreamConnection::Http1(_) => f.write_str("UpstreamConnection::Http1"),
            UpstreamConnection::Tunnel(_) => f.write_str("UpstreamConnection::Tunnel"),
        }
    }
}

impl UpstreamConnection {
    /// A connection whose bytes move when its user polls it.
    pub(crate) fn driven_in_place(stream: Stream) -> Self {
        UpstreamConnection::Http1(Box::new(http1::Connection::new(stream)))
    }

    /// A connection run by a task of its own.
    pub(crate) fn driven_elsewhere(sender: SendRequest<RequestBody>) -> Self {
        UpstreamConnection::Tunnel(sender)
    }

    /// Sends `req`, with the proxy's `forwarding` fields after its own,
    /// and waits for the answer's head, its fields put where
    /// `answer_fields` says (hyper's connection puts them all in the map).
    /// A request the connection could not take comes back in the error (to
    /// be sent elsewhere).
    ///
    /// Not an `async fn` (see "one future per request" in
    /// docs/architecture.md): the client's exchange is returned wrapped,
    /// not awaited in a second future around it.
    pub(crate) fn send<'a>(
        &'a mut self,
        mut req: Request<RequestBody>,
        forwarding: Option<&'a Forwarding<'_>>,
        answer_fields: AnswerFields,
    ) -> impl Future<Output = Result<Response<UpstreamBody>, SendError>> + 'a {
        match self {
            UpstreamConnection::Http1(conn) => Either::Left(
                conn.send(req, forwarding, answer_fields)
                    .map(|sent| sent.map(|response| response.map(UpstreamBody::Http1))),
            ),
            UpstreamConnection::Tunnel(sender) => {
                // hyper writes the head from the request's parts.
                if let Some(forwarding) = forwarding {
                    forwarding.add_to(req.headers_mut());
                    *req.uri_mut() = forwarding.target(req.uri());
                }
                Either::Right(sender.try_send_request(req).map(|sent| match sent {
                    Ok(response) => Ok(response.map(UpstreamBody::Tunnel)),
                    Err(mut error) => Err(SendError {
                        unsent: error.take_message().map(Box::new),
                        unanswered: None,
                        error: UpstreamError::Hyper(error.into_error()),
                    }),
                }))
            }
        }
    }

    /// Whether the connection takes a request now: ready with `true`,
    /// closed (`false`), or not yet.
    pub(crate) fn poll_ready_now(&mut self, cx: &mut Context<'_>) -> Poll<bool> {
        match self {
            UpstreamConnection::Http1(conn) => conn.poll_ready_now(cx),
            UpstreamConnection::Tunnel(sender) => match sender.poll_ready(cx) {
                Poll::Ready(Ok(())) => Poll::Ready(true),
                Poll::Ready(Err(_)) => Poll::Ready(false),
                Poll::Pending => Poll::Pending,
            },
        }
    }

    /// Waits until the connection takes a request; `false` if it closed.
    pub(crate) async fn ready(&mut self) -> bool {
        std::future::poll_fn(|cx| self.poll_ready_now(cx)).await
    }

    /// Whether the connection can take no other request.
    pub(crate) fn is_closed(&self) -> bool {
        match self {
            UpstreamConnection::Http1(conn) => conn.is_closed(),
            UpstreamConnection::Tunnel(sender) => sender.is_closed(),
        }
    }

    /// Reads the next frame of an answer that came on this connection.
    pub(crate) fn poll_body(
        &mut self,
        body: &mut UpstreamBody,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, UpstreamError>>> {
        match (self, body) {
            (UpstreamConnection::Http1(conn), UpstreamBody::Http1(body)) => {
                conn.poll_body(body, cx)
            }
            (_, body) => body.poll_alone(cx),
        }
    }
}

impl UpstreamBody {
    /// Reads the next frame of a body that needs no connection of the
    /// proxy's to read it (hyper's, whose connection has a task of its
    /// own).
    pub(crate) fn poll_alone(
        &mut self,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, UpstreamError>>> {
        match self {
            UpstreamBody::Tunnel(body) => Pin::new(body)
                .poll_frame(cx)
                .map(|frame| frame.map(|f| f.map_err(UpstreamError::Hyper))),
            UpstreamBody::Http1(_) => Poll::Ready(Some(Err(UpstreamError::ClosedInBody))),
        }
    }

    pub(crate) fn is_end_stream(&self) -> bool {
        match self {
            UpstreamBody::Http1(body) => body.is_end_stream(),
            UpstreamBody::Tunnel(body) => body.is_end_stream(),
        }
    }

    pub(crate) fn size_hint(&self) -> SizeHint {
        match self {
            UpstreamBody::Http1(body) => body.size_hint(),
            UpstreamBody::Tunnel(body) => body.size_hint(),
        }
    }

    /// The answer's fields that are not in its map, if any.
    pub(crate) fn verbatim_fields(&self) -> Option<&VerbatimFields> {
        match self {
            UpstreamBody::Http1(body) if !body.verbatim.lines().is_empty() => Some(&body.verbatim),
            _ => None,
        }
    }
}

impl From<SendError> for UpstreamError {
    fn from(error: SendError) -> Self {
        error.error
    }
}
