use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use http::{HeaderValue, StatusCode, Version, header};
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::Proxy;

/// How the proxy winds down.
///
/// Once `stop` is cancelled it accepts no more (connections still queued
/// on the listening socket stay there, for whoever else holds it: a serve
/// that took over), and every HTTP/1 response carries `Connection: close`,
/// so a busy keep-alive connection ends right after its next answer and its
/// client opens a new one, with no request lost in between. Connections
/// still open `linger` later, or as soon as `close` is cancelled, are shut
/// down gracefully (an idle one at once, a busy one after its response;
/// HTTP/2 gets GOAWAY), and whatever is left `timeout` after that is
/// dropped.
#[derive(Debug, Clone)]
pub struct Drain {
    pub stop: CancellationToken,
    pub linger: Duration,
    pub close: CancellationToken,
    pub timeout: Duration,
}

/// Accepts client connections until the drain begins, then drains them.
pub async fn serve(listener: std::net::TcpListener, proxy: Arc<Proxy>, drain: Drain) {
    let listener = match listener
        .set_nonblocking(true)
        .and_then(|()| TcpListener::from_std(listener))
    {
        Ok(listener) => listener,
        Err(error) => {
            tracing::error!(%error, "cannot register the proxy listener");
            return;
        }
    };
    let builder = auto::Builder::new(TokioExecutor::new());
    let connections = TaskTracker::new();
    loop {
        let (stream, client) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(pair) => pair,
                Err(error) => {
                    // Out of file descriptors and the like: back off briefly.
                    tracing::warn!(%error, "proxy accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = drain.stop.cancelled() => break,
        };
        let _ = stream.set_nodelay(true);
        let proxy = Arc::clone(&proxy);
        let closing = drain.stop.clone();
        let service = service_fn(move |req: http::Request<hyper::body::Incoming>| {
            let proxy = Arc::clone(&proxy);
            let closing = closing.clone();
            let http1 = req.version() < Version::HTTP_2;
            async move {
                let mut response = proxy.handle(req, client).await;
                if http1
                    && closing.is_cancelled()
                    && response.status() != StatusCode::SWITCHING_PROTOCOLS
                {
                    response
                        .headers_mut()
                        .insert(header::CONNECTION, HeaderValue::from_static("close"));
                }
                Ok::<_, Infallible>(response)
            }
        });
        let conn = builder
            .serve_connection_with_upgrades(TokioIo::new(stream), service)
            .into_owned();
        let close_now = drain.close.clone();
        connections.spawn(async move {
            tokio::pin!(conn);
            let ended = tokio::select! {
                ended = conn.as_mut() => ended,
                () = close_now.cancelled() => {
                    conn.as_mut().graceful_shutdown();
                    conn.await
                }
            };
            if let Err(error) = ended {
                tracing::debug!(%error, %client, "client connection ended with an error");
            }
        });
    }
    drop(listener);
    connections.close();
    tokio::select! {
        () = connections.wait() => return,
        () = tokio::time::sleep(drain.linger) => drain.close.cancel(),
        () = drain.close.cancelled() => {}
    }
    if tokio::time::timeout(drain.timeout, connections.wait())
        .await
        .is_err()
    {
        tracing::warn!(
            open = connections.len(),
            "client connections still open after {:?}; closing them",
            drain.timeout
        );
    }
}
