use std::future::{Future, poll_fn};
use std::net::SocketAddr;
use std::pin::{Pin, pin};
use std::sync::Arc;
use std::task::Poll;
use std::time::{Duration, Instant};

use crate::listener::Inbound;
use http::header::{self, HeaderValue};
use http::{Method, Request, Response, Version};

use super::headers::{Forwarding, forward_request, is_tunnel_request, strip_hop_by_hop};
use super::pool::Connections;
use crate::backend::InFlight;

use super::Mirror;
use super::access_log::Pending;
use super::body::ResponseCapture;
use super::connection::{AnswerFields, SendError, UpstreamBody, UpstreamConnection, UpstreamError};
use super::deadline::Deadline;
use super::error_page::Cause;
use super::mirror::{Fanout, MainSender, fan_out};
use super::request_body::{RequestBody, Upload};
use super::rewrite::{self, Links};
use super::{
    Backend, Proxy, ProxyError, ProxySettings, ResponseBody, Upstream, request_id, tunnel,
};
use crate::metrics::{ClientFault, UpstreamPhase};
use crate::routing::{FixedResponse, RequestView, Route, RoutingTable};

pub(crate) const X_SWITCHYARD_VERSION: header::HeaderName =
    header::HeaderName::from_static("x-switchyard-version");

