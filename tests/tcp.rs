//! TCP services end to end: Debian's `redis-server` as two releases of one
//! service, reached through serve's TCP listeners by a raw RESP client
//! that never retries; a small server of the test's own only where a
//! release must read the PROXY protocol header (redis does not).

mod support;

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use serde_json::Value;
use support::Env;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpSocket, TcpStream};

/// The bound on every wait: generous, so a slow machine only slows tests.
const WAIT: Duration = Duration::from_secs(30);

/// A port that was free a moment ago.
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

/// `switchyard deploy NAME VERSION --protocol tcp [extra…] -- redis-server …`:
/// an empty redis on the instance's port, keeping nothing on disk.
async fn deploy_redis(env: &Env, name: &str, version: &str, extra: &[&str]) -> support::Run {
    let mut args = vec!["deploy", name, version, "--protocol", "tcp"];
    args.extend_from_slice(extra);
    args.extend_from_slice(&[
        "--",
        "redis-server",
        "--port",
        "{port}",
        "--bind",
        "127.0.0.1",
        "--save",
        "",
        "--appendonly",
        "no",
    ]);
    env.cli(&args).await
}

/// One RESP connection: commands as arrays of bulk strings, replies read
/// whole. It never reconnects, so an answer is from the server the
/// connection reached when it opened.
struct Resp {
    reader: BufReader<TcpStream>,
}

impl Resp {
    async fn connect(addr: SocketAddr) -> Resp {
        Self::connect_from(addr, IpAddr::from([127, 0, 0, 1])).await
    }

    /// Connects from a loopback address of the test's choice, so one test
    /// can be many clients.
    async fn connect_from(addr: SocketAddr, from: IpAddr) -> Resp {
        let socket = TcpSocket::new_v4().expect("a socket");
        socket
            .bind(SocketAddr::new(from, 0))
            .unwrap_or_else(|e| panic!("bind {from}: {e}"));
        let stream = tokio::time::timeout(WAIT, socket.connect(addr))
            .await
            .expect("connected in time")
            .unwrap_or_else(|e| panic!("connect to {addr}: {e}"));
        Resp {
            reader: BufReader::new(stream),
        }
    }

    /// Sends a command and reads its reply: a simple string, an integer,
    /// an error (`-…`) or a bulk string (`None` when nil).
    async fn call(&mut self, args: &[&str]) -> Option<String> {
        let mut out = format!("*{}\r\n", args.len());
        for a in args {
            out.push_str(&format!("${}\r\n{a}\r\n", a.len()));
        }
        let stream = self.reader.get_mut();
        stream.write_all(out.as_bytes()).await.expect("send");
        tokio::time::timeout(WAIT, self.reply())
            .await
            .expect("a reply in time")
    }

    async fn reply(&mut self) -> Option<String> {
        let mut line = String::new();
        let n = self.reader.read_line(&mut line).await.expect("read");
        assert!(n > 0, "the connection closed before a reply");
        let line = line.trim_end();
        match line.as_bytes().first() {
            Some(b'$') => {
                let len: i64 = line[1..].parse().expect("a bulk length");
                if len < 0 {
                    return None;
                }
                let mut body = vec![0; usize::try_from(len).expect("length") + 2];
                self.reader.read_exact(&mut body).await.expect("bulk");
                body.truncate(body.len() - 2);
                Some(String::from_utf8(body).expect("UTF-8"))
            }
            _ => Some(line.to_owned()),
        }
    }

    /// The `release` key the test wrote into the server it reaches.
    async fn release(&mut self) -> String {
        self.call(&["GET", "release"])
            .await
            .unwrap_or_else(|| "(none)".into())
    }
}

fn addr(port: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], port))
}

/// `status NAME --json` parsed.
async fn status(env: &Env, name: &str) -> Value {
    let run = env.cli(&["status", name, "--json"]).await.ok();
    serde_json::from_str(&run.stdout).expect("status --json is JSON")
}

