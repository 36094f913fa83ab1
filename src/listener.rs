//! How serve runs a listening socket: the proxy's, each pinned address's
//! and the admin API's, all one way.
//!
//! - **Caps.** Each connection takes a slot of its budget ([`Connections`]:
//!   the proxy with its pinned addresses, or the admin API) under a total
//!   cap and a cap per client address. Over a cap an idle connection is
//!   shed (closed gracefully) to make room; with none idle the new one is
//!   closed at once. The proxy's caps come from the file limit, which
//!   serve raises at start ([`FileLimit`]), and leave files for upstream
//!   connections, the admin API and everything else serve keeps open.
//! - **Timeouts.** Each connection has a [`watch`](watch::Watch) and one
//!   timer: a request head not received within the header timeout gets
//!   408 and the connection is closed; a keep-alive connection with no
//!   request for the idle timeout is closed (HTTP/2: GOAWAY). Requests in
//!   progress are the request path's to time.
//! - **TLS** (a TLS listener): the handshake runs in the connection's task,
//!   holding its slot, within the TLS handshake timeout; a connection
//!   asked to close meanwhile (shed, drained) ends at once. The timers
//!   above then watch the decrypted stream.
//! - **Accept errors** (out of file descriptors and the like) back off from
//!   10 ms to 1 s and are logged at most once a second, with a count.
//! - **Drain**: see [`Drain`].

mod accepting;
mod client_connection;
mod connections;
mod file_limit;
mod http1;
mod inbound;
mod io;
mod limits;
mod throttle;
mod tracked;
mod watch;

pub use crate::http1::verbatim::{VerbatimFields, WithVerbatimFields};
pub use connections::Connections;
pub use file_limit::FileLimit;
pub use http1::RequestBody;
pub use inbound::{Inbound, InboundError};
pub use limits::{Limits, ListenerSettings, Resolved};
pub use watch::Timeouts;

use std::net::SocketAddr;
use std::pin::pin;
use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response};
use hyper::body::Incoming;
use hyper::service::{Service, service_fn};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use tokio::net::TcpStream;
use tokio::time::Instant;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use accepting::{Accepting, Admission};
use client_connection::ClientConnection;
use http1::{ClientIo, Rewind};
use watch::{Check, Watch};

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// How a listener winds down.
///
/// Once `stop` is cancelled it accepts no more (connections still queued
/// on the listening socket stay there, for whoever else holds it: a serve
/// that took over). Connections still open `linger` later, or as soon as
/// `close` is cancelled, are shut down gracefully (an idle one at once, a
/// busy one after its response; HTTP/2 gets GOAWAY), and whatever is left
/// `timeout` after that is dropped.
#[derive(Debug, Clone)]
pub struct Drain {
    pub stop: CancellationToken,
    pub linger: Duration,
    pub close: CancellationToken,
    pub timeout: Duration,
}

/// The budgets of every listener, for `/metrics`.
#[derive(Debug, Clone, Default)]
pub struct Listeners(pub Vec<Arc<Connections>>);

/// How long a connection that was asked to close, or timed out, may take
/// to go while none of its requests is still being answered.
const CLOSE_GRACE: Duration = Duration::from_secs(5);
/// Log lines about failed or refused accepts, at most one per this.
const REPORT_EVERY: Duration = Duration::from_secs(1);

/// Tells the connections of one listener from another's in a budget.
static NEXT_LISTENER: AtomicU64 = AtomicU64::new(1);