impl Proxy {
    /// Answers one client request: route it to a release, pick an
    /// instance of it and forward (with retries where safe, in
    /// [`deliver`]), record the outcome against the release, and answer;
    /// or explain why not (to the client in neutral words, to the operator
    /// in serve's log). Every answer carries the request's id; with an
    /// access log, its line is written when the answer has ended.
    ///
    /// One future for the whole request path, not an `async fn` nor one
    /// future per phase (docs/architecture.md says why).
    pub fn handle(
        self: Arc<Self>,
        mut req: Request<Inbound>,
        client: SocketAddr,
    ) -> impl Future<Output = Response<ResponseBody>> {
        let request_id = request_id::of(req.headers());
        // Boxed: held while the request is answered, in every request's
        // state, which only a logged request fills.
        let log_line = self.settings.access_log.as_ref().map(|log| {
            Box::new(log.begin(
                req.method(),
                req.uri().path_and_query(),
                client,
                &request_id,
            ))
        });
        async move {
            let mut exchange = Exchange {
                recorded: log_line.is_some(),
                ..Exchange::default()
            };
            let answered = 'answered: {
                let started = Instant::now();
                let host = match request_host(&req) {
                    Ok(host) => host,
                    Err(error) => break 'answered Err(error),
                };
                let https = req.extensions().get::<super::ClientTls>().is_some();
                if !https && req.uri().path().starts_with(crate::tls::CHALLENGE_PREFIX) {
                    if let Some(answer) = self.settings.acme_challenges.answer(req.uri().path()) {
                        break 'answered Ok(acme_answer(answer));
                    }
                }
                if !self.pauses.load().is_empty() {
                    let held = Box::pin(self.hold_if_paused(&req, client, host.as_ref())).await;
                    if let Err(error) = held {
                        break 'answered Err(error);
                    }
                }
                // Taken apart at once: a `Routed` kept whole would be held beside
                // its parts while the request is answered.
                let Routed {
                    backend,
                    route_path,
                    prefix_len,
                    rewrite,
                    shadows,
                    set_cookie,
                    hsts,
                } = match self.route(&req, client, host.as_ref(), https) {
                    Ok(Routing::Release(routed)) => routed,
                    Ok(Routing::Respond(fixed)) => break 'answered Ok(fixed),
                    Err(error) => break 'answered Err(error),
                };
                if exchange.recorded {
                    exchange.backend = Some(Arc::clone(&backend));
                }
                let (prefix, asked) = route_path.split_at(prefix_len);
                let tunnelling =
                    req.version() == Version::HTTP_11 && is_tunnel_request(req.headers());
                let forwarding = address_upstream(
                    &mut req,
                    tunnelling,
                    client,
                    host.as_ref(),
                    prefix,
                    https,
                    &request_id,
                );

                let answered = if tunnelling {
                    Box::pin(tunnel::forward(&self, &backend, req, &forwarding)).await
                } else {
                    let own_server = req.body().is_own_server();
                    let capture = shadows.and_then(|s| fan_out(&s, &req, &forwarding, &backend));
                    let (req, main) = self.outgoing(req, capture, &mut exchange);
                    // Fields nothing reads go to the client as lines, not
                    // through a map, when the own server writes the answer
                    // and no shadow's is compared with it. (Decided from
                    // what lives on anyway: a borrow of `capture` would
                    // keep it in the request's state while it waits.)
                    let answer_fields = if own_server && main.is_none() {
                        AnswerFields::Verbatim { links: rewrite }
                    } else {
                        AnswerFields::Map
                    };
                    // Boxed: awaited in place, the delivery's state would be part
                    // of every request's state around it, all of it moved into
                    // place at each level and kept while the request lives.
                    match Box::pin(deliver(
                        &backend,
                        req,
                        Some(&forwarding),
                        answer_fields,
                        &[],
                        &self.settings,
                    ))
                    .await
                    {
                        Ok(delivered) => Ok(self.answer(delivered, main, &mut exchange)),
                        Err(error) => Err(error),
                    }
                };
                record(&backend, &answered, started);

                let mut response = match answered {
                    Ok(response) => response,
                    Err(error) => break 'answered Err(error),
                };
                let switching =
                    tunnelling && response.status() == http::StatusCode::SWITCHING_PROTOCOLS;
                strip_hop_by_hop(response.headers_mut(), switching);
                if rewrite && rewrite::has_links(response.headers()) {
                    let instances: Vec<SocketAddr> =
                        backend.upstreams().iter().map(|u| u.addr).collect();
                    let links = Links {
                        prefix,
                        asked,
                        public_host: host.as_ref(),
                        instances: &instances,
                    };
                    rewrite::rewrite(response.headers_mut(), &links);
                }
                if self.settings.version_header {
                    response
                        .headers_mut()
                        .insert(X_SWITCHYARD_VERSION, backend.version_header.clone());
                }
                if let Some(cookie) = set_cookie {
                    response.headers_mut().append(header::SET_COOKIE, cookie);
                }
                if let Some(value) = hsts.and_then(|v| HeaderValue::from_str(&v).ok()) {
                    response
                        .headers_mut()
                        .insert(header::STRICT_TRANSPORT_SECURITY, value);
                }
                Ok(response)
            };
            self.finish(answered, request_id, log_line, exchange)
        }
    }

    /// The request's answer as it goes to the client: its id added, the
    /// error explained, its access-log line made ready.
    fn finish(
        &self,
        answered: Result<Response<ResponseBody>, ProxyError>,
        request_id: HeaderValue,
        log_line: Option<Box<Pending>>,
        mut exchange: Exchange,
    ) -> Response<ResponseBody> {
        let mut error_code = None;
        let mut response = match answered {
            Ok(response) => response,
            Err(error) => {
                error_code = Some(error.code());
                self.explain(error, &request_id, &mut exchange)
            }
        };
        response
            .headers_mut()
            .insert(request_id::X_REQUEST_ID, request_id);
        if let Some(mut line) = log_line {
            line.status = response.status().as_u16();
            line.error = error_code;
            line.instance = exchange.instance;
            line.bytes_in = exchange.upload;
            match exchange.backend {
                Some(backend) => {
                    line.service = Some(backend.service.clone());
                    line.release = Some(backend.version.clone());
                }
                None => line.service = exchange.service,
            }
            response.body_mut().log_when_done(line);
        }
        response
    }

    /// The answer to a request the proxy could not forward: the service's
    /// error page or the neutral one for the client; the operator's hint
    /// in serve's log, under the request's id.
    fn explain(
        &self,
        error: ProxyError,
        request_id: &HeaderValue,
        exchange: &mut Exchange,
    ) -> Response<ResponseBody> {
        let id = request_id.to_str().unwrap_or("");
        let status = error.status().as_u16();
        let code = error.code();
        if error.status().is_server_error() {
            tracing::warn!(request_id = id, status, error = code, "{error}");
        } else {
            tracing::info!(request_id = id, status, error = code, "{error}");
        }
        let page = error.service().and_then(|name| {
            if exchange.recorded {
                exchange.service = Some(name.to_owned());
            }
            self.table.load().service(name)?.error_page.clone()
        });
        error.into_response(request_id, page.as_deref())
    }

    /// Phase one: the release that answers the request (by the routing
    /// table, or the pinned release), or the answer the table gives itself.
    fn route(
        &self,
        req: &Request<Inbound>,
        client: SocketAddr,
        host: Option<&HeaderValue>,
        https: bool,
    ) -> Result<Routing, ProxyError> {
        let table = self.table.load();
        match self.decide(&table, req, client, host) {
            Route::Release { https: policy, .. }
                if policy.redirect && !https && self.settings.https_port.is_some() =>
            {
                let path_and_query = req.uri().path_and_query().map_or("/", |p| p.as_str());
                match https_redirect(host, path_and_query, self.settings.https_port) {
                    Some(response) => Ok(Routing::Respond(response)),
                    None => Err(ProxyError::BadRequest(
                        "this service is served over HTTPS only; send a Host header".into(),
                    )),
                }
            }
            Route::Release {
                service: _,
                backend,
                upstream_path,
                prefix,
                rewrite,
                shadows,
                set_cookie,
                https: policy,
            } => Ok(Routing::Release(Routed {
                backend: Arc::clone(backend),
                // With links to rewrite, the path the application is
                // asked for is kept too (in the same allocation).
                route_path: if rewrite {
                    // Not `format!`, whose machinery cost 0.7 k
                    // instructions per request here.
                    [prefix, upstream_path].concat()
                } else {
                    prefix.to_owned()
                },
                prefix_len: prefix.len(),
                rewrite,
                // Cloned only when there are shadows to mirror to.
                shadows: (!shadows.is_empty()).then(|| shadows.to_vec()),
                set_cookie: set_cookie.map(|(name, value)| sticky_cookie(name, &value)),
                // Made only for an answer over HTTPS.
                hsts: https.then(|| policy.hsts_header()).flatten(),
            })),
            Route::Respond(fixed) => Ok(Routing::Respond(fixed_response(fixed))),
            Route::NoCandidate { service } => Err(ProxyError::NoCandidate(service.to_owned())),
            Route::UnknownService { name } => Err(ProxyError::UnknownService(name.to_owned())),
            Route::UnknownRelease { service, version } => Err(ProxyError::UnknownRelease {
                service: service.to_owned(),
                version: version.to_owned(),
            }),
            Route::NoMain { service } => Err(ProxyError::NoMain(service.to_owned())),
            Route::TcpService { service } => Err(ProxyError::TcpService(service.to_owned())),
            Route::NoMatch => Err(ProxyError::NoRoute),
        }
    }

    /// What `table` (or the pinned release) says of the request.
    fn decide<'t>(
        &'t self,
        table: &'t RoutingTable<Backend, Mirror>,
        req: &'t Request<Inbound>,
        client: SocketAddr,
        host: Option<&'t HeaderValue>,
    ) -> Route<'t, Backend, Mirror> {
        let view = RequestView {
            method: req.method(),
            host: host.and_then(|h| h.to_str().ok()),
            path_and_query: req.uri().path_and_query().map_or("/", |p| p.as_str()),
            headers: req.headers(),
            client: client.ip(),
        };
        match &self.pinned {
            Some((service, version)) => pinned_route(table, service, version, view.path_and_query),
            None => table.route(&view),
        }
    }

    /// Waits at the service's gate while it is paused, so that the request
    /// is routed with the table as it is when the service resumes.
    async fn hold_if_paused(
        &self,
        req: &Request<Inbound>,
        client: SocketAddr,
        host: Option<&HeaderValue>,
    ) -> Result<(), ProxyError> {
        let gate = {
            let table = self.table.load();
            match self.decide(&table, req, client, host) {
                Route::Release { service, .. } => self
                    .pauses
                    .load()
                    .get(service)
                    .map(|g| (service.to_owned(), Arc::clone(g))),
                _ => None,
            }
        };
        match gate {
            Some((service, gate)) => gate.hold().await.map_err(|_| ProxyError::Paused(service)),
            None => Ok(()),
        }
    }

    /// The request as it goes to the release: its body read at the
    /// client's pace, and tee'd to the shadows when it is mirrored; and
    /// what takes main's answer for their comparison.
    fn outgoing(
        &self,
        req: Request<Inbound>,
        capture: Option<(Fanout, MainSender, usize)>,
        exchange: &mut Exchange,
    ) -> (Request<RequestBody>, Option<(MainSender, usize)>) {
        let rate = self.settings.client_body;
        let (req, main) = match capture {
            Some((fanout, main, limit)) => (
                req.map(|body| RequestBody::client(body, rate, Some((fanout, limit)))),
                Some((main, limit)),
            ),
            None => (req.map(|body| RequestBody::client(body, rate, None)), None),
        };
        if exchange.recorded {
            exchange.upload = req.body().upload();
        }
        (req, main)
    }

    /// The release's answer on its way to the client: its body holds the
    /// connection until it is read, and hands main's answer to the
    /// shadows' comparison when the request was mirrored.
    fn answer(
        &self,
        delivered: Delivered,
        main: Option<(MainSender, usize)>,
        exchange: &mut Exchange,
    ) -> Response<ResponseBody> {
        exchange.instance = Some(delivered.upstream.addr);
        let capture = main.map(|(tx, limit)| {
            ResponseCapture::new(&delivered.response, delivered.upstream.addr, limit, tx)
        });
        let upload = delivered.upload;
        let (parts, body) = delivered.response.into_parts();
        let body = ResponseBody::upstream(
            body,
            Some((delivered.conn, delivered.upstream)),
            Some(delivered.in_flight),
            capture,
            self.settings.upstream_body,
            upload,
        );
        Response::from_parts(parts, body)
    }
}

