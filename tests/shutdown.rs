//! Graceful shutdown: SIGTERM to serve under load. Requests in flight
//! finish, new connections are refused, every instance is stopped before
//! serve exits, and nothing it started is left behind.

mod support;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use support::load::{gets, spawn_get};
use support::{Env, pid_alive, serve_pids};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

/// The bound on every wait: generous, so a slow machine only slows tests.
const WAIT: Duration = Duration::from_secs(30);

/// An upstream this test runs: `/healthz` answers at once, every other
/// request is held until the gate opens. Stops when dropped.
struct GatedUpstream {
    addr: SocketAddr,
    open: watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
}

impl GatedUpstream {
    async fn start() -> GatedUpstream {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("local addr");
        let (open, opened) = watch::channel(false);
        let task = tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let opened = opened.clone();
                tokio::spawn(async move {
                    let service = service_fn(move |req: Request<Incoming>| {
                        let mut opened = opened.clone();
                        async move {
                            if req.uri().path() != "/healthz" {
                                let _ = opened.wait_for(|open| *open).await;
                            }
                            Ok::<_, Infallible>(Response::new(Full::new(Bytes::from_static(
                                b"let through\n",
                            ))))
                        }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        GatedUpstream { addr, open, task }
    }

    fn open(&self) {
        self.open.send_replace(true);
    }
}

impl Drop for GatedUpstream {
    fn drop(&mut self) {
        self.task.abort();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_under_load_finishes_requests_in_flight_refuses_new_connections_and_stops_every_instance()
 {
    let mut env = Env::start().await;
    env.deploy("hello", "1.0.0", &["--replicas", "2"], &[])
        .await
        .ok();
    let gate = GatedUpstream::start().await;
    env.deploy_external("held", "1.0.0", &[gate.addr], &[])
        .await
        .ok();
    let instances = env.instance_pids();
    assert_eq!(instances.len(), 2, "hello's two instances");
    let serve_pid = env.serve_pid();
    let proxy = env.serve().proxy_addr.clone();

    // Clients keep hello busy, and three requests wait at the gate: they
    // are in flight (forwarded, unanswered) when serve gets SIGTERM.
    let load = gets(
        &proxy,
        "/services/hello/",
        4,
        Instant::now() + Duration::from_secs(120),
    );
    load.run_for(200, WAIT).await;
    let held: Vec<_> = (0..3)
        .map(|_| spawn_get(&proxy, "/services/held/"))
        .collect();
    env.wait_in_flight("held", "1.0.0", 3).await;
    env.sigterm();

    // New connections are refused while the held requests still run.
    env.eventually("the proxy refuses new connections", WAIT, || async {
        matches!(
            TcpStream::connect(&proxy).await,
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused
        )
    })
    .await;
    assert!(
        pid_alive(serve_pid),
        "serve exited with requests in flight:\n{}",
        env.serve_log()
    );
    assert!(
        held.iter().all(|h| !h.is_finished()),
        "a held request ended before its answer was let through"
    );
    let answers = load.finish_within(WAIT).await;

    // The held requests get their answers, then serve exits by itself.
    gate.open();
    for request in held {
        let (status, version, body) = request
            .await
            .expect("held request task")
            .unwrap_or_else(|e| panic!("a request in flight when serve got SIGTERM failed: {e}"));
        assert_eq!(
            (status, version.as_str(), body.as_str()),
            (200, "1.0.0", "let through\n")
        );
    }
    let status = env.wait_stopped().await;
    assert!(status.success(), "serve exited with {status}");

    // Once serve is gone, none of its instances runs (wait_stopped checked
    // every process of the state dir; these are the ones seen before).
    assert!(
        instances.iter().all(|pid| !pid_alive(*pid)),
        "instances outlived serve: {instances:?}"
    );
    assert_eq!(serve_pids(&env.state_dir), Vec::<u32>::new());

    // The load: everything answered was answered whole and 200; requests
    // that failed did so only by finding the proxy gone (refused, or the
    // connection closed before an answer), after SIGTERM.
    let mut answered = 0;
    for answer in &answers {
        match answer {
            Ok((200, _, _)) => answered += 1,
            Ok((status, version, body)) => {
                panic!(
                    "an answer other than 200 while shutting down: {status} from `{version}`: {body}"
                )
            }
            Err(e) => assert!(
                e.contains("connect to") || e.contains("request failed"),
                "a request failed otherwise than by finding the proxy gone: {e}"
            ),
        }
    }
    assert!(answered >= 200, "the load got {answered} answers");
}
