use std::io;
use std::net::SocketAddr;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use hyper::client::conn::http1::{self, SendRequest};
use hyper_util::rt::TokioIo;
use rustls::pki_types::ServerName;
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

use super::request_body::RequestBody;

/// Idle connections kept per instance; more are closed when returned.
const MAX_IDLE: usize = 256;

/// One instance as the data plane sees it: an address, a health flag the
/// runtime flips, a count of requests in flight, and its own connection
/// pool, so that replacing an instance drops exactly its connections.
#[derive(Debug)]
pub struct Upstream {
    pub addr: SocketAddr,
    /// TLS to the instance (an `https://` external upstream).
    pub tls: Option<UpstreamTls>,
    healthy: AtomicBool,
    in_flight: AtomicUsize,
    idle: Mutex<Vec<SendRequest<RequestBody>>>,
}

/// How the proxy speaks TLS to one upstream: its trust, and the name it
/// asks for (SNI) and verifies.
#[derive(Clone)]
pub struct UpstreamTls {
    pub connector: TlsConnector,
    pub server_name: ServerName<'static>,
}

impl std::fmt::Debug for UpstreamTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UpstreamTls")
            .field("server_name", &self.server_name)
            .finish_non_exhaustive()
    }
}

impl Upstream {
    pub fn new(addr: SocketAddr) -> Self {
        Self::with_tls(addr, None)
    }

    pub fn with_tls(addr: SocketAddr, tls: Option<UpstreamTls>) -> Self {
        Self {
            addr,
            tls,
            healthy: AtomicBool::new(false),
            in_flight: AtomicUsize::new(0),
            idle: Mutex::new(Vec::new()),
        }
    }

    pub fn is_healthy(&self) -> bool {
        self.healthy.load(Ordering::Acquire)
    }

    pub fn set_healthy(&self, healthy: bool) {
        self.healthy.store(healthy, Ordering::Release);
        if !healthy {
            self.idle_lock().clear();
        }
    }

    pub fn in_flight(&self) -> usize {
        self.in_flight.load(Ordering::Relaxed)
    }

    pub(crate) fn enter(&self) {
        self.in_flight.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn leave(&self) {
        self.in_flight.fetch_sub(1, Ordering::Relaxed);
    }

    fn idle_lock(&self) -> std::sync::MutexGuard<'_, Vec<SendRequest<RequestBody>>> {
        self.idle.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A pooled connection ready for the next request, if any. Connections
    /// that closed meanwhile, or are not ready within `timeout`, are dropped.
    pub(crate) async fn take_idle(&self, timeout: Duration) -> Option<SendRequest<RequestBody>> {
        loop {
            let mut sender = {
                // A connection that is ready at once needs no waiting (and
                // no timer); the one given back last may not be yet.
                let mut idle = self.idle_lock();
                let mut i = idle.len();
                while i > 0 {
                    i -= 1;
                    if idle[i].is_closed() {
                        idle.swap_remove(i);
                    } else if idle[i].is_ready() {
                        return Some(idle.swap_remove(i));
                    }
                }
                idle.pop()?
            };
            // Given back as soon as its response body ended, a connection may
            // need a moment before it takes another request.
            if let Ok(Ok(())) = tokio::time::timeout(timeout, sender.ready()).await {
                return Some(sender);
            }
        }
    }

    /// Gives a connection back once its response has been read to the end.
    pub(crate) fn give_back(&self, sender: SendRequest<RequestBody>) {
        if sender.is_closed() || !self.is_healthy() {
            return;
        }
        let mut idle = self.idle_lock();
        if idle.len() < MAX_IDLE {
            idle.push(sender);
        }
    }

    /// Opens a new HTTP/1.1 connection. With `upgrades` the connection can
    /// be taken over after a 101 answer (and is never pooled).
    pub(crate) async fn connect(
        &self,
        timeout: Duration,
        upgrades: bool,
    ) -> io::Result<SendRequest<RequestBody>> {
        let timed_out = |_| io::Error::new(io::ErrorKind::TimedOut, "connect timed out");
        let started = tokio::time::Instant::now();
        let stream = tokio::time::timeout(timeout, TcpStream::connect(self.addr))
            .await
            .map_err(timed_out)??;
        stream.set_nodelay(true)?;
        let Some(tls) = &self.tls else {
            return handshake(TokioIo::new(stream), upgrades).await;
        };
        // The TLS handshake counts against the same connect timeout.
        let stream = tokio::time::timeout_at(
            started + timeout,
            tls.connector.connect(tls.server_name.clone(), stream),
        )
        .await
        .map_err(timed_out)??;
        handshake(TokioIo::new(stream), upgrades).await
    }
}

/// HTTP/1.1 on a connected stream; its connection runs in a task of its own.
async fn handshake<T>(io: T, upgrades: bool) -> io::Result<SendRequest<RequestBody>>
where
    T: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    let (sender, conn) = http1::Builder::new()
        .handshake(io)
        .await
        .map_err(io::Error::other)?;
    if upgrades {
        tokio::spawn(conn.with_upgrades());
    } else {
        tokio::spawn(conn);
    }
    Ok(sender)
}

#[cfg(test)]
mod tests {
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
