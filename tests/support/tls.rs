//! TLS for tests: a private CA made here with rcgen that issues host
//! certificates, and clients that trust only it (reqwest, and the
//! never-retrying [`Http1`](super::http1::Http1) over TLS), alone or as
//! a load that makes new handshakes and keeps connections.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair, date_time_ymd};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};

/// A certificate authority of the test's own.
pub struct TestCa {
    /// The CA's name, which `tls ls` shows as the issuer.
    pub name: String,
    issuer: Issuer<'static, KeyPair>,
    pem: String,
}

/// A certificate and its key, as PEM text and as files.
pub struct Issued {
    pub cert_pem: String,
    pub key_pem: String,
    pub cert_file: PathBuf,
    pub key_file: PathBuf,
}

impl TestCa {
    pub fn new(name: &str) -> TestCa {
        let key = KeyPair::generate().expect("CA key");
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name.push(DnType::CommonName, name);
        let cert = params.self_signed(&key).expect("self-signed CA");
        TestCa {
            name: name.to_owned(),
            issuer: Issuer::new(params, key),
            pem: cert.pem(),
        }
    }

    /// The CA certificate, PEM.
    pub fn pem(&self) -> &str {
        &self.pem
    }

    /// Writes the CA certificate to `dir/NAME` and returns the path.
    pub fn write(&self, dir: &Path, name: &str) -> PathBuf {
        let path = dir.join(name);
        std::fs::write(&path, &self.pem).expect("write the CA file");
        path
    }

    /// A certificate for `names`, written to `dir` as `FILE.crt` and `FILE.key`.
    pub fn issue(&self, names: &[&str], dir: &Path, file: &str) -> Issued {
        self.issue_with(names, dir, file, |_| {})
    }

    /// One that expired in 2021.
    pub fn issue_expired(&self, names: &[&str], dir: &Path, file: &str) -> Issued {
        self.issue_with(names, dir, file, |params| {
            params.not_before = date_time_ymd(2020, 1, 1);
            params.not_after = date_time_ymd(2021, 1, 1);
        })
    }

    fn issue_with(
        &self,
        names: &[&str],
        dir: &Path,
        file: &str,
        change: impl FnOnce(&mut CertificateParams),
    ) -> Issued {
        let key = KeyPair::generate().expect("host key");
        let names: Vec<String> = names.iter().map(|s| s.to_string()).collect();
        let mut params = CertificateParams::new(names).expect("host params");
        change(&mut params);
        let cert = params
            .signed_by(&key, &self.issuer)
            .expect("signed host certificate");
        let issued = Issued {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
            cert_file: dir.join(format!("{file}.crt")),
            key_file: dir.join(format!("{file}.key")),
        };
        std::fs::write(&issued.cert_file, &issued.cert_pem).expect("write the certificate");
        std::fs::write(&issued.key_file, &issued.key_pem).expect("write the key");
        issued
    }

    /// A rustls client trusting only this CA, offering `alpn`.
    pub fn client_config(&self, alpn: &[&[u8]]) -> Arc<rustls::ClientConfig> {
        client_config_trusting(&self.pem, alpn)
    }

    /// reqwest trusting only this CA, with `host` resolved to `addr`
    /// (HTTP/2 when the server offers it by ALPN).
    pub fn reqwest(&self, host: &str, addr: SocketAddr) -> reqwest::Client {
        let config = (*self.client_config(&[b"h2", b"http/1.1"])).clone();
        super::http_client()
            .no_proxy()
            .resolve(host, addr)
            .tls_backend_preconfigured(config)
            .build()
            .expect("https client")
    }
}

/// A rustls client trusting only the CA certificates in `pem`.
pub fn client_config_trusting(pem: &str, alpn: &[&[u8]]) -> Arc<rustls::ClientConfig> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(pem.as_bytes()) {
        roots.add(cert.expect("CA PEM")).expect("CA certificate");
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("TLS versions")
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    Arc::new(config)
}

/// A never-retrying HTTP/1.1 client of `host` at `addr` over TLS,
/// trusting only the CA certificates in `ca_pem`.
pub fn https1(addr: SocketAddr, host: &str, ca_pem: &str) -> super::http1::Http1 {
    super::http1::Http1::tls(
        &addr.to_string(),
        host,
        client_config_trusting(ca_pem, &[b"http/1.1"]),
    )
}