/// What routing decided for a request.
enum Routing {
    /// Forward it to a release.
    Release(Routed),
    /// Answer it with this (a rule's fixed response).
    Respond(Response<ResponseBody>),
}

/// A request routed to a release: what the later phases need of the route.
struct Routed {
    backend: Arc<Backend>,
    /// The service's prefix, then (when links are rewritten) the path the
    /// application is asked for.
    route_path: String,
    prefix_len: usize,
    /// Whether the answer's links are rewritten to the prefix.
    rewrite: bool,
    /// Where copies go, when the service mirrors.
    shadows: Option<Vec<Arc<Mirror>>>,
    /// The cookie that keeps a new client in its population.
    set_cookie: Option<HeaderValue>,
    /// `Strict-Transport-Security` for an answer over HTTPS, if the
    /// service asks for it.
    hsts: Option<String>,
}

/// The host the request is for: its one Host header, or the authority of
/// its target. More than one Host header is refused.
fn request_host(req: &Request<Inbound>) -> Result<Option<HeaderValue>, ProxyError> {
    let mut hosts = req.headers().get_all(header::HOST).iter();
    let host = hosts.next().cloned();
    if hosts.next().is_some() {
        // Which one names the service would be a guess (RFC 9112 3.2).
        return Err(ProxyError::BadRequest(
            "more than one Host header: send exactly one".into(),
        ));
    }
    Ok(host.or_else(|| {
        req.uri()
            .authority()
            .and_then(|a| HeaderValue::from_str(a.as_str()).ok())
    }))
}

