//! One HTTP/1.1 connection to an instance, driven by the request that uses
//! it: the request's own task polls hyper's side of the connection while it
//! waits for the answer and while it reads the answer's body, so no task of
//! the connection's own is woken in between (and none is spawned for it).
//! A connection idle in the pool is polled by the next request that takes
//! it, which is when a close by the instance is noticed.

use std::fmt;
use std::future::{Future, poll_fn};
use std::pin::{Pin, pin};
use std::task::{Context, Poll, Waker};

use http::{Request, Response};
use hyper::body::Incoming;
use hyper::client::conn::TrySendError;
use hyper::client::conn::http1::SendRequest;

use super::request_body::RequestBody;

/// hyper's side of a connection: reads and writes the socket, hands the
/// answer to the [`SendRequest`] half; done when the connection closes.
type Driver = Pin<Box<dyn Future<Output = hyper::Result<()>> + Send>>;

/// An upstream HTTP/1.1 connection: the half that sends requests, and the
/// half that moves bytes, polled in place by whoever uses the connection.
pub(crate) struct UpstreamConnection {
    sender: SendRequest<RequestBody>,
    /// `None` once the connection ended, or when a task of its own runs
    /// it (a connection that may become a tunnel).
    driver: Option<Driver>,
}

impl fmt::Debug for UpstreamConnection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("UpstreamConnection")
            .field("driven_in_place", &self.driver.is_some())
            .finish()
    }
}

impl UpstreamConnection {
    /// A connection whose bytes move when its user polls it.
    pub(crate) fn driven_in_place(
        sender: SendRequest<RequestBody>,
        driver: impl Future<Output = hyper::Result<()>> + Send + 'static,
    ) -> Self {
        Self {
            sender,
            driver: Some(Box::pin(driver)),
        }
    }

    /// A connection run by a task of its own.
    pub(crate) fn driven_elsewhere(sender: SendRequest<RequestBody>) -> Self {
        Self {
            sender,
            driver: None,
        }
    }

    /// Sends `req` and waits for the answer's head, driving the connection
    /// meanwhile. A request the connection could not take comes back in
    /// the error (to be sent elsewhere).
    pub(crate) async fn send(
        &mut self,
        req: Request<RequestBody>,
    ) -> Result<Response<Incoming>, TrySendError<Request<RequestBody>>> {
        let mut sending = pin!(self.sender.try_send_request(req));
        poll_fn(|cx| after_driving(&mut self.driver, cx, |cx| sending.as_mut().poll(cx))).await
    }

    /// Whether the connection takes a request now, after moving what it
    /// can (an answer's end it has not noticed yet, or the instance's
    /// close): ready with `true`, closed (`false`), or not yet.
    pub(crate) fn poll_ready_now(&mut self, cx: &mut Context<'_>) -> Poll<bool> {
        let sender = &mut self.sender;
        after_driving(&mut self.driver, cx, |cx| match sender.poll_ready(cx) {
            Poll::Ready(Ok(())) => Poll::Ready(true),
            Poll::Ready(Err(_)) => Poll::Ready(false),
            Poll::Pending => Poll::Pending,
        })
    }

    /// Waits until the connection takes a request; `false` if it closed.
    pub(crate) async fn ready(&mut self) -> bool {
        poll_fn(|cx| self.poll_ready_now(cx)).await
    }

    /// Whether the connection is known to be closed.
    pub(crate) fn is_closed(&self) -> bool {
        self.sender.is_closed()
    }

    /// Reads the next frame of an answer that came on this connection,
    /// driving the connection so the frame can arrive.
    pub(crate) fn poll_body(
        &mut self,
        body: &mut Incoming,
        cx: &mut Context<'_>,
    ) -> Poll<Option<hyper::Result<http_body::Frame<bytes::Bytes>>>> {
        use http_body::Body;
        after_driving(&mut self.driver, cx, |cx| {
            Pin::new(&mut *body).poll_frame(cx)
        })
    }
}

/// Moves whatever bytes can move now (request out, answer in), and
/// arranges for the task to be woken when more can.
fn drive(driver: &mut Option<Driver>, cx: &mut Context<'_>) {
    if let Some(running) = driver {
        if running.as_mut().poll(cx).is_ready() {
            // Closed, cleanly or not: the sender half now says so.
            *driver = None;
        }
    }
}

/// Drives the connection, then polls what waits on it. Driven in place,
/// the connection is the only thing that can make the waiting end, and it
/// was just polled with the task's waker: the waiting part is polled with
/// a waker that does nothing, so that handing over the answer does not
/// wake the task again (a whole extra poll of the client's connection)
/// while it is already running.
fn after_driving<T>(
    driver: &mut Option<Driver>,
    cx: &mut Context<'_>,
    mut poll: impl FnMut(&mut Context<'_>) -> Poll<T>,
) -> Poll<T> {
    if driver.is_none() {
        return poll(cx);
    }
    // What the last drive brought in (an answer's body behind its head)
    // is taken without driving again.
    let mut quiet = Context::from_waker(Waker::noop());
    if let Poll::Ready(ready) = poll(&mut quiet) {
        return Poll::Ready(ready);
    }
    drive(driver, cx);
    // Once the connection ended (its driver dropped just now) whatever
    // waited on it is ready at once, with the connection's error.
    poll(&mut quiet)
}
