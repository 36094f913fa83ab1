//! An HTTP/1.1 client that never retries, for tests that count failed
//! requests: one connection at a time (hyper's `client::conn`, no pool),
//! each request written once. A connection error, a reset, a connection
//! closed before the answer and a body cut short are failures, never sent
//! again. (reqwest cannot do this: the pooled client under it sends a
//! request again when a reused connection turns out closed.)
//!
//! A new connection is opened only when there is none, or when the one
//! there has ended between two requests (the server said
//! `Connection: close`, or closed it while it was idle and the client saw
//! that before writing anything): no request was sent on it, so nothing
//! is sent twice.

use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::{SendRequest, handshake};
use hyper_util::rt::TokioIo;
use rustls::pki_types::ServerName;
use tokio::net::TcpStream;

use super::load::Answer;

/// The bound on connecting, and on each answer read whole, unless told.
pub const WAIT: Duration = Duration::from_secs(30);

/// A client of one server address (`host:port`).
pub struct Http1 {
    addr: String,
    wait: Duration,
    conn: Option<SendRequest<Full<Bytes>>>,
    connections: u64,
    /// TLS to the server, by this name (SNI and `Host`).
    tls: Option<(tokio_rustls::TlsConnector, ServerName<'static>)>,
}

impl Http1 {
    pub fn new(addr: &str) -> Http1 {
        Http1 {
            addr: addr.trim_start_matches("http://").to_owned(),
            wait: WAIT,
            conn: None,
            connections: 0,
            tls: None,
        }
    }

    /// A client of the TLS server at `addr` (`host:port`) that asks for
    /// `host` (SNI and `Host`), with `config`'s trust.
    pub fn tls(addr: &str, host: &str, config: std::sync::Arc<rustls::ClientConfig>) -> Http1 {
        let name = ServerName::try_from(host.to_owned()).expect("a server name");
        Http1 {
            tls: Some((tokio_rustls::TlsConnector::from(config), name)),
            ..Http1::new(addr)
        }
    }

    /// The bound on connecting and on each answer.
    pub fn wait(mut self, wait: Duration) -> Http1 {
        self.wait = wait;
        self
    }

    /// Connections opened so far.
    pub fn connections(&self) -> u64 {
        self.connections
    }

    /// GET `path`: (status, x-switchyard-version, body), or what failed.
    pub async fn get(&mut self, path: &str) -> Answer {
        self.get_with(path, &[]).await
    }

    /// GET `path` with extra headers.
    pub async fn get_with(&mut self, path: &str, headers: &[(&str, &str)]) -> Answer {
        let mut request = http::Request::get(path);
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        let request = request
            .body(Full::new(Bytes::new()))
            .map_err(|e| format!("cannot build GET {path}: {e}"))?;
        self.send(request).await
    }

    /// Sends `request` (origin-form target; `Host` is added) once and reads
    /// the answer whole.
    pub async fn send(&mut self, mut request: http::Request<Full<Bytes>>) -> Answer {
        if !request.headers().contains_key(http::header::HOST) {
            let host = match &self.tls {
                Some((_, name)) => name.to_str().into_owned(),
                None => self.addr.clone(),
            };
            let host = http::HeaderValue::from_str(&host)
                .map_err(|e| format!("bad address {}: {e}", self.addr))?;
            request.headers_mut().insert(http::header::HOST, host);
        }
        let what = format!("{} {}", request.method(), request.uri());
        let answer = tokio::time::timeout(self.wait, self.exchange(request))
            .await
            .unwrap_or_else(|_| Err(format!("no whole answer within {:?}", self.wait)))
            .map_err(|e| format!("{what}: {e}"));
        if answer.is_err() {
            // Whatever state it is in, the connection is not used again.
            self.conn = None;
        }
        answer
    }

    async fn exchange(&mut self, request: http::Request<Full<Bytes>>) -> Answer {
        let sender = self.ready().await?;
        let response = sender
            .send_request(request)
            .await
            .map_err(|e| format!("request failed: {e:?}"))?;
        let status = response.status().as_u16();
        let version = super::version_header(response.headers());
        let body = response
            .into_body()
            .collect()
            .await
            .map_err(|e| format!("body cut short after status {status}: {e:?}"))?
            .to_bytes();
        let body = String::from_utf8(body.to_vec())
            .unwrap_or_else(|e| format!("(not UTF-8: {} bytes)", e.as_bytes().len()));
        Ok((status, version, body))
    }

    /// The open connection when it can take a request, else a new one.
    async fn ready(&mut self) -> Result<&mut SendRequest<Full<Bytes>>, String> {
        if let Some(sender) = &mut self.conn {
            if sender.ready().await.is_err() {
                self.conn = None;
            }
        }
        if self.conn.is_none() {
            let stream = TcpStream::connect(&self.addr)
                .await
                .map_err(|e| format!("connect to {}: {e}", self.addr))?;
            let _ = stream.set_nodelay(true);
            let sender = match &self.tls {
                None => {
                    let (sender, connection) = handshake(TokioIo::new(stream))
                        .await
                        .map_err(|e| format!("handshake with {}: {e}", self.addr))?;
                    // Ends when the connection does (or the sender is dropped).
                    tokio::spawn(async move {
                        let _ = connection.await;
                    });
                    sender
                }
                Some((connector, name)) => {
                    let stream = connector
                        .connect(name.clone(), stream)
                        .await
                        .map_err(|e| format!("TLS handshake with {}: {e}", self.addr))?;
                    let (sender, connection) = handshake(TokioIo::new(stream))
                        .await
                        .map_err(|e| format!("handshake with {}: {e}", self.addr))?;
                    tokio::spawn(async move {
                        let _ = connection.await;
                    });
                    sender
                }
            };
            self.connections += 1;
            self.conn = Some(sender);
        }
        self.conn.as_mut().ok_or_else(|| "no connection".to_owned())
    }
}
