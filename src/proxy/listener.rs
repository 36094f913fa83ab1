use std::convert::Infallible;
use std::sync::Arc;

use futures_util::FutureExt;
use http::{HeaderValue, StatusCode, Version, header};
use hyper::service::service_fn;

use tokio_rustls::TlsAcceptor;

use super::Proxy;
use crate::listener::Drain;

/// Marks a request that came over TLS.
#[derive(Debug, Clone, Copy)]
pub struct ClientTls;

/// Serves client traffic on `listener` (the proxy's, or a pinned
/// address's) under the data plane's connection budget, until the drain.
///
/// Once `stop` is cancelled every HTTP/1 response carries
/// `Connection: close`, so a busy keep-alive connection ends right after
/// its next answer and its client opens a new one (on the serve that took
/// over), with no request lost in between.
///
/// With `tls` the listener speaks HTTPS: every request it takes is marked
/// [`ClientTls`], which upstreams see as `X-Forwarded-Proto: https`.
pub async fn serve(
    listener: std::net::TcpListener,
    proxy: Arc<Proxy>,
    drain: Drain,
    tls: Option<TlsAcceptor>,
) {
    let connections = Arc::clone(&proxy.settings.connections);
    let closing = drain.stop.clone();
    let https = tls.is_some();
    crate::listener::serve(listener, connections, drain, tls, move |client| {
        let proxy = Arc::clone(&proxy);
        let closing = closing.clone();
        service_fn(move |mut req: http::Request<crate::listener::Inbound>| {
            let proxy = Arc::clone(&proxy);
            let closing = closing.clone();
            let http1 = req.version() < Version::HTTP_2;
            if https {
                req.extensions_mut().insert(ClientTls);
            }
            // A map of the request's future, not an async block around
            // it: the block would hold the request a second time, and its
            // whole state would be moved into place once more.
            proxy.handle(req, client).map(move |mut response| {
                if http1
                    && closing.is_cancelled()
                    && response.status() != StatusCode::SWITCHING_PROTOCOLS
                {
                    response
                        .headers_mut()
                        .insert(header::CONNECTION, HeaderValue::from_static("close"));
                }
                Ok::<_, Infallible>(response)
            })
        })
    })
    .await
}