/// Two redis releases of `cache`, each holding its own version under the
/// key `release`; 1.0.0 is main, 2.0.0 is pinned to its own port. Returns
/// (the service's listen address, 2.0.0's pinned address).
async fn two_releases(env: &Env) -> (SocketAddr, SocketAddr) {
    deploy_redis(env, "cache", "1.0.0", &[]).await.ok();
    let listen = addr(free_port());
    env.cli(&["listen", "cache", &listen.to_string()])
        .await
        .ok();
    let mut one = Resp::connect(listen).await;
    assert_eq!(
        one.call(&["SET", "release", "1.0.0"]).await.as_deref(),
        Some("+OK")
    );

    let second = deploy_redis(env, "cache", "2.0.0", &[]).await.ok();
    assert!(
        second.stdout.contains("as standby"),
        "a TCP release never enters as a shadow: {}",
        second.stdout
    );
    let pinned = addr(free_port());
    env.cli(&[
        "pin",
        "cache",
        "2.0.0",
        "--port",
        &pinned.port().to_string(),
    ])
    .await
    .ok();
    let mut two = Resp::connect(pinned).await;
    assert_eq!(
        two.call(&["SET", "release", "2.0.0"]).await.as_deref(),
        Some("+OK")
    );
    (listen, pinned)
}