/// Readies the request for the release: HTTP/1.1, no hop-by-hop headers
/// (but a tunnel's `Upgrade` pair); returns what goes with it: the
/// forwarding fields, the request's id and the prefix's length, from
/// which its target is written (it keeps the client's until then).
#[allow(clippy::too_many_arguments)]
fn address_upstream<'r>(
    req: &mut Request<Inbound>,
    tunnelling: bool,
    client: SocketAddr,
    host: Option<&'r HeaderValue>,
    prefix: &str,
    https: bool,
    request_id: &'r HeaderValue,
) -> Forwarding<'r> {
    *req.version_mut() = Version::HTTP_11;
    forward_request(
        req.headers_mut(),
        tunnelling,
        client,
        host,
        prefix,
        https,
        request_id,
    )
}

/// Records the outcome against the release: its answer's status and
/// latency, or the error (a client's fault is counted apart, never
/// against the release).
fn record(
    backend: &Backend,
    answered: &Result<Response<ResponseBody>, ProxyError>,
    started: Instant,
) {
    match answered {
        Ok(r) => backend
            .metrics
            .record(r.status().as_u16(), false, started.elapsed()),
        Err(e) => match e.client_fault() {
            Some(fault) => backend.metrics.record_client_fault(fault),
            None => backend
                .metrics
                .record(e.status().as_u16(), true, started.elapsed()),
        },
    }
}

