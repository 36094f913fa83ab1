//! What goes upstream: the client's body streamed through (and, when the
//! request is mirrored, copied on the way up to a limit), or a body the
//! proxy holds whole (a request sent again, a mirrored copy).

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::{Bytes, BytesMut};
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;

use super::mirror::Fanout;

pub(crate) enum RequestBody {
    Client(Incoming),
    /// The client's body, copied for the shadows while it streams to main.
    Tee(Box<Tee>),
    Full(Option<Bytes>),
}

/// Copies a body as it passes; when the body ends whole and within the
/// limit, the copy goes to the shadows (never waiting for them).
pub(crate) struct Tee {
    inner: Incoming,
    copy: BytesMut,
    limit: usize,
    fanout: Option<Fanout>,
}

impl RequestBody {
    pub(crate) fn empty() -> Self {
        RequestBody::Full(None)
    }

    /// Streams `inner` and hands a copy to `fanout` once it is complete.
    pub(crate) fn tee(inner: Incoming, fanout: Fanout, limit: usize) -> Self {
        let mut tee = Tee {
            inner,
            copy: BytesMut::new(),
            limit,
            fanout: Some(fanout),
        };
        tee.finish_if_ended();
        RequestBody::Tee(Box::new(tee))
    }
}

impl Tee {
    /// hyper may never poll a body that says it has ended (an empty one,
    /// or one whose announced length has been read), so the end is checked
    /// after every frame too.
    fn finish_if_ended(&mut self) {
        if self.inner.is_end_stream() {
            if let Some(fanout) = self.fanout.take() {
                fanout.send(std::mem::take(&mut self.copy).freeze());
            }
        }
    }

    fn keep(&mut self, data: &Bytes) {
        if self.fanout.is_none() {
            return;
        }
        if self.copy.len() + data.len() > self.limit {
            if let Some(fanout) = self.fanout.take() {
                fanout.too_large();
            }
            self.copy = BytesMut::new();
        } else {
            self.copy.extend_from_slice(data);
        }
    }
}

impl Body for RequestBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        match self.get_mut() {
            RequestBody::Client(body) => Pin::new(body).poll_frame(cx),
            RequestBody::Full(bytes) => Poll::Ready(bytes.take().map(|b| Ok(Frame::data(b)))),
            RequestBody::Tee(tee) => {
                let polled = Pin::new(&mut tee.inner).poll_frame(cx);
                match &polled {
                    Poll::Ready(Some(Ok(frame))) => {
                        if let Some(data) = frame.data_ref() {
                            tee.keep(data);
                        }
                        tee.finish_if_ended();
                    }
                    Poll::Ready(None) => {
                        if let Some(fanout) = tee.fanout.take() {
                            fanout.send(std::mem::take(&mut tee.copy).freeze());
                        }
                    }
                    // A broken upload is not mirrored.
                    Poll::Ready(Some(Err(_))) => tee.fanout = None,
                    Poll::Pending => {}
                }
                polled
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            RequestBody::Client(body) => body.is_end_stream(),
            RequestBody::Tee(tee) => tee.inner.is_end_stream(),
            RequestBody::Full(bytes) => bytes.is_none(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            RequestBody::Client(body) => body.size_hint(),
            RequestBody::Tee(tee) => tee.inner.size_hint(),
            RequestBody::Full(Some(b)) => SizeHint::with_exact(b.len() as u64),
            RequestBody::Full(None) => SizeHint::with_exact(0),
        }
    }
}