#[tokio::test]
async fn new_connections_follow_assign_while_open_ones_keep_their_server() {
    if !support::component::redis("new_connections_follow_assign") {
        return;
    }
    let env = Env::start().await;
    let (listen, pinned) = two_releases(&env).await;

    let mut before = Resp::connect(listen).await;
    assert_eq!(before.release().await, "1.0.0");
    assert_eq!(Resp::connect(pinned).await.release().await, "2.0.0");

    env.cli(&["assign", "cache", "2.0.0", "--yes"]).await.ok();
    let mut after = Resp::connect(listen).await;
    assert_eq!(
        after.release().await,
        "2.0.0",
        "a new connection goes to the new main"
    );
    assert_eq!(
        before.release().await,
        "1.0.0",
        "the connection opened before the switch keeps its server"
    );
    assert_eq!(
        Resp::connect(pinned).await.release().await,
        "2.0.0",
        "a pinned address stays with its release"
    );

    env.cli(&["rollback", "cache"]).await.ok();
    assert_eq!(Resp::connect(listen).await.release().await, "1.0.0");
    assert_eq!(
        after.release().await,
        "2.0.0",
        "and back: open connections stay"
    );

    // Counted per release: every connection above (1.0.0: the one that
    // wrote its data, `before`, the one after the rollback), open ones and
    // the bytes they carried.
    let releases = status(&env, "cache").await;
    let one = &releases[0]["tcp"];
    assert_eq!(one["total"], 3, "{releases}");
    assert_eq!(one["connect_failures"], 0, "{releases}");
    assert!(
        one["open"].as_u64() >= Some(1),
        "`before` is open: {releases}"
    );
    drop((before, after));
    env.eventually(
        "the closed connections and their bytes are counted",
        WAIT,
        || {
            let env = &env;
            async move {
                let releases = status(env, "cache").await;
                let (one, two) = (&releases[0]["tcp"], &releases[1]["tcp"]);
                one["open"] == 0
                    && two["open"] == 0
                    && one["bytes_in"].as_u64() > Some(0)
                    && two["bytes_out"].as_u64() > Some(0)
            }
        },
    )
    .await;
    let ls = env.cli(&["ls"]).await.ok();
    assert!(
        ls.stdout
            .contains(&format!("cache is a TCP service: listens on {listen}")),
        "{}",
        ls.stdout
    );
    let metrics = env.metrics().await;
    assert!(
        metrics.contains(r#"switchyard_tcp_connections_total{service="cache",version="1.0.0"}"#),
        "{metrics}"
    );
}

#[tokio::test]
async fn a_tcp_service_refuses_what_only_http_has_and_changes_nothing() {
    if !support::component::redis("a_tcp_service_refuses") {
        return;
    }
    let env = Env::start().await;
    let (listen, _) = two_releases(&env).await;
    let revisions = env.history("cache").await.as_array().map(Vec::len);

    let http = env
        .cli(&[
            "deploy",
            "cache",
            "3.0.0",
            "--",
            "redis-server",
            "--port",
            "{port}",
        ])
        .await
        .failed();
    assert!(
        http.stderr
            .contains("cache is a tcp service and 3.0.0 speaks http")
            && http.stderr.contains("--protocol tcp"),
        "{}",
        http.stderr
    );
    let rule = env
        .cli(&[
            "route", "add", "cache", "--header", "x-beta=1", "--to", "2.0.0",
        ])
        .await
        .failed();
    assert!(rule.stderr.contains("TCP service"), "{}", rule.stderr);
    let sticky = env
        .cli(&[
            "canary",
            "cache",
            "2.0.0",
            "--percent",
            "10",
            "--sticky-header",
            "x-user",
        ])
        .await
        .failed();
    assert!(
        sticky.stderr.contains("header or cookie"),
        "{}",
        sticky.stderr
    );
    let shadow = env
        .cli(&["shadow", "set", "cache", "2.0.0", "--on"])
        .await
        .failed();
    assert!(
        shadow.stderr.contains("cache is a TCP service")
            && shadow.stderr.contains("cannot be copied"),
        "{}",
        shadow.stderr
    );
    let rollout = env
        .cli(&["rollout", "cache", "2.0.0", "--steps", "50"])
        .await
        .failed();
    assert!(
        rollout.stderr.contains("cache is a TCP service")
            && rollout.stderr.contains("switchyard canary cache 2.0.0"),
        "{}",
        rollout.stderr
    );
    let over_http = env.get("/services/cache/").await;
    assert_eq!(over_http.0, 404, "{over_http:?}");
    let busy = env
        .cli(&["listen", "cache", env.admin().trim_start_matches("http://")])
        .await
        .failed();
    assert!(busy.stderr.contains("cannot listen"), "{}", busy.stderr);

    // A release that never comes up is never routed to: the deploy fails
    // and connections keep reaching main.
    let crashing = env
        .cli(&[
            "deploy",
            "cache",
            "4.0.0",
            "--protocol",
            "tcp",
            "--ready-timeout",
            "5s",
            "--",
            "sh",
            "-c",
            "exit 3",
        ])
        .await
        .failed();
    assert!(!crashing.stderr.is_empty());
    assert_eq!(Resp::connect(listen).await.release().await, "1.0.0");
    assert_eq!(
        env.history("cache").await.as_array().map(Vec::len),
        revisions,
        "nothing refused made a revision"
    );
    let releases = status(&env, "cache").await;
    assert!(
        releases
            .as_array()
            .is_some_and(|r| r.iter().all(|r| r["version"] != "4.0.0")),
        "{releases}"
    );
}

#[tokio::test]
async fn a_canary_takes_a_sticky_share_of_client_addresses() {
    if !support::component::redis("a_canary_takes_a_sticky_share") {
        return;
    }
    let env = Env::start().await;
    let (listen, _) = two_releases(&env).await;
    env.cli(&["canary", "cache", "2.0.0", "--percent", "50"])
        .await
        .ok();
    let mut on_canary = 0;
    for host in 1..=40u8 {
        let from = IpAddr::from([127, 0, 0, host]);
        let first = Resp::connect_from(listen, from).await.release().await;
        let again = Resp::connect_from(listen, from).await.release().await;
        assert_eq!(first, again, "{from} keeps its side");
        if first == "2.0.0" {
            on_canary += 1;
        } else {
            assert_eq!(first, "1.0.0");
        }
    }
    assert!(
        (8..=32).contains(&on_canary),
        "about half of 40 addresses on the canary, got {on_canary}"
    );
    env.cli(&["abort", "cache"]).await.ok();
    for host in 1..=40u8 {
        let from = IpAddr::from([127, 0, 0, host]);
        assert_eq!(
            Resp::connect_from(listen, from).await.release().await,
            "1.0.0"
        );
    }
}

/// A server that reads the PROXY header each connection starts with and
/// answers with what it read: the v1 line, or the v2 header's source
/// address. Connections that send nothing (health checks) just close.
async fn header_reader() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let local = listener.local_addr().expect("address");
    tokio::spawn(async move {
        loop {
            let Ok((mut stream, _)) = listener.accept().await else {
                return;
            };
            tokio::spawn(async move {
                let mut first = [0u8; 1];
                if stream.read_exact(&mut first).await.is_err() {
                    return;
                }
                let answer = if first[0] == b'P' {
                    let mut reader = BufReader::new(&mut stream);
                    let mut line = String::new();
                    let _ = reader.read_line(&mut line).await;
                    format!("P{}", line.trim_end())
                } else {
                    let mut head = [0u8; 15];
                    if stream.read_exact(&mut head).await.is_err() {
                        return;
                    }
                    let len = usize::from(u16::from_be_bytes([head[13], head[14]]));
                    let mut body = vec![0; len];
                    if stream.read_exact(&mut body).await.is_err() {
                        return;
                    }
                    let ip = std::net::Ipv4Addr::new(body[0], body[1], body[2], body[3]);
                    format!("v2 family {:#04x} from {ip}", head[12])
                };
                let _ = stream.write_all(format!("{answer}\n").as_bytes()).await;
            });
        }
    });
    local
}