/// What the request path learned of a request, for its access-log line
/// (filled only when there is one: `recorded`).
#[derive(Default)]
pub(crate) struct Exchange {
    recorded: bool,
    /// The release the request went to.
    backend: Option<Arc<Backend>>,
    /// The service a request that reached no release was about.
    service: Option<String>,
    /// The instance that answered.
    instance: Option<SocketAddr>,
    /// The client's upload, when the request had a body.
    upload: Option<Arc<Upload>>,
}

/// A response on its way back, with the connection and the in-flight count
/// it holds until its body is read.
pub(crate) struct Delivered {
    pub response: Response<UpstreamBody>,
    pub conn: UpstreamConnection,
    pub upstream: Arc<Upstream>,
    pub in_flight: InFlight,
    /// The client's upload, when the request had a body.
    pub upload: Option<Arc<Upload>>,
}

/// Sends the request to the least-busy healthy instance (not among
/// `exclude`). A request that could not be delivered (no connection, or a
/// pooled connection that closed before the request was written) moves to
/// another instance. A request that is safe to repeat (a safe method, GET,
/// HEAD, OPTIONS or TRACE, RFC 9110 9.2.1, and no body: the connection
/// gives it back, [`SendError::unanswered`]) is also sent again when its
/// connection broke before any response arrived:
/// on a fresh connection if the broken one was pooled, else on another
/// instance.
///
/// The upstream has `upstream_timeout` to answer from the moment the
/// request is whole: while a client's body is still coming, its pace is
/// the client's business (`--client-body-min-rate`), not the release's.
/// A request whose body the client broke ends with the client's fault.
///
/// Not an `async fn` (see "one future per request" in
/// docs/architecture.md): the block holds each parameter once.
#[allow(clippy::manual_async_fn)] // on purpose: see above
pub(crate) fn deliver(
    backend: &Arc<Backend>,
    mut req: Request<RequestBody>,
    forwarding: Option<&Forwarding<'_>>,
    answer_fields: AnswerFields,
    exclude: &[SocketAddr],
    settings: &ProxySettings,
) -> impl Future<Output = Result<Delivered, ProxyError>> {
    async move {
        let mut tried: Vec<SocketAddr> = exclude.to_vec();
        // Boxed: rare, and the request's state is sized for it.
        let mut last_error: Option<Box<ProxyError>> = None;
        let upload = req.body().upload();
        loop {
            let upstream = match pick_instance(backend, &tried) {
                Ok(upstream) => upstream,
                Err(none_left) => return Err(last_error.map_or(none_left, |e| *e)),
            };
            let in_flight = InFlight::new(Arc::clone(backend), Arc::clone(&upstream));
            // A pooled connection first; if it turns out closed before the
            // request went out, one fresh connection to the same instance.
            let mut pooled = upstream.take_idle(settings.connect_timeout).await;
            loop {
                let fresh = pooled.is_none();
                let mut conn = match pooled.take() {
                    Some(s) => s,
                    // Boxed: rare, and large (TLS), it would make every
                    // request's state larger, which costs a copy at each step.
                    None => match Box::pin(upstream.connect(settings.connect_timeout, false)).await
                    {
                        Ok(s) => s,
                        Err(e) => {
                            if e.kind() == std::io::ErrorKind::TimedOut {
                                backend
                                    .metrics
                                    .record_upstream_timeout(UpstreamPhase::Connect);
                            }
                            // The instance is not accepting connections: keep
                            // traffic off it until its health check says so.
                            upstream.set_healthy(false);
                            last_error = Some(Box::new(ProxyError::ConnectFailed {
                                service: backend.service.clone(),
                                version: backend.version.clone(),
                                cause: Cause::at(upstream.addr, e),
                            }));
                            break;
                        }
                    },
                };
                let sent = {
                    let sending = pin!(conn.send(req, forwarding, answer_fields));
                    answered_in_time(
                        sending,
                        upload.as_deref(),
                        backend,
                        settings.upstream_timeout,
                    )
                    .await?
                };
                match sent {
                    Ok(response) => {
                        return Ok(Delivered {
                            response,
                            conn,
                            upstream,
                            in_flight,
                            upload,
                        });
                    }
                    Err(failed) => match failed.unsent {
                        Some(unsent) if !fresh => req = *unsent,
                        Some(unsent) => {
                            req = *unsent;
                            last_error = Some(Box::new(ProxyError::ConnectFailed {
                                service: backend.service.clone(),
                                version: backend.version.clone(),
                                cause: Cause::at(upstream.addr, failed.error),
                            }));
                            break;
                        }
                        None => {
                            let SendError {
                                error, unanswered, ..
                            } = failed;
                            if let Some(fault) = upload.as_ref().and_then(|u| u.fault()) {
                                return Err(client_error(fault, &error, settings));
                            }
                            let lost = lost_before_response(&error);
                            let failed = ProxyError::UpstreamFailed {
                                service: backend.service.clone(),
                                version: backend.version.clone(),
                                cause: Cause::new(error),
                            };
                            match unanswered.filter(|r| is_safe(r.method())) {
                                Some(again) if lost => {
                                    req = *again;
                                    if fresh {
                                        last_error = Some(Box::new(failed));
                                        break;
                                    }
                                }
                                _ => return Err(failed),
                            }
                        }
                    },
                }
            }
            tried.push(upstream.addr);
        }
    }
}

