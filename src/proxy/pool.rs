//! The proxy's connections to instances: a pool per instance, kept in the
//! instance's [`Upstream`] so that it goes when the instance goes. Each
//! worker of the data plane keeps its own share of the pool: a connection
//! is registered with the runtime that opened it, so it is only ever taken
//! by that worker's requests (no wake-ups across threads).

use std::any::Any;
use std::io;
use std::sync::Arc;
use std::time::Duration;

use std::future::poll_fn;
use std::task::Poll;

use hyper::client::conn::http1;
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

use super::connection::{Stream, UpstreamConnection};
use super::data_plane;
use super::idle_sweep::{IdleList, IdleShares};
use crate::backend::{ConnectionPool, Upstream};

/// Idle connections kept per instance, over all workers; more are closed
/// when returned. Below the number of requests in flight at a peak, the
/// connections of a burst of answers are closed only to be opened again
/// for the next requests (with 256, about one new connection per 3.5
/// requests under 1,000 client connections; `BENCHMARKS.md`, Memory).
const MAX_IDLE: usize = 1024;

/// The proxy's idle HTTP/1.1 connections to one instance: a share for each
/// worker, and one for the control plane's thread (pinned addresses).
#[derive(Debug)]
pub(crate) struct Pool {
    /// Closed after `serve --upstream-idle-timeout` by [`super::idle_sweep`].
    idle: Arc<IdleShares<UpstreamConnection>>,
    /// Idle connections kept in each share.
    max_idle: usize,
}

impl Default for Pool {
    fn default() -> Self {
        let workers = data_plane::workers();
        Self {
            idle: IdleShares::registered(workers + 1),
            max_idle: (MAX_IDLE / workers).max(1),
        }
    }
}

impl Pool {
    /// The calling worker's share.
    fn idle_lock(&self) -> std::sync::MutexGuard<'_, IdleList<UpstreamConnection>> {
        self.idle.share(data_plane::worker())
    }
}

impl ConnectionPool for Pool {
    fn clear(&self) {
        self.idle.clear();
    }

    fn as_any(&self) -> &dyn Any {
        self
    }
}

/// How the proxy reaches an instance: its pooled connections, or a new one.
pub(crate) trait Connections {
    /// A pooled connection ready for the next request, if any. Connections
    /// that closed meanwhile, or are not ready within `timeout`, are dropped.
    async fn take_idle(&self, timeout: Duration) -> Option<UpstreamConnection>;
    /// Gives a connection back once its response has been read to the end.
    fn give_back(&self, conn: UpstreamConnection);
    /// Opens a new HTTP/1.1 connection. With `tunnels` the connection can
    /// be taken over after a 101 answer (and is never pooled).
    async fn connect(&self, timeout: Duration, tunnels: bool) -> io::Result<UpstreamConnection>;
}

impl Connections for Upstream {
    async fn take_idle(&self, timeout: Duration) -> Option<UpstreamConnection> {
        let pool = self.pool::<Pool>();
        loop {
            let mut conn = pool.idle_lock().pop()?;
            // Nobody polled it while it was idle: moving its bytes now tells
            // whether the instance closed it meanwhile, or whether the end
            // of its last answer still has to be taken in. One that is
            // ready at once needs no waiting (and no timer).
            match poll_fn(|cx| Poll::Ready(conn.poll_ready_now(cx))).await {
                Poll::Ready(true) => return Some(conn),
                Poll::Ready(false) => continue,
                Poll::Pending => {}
            }
            // Given back as soon as its response body ended, a connection may
            // need a moment before it takes another request.
            if let Ok(true) = tokio::time::timeout(timeout, conn.ready()).await {
                return Some(conn);
            }
        }
    }

    fn give_back(&self, conn: UpstreamConnection) {
        if conn.is_closed() || !self.is_healthy() {
            return;
        }
        let pool = self.pool::<Pool>();
        let mut idle = pool.idle_lock();
        if idle.len() < pool.max_idle {
            idle.push(conn);
        }
    }

    async fn connect(&self, timeout: Duration, tunnels: bool) -> io::Result<UpstreamConnection> {
        let timed_out = |_| io::Error::new(io::ErrorKind::TimedOut, "connect timed out");
        let started = tokio::time::Instant::now();
        let stream = tokio::time::timeout(timeout, TcpStream::connect(self.addr))
            .await
            .map_err(timed_out)??;
        stream.set_nodelay(true)?;
        let Some(tls) = &self.tls else {
            if tunnels {
                return tunnel_handshake(TokioIo::new(stream)).await;
            }
            return Ok(UpstreamConnection::driven_in_place(Stream::Plain(stream)));
        };
        // The TLS handshake counts against the same connect timeout.
        let stream = tokio::time::timeout_at(
            started + timeout,
            tls.connector.connect(tls.server_name.clone(), stream),
        )
        .await
        .map_err(timed_out)??;
        if tunnels {
            return tunnel_handshake(TokioIo::new(stream)).await;
        }
        Ok(UpstreamConnection::driven_in_place(Stream::Tls(Box::new(
            stream,
        ))))
    }
}

/// hyper's HTTP/1.1 on a connected stream that may become a tunnel, run
/// in a task of its own, which hands the stream over on `101 Switching
/// Protocols`.
async fn tunnel_handshake<T>(io: T) -> io::Result<UpstreamConnection>
where
    T: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    let (sender, conn) = http1::Builder::new()
        .handshake(io)
        .await
        .map_err(io::Error::other)?;
    tokio::spawn(conn.with_upgrades());
    Ok(UpstreamConnection::driven_elsewhere(sender))
}

#[cfg(test)]
mod tests {
    use std::net::SocketAddr;

    use super::*;

    #[tokio::test]
    async fn connect_gives_up_after_its_timeout() {
        use socket2::{Domain, Socket, Type};
        // A listener that never accepts: once its queue is full, the
        // kernel drops further handshakes and a connection attempt hangs.
        let socket = Socket::new(Domain::IPV4, Type::STREAM, None).expect("socket");
        let addr = SocketAddr::from(([127, 0, 0, 1], 0));
        socket.bind(&addr.into()).expect("bind");
        socket.listen(0).expect("listen");
        let addr = socket
            .local_addr()
            .expect("bound")
            .as_socket()
            .expect("an IP address");
        let wait = Duration::from_millis(200);
        let mut queued = Vec::new();
        for _ in 0..16 {
            match tokio::time::timeout(wait, TcpStream::connect(addr)).await {
                Ok(Ok(stream)) => queued.push(stream),
                _ => break,
            }
        }
        let error = Upstream::new(addr)
            .connect(wait, false)
            .await
            .expect_err("the queue is full");
        assert_eq!(error.kind(), io::ErrorKind::TimedOut, "{error}");
    }
}
