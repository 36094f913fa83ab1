//! Clients that misbehave on purpose: connections from chosen loopback
//! addresses, slowloris heads, held-open streams; and the counters serve
//! keeps about them in `/metrics`.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpSocket, TcpStream};

use super::raw_http::{RawResponse, read_response};
use super::{Env, within};

/// `127.0.0.N`: loopback accepts any 127.0.0.0/8 source, so each N looks
/// like another client host.
pub fn loopback(n: u8) -> IpAddr {
    IpAddr::from([127, 0, 0, n])
}

/// A TCP connection from `source` to `addr`, made within `wait`.
pub async fn connect_from(source: IpAddr, addr: &str, wait: Duration) -> TcpStream {
    let addr: SocketAddr = addr.parse().expect("a socket address");
    let socket = TcpSocket::new_v4().expect("socket");
    socket
        .bind(SocketAddr::new(source, 0))
        .unwrap_or_else(|e| panic!("bind to {source}: {e}"));
    within(wait, "connect", socket.connect(addr))
        .await
        .unwrap_or_else(|e| panic!("connect from {source} to {addr}: {e}"))
}

/// Reads until the server closes the connection (end of stream or reset),
/// returning what it sent; panics if it is still open after `wait`.
pub async fn read_until_closed(stream: &mut TcpStream, wait: Duration, what: &str) -> Vec<u8> {
    within(wait, what, async {
        let mut got = Vec::new();
        let mut buf = [0u8; 4096];
        loop {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => return got,
                Ok(n) => got.extend_from_slice(&buf[..n]),
            }
        }
    })
    .await
}

/// A slowloris client: opens a connection to `addr` and sends a request
/// head that never ends, one byte every `every`, until the server closes
/// the connection; returns what the server sent. Panics if the connection
/// is still open after `wait`.
pub async fn slowloris(addr: &str, every: Duration, wait: Duration) -> Vec<u8> {
    let stream = connect_from(loopback(1), addr, wait).await;
    let (mut reader, mut writer) = stream.into_split();
    let trickle = async move {
        let head = b"GET / HTTP/1.1\r\nHost: slow.example\r\nX-Slow: ";
        for byte in head.iter().chain(std::iter::repeat(&b'a')) {
            if writer.write_all(&[*byte]).await.is_err() {
                return;
            }
            // The attack's pace, not a wait for anything.
            tokio::time::sleep(every).await;
        }
    };
    let answered = async move {
        let mut got = Vec::new();
        let _ = reader.read_to_end(&mut got).await;
        got
    };
    within(wait, "the server to close a slowloris connection", async {
        tokio::select! {
            got = answered => got,
            () = trickle => panic!("the slowloris could not write, yet its connection was not closed"),
        }
    })
    .await
}

/// A connection from `source` to `addr` that the server must close at once
/// without a word (refused over a cap).
pub async fn assert_closed_at_once(source: IpAddr, addr: &str, wait: Duration, what: &str) {
    let mut stream = connect_from(source, addr, wait).await;
    let got = read_until_closed(&mut stream, wait, what).await;
    assert!(
        got.is_empty(),
        "{what}: answered {}",
        String::from_utf8_lossy(&got)
    );
}

/// `n` requests from `source` to `service` through the proxy that stay in
/// flight (see [`hold_stream`]), each answered 200.
pub async fn hold_streams(
    env: &Env,
    source: IpAddr,
    service: &str,
    n: usize,
    wait: Duration,
) -> Vec<BufReader<TcpStream>> {
    let mut held = Vec::with_capacity(n);
    for _ in 0..n {
        let (conn, head) = hold_stream(env, source, service, wait).await;
        assert_eq!(head.status, 200, "{head:?}");
        held.push(conn);
    }
    held
}

/// A request from `source` to the proxy that stays in flight: a GET of
/// hello-server's event stream, read up to its response head.
pub async fn hold_stream(
    env: &Env,
    source: IpAddr,
    service: &str,
    wait: Duration,
) -> (BufReader<TcpStream>, RawResponse) {
    let mut stream = connect_from(source, &env.serve().proxy_addr, wait).await;
    stream
        .write_all(
            format!(
                "GET /services/{service}/sse?n=3600&interval_ms=1000 HTTP/1.1\r\nHost: x\r\n\r\n"
            )
            .as_bytes(),
        )
        .await
        .expect("send the request");
    let mut conn = BufReader::new(stream);
    let head = read_response(&mut conn, true, wait).await;
    (conn, head)
}

/// The value of `series` (name and labels, as the page prints them) in
/// serve's `/metrics`; 0 when it is not there.
pub async fn metric(env: &Env, series: &str) -> u64 {
    let page = env
        .http
        .get(format!("{}/metrics", env.admin()))
        .send()
        .await
        .expect("GET /metrics")
        .text()
        .await
        .expect("the metrics page");
    page.lines()
        .find_map(|line| line.strip_prefix(series)?.strip_prefix(' '))
        .map_or(0, |value| {
            value
                .trim()
                .parse::<f64>()
                .unwrap_or_else(|e| panic!("{series} {value}: {e}")) as u64
        })
}
