//! A client connection's socket and the bytes read from it but not yet
//! taken, shared by the connection's loop (request heads, responses) and
//! the body of the request being read.

use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll};

use bytes::BytesMut;
use tokio::io::{AsyncRead, AsyncWrite};

use crate::http1::framing::Framing;

/// What a client connection runs over: a TCP socket or TLS over one, as
/// the listener watches it.
pub trait ClientStream: AsyncRead + AsyncWrite + Send + Unpin {}

impl<T: AsyncRead + AsyncWrite + Send + Unpin> ClientStream for T {}

pub type ClientIo = Box<dyn ClientStream>;

/// The socket and its unread bytes.
pub(super) struct Wire {
    pub io: ClientIo,
    /// Bytes read and not yet taken.
    pub read: BytesMut,
    /// Where the body of the request being read stands.
    pub body: Framing,
    /// Which request `body` belongs to: a body kept after its request was
    /// answered never reads the next one's.
    pub request: u64,
}

/// The wire, shared.
#[derive(Clone)]
pub(super) struct SharedWire(Arc<Mutex<Wire>>);

impl SharedWire {
    pub fn new(io: ClientIo) -> Self {
        SharedWire(Arc::new(Mutex::new(Wire {
            io,
            read: BytesMut::new(),
            body: Framing::empty(),
            request: 0,
        })))
    }

    pub fn lock(&self) -> MutexGuard<'_, Wire> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The wire, when nothing else holds it any more.
    pub fn into_inner(self) -> Option<Wire> {
        Arc::into_inner(self.0).map(|m| m.into_inner().unwrap_or_else(|p| p.into_inner()))
    }

    /// Writes all of `bytes` and flushes them.
    pub async fn write_all(&self, mut bytes: &[u8]) -> io::Result<()> {
        while !bytes.is_empty() {
            let n = std::future::poll_fn(|cx| Pin::new(&mut self.lock().io).poll_write(cx, bytes))
                .await?;
            if n == 0 {
                return Err(io::ErrorKind::WriteZero.into());
            }
            bytes = &bytes[n..];
        }
        std::future::poll_fn(|cx| Pin::new(&mut self.lock().io).poll_flush(cx)).await
    }

    /// Ends the write side (TLS: with close_notify).
    pub async fn shutdown(&self) -> io::Result<()> {
        std::future::poll_fn(|cx| Pin::new(&mut self.lock().io).poll_shutdown(cx)).await
    }
}

impl Wire {
    /// Reads more bytes of a head into `read`: the count, 0 at the end of
    /// the stream. A connection waiting for its next request holds no
    /// buffer.
    pub fn poll_fill(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<usize>> {
        crate::http1::read::poll_read(&mut self.io, &mut self.read, cx)
    }

    /// Reads more bytes of a request's body into `read`.
    pub fn poll_fill_body(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<usize>> {
        crate::http1::read::poll_read_body(&mut self.io, &mut self.read, cx)
    }
}
