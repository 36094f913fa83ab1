//! The body of a request the own HTTP/1.1 server read the head of, taken
//! from the connection as its service polls it.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};

use super::wire::SharedWire;
use crate::http1::framing::Decoded;

/// A request body, read from its connection (framed by its length or in
/// chunks, trailers passed on).
pub struct RequestBody {
    wire: SharedWire,
    /// Which of the connection's requests it is.
    request: u64,
    ended: bool,
}

impl RequestBody {
    pub(super) fn new(wire: SharedWire, request: u64) -> Self {
        Self {
            wire,
            request,
            ended: false,
        }
    }
}

impl Body for RequestBody {
    type Data = Bytes;
    type Error = io::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, io::Error>>> {
        let this = self.get_mut();
        if this.ended {
            return Poll::Ready(None);
        }
        let mut wire = this.wire.lock();
        if wire.request != this.request {
            // Its request was answered and the connection moved on.
            this.ended = true;
            return Poll::Ready(Some(Err(io::Error::new(
                io::ErrorKind::BrokenPipe,
                "the request body was read after its request was answered",
            ))));
        }
        loop {
            let wire = &mut *wire;
            match wire.body.decode(&mut wire.read) {
                Ok(Decoded::Data(data)) => {
                    this.ended = wire.body.is_done();
                    return Poll::Ready(Some(Ok(Frame::data(data))));
                }
                Ok(Decoded::Trailers(trailers)) => {
                    this.ended = true;
                    return Poll::Ready(Some(Ok(Frame::trailers(trailers))));
                }
                Ok(Decoded::End) => {
                    this.ended = true;
                    return Poll::Ready(None);
                }
                Ok(Decoded::NeedMore) => {
                    if ready!(wire.poll_fill_body(cx))? == 0 {
                        this.ended = true;
                        return Poll::Ready(Some(Err(io::Error::new(
                            io::ErrorKind::UnexpectedEof,
                            "the client closed the connection before its request body was complete",
                        ))));
                    }
                }
                Err(error) => {
                    this.ended = true;
                    return Poll::Ready(Some(Err(io::Error::new(
                        io::ErrorKind::InvalidData,
                        format!("the request body is not valid HTTP/1.1: {error}"),
                    ))));
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.ended
    }

    fn size_hint(&self) -> SizeHint {
        if self.ended {
            return SizeHint::with_exact(0);
        }
        let wire = self.wire.lock();
        match wire.body.remaining() {
            Some(left) if wire.request == self.request => SizeHint::with_exact(left),
            _ => SizeHint::new(),
        }
    }
}
