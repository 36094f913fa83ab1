"""bench/fleet: how fast a change reaches every node of a fleet, and what
clients see while it does.

Starts 3 etcd members and 3 `switchyard serve --store etcd://…` nodes on
loopback, deploys `web` 1.0.0 (main) and 2.0.0 (standby) through node 1,
then switches main between them `--switches` times (default 100) through
node 1's admin API (`POST /v1/services/web/assign`). For each switch it
measures the propagation time: from the moment the request is sent to
the moment every node's proxy answers from the new main (one poller per
node, asking its proxy back to back). Meanwhile a bounded load
(`--rate` requests a second per node, on `--clients` connections per
node) goes through all 3 nodes with clients that never retry: a refused
connection, a reset, a cut-short answer or a status other than 200 is a
failed request.

Prints the report and writes it into BENCHMARKS.md. Everything it starts,
it stops by PID.
"""

import argparse
import http.client
import json
import math
import os
import signal
import tempfile
import threading
import time

import benchlib as b

HELLO = os.environ.get("HELLO_BIN", os.path.join(b.ROOT, "target", "release", "hello-server"))
ETCD = os.environ.get("ETCD_BIN", "etcd")
TARGET_P99_MS = 1000


def start_etcd(procs, workdir, size=3):
    """`size` etcd members on loopback; returns their client addresses."""
    members = [(f"m{i}", b.free_port(), b.free_port()) for i in range(size)]
    cluster = ",".join(f"{name}=http://127.0.0.1:{peer}" for name, _, peer in members)
    for name, client, peer in members:
        log = open(os.path.join(workdir, f"etcd-{name}.log"), "ab")
        procs.start(f"etcd {name}", [
            ETCD, "--name", name, "--data-dir", os.path.join(workdir, f"etcd-{name}"),
            "--listen-client-urls", f"http://127.0.0.1:{client}",
            "--advertise-client-urls", f"http://127.0.0.1:{client}",
            "--listen-peer-urls", f"http://127.0.0.1:{peer}",
            "--initial-advertise-peer-urls", f"http://127.0.0.1:{peer}",
            "--initial-cluster", cluster, "--initial-cluster-state", "new",
            "--initial-cluster-token", "switchyard-bench",
            "--heartbeat-interval", "50", "--election-timeout", "500",
        ], stdout=log, stderr=log)
    addrs = [f"127.0.0.1:{client}" for _, client, _ in members]
    deadline = time.time() + 30
    for addr in addrs:
        while not etcd_healthy(addr):
            if time.time() > deadline:
                raise RuntimeError(f"etcd member at {addr} not healthy after 30 s")
            time.sleep(0.1)
    return addrs


def etcd_healthy(addr):
    host, port = addr.split(":")
    try:
        conn = http.client.HTTPConnection(host, int(port), timeout=2)
        conn.request("GET", "/health")
        body = conn.getresponse().read()
        conn.close()
        return b'"health":"true"' in body
    except OSError:
        return False


def get(conn, path):
    """(status, x-switchyard-version) of GET `path` on `conn`."""
    conn.request("GET", path)
    answer = conn.getresponse()
    answer.read()
    return answer.status, answer.getheader("x-switchyard-version", "")


def served(port, path="/services/web/"):
    try:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
        status, version = get(conn, path)
        conn.close()
        return version if status == 200 else None
    except OSError:
        return None


def wait_for(what, check, timeout=60):
    deadline = time.time() + timeout
    while not check():
        if time.time() > deadline:
            raise RuntimeError(f"timed out waiting for: {what}")
        time.sleep(0.05)