/// Accepts connections on `listener` until the drain begins, serving each
/// with `make_service(client address)`, then drains them. HTTP/1.1 is
/// served by the listener's own server ([`http1`]), which hands a
/// connection to hyper at the first head it does not take; HTTP/2 is
/// hyper's. With `tls`, each connection's TLS handshake comes first (in
/// the connection's own task, bounded by the handshake timeout), and
/// HTTP/2 is chosen by ALPN.
pub async fn serve<M, S, B>(
    listener: std::net::TcpListener,
    connections: Arc<Connections>,
    drain: Drain,
    tls: Option<TlsAcceptor>,
    make_service: M,
) where
    M: Fn(SocketAddr) -> S,
    S: Service<Request<Inbound>, Response = Response<B>> + Send + Sync + 'static,
    S::Future: Send + 'static,
    S::Error: Into<BoxError> + Send + 'static,
    B: http_body::Body<Data = Bytes> + WithVerbatimFields + Unpin + Send + 'static,
    B::Error: Into<BoxError> + Send,
{
    let name = connections.name();
    let Some(mut accepting) = Accepting::new(listener, Arc::clone(&connections)) else {
        return;
    };
    let id = accepting.id;
    let limits = connections.limits().clone();
    let builder = Arc::new(builder(&limits));
    let answer = io::timeout_answer(limits.timeouts.header);
    let tasks = TaskTracker::new();
    let mut closing = false;
    loop {
        let admission = tokio::select! {
            next = accepting.next(&drain.stop) => match next {
                Some(admission) => admission,
                None => break,
            },
            () = drain.close.cancelled(), if !closing => {
                closing = true;
                connections.close_all(id);
                continue;
            }
        };
        let Admission {
            stream,
            client,
            slot,
            watch,
        } = admission;
        if closing {
            watch.ask_to_close();
        }
        let service = Arc::new(tracked::tracked(
            make_service(client),
            Arc::clone(&watch),
            connections.requests().cloned(),
        ));
        let Some(acceptor) = &tls else {
            let io = io::WatchedIo::new(stream, Arc::clone(&watch), slot, Arc::clone(&answer));
            let conn = client_connection(Box::new(io), service, &builder, false);
            tasks.spawn(run_connection(
                conn,
                watch,
                Arc::clone(&connections),
                limits.timeouts,
                client,
            ));
            continue;
        };
        let accepting = acceptor.accept(stream);
        let builder = builder.clone();
        let answer = Arc::clone(&answer);
        let connections = Arc::clone(&connections);
        tasks.spawn(async move {
            let Some(stream) = handshake(accepting, &watch, &connections, client).await else {
                return;
            };
            let http2 = stream.get_ref().1.alpn_protocol() == Some(b"h2");
            let io = io::WatchedIo::new(stream, Arc::clone(&watch), slot, answer);
            let conn = client_connection(Box::new(io), service, &builder, http2);
            let timeouts = connections.limits().timeouts;
            run_connection(conn, watch, connections, timeouts, client).await;
        });
    }
    drop(accepting);
    tasks.close();
    tokio::select! {
        () = tasks.wait() => return,
        () = tokio::time::sleep(drain.linger) => {}
        () = drain.close.cancelled() => {}
    }
    connections.close_all(id);
    if tokio::time::timeout(drain.timeout, tasks.wait())
        .await
        .is_err()
    {
        tracing::warn!(
            listener = name,
            open = tasks.len(),
            "client connections still open after {:?}; closing them",
            drain.timeout
        );
    }
}

/// Runs a TLS handshake until it ends, the handshake timeout runs out, or
/// the connection is asked to close (shed, drained): the TLS stream, or
/// `None` (counted, logged at debug level) when the connection is to end.
async fn handshake(
    accepting: tokio_rustls::Accept<TcpStream>,
    watch: &Watch,
    connections: &Connections,
    client: SocketAddr,
) -> Option<tokio_rustls::server::TlsStream<TcpStream>> {
    let limit = connections.limits().tls_handshake;
    // Kept alive (with the socket) until this returns: the close comes
    // after the count, so whoever sees the close sees the count.
    let mut accepting = pin!(tokio::time::timeout(limit, accepting));
    let done = tokio::select! {
        biased;
        () = watch.close_asked() => return None,
        done = &mut accepting => done,
    };
    match done {
        // An ACME CA validating TLS-ALPN-01 has what it came for: the
        // handshake's certificate (RFC 8737 3: no data follows).
        Ok(Ok(stream)) if stream.get_ref().1.alpn_protocol() == Some(crate::tls::ACME_TLS_ALPN) => {
            tracing::debug!(%client, "TLS-ALPN-01 validation handshake answered");
            None
        }
        Ok(Ok(stream)) => Some(stream),
        Ok(Err(error)) => {
            connections.tls_handshake_failed();
            tracing::debug!(%error, %client, "TLS handshake failed");
            None
        }
        Err(_) => {
            connections.tls_handshake_timed_out();
            tracing::debug!(%client, "TLS handshake not done within {limit:?}; closed");
            None
        }
    }
}

/// hyper's connection settings for `limits`. HTTP/1's header timer is the
/// watch's (hyper's would close without answering 408).
fn builder(limits: &Limits) -> auto::Builder<TokioExecutor> {
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder.http1().header_read_timeout(None);
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_concurrent_streams(limits.http2_max_streams)
        .keep_alive_interval(limits.http2_keep_alive);
    builder
}

