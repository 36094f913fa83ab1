//! A client's socket as hyper sees it (after TLS, on a TLS listener):
//! reads tell the connection's watch that a request head has begun, and
//! once the head timer ran out the next read answers 408 itself and
//! fails, which ends the connection. (hyper's own header timeout closes
//! the connection without a word.)

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use super::connections::Slot;
use super::watch::Watch;

/// The stream of one client connection (a TCP socket, or TLS over one),
/// with its slot in the budget.
pub struct WatchedIo<S> {
    stream: S,
    watch: Arc<Watch>,
    /// The 408 answer, written at most once.
    timeout_answer: Option<Arc<[u8]>>,
    /// hyper's last write did not go through: an answer of ours now could
    /// land in the middle of its response.
    write_blocked: bool,
    _slot: Slot,
}

impl<S: AsyncRead + AsyncWrite + Unpin> WatchedIo<S> {
    pub fn new(stream: S, watch: Arc<Watch>, slot: Slot, answer: Arc<[u8]>) -> Self {
        Self {
            stream,
            watch,
            timeout_answer: Some(answer),
            write_blocked: false,
            _slot: slot,
        }
    }

    /// Answers 408 (HTTP/1 only, and only between responses) and ends the
    /// write side (TLS: with close_notify), so the client reads the answer
    /// before the close. Whatever does not go out at once is given up.
    fn answer_timeout(&mut self, cx: &mut Context<'_>) {
        let Some(answer) = self.timeout_answer.take() else {
            return;
        };
        if self.watch.is_http2() || self.write_blocked {
            return;
        }
        // A fresh socket's send buffer takes these few bytes at once.
        let mut stream = Pin::new(&mut self.stream);
        if let Poll::Ready(Ok(n)) = stream.as_mut().poll_write(cx, &answer) {
            if n == answer.len() {
                let _ = stream.as_mut().poll_flush(cx);
                let _ = stream.as_mut().poll_shutdown(cx);
            }
        }
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncRead for WatchedIo<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if self.watch.is_expired() {
            self.answer_timeout(cx);
            return Poll::Ready(Err(io::Error::new(
                io::ErrorKind::TimedOut,
                "the request head did not arrive within the header timeout",
            )));
        }
        let before = buf.filled().len();
        let read = Pin::new(&mut self.stream).poll_read(cx, buf);
        if let Poll::Ready(Ok(())) = read {
            let bytes = &buf.filled()[before..];
            if !bytes.is_empty() {
                self.watch.on_read(bytes);
            }
        }
        read
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncWrite for WatchedIo<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let written = Pin::new(&mut self.stream).poll_write(cx, buf);
        self.write_blocked = written.is_pending();
        written
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let written = Pin::new(&mut self.stream).poll_write_vectored(cx, bufs);
        self.write_blocked = written.is_pending();
        written
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let flushed = Pin::new(&mut self.stream).poll_flush(cx);
        self.write_blocked = flushed.is_pending();
        flushed
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }
}
/// The 408 answer of a listener whose header timeout is `timeout`: in
/// neutral words, as every answer an end user may see (the operator
/// counts these in `switchyard_header_timeouts_total`).
pub fn timeout_answer(timeout: std::time::Duration) -> Arc<[u8]> {
    let body = format!(
        "408 Request Timeout\nThe request did not arrive within {}.\n",
        humantime::format_duration(timeout)
    );
    format!(
        "HTTP/1.1 408 Request Timeout\r\nconnection: close\r\ncontent-type: text/plain; charset=utf-8\r\n\
         x-switchyard-error: header-timeout\r\ncontent-length: {}\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
    .into()
}
