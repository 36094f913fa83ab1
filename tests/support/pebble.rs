//! A real ACME CA for tests: pebble, with pebble-challtestsrv as its DNS
//! (every name is 127.0.0.1), validating HTTP-01 against a serve's
//! cleartext listener and TLS-ALPN-01 against its TLS listener. Pebble's own HTTPS certificate comes from a CA the
//! test makes; its issuing root is fetched from its management interface.

use std::net::{SocketAddr, TcpListener, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::tls::TestCa;
use super::{Env, component};

/// A running pebble and its DNS; both stopped on drop.
pub struct Pebble {
    /// The ACME directory URL.
    pub directory: String,
    /// PEM file of the CA pebble's HTTPS listener is signed by (for
    /// `tls acme --directory-ca`).
    pub directory_ca: PathBuf,
    /// The root pebble issues certificates under, PEM.
    pub root_pem: String,
    https_ca: TestCa,
    management: SocketAddr,
    pebble: Option<Child>,
    dns: Option<Child>,
    log: PathBuf,
}

fn free_tcp_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("a free port");
    listener.local_addr().expect("its address").port()
}

/// A port free for both UDP and TCP (the DNS server binds both).
fn free_dns_port() -> u16 {
    loop {
        let udp = UdpSocket::bind("127.0.0.1:0").expect("a free UDP port");
        let port = udp.local_addr().expect("its address").port();
        if TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
}

impl Pebble {
    /// Whether pebble and its DNS are installed (a missing one fails the
    /// test unless the run opts out of `pebble`).
    pub fn available(test: &str) -> bool {
        let probe =
            ["pebble", "pebble-challtestsrv"]
                .iter()
                .try_for_each(|name| match Command::new(name).arg("-h").output() {
                    Ok(_) => Ok(()),
                    Err(e) => Err(format!("cannot run `{name}`: {e}")),
                });
        component::available(test, "pebble", probe)
    }

    /// Starts pebble validating HTTP-01 on `http_port` (serve's cleartext
    /// listener), issuing certificates valid for `validity`.
    pub async fn start(dir: &Path, http_port: u16, validity: Duration) -> Pebble {
        Self::start_validating(dir, http_port, free_tcp_port(), validity).await
    }

    /// Starts pebble validating HTTP-01 on `http_port` and TLS-ALPN-01 on
    /// `tls_port` (serve's TLS listener).
    pub async fn start_validating(
        dir: &Path,
        http_port: u16,
        tls_port: u16,
        validity: Duration,
    ) -> Pebble {
        let https_ca = TestCa::new("Pebble HTTPS Test CA");
        let issued = https_ca.issue(&["127.0.0.1", "localhost"], dir, "pebble-https");
        let directory_ca = https_ca.write(dir, "pebble-https-ca.pem");
        let dns_port = free_dns_port();
        let listen = free_tcp_port();
        let management: SocketAddr = format!("127.0.0.1:{}", free_tcp_port())
            .parse()
            .expect("address");
        let dns_management = free_tcp_port();
        let log = dir.join("pebble.log");
        let dns = Command::new("pebble-challtestsrv")
            .args([
                "-defaultIPv4",
                "127.0.0.1",
                "-defaultIPv6",
                "",
                "-dns01",
                &format!("127.0.0.1:{dns_port}"),
                "-http01",
                "",
                "-https01",
                "",
                "-tlsalpn01",
                "",
                "-management",
                &format!("127.0.0.1:{dns_management}"),
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start pebble-challtestsrv");
        let config = serde_json::json!({
            "pebble": {
                "listenAddress": format!("127.0.0.1:{listen}"),
                "managementListenAddress": management.to_string(),
                "certificate": issued.cert_file,
                "privateKey": issued.key_file,
                "httpPort": http_port,
                "tlsPort": tls_port,
                "ocspResponderURL": "",
                "externalAccountBindingRequired": false,
                "certificateValidityPeriod": validity.as_secs(),
            }
        });
        let config_file = dir.join("pebble-config.json");
        std::fs::write(&config_file, config.to_string()).expect("write pebble's config");
        let mut pebble = Pebble {
            directory: format!("https://127.0.0.1:{listen}/dir"),
            directory_ca,
            root_pem: String::new(),
            https_ca,
            management,
            pebble: None,
            dns: Some(dns),
            log,
        };
        let log_file = std::fs::File::create(&pebble.log).expect("pebble log");
        pebble.pebble = Some(
            Command::new("pebble")
                .arg("-config")
                .arg(&config_file)
                .arg("-dnsserver")
                .arg(format!("127.0.0.1:{dns_port}"))
                .env("PEBBLE_VA_NOSLEEP", "1")
                .env("PEBBLE_WFE_NONCEREJECT", "0")
                .stdout(log_file.try_clone().expect("log"))
                .stderr(log_file)
                .spawn()
                .expect("start pebble"),
        );
        pebble.root_pem = pebble.fetch_root().await;
        pebble
    }

    /// pebble's log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// The issuing root, from the management interface (polled until
    /// pebble answers: its answer is the readiness signal).
    async fn fetch_root(&self) -> String {
        let client = super::http_client()
            .no_proxy()
            .tls_backend_preconfigured((*self.https_ca.client_config(&[b"http/1.1"])).clone())
            .build()
            .expect("client");
        let deadline = Instant::now() + Duration::from_secs(30);
        let url = format!("https://{}/roots/0", self.management);
        loop {
            if let Ok(response) = client.get(&url).send().await {
                if response.status().is_success() {
                    return response.text().await.expect("root PEM");
                }
            }
            assert!(
                Instant::now() < deadline,
                "pebble did not answer at {url} within 30s; its log:\n{}",
                self.log()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Stops pebble (the CA goes down); its DNS stays.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.pebble.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for Pebble {
    fn drop(&mut self) {
        self.kill();
        if let Some(mut child) = self.dns.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// The ACME orders `env` lists (`GET /v1/tls/acme`).
pub async fn acme_orders(env: &Env) -> serde_json::Value {
    env.http
        .get(format!("{}/v1/tls/acme", env.admin()))
        .send()
        .await
        .expect("the admin API answers")
        .json()
        .await
        .expect("orders JSON")
}