#[tokio::test]
async fn a_release_that_asks_for_it_gets_the_proxy_protocol_header() {
    let env = Env::start().await;
    for version in ["v1", "v2"] {
        let server = header_reader().await;
        let name = format!("reader-{version}");
        env.cli(&[
            "deploy",
            &name,
            "1.0.0",
            "--protocol",
            "tcp",
            "--proxy-protocol",
            version,
            "--upstream",
            &server.to_string(),
        ])
        .await
        .ok();
        let listen = addr(free_port());
        env.cli(&["listen", &name, &listen.to_string()]).await.ok();
        let socket = TcpSocket::new_v4().expect("socket");
        socket
            .bind(SocketAddr::from(([127, 0, 0, 7], 0)))
            .expect("bind");
        let stream = socket.connect(listen).await.expect("connect");
        let client = stream.local_addr().expect("address");
        let mut line = String::new();
        tokio::time::timeout(WAIT, BufReader::new(stream).read_line(&mut line))
            .await
            .expect("an answer in time")
            .expect("read");
        let expected = match version {
            "v1" => format!(
                "PROXY TCP4 127.0.0.7 127.0.0.1 {} {}",
                client.port(),
                listen.port()
            ),
            _ => "v2 family 0x11 from 127.0.0.7".to_owned(),
        };
        assert_eq!(line.trim_end(), expected);
    }
    let http = env
        .cli(&[
            "deploy",
            "web",
            "1.0.0",
            "--proxy-protocol",
            "v1",
            "--upstream",
            "127.0.0.1:9",
        ])
        .await
        .failed();
    assert!(
        http.stderr
            .contains("--proxy-protocol applies to TCP releases"),
        "{}",
        http.stderr
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_handover_keeps_open_connections_while_the_new_serve_takes_new_ones() {
    if !support::component::redis("a_handover_keeps_open_connections") {
        return;
    }
    let env = Env::start().await;
    let (listen, pinned) = two_releases(&env).await;
    let old_pid = env.serve_pid();
    let mut held = Resp::connect(listen).await;
    assert_eq!(held.release().await, "1.0.0");

    let run = env.cli(&["handover", "--json"]).await.ok();
    let report: Value = serde_json::from_str(&run.stdout).expect("handover --json is JSON");
    let new_pid = u32::try_from(report["new_pid"].as_u64().expect("new pid")).expect("pid");
    assert_ne!(new_pid, old_pid);

    // The new serve has the addresses; the old one still forwards the
    // connection it holds.
    assert_eq!(Resp::connect(listen).await.release().await, "1.0.0");
    assert_eq!(Resp::connect(pinned).await.release().await, "2.0.0");
    env.cli(&["assign", "cache", "2.0.0", "--yes"]).await.ok();
    assert_eq!(Resp::connect(listen).await.release().await, "2.0.0");
    assert_eq!(
        held.release().await,
        "1.0.0",
        "the held connection is alive"
    );
    assert!(
        support::pid_alive(old_pid),
        "the old serve stays while it forwards a connection"
    );

    drop(held);
    env.eventually(
        "the old serve exits once its last connection closed",
        WAIT,
        || async { !support::pid_alive(old_pid) },
    )
    .await;
    assert!(support::pid_alive(new_pid), "{}", env.serve_log());
    assert_eq!(Resp::connect(listen).await.release().await, "2.0.0");
}

#[tokio::test]
async fn a_killed_release_keeps_its_open_connections_up_to_the_drain_limit() {
    if !support::component::redis("a_killed_release_keeps_its_open_connections") {
        return;
    }
    let env = Env::start().await;
    let (listen, pinned) = two_releases(&env).await;
    env.cli(&["listen", "cache", &listen.to_string(), "--drain", "3s"])
        .await
        .ok();
    let mut held = Resp::connect(pinned).await;
    assert_eq!(held.release().await, "2.0.0");

    let started = std::time::Instant::now();
    env.cli(&["kill", "cache", "2.0.0", "--yes"]).await.ok();
    assert_eq!(
        held.release().await,
        "2.0.0",
        "the connection outlives the kill"
    );
    // Then the drain limit runs out: its instance stops and the connection ends.
    let ended = tokio::time::timeout(WAIT, async {
        loop {
            let stream = held.reader.get_mut();
            if stream.write_all(b"*1\r\n$4\r\nPING\r\n").await.is_err() {
                return;
            }
            let mut line = String::new();
            match held.reader.read_line(&mut line).await {
                Ok(0) | Err(_) => return,
                Ok(_) => tokio::time::sleep(Duration::from_millis(100)).await,
            }
        }
    })
    .await;
    assert!(ended.is_ok(), "the connection ended after the drain limit");
    assert!(
        started.elapsed() >= Duration::from_secs(2),
        "not before the limit: {:?}",
        started.elapsed()
    );
    assert_eq!(Resp::connect(listen).await.release().await, "1.0.0");
}

/// A server that reads until its client stops sending, then answers how
/// many bytes it got: it needs the client's half-close to come through.
async fn counter_until_eof() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let local = listener.local_addr().expect("address");
    tokio::spawn(async move {
        loop {
            let Ok((mut stream, _)) = listener.accept().await else {
                return;
            };
            tokio::spawn(async move {
                let mut all = Vec::new();
                if stream.read_to_end(&mut all).await.is_ok() && !all.is_empty() {
                    let _ = stream
                        .write_all(format!("got {}\n", all.len()).as_bytes())
                        .await;
                }
            });
        }
    });
    local
}

/// A TCP service `counter` (an upstream that answers how many bytes it
/// read once the client half-closes) listening on an address of its own.
async fn counter_listening(env: &Env) -> SocketAddr {
    let server = counter_until_eof().await;
    env.cli(&[
        "deploy",
        "counter",
        "1.0.0",
        "--protocol",
        "tcp",
        "--upstream",
        &server.to_string(),
    ])
    .await
    .ok();
    let listen = addr(free_port());
    env.cli(&["listen", "counter", &listen.to_string()])
        .await
        .ok();
    listen
}

#[tokio::test]
async fn a_half_closed_connection_still_gets_its_answer() {
    let env = Env::start().await;
    let listen = counter_listening(&env).await;
    let mut stream = TcpStream::connect(listen).await.expect("connect");
    stream.write_all(&[b'x'; 100_000]).await.expect("send");
    stream.shutdown().await.expect("half-close");
    let mut answer = String::new();
    tokio::time::timeout(WAIT, stream.read_to_string(&mut answer))
        .await
        .expect("an answer in time")
        .expect("read");
    assert_eq!(answer, "got 100000\n");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_two_workers_every_connection_to_a_tcp_address_is_forwarded() {
    // Both workers accept on the address: whichever takes a connection
    // forwards it whole.
    let env = Env::start_with(&["--workers", "2"]).await;
    let listen = counter_listening(&env).await;
    let clients = (1..=40usize).map(|n| {
        tokio::spawn(async move {
            let mut stream = TcpStream::connect(listen).await.expect("connect");
            stream.write_all(&vec![b'x'; n * 1000]).await.expect("send");
            stream.shutdown().await.expect("half-close");
            let mut answer = String::new();
            tokio::time::timeout(WAIT, stream.read_to_string(&mut answer))
                .await
                .expect("an answer in time")
                .expect("read");
            assert_eq!(answer, format!("got {}\n", n * 1000), "client {n}");
        })
    });
    for client in clients.collect::<Vec<_>>() {
        client.await.expect("the client ran");
    }
    let releases = status(&env, "counter").await;
    assert_eq!(releases[0]["tcp"]["total"], 40, "{releases}");
}

#[tokio::test]
async fn a_connection_quiet_longer_than_the_idle_timeout_is_closed_and_a_busy_one_is_not() {
    if !support::component::redis("a_connection_quiet_longer_than_the_idle_timeout") {
        return;
    }
    let env = Env::start_with(&["--tcp-idle-timeout", "2s"]).await;
    deploy_redis(&env, "cache", "1.0.0", &[]).await.ok();
    let listen = addr(free_port());
    env.cli(&["listen", "cache", &listen.to_string()])
        .await
        .ok();
    let mut quiet = Resp::connect(listen).await;
    let mut busy = Resp::connect(listen).await;
    // Measured from before the quiet one's last exchange: serve's idle
    // clock starts when it relays the answer, a moment before the client
    // has read it.
    let opened = std::time::Instant::now();
    assert_eq!(quiet.call(&["PING"]).await.as_deref(), Some("+PONG"));

    // The busy one talks every half second, for longer than the limit;
    // the quiet one says nothing and is closed by serve (it reads EOF).
    let closed = tokio::spawn(async move {
        let mut line = String::new();
        let n = quiet.reader.read_line(&mut line).await.unwrap_or(0);
        (n, opened.elapsed())
    });
    for _ in 0..8 {
        assert_eq!(busy.call(&["PING"]).await.as_deref(), Some("+PONG"));
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let (read, after) = tokio::time::timeout(WAIT, closed)
        .await
        .expect("the quiet connection closes")
        .expect("the reader ends");
    assert_eq!(read, 0, "serve closed the quiet connection");
    assert!(
        after >= Duration::from_secs(2),
        "not before the limit: {after:?}"
    );
    assert_eq!(
        busy.call(&["PING"]).await.as_deref(),
        Some("+PONG"),
        "the busy connection outlived the limit"
    );

    // Bytes are counted while a connection is open, not only when it
    // closes: the busy one's PINGs (14 bytes each) are in already.
    let stats = status(&env, "cache").await;
    let tcp = &stats[0]["tcp"];
    assert_eq!(tcp["open"], 1, "{stats:#}");
    assert!(tcp["bytes_in"].as_u64() >= Some(9 * 14 + 14), "{stats:#}");
}
