use std::convert::Infallible;
use std::sync::Arc;

use http::{HeaderValue, StatusCode, Version, header};
use hyper::service::service_fn;

use super::Proxy;
use crate::listener::Drain;

/// Serves client traffic on `listener` (the proxy's, or a pinned
/// address's) under the data plane's connection budget, until the drain.
///
/// Once `stop` is cancelled every HTTP/1 response carries
/// `Connection: close`, so a busy keep-alive connection ends right after
/// its next answer and its client opens a new one (on the serve that took
/// over), with no request lost in between.
pub async fn serve(listener: std::net::TcpListener, proxy: Arc<Proxy>, drain: Drain) {
    let connections = Arc::clone(&proxy.settings.connections);
    let closing = drain.stop.clone();
    crate::listener::serve(listener, connections, drain, move |client| {
        let proxy = Arc::clone(&proxy);
        let closing = closing.clone();
        service_fn(move |req: http::Request<hyper::body::Incoming>| {
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
        })
    })
    .await
}
