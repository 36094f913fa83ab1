use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;
use hyper::client::conn::http1::SendRequest;

use super::Upstream;
use super::backend::InFlight;
use super::upstream::UpstreamBody;

/// The body of every response the proxy sends: an upstream's body streamed
/// through (its connection goes back to the pool when the body ends, and
/// the request stops counting as in flight), or a small fixed body.
pub struct ResponseBody {
    kind: Kind,
}

enum Kind {
    Upstream {
        body: Incoming,
        conn: Option<(SendRequest<UpstreamBody>, Arc<Upstream>)>,
        in_flight: Option<InFlight>,
    },
    Full(Option<Bytes>),
}

impl ResponseBody {
    pub fn full(bytes: impl Into<Bytes>) -> Self {
        Self {
            kind: Kind::Full(Some(bytes.into())),
        }
    }

    pub fn empty() -> Self {
        Self {
            kind: Kind::Full(None),
        }
    }

    pub(crate) fn upstream(
        body: Incoming,
        conn: Option<(SendRequest<UpstreamBody>, Arc<Upstream>)>,
        in_flight: Option<InFlight>,
    ) -> Self {
        Self {
            kind: Kind::Upstream {
                body,
                conn,
                in_flight,
            },
        }
    }
}

impl Drop for ResponseBody {
    fn drop(&mut self) {
        // hyper stops polling a body as soon as it reports its end (a body
        // of known length read whole, or an empty one) and drops it, so the
        // end is noticed here too. Only a body read to its end leaves the
        // connection fit for the next request; any other is closed.
        if let Kind::Upstream { body, conn, .. } = &mut self.kind {
            if body.is_end_stream() {
                if let Some((sender, upstream)) = conn.take() {
                    upstream.give_back(sender);
                }
            }
        }
    }
}

impl Body for ResponseBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        match &mut self.get_mut().kind {
            Kind::Full(bytes) => Poll::Ready(bytes.take().map(|b| Ok(Frame::data(b)))),
            Kind::Upstream {
                body,
                conn,
                in_flight,
            } => {
                let polled = Pin::new(body).poll_frame(cx);
                match &polled {
                    Poll::Ready(None) => {
                        if let Some((sender, upstream)) = conn.take() {
                            upstream.give_back(sender);
                        }
                        in_flight.take();
                    }
                    Poll::Ready(Some(Err(_))) => {
                        conn.take();
                        in_flight.take();
                    }
                    _ => {}
                }
                polled
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        match &self.kind {
            Kind::Full(bytes) => bytes.is_none(),
            Kind::Upstream { body, .. } => body.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.kind {
            Kind::Full(Some(b)) => SizeHint::with_exact(b.len() as u64),
            Kind::Full(None) => SizeHint::with_exact(0),
            Kind::Upstream { body, .. } => body.size_hint(),
        }
    }
}
