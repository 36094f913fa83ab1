//! Tunnels: a request that asks for another protocol (`Upgrade:`, as
//! WebSocket does) goes over a connection of its own; on `101 Switching
//! Protocols` both sides are taken over and bytes are copied until either
//! closes. (HTTP calls this an upgrade; here it is a tunnel, to keep the
//! word apart from `switchyard upgrade` and from a serve's handover.)

use std::pin::pin;
use std::sync::Arc;

use crate::listener::Inbound;
use http::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;

use super::connection::{AnswerFields, UpstreamError};
use super::error_page::Cause;
use super::forward::{answered_in_time, pick_instance};
use super::headers::Forwarding;
use super::pool::Connections;
use super::request_body::RequestBody;
use super::{Backend, Proxy, ProxyError, ResponseBody};
use crate::backend::InFlight;

pub(super) async fn forward(
    proxy: &Proxy,
    backend: &Arc<Backend>,
    mut req: Request<Inbound>,
    forwarding: &Forwarding<'_>,
) -> Result<Response<ResponseBody>, ProxyError> {
    let upstream = pick_instance(backend, &[])?;
    let in_flight = InFlight::new(Arc::clone(backend), Arc::clone(&upstream));
    let mut conn = upstream
        .connect(proxy.settings.connect_timeout, true)
        .await
        .map_err(|e| ProxyError::ConnectFailed {
            service: backend.service.clone(),
            version: backend.version.clone(),
            cause: Cause::at(upstream.addr, e),
        })?;
    let client_side = hyper::upgrade::on(&mut req);
    let failed = |cause: UpstreamError| ProxyError::UpstreamFailed {
        service: backend.service.clone(),
        version: backend.version.clone(),
        cause: Cause::new(cause),
    };
    let req = req.map(|body| RequestBody::client(body, proxy.settings.client_body, None));
    let upload = req.body().upload();
    let sent = {
        let sending = pin!(conn.send(req, Some(forwarding), AnswerFields::Map));
        let timeout = proxy.settings.upstream_timeout;
        answered_in_time(sending, upload.as_deref(), backend, timeout).await?
    };
    let mut response = sent.map_err(|e| failed(e.error))?;
    if response.status() != StatusCode::SWITCHING_PROTOCOLS {
        let (parts, body) = response.into_parts();
        return Ok(Response::from_parts(
            parts,
            ResponseBody::upstream(
                body,
                None,
                Some(in_flight),
                None,
                proxy.settings.upstream_body,
                None,
            ),
        ));
    }
    let upstream_side = hyper::upgrade::on(&mut response);
    tokio::spawn(async move {
        // The tunnel counts as in flight until it closes, so draining waits.
        let _in_flight = in_flight;
        let (Ok(client), Ok(server)) = tokio::join!(client_side, upstream_side) else {
            return;
        };
        let mut client = TokioIo::new(client);
        let mut server = TokioIo::new(server);
        let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
    });
    let (parts, _) = response.into_parts();
    Ok(Response::from_parts(parts, ResponseBody::empty()))
}