class Load:
    """`clients` connections to one node's proxy, each sending GETs at
    `rate / clients` a second, never sending a request twice: a failure
    is counted, and the next request opens a new connection."""

    def __init__(self, port, clients, rate):
        self.port, self.interval = port, clients / rate
        self.ok = self.failed = 0
        self.failures = []
        self.lock = threading.Lock()
        self.stop = threading.Event()
        self.threads = [threading.Thread(target=self.client, daemon=True)
                        for _ in range(clients)]
        for t in self.threads:
            t.start()

    def client(self):
        conn = None
        next_at = time.time()
        while not self.stop.is_set():
            next_at += self.interval
            try:
                if conn is None:
                    conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
                status, version = get(conn, "/services/web/")
                good, why = status == 200, f"{status} from {version!r}"
            except (OSError, http.client.HTTPException) as e:
                good, why = False, f"{type(e).__name__}: {e}"
                conn.close()
                conn = None
            with self.lock:
                if good:
                    self.ok += 1
                else:
                    self.failed += 1
                    if len(self.failures) < 5:
                        self.failures.append(why)
            time.sleep(max(0.0, next_at - time.time()))
        if conn is not None:
            conn.close()

    def finish(self):
        self.stop.set()
        for t in self.threads:
            t.join()
        return self.ok, self.failed, self.failures


class Poller:
    """Asks one node's proxy which version answers, back to back, and
    notes when it first answers from `expect` after `since`."""

    def __init__(self, port):
        self.port = port
        self.expect, self.since, self.seen_at = None, 0.0, None
        self.cond = threading.Condition()
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self.run, daemon=True)
        self.thread.start()

    def watch(self, expect, since):
        with self.cond:
            self.expect, self.since, self.seen_at = expect, since, None
            self.cond.notify_all()

    def wait(self, timeout=30):
        with self.cond:
            self.cond.wait_for(lambda: self.seen_at is not None, timeout)
            return self.seen_at

    def run(self):
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=5)
        while not self.stop.is_set():
            with self.cond:
                self.cond.wait_for(lambda: self.stop.is_set() or
                                   (self.expect and self.seen_at is None), 1)
                expect = self.expect if self.seen_at is None else None
            if not expect:
                continue
            try:
                status, version = get(conn, "/services/web/")
            except (OSError, http.client.HTTPException):
                conn.close()
                conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=5)
                continue
            now = time.time()
            if status == 200 and version == expect:
                with self.cond:
                    if self.expect == expect and self.seen_at is None:
                        self.seen_at = now
                        self.cond.notify_all()
        conn.close()

    def close(self):
        self.stop.set()
        with self.cond:
            self.cond.notify_all()
        self.thread.join()


def assign(admin_port, version, base):
    """POST /v1/services/web/assign on a node's admin API; the new revision."""
    conn = http.client.HTTPConnection("127.0.0.1", admin_port, timeout=30)
    body = json.dumps({"version": version, "base_revision": base})
    conn.request("POST", "/v1/services/web/assign", body,
                 {"content-type": "application/json"})
    answer = conn.getresponse()
    text = answer.read()
    conn.close()
    if answer.status != 200:
        raise RuntimeError(f"assign {version} answered {answer.status}: {text!r}")
    return json.loads(text)["revision"]["number"]


