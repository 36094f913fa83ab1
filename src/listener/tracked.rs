//! The service every listener runs: the caller's, told to the
//! connection's watch (a request from its head to the end of its
//! response body), and held to the budget's cap on requests in flight.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use http::{Request, Response, StatusCode, Version};
use http_body::{Body, Frame, SizeHint};
use hyper::service::{Service, service_fn};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use super::inbound::Inbound;
use super::watch::Watch;
use crate::http1::verbatim::{VerbatimFields, WithVerbatimFields};

/// What a tracked service answers.
type Answer<B, E> = Result<Response<TrackedBody<B>>, E>;

/// `inner`, with every request counted on `watch` and, when `requests` is
/// given, waiting for one of its permits (held until the response ends).
pub fn tracked<S, B>(
    inner: S,
    watch: Arc<Watch>,
    requests: Option<Arc<Semaphore>>,
) -> impl Service<
    Request<Inbound>,
    Response = Response<TrackedBody<B>>,
    Error = S::Error,
    Future = impl Future<Output = Answer<B, S::Error>> + Send + 'static,
> + Send
+ Sync
+ 'static
where
    S: Service<Request<Inbound>, Response = Response<B>> + Send + Sync + 'static,
    S::Future: Send + 'static,
    S::Error: Into<Box<dyn std::error::Error + Send + Sync>> + Send + 'static,
    B: Body + Unpin + Send + 'static,
{
    let inner = Arc::new(inner);
    service_fn(move |req: Request<Inbound>| {
        let inner = Arc::clone(&inner);
        let watch = Arc::clone(&watch);
        let requests = requests.clone();
        async move {
            let request = InFlight::start(watch, req.version() == Version::HTTP_2);
            let permit = match requests {
                Some(requests) => Some(match Arc::clone(&requests).try_acquire_owned() {
                    Ok(permit) => permit,
                    Err(_) => requests
                        .acquire_owned()
                        .await
                        .expect("the request semaphore is never closed"),
                }),
                None => None,
            };
            // Boxed: the connection's server keeps the service's future for
            // the connection's whole life, sized for the largest state of
            // the future (the proxy's is several KiB); this way it holds a
            // pointer, and the request's state is freed when its answer is
            // ready.
            let response = Box::pin(inner.call(req)).await?;
            let permit = if response.status() == StatusCode::SWITCHING_PROTOCOLS {
                // The tunnel keeps its upstream connection: the slot stays
                // taken until the client's connection closes.
                request.watch.upgraded(permit);
                None
            } else {
                permit
            };
            Ok(response.map(|body| TrackedBody {
                body,
                _request: request,
                _permit: permit,
            }))
        }
    })
}

/// A request from its head to the end of its response.
struct InFlight {
    watch: Arc<Watch>,
}

impl InFlight {
    fn start(watch: Arc<Watch>, http2: bool) -> InFlight {
        watch.request_started(http2);
        InFlight { watch }
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.watch.request_ended();
    }
}

/// A response body that ends its request when the server is done with it
/// (sent whole, or dropped with the connection).
pub struct TrackedBody<B> {
    body: B,
    _request: InFlight,
    _permit: Option<OwnedSemaphorePermit>,
}

impl<B: WithVerbatimFields> WithVerbatimFields for TrackedBody<B> {
    fn verbatim_fields(&self) -> Option<&VerbatimFields> {
        self.body.verbatim_fields()
    }
}

impl<B: Body + Unpin> Body for TrackedBody<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        Pin::new(&mut self.body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}