/// Awaits `sending`, a request's exchange with an instance of `backend`,
/// for at most `timeout` counted from the moment the request is whole: at
/// once for a request without a body, when the client's body has ended
/// (`upload`) for one with. When the time runs out, the timeout is counted
/// against the release and returned as the request's error.
///
/// The exchange is borrowed, not moved: the request's state holds it once.
pub(super) async fn answered_in_time<F: Future>(
    mut sending: Pin<&mut F>,
    upload: Option<&Upload>,
    backend: &Backend,
    timeout: Duration,
) -> Result<F::Output, ProxyError> {
    if let Some(upload) = upload {
        let mut ended = pin!(upload.ended());
        let answered = poll_fn(|cx| match sending.as_mut().poll(cx) {
            Poll::Ready(answered) => Poll::Ready(Some(answered)),
            Poll::Pending => ended.as_mut().poll(cx).map(|()| None),
        })
        .await;
        if let Some(answered) = answered {
            return Ok(answered);
        }
    }
    let mut deadline = Deadline::after(timeout);
    poll_fn(|cx| match sending.as_mut().poll(cx) {
        Poll::Ready(answered) => Poll::Ready(Ok(answered)),
        Poll::Pending => deadline.poll_passed(cx).map(|()| {
            backend
                .metrics
                .record_upstream_timeout(UpstreamPhase::Header);
            Err(ProxyError::UpstreamTimeout {
                service: backend.service.clone(),
                version: backend.version.clone(),
                timeout,
            })
        }),
    })
    .await
}

/// Phase two: the instance of the release that gets the request, the
/// least busy healthy one not among `tried`.
pub(crate) fn pick_instance(
    backend: &Backend,
    tried: &[SocketAddr],
) -> Result<Arc<Upstream>, ProxyError> {
    backend
        .pick(tried)
        .ok_or_else(|| ProxyError::NoHealthyInstance {
            service: backend.service.clone(),
            version: backend.version.clone(),
        })
}

/// Whether a request's method is safe (RFC 9110 9.2.1): sending it again
/// changes nothing.
fn is_safe(method: &Method) -> bool {
    matches!(
        *method,
        Method::GET | Method::HEAD | Method::OPTIONS | Method::TRACE
    )
}

