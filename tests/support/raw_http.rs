//! An HTTP/1.1 client over a bare TCP connection, for what reqwest would
//! not send or would hide (pipelining, `Expect: 100-continue`, upgrades).

use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncReadExt, BufReader};
use tokio::net::TcpStream;

use super::{Env, within};

/// A response read off a raw connection.
#[derive(Debug)]
pub struct RawResponse {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl RawResponse {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// A new connection to the proxy of `env`, made within `wait`.
pub async fn connect(env: &Env, wait: Duration) -> BufReader<TcpStream> {
    let stream = within(
        wait,
        "connect to the proxy",
        TcpStream::connect(&env.serve().proxy_addr),
    )
    .await
    .expect("connect to the proxy");
    BufReader::new(stream)
}

/// Reads one HTTP/1.1 response head, and its body unless it has none, all
/// within `wait`.
pub async fn read_response(
    conn: &mut BufReader<TcpStream>,
    bodyless: bool,
    wait: Duration,
) -> RawResponse {
    within(wait, "a raw response", async {
        let mut line = String::new();
        conn.read_line(&mut line).await.expect("status line");
        let status: u16 = line
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| panic!("bad status line {line:?}"));
        let mut headers = Vec::new();
        loop {
            let mut line = String::new();
            conn.read_line(&mut line).await.expect("header line");
            let line = line.trim_end();
            if line.is_empty() {
                break;
            }
            let (name, value) = line.split_once(':').expect("header has a colon");
            headers.push((name.trim().to_owned(), value.trim().to_owned()));
        }
        let mut response = RawResponse {
            status,
            headers,
            body: Vec::new(),
        };
        if bodyless || status < 200 || status == 204 || status == 304 {
            return response;
        }
        if response
            .header("transfer-encoding")
            .is_some_and(|te| te.eq_ignore_ascii_case("chunked"))
        {
            loop {
                let mut size = String::new();
                conn.read_line(&mut size).await.expect("chunk size");
                let size = usize::from_str_radix(size.trim(), 16).expect("hex chunk size");
                let mut chunk = vec![0; size + 2];
                conn.read_exact(&mut chunk).await.expect("chunk");
                if size == 0 {
                    break;
                }
                response.body.extend_from_slice(&chunk[..size]);
            }
        } else if let Some(len) = response.header("content-length") {
            let mut body = vec![0; len.parse().expect("numeric content-length")];
            conn.read_exact(&mut body).await.expect("body");
            response.body = body;
        } else {
            conn.read_to_end(&mut response.body).await.expect("body");
        }
        response
    })
    .await
}
