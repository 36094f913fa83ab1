//! The server of one client connection: the own HTTP/1.1 server first,
//! hyper's from the head it hands over on, or hyper's from the start for
//! HTTP/2 chosen by ALPN.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll, ready};

use hyper_util::server::graceful::GracefulConnection;

use super::BoxError;
use super::http1::{Ended, Rewind};

type OwnServer = Pin<Box<dyn Future<Output = Result<Ended, BoxError>> + Send>>;

/// Makes hyper's server for a connection handed over.
pub(super) type Handoff = Box<dyn FnOnce(Rewind) -> HyperServer + Send>;

pub(super) type HyperServer = Pin<Box<dyn Serving>>;

/// A hyper connection, as the listener drives it.
pub(super) trait Serving: Send {
    fn poll_serve(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>>;
    fn shutdown(self: Pin<&mut Self>);
}

impl<C> Serving for C
where
    C: GracefulConnection + Send,
    C::Error: Into<BoxError>,
{
    fn poll_serve(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        self.poll(cx).map_err(Into::into)
    }

    fn shutdown(self: Pin<&mut Self>) {
        self.graceful_shutdown();
    }
}

/// One client connection's server, polled until the connection ends.
pub(super) struct ClientConnection {
    state: State,
    shutdown: Arc<AtomicBool>,
    handoff: Option<Handoff>,
}

enum State {
    Own(OwnServer),
    Hyper(HyperServer),
}

impl ClientConnection {
    /// The own server, with what makes hyper's should it hand over.
    pub(super) fn own(server: OwnServer, shutdown: Arc<AtomicBool>, handoff: Handoff) -> Self {
        Self {
            state: State::Own(server),
            shutdown,
            handoff: Some(handoff),
        }
    }

    pub(super) fn hyper(server: HyperServer) -> Self {
        Self {
            state: State::Hyper(server),
            shutdown: Arc::default(),
            handoff: None,
        }
    }

    /// Closes the connection gracefully: at once when idle, after the
    /// response in progress otherwise.
    pub(super) fn graceful_shutdown(&mut self) {
        self.shutdown.store(true, Ordering::Release);
        if let State::Hyper(server) = &mut self.state {
            server.as_mut().shutdown();
        }
    }
}

impl Future for ClientConnection {
    type Output = Result<(), BoxError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.get_mut();
        loop {
            match &mut this.state {
                State::Hyper(server) => return server.as_mut().poll_serve(cx),
                State::Own(server) => match ready!(server.as_mut().poll(cx))? {
                    Ended::Closed => return Poll::Ready(Ok(())),
                    Ended::Handoff(io) => {
                        let Some(handoff) = this.handoff.take() else {
                            return Poll::Ready(Ok(()));
                        };
                        let mut server = handoff(io);
                        if this.shutdown.load(Ordering::Acquire) {
                            server.as_mut().shutdown();
                        }
                        this.state = State::Hyper(server);
                    }
                },
            }
        }
    }
}