/// The answer to a request whose body the client broke.
fn client_error(fault: ClientFault, error: &UpstreamError, settings: &ProxySettings) -> ProxyError {
    match fault {
        ClientFault::BadBody => {
            // The innermost cause names what was wrong (hyper's parser).
            let mut cause: &dyn std::error::Error = error;
            while let Some(next) = cause.source() {
                cause = next;
            }
            ProxyError::BadBody(cause.to_string())
        }
        ClientFault::SlowBody => ProxyError::SlowBody {
            rate: settings.client_body,
        },
        ClientFault::Aborted => ProxyError::ClientGone,
    }
}

/// Whether the connection broke (closed or reset) before the response
/// began, as when an instance dies or closes an idle connection just as a
/// request goes out; not a malformed answer or an error of our own.
fn lost_before_response(error: &UpstreamError) -> bool {
    match error {
        UpstreamError::Closed | UpstreamError::Io(_) => true,
        UpstreamError::Hyper(error) => {
            error.is_incomplete_message()
                || error.is_closed()
                || error.is_canceled()
                || std::error::Error::source(error).is_some_and(|e| e.is::<std::io::Error>())
        }
        _ => false,
    }
}

/// `Set-Cookie` for the sticky key: a year, every path, not for scripts.
fn sticky_cookie(name: &str, value: &str) -> HeaderValue {
    HeaderValue::from_str(&format!(
        "{name}={value}; Path=/; Max-Age=31536000; HttpOnly; SameSite=Lax"
    ))
    .unwrap_or_else(|_| HeaderValue::from_static(""))
}

/// The answer of a rule that responds by itself.
/// The route of a request to a release's pinned address: that release,
/// the whole path, no shadows, no cookie.
fn pinned_route<'t>(
    table: &'t RoutingTable<Backend, Mirror>,
    service: &'t str,
    version: &'t str,
    path_and_query: &'t str,
) -> Route<'t, Backend, Mirror> {
    let backend = table
        .service(service)
        .and_then(|s| Some((s, s.versions.get(version)?)));
    match backend {
        Some((routes, backend)) => Route::Release {
            service: &routes.name,
            backend,
            shadows: &[],
            upstream_path: path_and_query,
            prefix: "",
            rewrite: false,
            set_cookie: None,
            https: routes.https,
        },
        None => Route::UnknownRelease { service, version },
    }
}

/// 308 to the same URL over HTTPS, on the TLS listener's port (left out
/// when it is 443); `None` without a host to send the client to.
fn https_redirect(
    host: Option<&HeaderValue>,
    path_and_query: &str,
    port: Option<u16>,
) -> Option<Response<ResponseBody>> {
    let host = host?.to_str().ok()?;
    let name = match host.rsplit_once(':') {
        // An IPv6 literal's colons are inside its brackets.
        Some((name, port)) if !port.contains(']') => name,
        _ => host,
    };
    if name.is_empty() {
        return None;
    }
    let location = match port? {
        443 => format!("https://{name}{path_and_query}"),
        port => format!("https://{name}:{port}{path_and_query}"),
    };
    let location = HeaderValue::from_str(&location).ok()?;
    let mut response = Response::new(ResponseBody::full(bytes::Bytes::from_static(
        b"This service is served over HTTPS.\n",
    )));
    *response.status_mut() = http::StatusCode::PERMANENT_REDIRECT;
    let headers = response.headers_mut();
    headers.insert(header::LOCATION, location);
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    Some(response)
}

/// The key authorization of a pending ACME HTTP-01 challenge.
fn acme_answer(answer: String) -> Response<ResponseBody> {
    let mut response = Response::new(ResponseBody::full(bytes::Bytes::from(answer)));
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/octet-stream"),
    );
    response
}

fn fixed_response(fixed: &FixedResponse) -> Response<ResponseBody> {
    let mut response = Response::new(ResponseBody::full(fixed.body.clone()));
    *response.status_mut() = fixed.status;
    response
        .headers_mut()
        .insert(header::CONTENT_TYPE, fixed.content_type.clone());
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_safe_methods_are_sent_again() {
        for method in [Method::GET, Method::HEAD, Method::OPTIONS, Method::TRACE] {
            assert!(is_safe(&method), "{method}");
        }
        for method in [Method::POST, Method::PUT, Method::PATCH, Method::DELETE] {
            assert!(!is_safe(&method), "{method}");
        }
    }
}
