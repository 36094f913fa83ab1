use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::{Bytes, BytesMut};
use http_body::{Body, Frame, SizeHint};

use super::Upstream;
use super::access_log::Pending;
use super::connection::{UpstreamBody, UpstreamConnection, UpstreamError};
use super::mirror::{MainAnswer, MainSender, header_pairs};
use super::pool::Connections;
use super::progress::{MinRate, Progress};
use super::request_body::Upload;
use crate::backend::InFlight;
use crate::listener::{VerbatimFields, WithVerbatimFields};
use crate::metrics::UpstreamPhase;
use crate::shadow::CapturedResponse;

/// The body of every response the proxy sends: an upstream's body streamed
/// through (its connection goes back to the pool when the body ends, and
/// the request stops counting as in flight), or a small fixed body.
///
/// An upstream body must keep to `--upstream-body-min-rate`; one that
/// stalls, or breaks, ends the client's response short (the client sees
/// its connection cut) and counts against the release, unless the
/// client's own upload broke it.
pub struct ResponseBody {
    kind: Kind,
    /// The request's access-log record, completed when the body ends.
    log: Option<Box<Pending>>,
}

enum Kind {
    Upstream {
        body: UpstreamBody,
        conn: Option<(UpstreamConnection, Arc<Upstream>)>,
        in_flight: Option<InFlight>,
        capture: Option<Box<ResponseCapture>>,
        progress: Progress,
        /// The client's upload, when the request had a body still
        /// streaming.
        upload: Option<Arc<Upload>>,
    },
    Full(Option<Bytes>),
}

/// Why a response body from an upstream ended short.
#[derive(Debug, thiserror::Error)]
pub enum ResponseBodyError {
    #[error("the upstream's response body broke off: {0}")]
    Upstream(#[source] UpstreamError),
    #[error(
        "the upstream's response body came slower than {0} (bytes/interval; serve --upstream-body-min-rate)"
    )]
    Stalled(MinRate),
}

/// Main's answer to a mirrored request, copied as it streams to the client
/// (up to the limit) and handed to the comparison when it ends.
pub(crate) struct ResponseCapture {
    answer: CapturedResponse,
    copy: BytesMut,
    limit: usize,
    from: SocketAddr,
    tx: MainSender,
}

impl ResponseCapture {
    pub(crate) fn new(
        response: &http::Response<UpstreamBody>,
        from: SocketAddr,
        limit: usize,
        tx: MainSender,
    ) -> Box<Self> {
        Box::new(Self {
            answer: CapturedResponse {
                status: response.status().as_u16(),
                headers: header_pairs(response.headers()),
                body: Bytes::new(),
                truncated: false,
            },
            copy: BytesMut::new(),
            limit,
            from,
            tx,
        })
    }

    fn keep(&mut self, data: &Bytes) {
        if self.answer.truncated {
            return;
        }
        if self.copy.len() + data.len() > self.limit {
            self.answer.truncated = true;
        } else {
            self.copy.extend_from_slice(data);
        }
    }

    fn finish(mut self) {
        self.answer.body = std::mem::take(&mut self.copy).freeze();
        let answer = MainAnswer {
            response: self.answer,
            from: self.from,
        };
        self.tx.send_replace(Some(Arc::new(answer)));
    }
}

impl ResponseBody {
    pub fn full(bytes: impl Into<Bytes>) -> Self {
        Self {
            kind: Kind::Full(Some(bytes.into())),
            log: None,
        }
    }

    pub fn empty() -> Self {
        Self {
            kind: Kind::Full(None),
            log: None,
        }
    }

    /// Completes `record` (bytes sent, duration) and hands it to the
    /// access log when the body ends or is dropped.
    pub(crate) fn log_when_done(&mut self, record: Box<Pending>) {
        self.log = Some(record);
    }

    /// The bytes of a body the proxy made itself.
    #[cfg(test)]
    pub(crate) fn full_bytes(&self) -> Option<&Bytes> {
        match &self.kind {
            Kind::Full(bytes) => bytes.as_ref(),
            Kind::Upstream { .. } => None,
        }
    }

    /// An upstream's body, held to `rate`, counted in flight until it
    /// ends; `upload` is the request's upload when it had a body.
    pub(crate) fn upstream(
        body: UpstreamBody,
        conn: Option<(UpstreamConnection, Arc<Upstream>)>,
        in_flight: Option<InFlight>,
        capture: Option<Box<ResponseCapture>>,
        rate: MinRate,
        upload: Option<Arc<Upload>>,
    ) -> Self {
        let mut this = Self {
            kind: Kind::Upstream {
                body,
                conn,
                in_flight,
                capture,
                progress: Progress::new(rate),
                upload,
            },
            log: None,
        };
        this.finish_capture_if_ended();
        this
    }

