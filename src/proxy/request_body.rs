//! What goes upstream: the client's body streamed through (watched for
//! its pace, and, when the request is mirrored, copied on the way up to a
//! limit), or a body the proxy holds whole (no body, a request sent again,
//! a mirrored copy).
//!
//! The upstream connection streams the body while it waits for the answer,
//! and reports only that the body failed. So the body itself records how it
//! ended, in an [`Upload`] the request's forwarder shares: whether the
//! client's body is whole yet (the upstream's time to answer starts then)
//! and, when it failed, how the client failed it, so that a bad, slow or
//! abandoned upload is the client's fault and never the release's.

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU8, AtomicU64, Ordering};
use std::task::{Context, Poll};

use crate::listener::{Inbound, InboundError};
use bytes::{Bytes, BytesMut};
use http_body::{Body, Frame, SizeHint};
use tokio::sync::Notify;

use super::mirror::Fanout;
use super::progress::{MinRate, Progress};
use crate::metrics::ClientFault;

pub(crate) enum RequestBody {
    /// The client's body as it streams.
    Client(Box<ClientBody>),
    Full(Option<Bytes>),
}

/// A client's body on its way up.
pub(crate) struct ClientBody {
    inner: Inbound,
    progress: Progress,
    upload: Arc<Upload>,
    /// The shadows' copy, when the request is mirrored.
    tee: Option<Tee>,
}

/// How a client's upload is going, shared between the body (in the
/// upstream connection's task) and the request's forwarder.
#[derive(Debug, Default)]
pub(crate) struct Upload {
    /// [`STREAMING`], [`WHOLE`], or a [`ClientFault`] plus [`FAILED`].
    state: AtomicU8,
    ended: Notify,
    /// Bytes of the body received so far.
    received: AtomicU64,
}

const STREAMING: u8 = 0;
const WHOLE: u8 = 1;
const FAILED: u8 = 2;

/// Why a client's body stopped short; hyper hands it to the upstream
/// connection, which is then closed.
#[derive(Debug, thiserror::Error)]
pub(crate) enum UploadError {
    #[error("the client's request body failed: {0}")]
    Client(#[source] InboundError),
    #[error("the client's request body came slower than {0} (bytes/interval)")]
    TooSlow(MinRate),
}

/// Copies a body as it passes; when the body ends whole and within the
/// limit, the copy goes to the shadows (never waiting for them).
struct Tee {
    copy: BytesMut,
    limit: usize,
    fanout: Option<Fanout>,
}

impl Upload {
    /// Bytes of the body received so far.
    pub(crate) fn received(&self) -> u64 {
        self.received.load(Ordering::Relaxed)
    }

    /// How the client failed its body, if it did.
    pub(crate) fn fault(&self) -> Option<ClientFault> {
        let state = self.state.load(Ordering::Acquire);
        let fault = usize::from(state.checked_sub(FAILED)?);
        ClientFault::ALL.get(fault).copied()
    }

    /// Waits until the body is whole or failed.
    pub(crate) async fn ended(&self) {
        if self.state.load(Ordering::Acquire) != STREAMING {
            return;
        }
        // A permit stored by `notify_one` before this waits is taken here.
        self.ended.notified().await;
    }

    fn finish(&self, state: u8) {
        if self
            .state
            .compare_exchange(STREAMING, state, Ordering::AcqRel, Ordering::Acquire)
            .is_ok()
        {
            self.ended.notify_one();
        }
    }

    fn fail(&self, fault: ClientFault) {
        self.finish(FAILED + fault as u8);
    }
}

/// The client's part in a broken body: malformed framing is a bad body,
/// anything else (end of stream, reset) means the client went away.
fn fault_of(error: &InboundError) -> ClientFault {
    if error.is_malformed() {
        ClientFault::BadBody
    } else {
        ClientFault::Aborted
    }
}

impl RequestBody {
    pub(crate) fn empty() -> Self {
        RequestBody::Full(None)
    }

    /// The client's body, held to `rate`; with `mirror`, copied up to its
    /// limit for the shadows. A body that has ended already (none at all)
    /// costs nothing to watch.
    pub(crate) fn client(inner: Inbound, rate: MinRate, mirror: Option<(Fanout, usize)>) -> Self {
        if inner.is_end_stream() {
            // A body that says it has ended is never polled.
            if let Some((fanout, _)) = mirror {
                fanout.send(Bytes::new());
            }
            return RequestBody::empty();
        }
        RequestBody::Client(Box::new(ClientBody {
            inner,
            progress: Progress::new(rate),
            upload: Arc::default(),
            tee: mirror.map(|(fanout, limit)| Tee {
                copy: BytesMut::new(),
                limit,
                fanout: Some(fanout),
            }),
        }))
    }

    /// The upload's state, for a body that streams from the client.
    pub(crate) fn upload(&self) -> Option<Arc<Upload>> {
        match self {
            RequestBody::Client(body) => Some(Arc::clone(&body.upload)),
            RequestBody::Full(_) => None,
        }
    }
}

impl Tee {
    fn keep(&mut self, data: &Bytes) {
        if self.fanout.is_none() {
            return;
        }
        if self.copy.len() + data.len() > self.limit {
            if let Some(fanout) = self.fanout.take() {
                fanout.too_large();
            }
            self.copy = BytesMut::new();
        } else {
            self.copy.extend_from_slice(data);
        }
    }

    fn send(&mut self) {
        if let Some(fanout) = self.fanout.take() {
            fanout.send(std::mem::take(&mut self.copy).freeze());
        }
    }
}

impl ClientBody {
    /// The body is whole: the copy goes to the shadows, the forwarder
    /// starts the upstream's time to answer.
    fn whole(&mut self) {
        if let Some(tee) = &mut self.tee {
            tee.send();
        }
        self.upload.finish(WHOLE);
    }

    fn fail(&mut self, fault: ClientFault) {
        // A broken upload is not mirrored.
        self.tee = None;
        self.upload.fail(fault);
    }
}

impl Body for RequestBody {
    type Data = Bytes;
    type Error = UploadError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, UploadError>>> {
        let body = match self.get_mut() {
            RequestBody::Full(bytes) => {
                return Poll::Ready(bytes.take().map(|b| Ok(Frame::data(b))));
            }
            RequestBody::Client(body) => body,
        };
        match Pin::new(&mut body.inner).poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(data) = frame.data_ref() {
                    body.progress.moved(data.len());
                    body.upload
                        .received
                        .fetch_add(data.len() as u64, Ordering::Relaxed);
                    if let Some(tee) = &mut body.tee {
                        tee.keep(data);
                    }
                }
                // hyper may never poll again a body that says it has
                // ended (its announced length read), so the end is
                // noticed here too.
                if body.inner.is_end_stream() {
                    body.whole();
                }
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(None) => {
                body.whole();
                Poll::Ready(None)
            }
            Poll::Ready(Some(Err(error))) => {
                body.fail(fault_of(&error));
                Poll::Ready(Some(Err(UploadError::Client(error))))
            }
            Poll::Pending => {
                if body.progress.poll_stalled(cx).is_ready() {
                    body.fail(ClientFault::SlowBody);
                    return Poll::Ready(Some(Err(UploadError::TooSlow(body.progress.rate()))));
                }
                Poll::Pending
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            RequestBody::Client(body) => body.inner.is_end_stream(),
            RequestBody::Full(bytes) => bytes.is_none(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            RequestBody::Client(body) => body.inner.size_hint(),
            RequestBody::Full(Some(b)) => SizeHint::with_exact(b.len() as u64),
            RequestBody::Full(None) => SizeHint::with_exact(0),
        }
    }
}