def percentile(values, p):
    """The nearest-rank percentile."""
    ordered = sorted(values)
    return ordered[max(0, math.ceil(p / 100 * len(ordered)) - 1)]


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--switches", type=int, default=100)
    parser.add_argument("--clients", type=int, default=2, help="connections per node")
    parser.add_argument("--rate", type=int, default=100, help="requests a second per node")
    parser.add_argument("--every", type=float, default=0.2,
                        help="seconds from one switch's start to the next's, at least")
    parser.add_argument("--lease-ttl", default="2s")
    parser.add_argument("--output", default=os.path.join(b.ROOT, "BENCHMARKS.md"))
    args = parser.parse_args()

    machine = b.machine()
    procs = b.Procs()
    workdir = tempfile.mkdtemp(prefix="switchyard-fleet-")
    nodes = []
    times_ms, answered_ms, loads, pollers = [], [], [], []
    totals = (0, 0, [])
    started = time.time()
    try:
        addrs = start_etcd(procs, workdir)
        url = "etcd://" + ",".join(addrs) + "/bench"
        for i in range(3):
            nodes.append(b.Serve(procs, os.path.join(workdir, f"node{i + 1}"),
                                 extra=["--store", url, "--node", f"node{i + 1}",
                                        "--lease-ttl", args.lease_ttl]))
        one = nodes[0]
        wait_for("3 nodes listed", lambda: len(json.loads(
            one.cli("nodes", "--json").stdout)) == 3)
        for version, extra in (("1.0.0", []), ("2.0.0", ["--standby"])):
            one.cli("deploy", "web", version, "--health", "/healthz",
                    "--health-interval", "500ms", *extra,
                    "--", HELLO, "--port", "{port}", "--version", version)
        for node in nodes:
            for version in ("1.0.0", "2.0.0"):
                wait_for(f"node on {node.port} serves web {version}",
                         lambda: served(node.port, f"/services/web_{version}/") == version)
            wait_for(f"node on {node.port} routes to 1.0.0",
                     lambda: served(node.port) == "1.0.0")
        services = json.loads(one.cli("ls", "web", "--json").stdout)
        service = services[0] if isinstance(services, list) else services
        revision = service["revision"]

        loads = [Load(node.port, args.clients, args.rate) for node in nodes]
        pollers = [Poller(node.port) for node in nodes]
        current, t0 = "1.0.0", 0.0
        for n in range(args.switches):
            target = "2.0.0" if current == "1.0.0" else "1.0.0"
            if n:
                time.sleep(max(0.0, t0 + args.every - time.time()))
            t0 = time.time()
            for poller in pollers:
                poller.watch(target, t0)
            revision = assign(one.admin_port, target, revision)
            answered_ms.append((time.time() - t0) * 1000)
            seen = [poller.wait() for poller in pollers]
            if any(s is None for s in seen):
                raise RuntimeError(f"switch {n + 1} to {target}: a node did not route it "
                                   "within 30 s")
            times_ms.append((max(seen) - t0) * 1000)
            current = target
        totals = [0, 0, []]
        for load in loads:
            ok, failed, failures = load.finish()
            totals[0] += ok
            totals[1] += failed
            totals[2] += failures
        loads = []
    finally:
        for load in loads:
            load.finish()
        for poller in pollers:
            poller.close()
        procs.stop_all()
        for node in nodes:
            for pid in b.leftovers(os.path.realpath(node.state_dir)):
                os.kill(pid, signal.SIGKILL)
        b.remove_workdir(workdir)

    ok, failed, failures = totals
    p50, p99 = percentile(times_ms, 50), percentile(times_ms, 99)
    holds = p99 <= TARGET_P99_MS and failed == 0
    etcd_version = b._first_line([ETCD, "--version"])
    text = "\n".join([
        f"Measured {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())} by `bench/fleet` on "
        f"{machine['cpu']} (load average {machine['load']} before; {etcd_version}; "
        f"`{os.path.relpath(b.SWITCHYARD, b.ROOT)}`"
        + (", a debug build" if "/debug/" in b.SWITCHYARD else "") + "): 3 etcd members and 3 nodes "
        f"(`serve --store etcd://… --lease-ttl {args.lease_ttl}`) on loopback, `web` with "
        "1.0.0 and 2.0.0 (one `hello-server` each, on every node). "
        f"{len(times_ms)} switches of main through node 1's admin API "
        f"(`POST /v1/services/web/assign`), one after the other, at most one every {args.every:g} s; "
        "propagation is the time "
        "from sending the request to every node's proxy answering from the new main "
        "(one poller per node asking back to back).",
        "",
        "| switches | propagation p50 ms | p99 ms | max ms | assign answered p50 ms | p99 ms "
        "| requests during the switches | failed |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|",
        f"| {len(times_ms)} | {p50:.0f} | {p99:.0f} | {max(times_ms):.0f} | "
        f"{percentile(answered_ms, 50):.0f} | {percentile(answered_ms, 99):.0f} | "
        f"{ok + failed:,} | {failed} |",
        "",
        f"The load: {args.clients} connections per node, {args.rate} requests a second per "
        "node, through all 3 nodes, from clients that never retry (a refused connection, a "
        "reset, a cut-short answer or a status other than 200 counts as failed)"
        + (f"; first failures: {failures}" if failures else "") + ".",
        "",
        f"Target (issue: a change made through any node is routed by every node within "
        f"1 s, p99; no failed request): "
        + ("**holds**." if holds else "**does not hold**."),
        f"The run took {time.time() - started:.0f} s.",
    ])
    print(text)
    b.replace_section(args.output, "bench/fleet", text)
    b.log(f"wrote {args.output}")
    if not holds:
        raise SystemExit(1)


if __name__ == "__main__":
    main()