/// `clients` never-retrying HTTPS clients of `host` at `addr` asking for
/// `/echo` until `until`, trusting the CA certificates in `ca_pem`: half
/// keep their connection, the other half make a new one (a new
/// handshake) for every request.
pub fn https_load(
    addr: SocketAddr,
    host: &str,
    ca_pem: &str,
    clients: usize,
    until: std::time::Instant,
) -> (super::load::Load<super::load::Answer>, HttpsClients) {
    let list: Vec<_> = (0..clients)
        .map(|_| tokio::sync::Mutex::new(https1(addr, host, ca_pem)))
        .collect();
    let list = Arc::new(list);
    let kept = list.clone();
    let load = super::load::Load::start_until(clients, until, move |client, _| {
        let list = list.clone();
        async move {
            let headers: &[(&str, &str)] = if client % 2 == 0 {
                &[]
            } else {
                &[("connection", "close")]
            };
            list[client].lock().await.get_with("/echo", headers).await
        }
    });
    (load, HttpsClients(kept))
}

/// The clients of an [`https_load`].
pub struct HttpsClients(Arc<Vec<tokio::sync::Mutex<super::http1::Http1>>>);

impl HttpsClients {
    /// The connections (so handshakes) they made so far.
    pub async fn connections(&self) -> u64 {
        let mut total = 0;
        for client in self.0.iter() {
            total += client.lock().await.connections();
        }
        total
    }
}

/// A TLS client connection: the certificate the server chose, or why the
/// handshake failed.
pub async fn handshake(
    addr: SocketAddr,
    server_name: &str,
    config: Arc<rustls::ClientConfig>,
) -> Result<tokio_rustls::client::TlsStream<tokio::net::TcpStream>, String> {
    let tcp = tokio::net::TcpStream::connect(addr)
        .await
        .map_err(|e| format!("connect to {addr}: {e}"))?;
    let name = ServerName::try_from(server_name.to_owned()).map_err(|e| e.to_string())?;
    tokio_rustls::TlsConnector::from(config)
        .connect(name, tcp)
        .await
        .map_err(|e| format!("TLS handshake for {server_name}: {e}"))
}

/// The DER of the certificate a TLS connection's server presented.
pub fn peer_certificate(
    stream: &tokio_rustls::client::TlsStream<tokio::net::TcpStream>,
) -> Vec<u8> {
    let (_, connection) = stream.get_ref();
    connection
        .peer_certificates()
        .and_then(|certs| certs.first())
        .map(|c| c.as_ref().to_vec())
        .expect("the server presented a certificate")
}

/// The DER of a PEM certificate.
pub fn der_of(pem: &str) -> Vec<u8> {
    CertificateDer::from_pem_slice(pem.as_bytes())
        .expect("certificate PEM")
        .as_ref()
        .to_vec()
}

/// A small HTTPS server of the test's own, as an external release's
/// instance: answers every request 200 with the name the client asked for
/// (SNI) and the path. Stops when dropped.
pub struct HttpsUpstream {
    pub addr: SocketAddr,
    task: tokio::task::JoinHandle<()>,
}

impl HttpsUpstream {
    /// Serves with a certificate from `ca` for `names`.
    pub async fn start(ca: &TestCa, names: &[&str], dir: &Path) -> HttpsUpstream {
        let issued = ca.issue(names, dir, "upstream");
        let chain = CertificateDer::pem_slice_iter(issued.cert_pem.as_bytes())
            .collect::<Result<Vec<_>, _>>()
            .expect("chain");
        let key = rustls::pki_types::PrivateKeyDer::from_pem_slice(issued.key_pem.as_bytes())
            .expect("key");
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .expect("versions")
            .with_no_client_auth()
            .with_single_cert(chain, key)
            .expect("server config");
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("address");
        let task = tokio::spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                let acceptor = acceptor.clone();
                tokio::spawn(async move {
                    let Ok(tls) = acceptor.accept(tcp).await else {
                        return;
                    };
                    let sni = tls.get_ref().1.server_name().unwrap_or("(none)").to_owned();
                    let service = hyper::service::service_fn(
                        move |req: http::Request<hyper::body::Incoming>| {
                            let body = format!("tls upstream sni={sni} path={}", req.uri().path());
                            async move {
                                Ok::<_, std::convert::Infallible>(http::Response::new(
                                    http_body_util::Full::new(bytes::Bytes::from(body)),
                                ))
                            }
                        },
                    );
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(hyper_util::rt::TokioIo::new(tls), service)
                        .await;
                });
            }
        });
        HttpsUpstream { addr, task }
    }
}

impl Drop for HttpsUpstream {
    fn drop(&mut self) {
        self.task.abort();
    }
}