/// The server of a client connection: hyper's for HTTP/2 (`http2`: chosen
/// by ALPN), the own HTTP/1.1 one otherwise, which hands over to hyper
/// when it meets a head it does not take.
fn client_connection<S, B>(
    io: ClientIo,
    service: Arc<S>,
    builder: &Arc<auto::Builder<TokioExecutor>>,
    http2: bool,
) -> ClientConnection
where
    S: Service<Request<Inbound>, Response = Response<B>> + Send + Sync + 'static,
    S::Future: Send + 'static,
    S::Error: Into<BoxError> + Send + 'static,
    B: http_body::Body<Data = Bytes> + WithVerbatimFields + Send + Unpin + 'static,
    B::Error: Into<BoxError> + Send,
{
    let hyper = {
        let service = Arc::clone(&service);
        let builder = Arc::clone(builder);
        move |io: Rewind| -> client_connection::HyperServer {
            let service =
                service_fn(move |req: Request<Incoming>| service.call(req.map(Inbound::Hyper)));
            Box::pin(
                builder
                    .serve_connection_with_upgrades(TokioIo::new(io), service)
                    .into_owned(),
            )
        }
    };
    if http2 {
        return ClientConnection::hyper(hyper(Rewind::new(Bytes::new(), io)));
    }
    let shutdown = Arc::default();
    let own = http1::serve(io, service, Arc::clone(&shutdown));
    ClientConnection::own(Box::pin(own), shutdown, Box::new(hyper))
}

/// Serves one connection until it ends, closing it when a timer of its
/// watch runs out or it is asked to (shed, drained).
async fn run_connection(
    mut conn: ClientConnection,
    watch: Arc<Watch>,
    connections: Arc<Connections>,
    timeouts: Timeouts,
    client: SocketAddr,
) {
    let timer = tokio::time::sleep_until(Instant::now() + timeouts.header);
    let mut timer = pin!(timer);
    // Set once the connection was told to go: from then on the timer only
    // bounds how long it may take.
    let mut going = false;
    loop {
        tokio::select! {
            biased;
            ended = &mut conn => {
                if let Err(error) = ended {
                    tracing::debug!(%error, %client, "client connection ended with an error");
                }
                return;
            }
            () = watch.close_asked(), if !going => {
                going = true;
                conn.graceful_shutdown();
                timer.as_mut().reset(Instant::now() + CLOSE_GRACE);
            }
            () = timer.as_mut() => {
                let now = Instant::now();
                if going {
                    if !watch.is_busy() {
                        return;
                    }
                    timer.as_mut().reset(now + CLOSE_GRACE);
                    continue;
                }
                match watch.check(now, timeouts) {
                    Check::Until(deadline) => timer.as_mut().reset(deadline),
                    Check::HeadTimedOut => {
                        connections.header_timed_out();
                        if watch.is_http2() {
                            conn.graceful_shutdown();
                        } else {
                            // Its next read answers 408 and ends it.
                            watch.expire();
                        }
                        going = true;
                        timer.as_mut().reset(now + CLOSE_GRACE);
                    }
                    Check::IdleTimedOut => {
                        connections.idle_timed_out();
                        conn.graceful_shutdown();
                        going = true;
                        timer.as_mut().reset(now + CLOSE_GRACE);
                    }
                }
            }
        }
    }
}

/// A TCP connection's hold on its budget: the slot it takes until it is
/// dropped, and whether the budget asked it to close (shed, or its
/// listener's connections are being cut).
pub struct Admitted {
    _slot: connections::Slot,
    watch: Arc<Watch>,
}

impl Admitted {
    /// Completes once the connection was asked to close.
    pub async fn close_asked(&self) {
        self.watch.close_asked().await;
    }
}

/// Accepts TCP connections on `listener` until `stop`, under the caps of
/// `connections`, handing each to `handle` on a task of `tasks`. A TCP
/// connection carries a protocol of its own, so no HTTP timer watches it
/// and it is never shed as idle; it keeps its slot until `handle` is done.
/// Connections outlive the accept loop: whoever holds `tasks` waits for
/// (or cuts) them.
pub async fn serve_tcp<H, F>(
    listener: std::net::TcpListener,
    connections: Arc<Connections>,
    stop: CancellationToken,
    tasks: TaskTracker,
    handle: H,
) where
    H: Fn(TcpStream, SocketAddr, Admitted) -> F,
    F: std::future::Future<Output = ()> + Send + 'static,
{
    let Some(mut accepting) = Accepting::new(listener, connections) else {
        return;
    };
    while let Some(Admission {
        stream,
        client,
        slot,
        watch,
    }) = accepting.next(&stop).await
    {
        // Its bytes are its protocol's: neither timed as HTTP nor shed.
        watch.upgraded(None);
        tasks.spawn(handle(stream, client, Admitted { _slot: slot, watch }));
    }
}
