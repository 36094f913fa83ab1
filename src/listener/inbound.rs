//! A client's request body as the listener hands it to its service: read
//! by the listener's own HTTP/1.1 server, or by hyper (HTTP/2, and the
//! connections the own server hands over: upgrades, `Expect`, HTTP/1.0,
//! heads it cannot take).

use std::error::Error as StdError;
use std::fmt;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};

use super::http1::RequestBody;

/// The body of a request a listener received.
pub enum Inbound {
    /// None at all (no `content-length`, or 0, and not chunked).
    Empty,
    /// Read by the listener's own HTTP/1.1 server.
    Http1(RequestBody),
    /// Read by hyper.
    Hyper(hyper::body::Incoming),
}

/// Why a client's body could not be read whole.
#[derive(Debug)]
pub enum InboundError {
    /// The own server's: `InvalidData` for malformed framing, anything
    /// else (end of stream, reset) for a client that went away.
    Http1(io::Error),
    Hyper(hyper::Error),
}

impl Inbound {
    /// Whether the listener's own HTTP/1.1 server took the request, and
    /// so writes its answer (which may carry fields outside its map,
    /// [`crate::listener::VerbatimFields`]); hyper writes only the map.
    pub fn is_own_server(&self) -> bool {
        !matches!(self, Inbound::Hyper(_))
    }
}

impl InboundError {
    /// Whether the client sent a body that breaks HTTP/1.1 framing (rather
    /// than going away in the middle of it).
    pub fn is_malformed(&self) -> bool {
        let mut source: Option<&(dyn StdError + 'static)> = match self {
            InboundError::Http1(error) => Some(error),
            InboundError::Hyper(error) => {
                if error.is_parse() {
                    return true;
                }
                error.source()
            }
        };
        while let Some(e) = source {
            if let Some(io) = e.downcast_ref::<io::Error>() {
                return matches!(
                    io.kind(),
                    io::ErrorKind::InvalidInput | io::ErrorKind::InvalidData
                );
            }
            source = e.source();
        }
        false
    }
}

impl fmt::Display for InboundError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            InboundError::Http1(error) => error.fmt(f),
            InboundError::Hyper(error) => error.fmt(f),
        }
    }
}

impl StdError for InboundError {
    fn source(&self) -> Option<&(dyn StdError + 'static)> {
        match self {
            InboundError::Http1(error) => Some(error),
            InboundError::Hyper(error) => Some(error),
        }
    }
}

impl Body for Inbound {
    type Data = Bytes;
    type Error = InboundError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, InboundError>>> {
        match self.get_mut() {
            Inbound::Empty => Poll::Ready(None),
            Inbound::Http1(body) => Pin::new(body).poll_frame(cx).map_err(InboundError::Http1),
            Inbound::Hyper(body) => Pin::new(body).poll_frame(cx).map_err(InboundError::Hyper),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            Inbound::Empty => true,
            Inbound::Http1(body) => body.is_end_stream(),
            Inbound::Hyper(body) => body.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            Inbound::Empty => SizeHint::with_exact(0),
            Inbound::Http1(body) => body.size_hint(),
            Inbound::Hyper(body) => body.size_hint(),
        }
    }
}

impl fmt::Debug for Inbound {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Inbound::Empty => "Inbound::Empty",
            Inbound::Http1(_) => "Inbound::Http1",
            Inbound::Hyper(_) => "Inbound::Hyper",
        })
    }
}