    /// hyper may never poll a body that says it has ended, so the end of
    /// the copy is checked after every frame and up front.
    fn finish_capture_if_ended(&mut self) {
        if let Kind::Upstream { body, capture, .. } = &mut self.kind {
            if body.is_end_stream() {
                if let Some(capture) = capture.take() {
                    (*capture).finish();
                }
            }
        }
    }
}

impl Drop for ResponseBody {
    fn drop(&mut self) {
        // hyper stops polling a body as soon as it reports its end (a body
        // of known length read whole, or an empty one) and drops it, so the
        // end is noticed here too. Only a body read to its end leaves the
        // connection fit for the next request; any other is closed.
        self.finish_capture_if_ended();
        if let Kind::Upstream { body, conn, .. } = &mut self.kind {
            if body.is_end_stream() {
                if let Some((conn, upstream)) = conn.take() {
                    upstream.give_back(conn);
                }
            }
        }
        if let Some(log) = self.log.take() {
            log.finish();
        }
    }
}

impl WithVerbatimFields for ResponseBody {
    fn verbatim_fields(&self) -> Option<&VerbatimFields> {
        match &self.kind {
            Kind::Upstream { body, .. } => body.verbatim_fields(),
            Kind::Full(_) => None,
        }
    }
}

impl Body for ResponseBody {
    type Data = Bytes;
    type Error = ResponseBodyError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, ResponseBodyError>>> {
        let this = self.get_mut();
        let polled = this.poll_kind(cx);
        if let (Some(log), Poll::Ready(Some(Ok(frame)))) = (this.log.as_mut(), &polled) {
            if let Some(data) = frame.data_ref() {
                log.bytes_out += data.len() as u64;
            }
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        match &self.kind {
            Kind::Full(bytes) => bytes.is_none(),
            Kind::Upstream { body, .. } => body.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.kind {
            Kind::Full(Some(b)) => SizeHint::with_exact(b.len() as u64),
            Kind::Full(None) => SizeHint::with_exact(0),
            Kind::Upstream { body, .. } => body.size_hint(),
        }
    }
}

impl ResponseBody {
    fn poll_kind(
        &mut self,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, ResponseBodyError>>> {
        match &mut self.kind {
            Kind::Full(bytes) => Poll::Ready(bytes.take().map(|b| Ok(Frame::data(b)))),
            Kind::Upstream {
                body,
                conn,
                in_flight,
                capture,
                progress,
                upload,
            } => {
                // The answer's bytes come in as this task drives its
                // connection (a tunnel's connection has a task of its own).
                let polled = match conn {
                    Some((c, _)) => c.poll_body(body, cx),
                    None => body.poll_alone(cx),
                };
                let broken = match polled {
                    Poll::Ready(Some(Ok(frame))) => {
                        if let Some(data) = frame.data_ref() {
                            progress.moved(data.len());
                            if let Some(c) = capture.as_mut() {
                                c.keep(data);
                            }
                        }
                        // Trailers are an answer's last part: hyper's server
                        // side writes them and drops the body without asking
                        // for its end, so the end is taken here.
                        if frame.is_trailers() || body.is_end_stream() {
                            if let Some(c) = capture.take() {
                                (*c).finish();
                            }
                            if let Some((conn, upstream)) = conn.take() {
                                upstream.give_back(conn);
                            }
                            in_flight.take();
                        }
                        return Poll::Ready(Some(Ok(frame)));
                    }
                    Poll::Ready(None) => {
                        if let Some(capture) = capture.take() {
                            (*capture).finish();
                        }
                        if let Some((conn, upstream)) = conn.take() {
                            upstream.give_back(conn);
                        }
                        in_flight.take();
                        return Poll::Ready(None);
                    }
                    Poll::Ready(Some(Err(error))) => ResponseBodyError::Upstream(error),
                    Poll::Pending => {
                        if progress.poll_stalled(cx).is_pending() {
                            return Poll::Pending;
                        }
                        ResponseBodyError::Stalled(progress.rate())
                    }
                };
                // Cut short: the connection is closed, not pooled, and the
                // release answers for it unless the client's upload broke it.
                conn.take();
                capture.take();
                if let Some(in_flight) = in_flight.take() {
                    let metrics = &in_flight.backend().metrics;
                    match upload.as_ref().and_then(|u| u.fault()) {
                        Some(fault) => metrics.record_client_fault(fault),
                        None => {
                            if matches!(broken, ResponseBodyError::Stalled(_)) {
                                metrics.record_upstream_timeout(UpstreamPhase::Body);
                            }
                            metrics.record_broken_response();
                        }
                    }
                }
                Poll::Ready(Some(Err(broken)))
            }
        }
    }
}
