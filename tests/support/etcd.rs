//! A real etcd cluster for the fleet's tests: members on loopback, each
//! with its own temp data dir, stopped by PID when the cluster drops.
//! etcd cannot listen on port 0, so each port is found free by binding
//! 127.0.0.1:0 and letting it go before etcd starts.

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

/// How long a cluster may take to elect its leader and answer.
const READY_WAIT: Duration = Duration::from_secs(30);

/// One member: its ports and, while it runs, its process.
struct Member {
    name: String,
    client: u16,
    peer: u16,
    data: PathBuf,
    log: PathBuf,
    process: Option<Child>,
}

/// An etcd cluster on loopback.
pub struct EtcdCluster {
    _dir: tempfile::TempDir,
    members: Vec<Member>,
    initial_cluster: String,
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free loopback port")
}

impl EtcdCluster {
    /// Starts `size` members and waits until the cluster answers; `None`
    /// when etcd is missing and the run lets tests go without it.
    pub fn start(test: &str, size: usize) -> Option<EtcdCluster> {
        if !super::component::command(test, "etcd") {
            return None;
        }
        let dir = tempfile::tempdir().expect("temp dir for etcd");
        let members: Vec<Member> = (0..size)
            .map(|i| {
                let name = format!("m{i}");
                Member {
                    data: dir.path().join(&name),
                    log: dir.path().join(format!("{name}.log")),
                    name,
                    client: free_port(),
                    peer: free_port(),
                    process: None,
                }
            })
            .collect();
        let initial_cluster = members
            .iter()
            .map(|m| format!("{}=http://127.0.0.1:{}", m.name, m.peer))
            .collect::<Vec<_>>()
            .join(",");
        let mut cluster = EtcdCluster {
            _dir: dir,
            members,
            initial_cluster,
        };
        for i in 0..size {
            cluster.start_member(i, "new");
        }
        cluster.wait_healthy(None);
        Some(cluster)
    }

    fn start_member(&mut self, i: usize, state: &str) {
        let initial_cluster = self.initial_cluster.clone();
        let member = &mut self.members[i];
        let log = std::fs::File::create(&member.log).expect("etcd log file");
        let client = format!("http://127.0.0.1:{}", member.client);
        let peer = format!("http://127.0.0.1:{}", member.peer);
        let child = Command::new("etcd")
            .args(["--name", &member.name])
            .arg("--data-dir")
            .arg(&member.data)
            .args(["--listen-client-urls", &client])
            .args(["--advertise-client-urls", &client])
            .args(["--listen-peer-urls", &peer])
            .args(["--initial-advertise-peer-urls", &peer])
            .args(["--initial-cluster", &initial_cluster])
            .args(["--initial-cluster-state", state])
            .args(["--initial-cluster-token", "switchyard-test"])
            .args(["--heartbeat-interval", "50", "--election-timeout", "500"])
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("etcd log file"))
            .stderr(log)
            .spawn()
            .expect("start etcd");
        member.process = Some(child);
    }

    /// `etcd://…` naming every member, with `prefix`.
    pub fn url(&self, prefix: &str) -> String {
        let members: Vec<String> = self
            .members
            .iter()
            .map(|m| format!("127.0.0.1:{}", m.client))
            .collect();
        format!("etcd://{}{prefix}", members.join(","))
    }

    /// Runs `etcdctl` against every member with `args`; panics unless it
    /// succeeds, returns what it printed.
    pub fn etcdctl(&self, args: &[&str]) -> String {
        let endpoints: Vec<String> = self
            .members
            .iter()
            .map(|m| format!("http://127.0.0.1:{}", m.client))
            .collect();
        let out = Command::new("etcdctl")
            .arg(format!("--endpoints={}", endpoints.join(",")))
            .args(args)
            .output()
            .expect("run etcdctl");
        assert!(
            out.status.success(),
            "etcdctl {args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Stops member `i` (SIGTERM, then waits for it).
    pub fn stop_member(&mut self, i: usize) {
        if let Some(mut child) = self.members[i].process.take() {
            let _ = kill(Pid::from_raw(child.id() as i32), Signal::SIGTERM);
            let _ = child.wait();
        }
    }

    /// Starts member `i` again on its data dir and waits until it answers.
    pub fn restart_member(&mut self, i: usize) {
        self.start_member(i, "existing");
        self.wait_healthy(Some(i));
    }

    /// Waits until the running members (or member `only`) say they are
    /// healthy (a leader elected, a quorum).
    fn wait_healthy(&self, only: Option<usize>) {
        let deadline = Instant::now() + READY_WAIT;
        for (i, member) in self.members.iter().enumerate() {
            if member.process.is_none() || only.is_some_and(|o| o != i) {
                continue;
            }
            loop {
                if health(member.client) {
                    break;
                }
                if Instant::now() > deadline {
                    panic!(
                        "etcd member {} did not become healthy within {READY_WAIT:?}; its log:\n{}",
                        member.name,
                        std::fs::read_to_string(&member.log).unwrap_or_default()
                    );
                }
                std::thread::sleep(Duration::from_millis(50));
            }
        }
    }
}

/// Whether the member at `port` answers `/health` with a quorum.
fn health(port: u16) -> bool {
    use std::io::{Read, Write};
    let Ok(mut stream) = std::net::TcpStream::connect(("127.0.0.1", port)) else {
        return false;
    };
    let _ = stream.set_read_timeout(Some(Duration::from_secs(2)));
    let request = format!("GET /health HTTP/1.0\r\nHost: 127.0.0.1:{port}\r\n\r\n");
    if stream.write_all(request.as_bytes()).is_err() {
        return false;
    }
    let mut answer = String::new();
    let _ = stream.read_to_string(&mut answer);
    answer.contains("\"health\":\"true\"")
}

impl Drop for EtcdCluster {
    fn drop(&mut self) {
        for member in &mut self.members {
            if let Some(mut child) = member.process.take() {
                let _ = kill(Pid::from_raw(child.id() as i32), Signal::SIGKILL);
                let _ = child.wait();
            }
        }
    }
}
