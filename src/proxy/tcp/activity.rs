//! What passes on a forwarded TCP connection: each side's reads are
//! counted into the release's byte counters as they happen (so a
//! long-lived connection shows its traffic while it lasts), and the time
//! of the last byte either way is kept, for the idle timeout.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::Instant;

use crate::metrics::TcpMetrics;

/// When a connection last carried a byte, either way.
pub struct Activity {
    started: Instant,
    /// Milliseconds from `started` to the last byte.
    last_ms: AtomicU64,
}

impl Activity {
    pub fn new() -> Arc<Self> {
        Arc::new(Self {
            started: Instant::now(),
            last_ms: AtomicU64::new(0),
        })
    }

    fn touch(&self) {
        let ms = u64::try_from(self.started.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.last_ms.fetch_max(ms, Ordering::Relaxed);
    }

    fn last(&self) -> Instant {
        self.started + Duration::from_millis(self.last_ms.load(Ordering::Relaxed))
    }

    /// Ends once the connection has carried nothing for `limit`.
    pub async fn idle_for(&self, limit: Duration) {
        loop {
            let deadline = self.last() + limit;
            if Instant::now() >= deadline {
                return;
            }
            tokio::time::sleep_until(deadline).await;
        }
    }
}

/// Which way the bytes read from a side go.
#[derive(Clone, Copy)]
pub enum Side {
    /// Read from the client, on their way to the release.
    Client,
    /// Read from the release, on their way to the client.
    Release,
}

/// A side of a forwarded connection whose reads are counted and noted.
pub struct Metered<'a, S> {
    pub stream: &'a mut S,
    pub side: Side,
    pub activity: &'a Activity,
    pub metrics: &'a TcpMetrics,
}

impl<S: AsyncRead + Unpin> AsyncRead for Metered<'_, S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        let polled = Pin::new(&mut *this.stream).poll_read(cx, buf);
        let read = (buf.filled().len() - before) as u64;
        if read > 0 {
            this.activity.touch();
            match this.side {
                Side::Client => this.metrics.carried(read, 0),
                Side::Release => this.metrics.carried(0, read),
            }
        }
        polled
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Metered<'_, S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut *self.get_mut().stream).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut *self.get_mut().stream).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut *self.get_mut().stream).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn idle_for_waits_from_the_last_byte_not_from_the_start() {
        let activity = Activity::new();
        tokio::time::advance(Duration::from_secs(8)).await;
        activity.touch();
        let began = Instant::now();
        activity.idle_for(Duration::from_secs(10)).await;
        assert_eq!(began.elapsed(), Duration::from_secs(10));
    }
}
