"""bench/abuse: attacks on serve; each must be ended by serve while normal clients are served.

Runs against a release-built `switchyard serve` with its default settings,
started with a file limit of 1,024 (`prlimit --nofile=1024:1024`, a common
default), serving `hello` (a `hello-server` release) and `hang` (an
upstream of this script's own that stops in the middle of its answers, or
never answers). The attacks, one after another, each bounded in time and
in count:

- smuggling probes, one connection each: Content-Length beside chunked, two
  different Content-Lengths, an invalid chunk size, an obsolete folded
  header line, two Host headers
- a cross-site request to the admin API (what a page on another site, or a
  DNS-rebinding page, can make a browser send): a form POST that aborts a
  running rollout, with `Host` and `Origin` of attacker.example
- slow request bodies: uploads announced at 1 MB that send a byte every 2 s
- a hanging upstream: answers that stop after 10 bytes of their body, and
  requests that get no answer at all
- slowloris: connections that send a header byte every 5 s
- idle connections, more than serve's file limit

Meanwhile a normal client asks the proxy for `/services/hello/` (a new
connection each time, no retries; an error, a status other than 200 or a
truncated body is a failure) and an operator asks the admin API for
`/metrics`; their failures are counted per attack.

Prints a table and writes it into BENCHMARKS.md. Everything it starts, it
stops by PID. Only loopback: every attack comes from one client,
127.0.0.2, while the normal client and the operator use 127.0.0.1, as an
attacker and the users are different addresses in the field (the proxy caps
connections per client address).
"""

import argparse
import collections
import errno
import http.client
import json
import os
import re
import resource
import selectors
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time

import benchlib as b

HELLO = os.environ.get("HELLO_BIN", os.path.join(b.ROOT, "target", "release", "hello-server"))
FILE_LIMIT = 1024

# An upstream that answers `/stall` with 10 of 1,000 announced bytes and
# then nothing, `/hang` with nothing at all, anything else with 200 `ok`;
# it holds a stalled connection until the other side lets go.
HANG_SERVER = r'''
import socketserver, sys

class Handler(socketserver.BaseRequestHandler):
    def handle(self):
        sock = self.request
        sock.settimeout(300)
        data = b""
        try:
            while True:
                while b"\r\n\r\n" not in data:
                    chunk = sock.recv(4096)
                    if not chunk:
                        return
                    data += chunk
                head, data = data.split(b"\r\n\r\n", 1)
                path = head.split(b" ")[1]
                if path.endswith(b"/stall"):
                    sock.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n" + b"x" * 10)
                elif not path.endswith(b"/hang"):
                    sock.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nok\n")
                    continue
                while sock.recv(4096):
                    pass
                return
        except OSError:
            return

class Server(socketserver.ThreadingTCPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 1024

with Server(("127.0.0.1", int(sys.argv[1])), Handler) as server:
    server.serve_forever()
'''

# The one client every attack comes from; normal clients use 127.0.0.1.
ATTACKER = "127.0.0.2"


# ----------------------------------------------------------- the watchers

class Watch:
    """A normal client of the proxy and an operator of the admin API,
    asking throughout; each answer is kept with its time."""

    def __init__(self, proxy_port, admin_port):
        self.proxy_port, self.admin_port = proxy_port, admin_port
        self.answers = {"client": [], "admin": []}  # (time, ok, detail)
        self.stop = threading.Event()
        self.threads = [
            threading.Thread(target=self._ask, args=("client", proxy_port,
                                                      "/services/hello/", 0.05)),
            threading.Thread(target=self._ask, args=("admin", admin_port, "/metrics", 0.5)),
        ]

    def start(self):
        for t in self.threads:
            t.start()

    def finish(self):
        self.stop.set()
        for t in self.threads:
            t.join()

    def _ask(self, who, port, path, pause):
        while not self.stop.is_set():
            t = time.time()
            ok, detail = plain_get(port, path)
            self.answers[who].append((t, ok, detail))
            self.stop.wait(pause)

    def between(self, who, t0, t1):
        """(answered, failed, failure details) of the requests started in [t0, t1]."""
        got = [(ok, d) for t, ok, d in self.answers[who] if t0 <= t <= t1]
        failed = [d for ok, d in got if not ok]
        return len(got) - len(failed), len(failed), collections.Counter(failed)


def plain_get(port, path, timeout=5):
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request("GET", path)
        response = conn.getresponse()
        response.read()
        return response.status == 200, str(response.status)
    except Exception as e:  # every way of failing counts
        return False, type(e).__name__
    finally:
        conn.close()


def metric(admin_port, series):
    """One series' value from serve's /metrics (0 when absent)."""
    conn = http.client.HTTPConnection("127.0.0.1", admin_port, timeout=5)
    try:
        conn.request("GET", "/metrics")
        text = conn.getresponse().read().decode()
    except OSError:
        return None
    finally:
        conn.close()
    for line in text.splitlines():
        if line.startswith(series + " "):
            return float(line.split()[-1])
    return 0.0


# -------------------------------------------------------------- the attacks

class Held:
    """One connection an attack holds open."""

    def __init__(self, sock, first):
        self.sock, self.pending = sock, first
        self.opened = time.time()
        self.connected = False
        self.closed_after = None
        self.answered_after = None
        self.status = None
        self.received = 0


def hold(port, count, first=b"", drip=b"", every=5.0, bound=45.0, answer_ends=False):
    """Opens `count` connections (without waiting for each), sends `first`
    on each, then `drip` every `every` seconds, until serve has closed them
    all (or, with `answer_ends`, answered them) or `bound` seconds passed;
    closes what is left. Returns the connections and how long it ran."""
    sel = selectors.DefaultSelector()
    held = []
    t0 = time.time()
    for _ in range(count):
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        s.bind((ATTACKER, 0))
        s.setblocking(False)
        err = s.connect_ex(("127.0.0.1", port))
        if err not in (0, errno.EINPROGRESS):
            s.close()
            continue
        c = Held(s, first)
        held.append(c)
        sel.register(s, selectors.EVENT_WRITE, c)

    def closed(c):
        c.closed_after = time.time() - c.opened
        sel.unregister(c.sock)
        c.sock.close()

    next_drip = time.time() + every
    def open_(c):
        return c.closed_after is None and not (answer_ends and c.status is not None)

    while time.time() - t0 < bound and any(open_(c) for c in held):
        for key, events in sel.select(timeout=0.25):
            c = key.data
            if not c.connected:
                if c.sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR):
                    closed(c)
                    continue
                c.connected = True
                try:
                    if c.pending:
                        c.sock.send(c.pending)
                except OSError:
                    closed(c)
                    continue
                sel.modify(c.sock, selectors.EVENT_READ, c)
                continue
            try:
                data = c.sock.recv(65536)
            except OSError:
                data = b""
            if not data:
                closed(c)
                continue
            if c.status is None and data.startswith(b"HTTP/"):
                c.status = int(data.split()[1])
                c.answered_after = time.time() - c.opened
            c.received += len(data)
        if drip and time.time() >= next_drip:
            next_drip += every
            for c in held:
                if c.connected and c.closed_after is None:
                    try:
                        c.sock.send(drip)
                    except OSError:
                        closed(c)
    for c in held:
        if c.closed_after is None:
            sel.unregister(c.sock)
            c.sock.close()
    sel.close()
    return held, time.time() - t0


def describe_hold(held, ran, answer_ends=False):
    """What serve did with the connections an attack held, and whether it
    ended them all: closed them or, with `answer_ends`, answered them (an
    error answer on a connection kept alive for the next request)."""
    def end(c):
        if answer_ends and c.answered_after is not None:
            return c.answered_after
        return c.closed_after

    ended = [c for c in held if end(c) is not None]
    text = f"{'ended' if answer_ends else 'closed'} {len(ended):,}/{len(held):,}"
    if ended:
        times = sorted(end(c) for c in ended)
        text += (f" in {times[0]:.0f}–{times[-1]:.0f} s "
                 f"(median {statistics.median(times):.0f} s)")
        statuses = collections.Counter(c.status for c in ended if c.status)
        if statuses:
            text += ", answered " + ", ".join(
                f"{status} ×{n:,}" for status, n in sorted(statuses.items()))
    if len(ended) < len(held):
        text += f"; {len(held) - len(ended):,} still open when the attack stopped at {ran:.0f} s"
    return text, bool(held) and len(ended) == len(held)


def probe(port, raw, bound=10.0):
    """Sends raw bytes on one connection and reads until serve closes it
    (or `bound` passes): the statuses of every answer, and whether closed."""
    s = socket.create_connection(("127.0.0.1", port), timeout=5,
                                 source_address=(ATTACKER, 0))
    s.settimeout(bound)
    data, closed = b"", False
    try:
        s.sendall(raw)
        deadline = time.time() + bound
        while time.time() < deadline:
            chunk = s.recv(65536)
            if not chunk:
                closed = True
                break
            data += chunk
    except socket.timeout:
        pass
    except OSError:
        closed = True
    finally:
        s.close()
    statuses = [int(m) for m in re.findall(rb"(?:^|\r\n)HTTP/1\.[01] (\d{3})", data)]
    return statuses, closed, data


# ------------------------------------------------------------------- run

def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--slowloris", type=int, default=500, help="connections")
    parser.add_argument("--idle", type=int, default=1100, help="connections")
    parser.add_argument("--slow-bodies", type=int, default=300, help="uploads")
    parser.add_argument("--stalls", type=int, default=50, help="requests to the hanging upstream")
    parser.add_argument("--bound", type=float, default=45.0,
                        help="seconds an attack may last (the hanging upstream gets 30 more: "
                             "its default timeouts are 60 s)")
    parser.add_argument("--output", default=os.path.join(b.ROOT, "BENCHMARKS.md"))
    args = parser.parse_args()

    # The attacks hold more sockets than a default limit allows.
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    if hard < args.idle + args.slowloris + 100:
        raise SystemExit(f"this process may open only {hard} files: lower --idle/--slowloris")

    machine = b.machine()
    procs = b.Procs()
    workdir = tempfile.mkdtemp(prefix="switchyard-abuse-")
    serve = watch = None
    rows = []
    started = time.time()
    try:
        serve = b.Serve(procs, os.path.join(workdir, "switchyard"),
                        prefix=("prlimit", f"--nofile={FILE_LIMIT}:{FILE_LIMIT}", "--"))
        serve.cli("deploy", "hello", "1.0.0", "--health", "/healthz",
                  "--", HELLO, "--port", "{port}", "--version", "1.0.0")
        serve.cli("deploy", "hello", "2.0.0", "--standby", "--health", "/healthz",
                  "--", HELLO, "--port", "{port}", "--version", "2.0.0")
        hang_port = b.free_port()
        procs.start("hanging upstream", [sys.executable, "-c", HANG_SERVER, str(hang_port)])
        b.wait_port(hang_port)
        serve.deploy_upstream("hang", "1.0.0", hang_port)
        port, admin = serve.port, serve.admin_port
        watch = Watch(port, admin)
        watch.start()
        time.sleep(1)

        def row(attack, did, run):
            b.log(f"attack: {attack}")
            t0 = time.time()
            serve_did, held_up = run()
            # At least a second of the normal client's requests per row.
            t1 = max(time.time(), t0 + 1.0)
            time.sleep(t1 - time.time() + 1.0)  # answers started before t1 finish
            rows.append({
                "attack": attack, "did": did, "serve": serve_did, "ended": held_up,
                "client": watch.between("client", t0, t1),
                "admin": watch.between("admin", t0, t1),
            })
            b.log(f"  serve: {serve_did}")

        # ------------------------------------------------ smuggling probes
        hello_5xx = ('switchyard_requests_total{service="hello",version="1.0.0",'
                     'class="5xx"}')

        def probes(raw, expect):
            def run():
                before = metric(admin, hello_5xx)
                statuses, closed, data = probe(port, raw)
                after = metric(admin, hello_5xx)
                text = (", ".join(map(str, statuses)) or "no answer") + \
                    ("; connection closed" if closed else "; connection kept open")
                if after != before:
                    text += f"; {after - before:.0f} counted as the release's 5xx"
                return text, expect(statuses, closed, data) and after == before
            return run

        smuggled = (b"POST /services/hello/echo HTTP/1.1\r\nHost: h\r\nContent-Length: 40\r\n"
                    b"Transfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n"
                    b"GET /services/hello/smuggled HTTP/1.1\r\nHost: h\r\n\r\n")
        row("smuggling: Content-Length beside chunked",
            "a chunked body with a second request behind it, and a Content-Length that "
            "would take that request as body",
            probes(smuggled, lambda s, closed, data: s == [200] and closed
                   and b'"body":"abc"' in data))
        row("smuggling: two Content-Lengths",
            "`Content-Length: 5` and `Content-Length: 6`",
            probes(b"POST /services/hello/echo HTTP/1.1\r\nHost: h\r\nContent-Length: 5\r\n"
                   b"Content-Length: 6\r\n\r\nhello!",
                   lambda s, closed, _: s == [400] and closed))
        row("smuggling: invalid chunk size",
            "a chunked upload whose chunk size is `zz`",
            probes(b"POST /services/hello/echo HTTP/1.1\r\nHost: h\r\n"
                   b"Transfer-Encoding: chunked\r\n\r\nzz\r\nhello\r\n0\r\n\r\n",
                   lambda s, closed, _: s == [400] and closed))
        row("smuggling: obsolete line folding",
            "a header continued on a line that starts with a space",
            probes(b"GET /services/hello/echo HTTP/1.1\r\nHost: h\r\nX-Folded: a\r\n b\r\n\r\n",
                   lambda s, closed, _: s == [400] and closed))
        row("smuggling: two Host headers",
            "`Host: a.example` and `Host: b.example`",
            probes(b"GET /services/hello/ HTTP/1.1\r\nHost: a.example\r\nHost: b.example\r\n"
                   b"Connection: close\r\n\r\n",
                   lambda s, closed, _: s == [400]))

        # ------------------------------------------------ cross-site admin
        serve.cli("rollout", "hello", "2.0.0", "--steps", "10,50", "--interval", "10m")

        def cross_site():
            form = b"x=1"
            raw = (b"POST /v1/services/hello/rollout/abort HTTP/1.1\r\n"
                   b"Host: attacker.example\r\nOrigin: http://attacker.example\r\n"
                   b"Content-Type: application/x-www-form-urlencoded\r\n"
                   b"Content-Length: " + str(len(form)).encode() + b"\r\n"
                   b"Connection: close\r\n\r\n" + form)
            statuses, _, _ = probe(admin, raw)
            view = json.loads(serve.cli("rollout", "status", "hello", "--json").stdout)
            state = view["state"]["status"]["state"]
            refused = bool(statuses) and statuses[0] >= 400 and state == "running"
            return (f"answered {statuses[0] if statuses else 'nothing'}; the rollout is "
                    f"{state}" + ("" if refused else " (**obeyed**)"), refused)

        row("cross-site admin request",
            "`POST /v1/services/hello/rollout/abort` as a form, `Host: attacker.example`, "
            "`Origin: http://attacker.example`, during a rollout", cross_site)

        # ------------------------------------------------ slow request bodies
        in_flight = ('switchyard_requests_in_flight{service="hello",version="1.0.0",'
                     'role="main"}')

        def slow_bodies():
            peak = [0.0]
            done = threading.Event()

            def sample():
                while not done.wait(1.0):
                    v = metric(admin, in_flight)
                    peak[0] = max(peak[0], v or 0)
            sampler = threading.Thread(target=sample)
            sampler.start()
            head = (b"POST /services/hello/echo HTTP/1.1\r\nHost: h\r\n"
                    b"Content-Length: 1000000\r\n\r\na")
            held, ran = hold(port, args.slow_bodies, head, b"a", every=2.0, bound=args.bound)
            done.set()
            sampler.join()
            text, ended = describe_hold(held, ran)
            after = metric(admin, in_flight)
            return (f"{text}; upstream requests in flight: at most {peak[0]:.0f}, "
                    f"{after:.0f} after"), ended

        row("slow request bodies",
            f"{args.slow_bodies} uploads announced at 1 MB, one byte every 2 s",
            slow_bodies)

        # ------------------------------------------------ hanging upstream
        results = {}

        def hang_kind(path, key):
            results[key] = hold(port, args.stalls,
                                f"GET /services/hang/{path} HTTP/1.1\r\nHost: h\r\n\r\n".encode(),
                                bound=args.bound + 30, answer_ends=path == "hang")

        def hanging():
            threads = [threading.Thread(target=hang_kind, args=("stall", "stall")),
                       threading.Thread(target=hang_kind, args=("hang", "hang"))]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
            stall_text, stall_ended = describe_hold(*results["stall"])
            hang_text, hang_ended = describe_hold(*results["hang"], answer_ends=True)
            return (f"stopped mid-body: {stall_text}; never answered: {hang_text}",
                    stall_ended and hang_ended)

        row("hanging upstream",
            f"{args.stalls} requests to an upstream that stops after 10 of 1,000 bytes, "
            f"{args.stalls} to one that never answers",
            hanging)

        # ------------------------------------------------ slowloris
        def slowloris():
            held, ran = hold(port, args.slowloris,
                             b"GET /services/hello/ HTTP/1.1\r\nHost: h\r\nX-Slow: ",
                             b"a", every=5.0, bound=args.bound)
            return describe_hold(held, ran)

        row("slowloris", f"{args.slowloris} connections sending a header byte every 5 s",
            slowloris)

        # ------------------------------------------------ idle connections
        def idle():
            held, ran = hold(port, args.idle, bound=args.bound)
            return describe_hold(held, ran)

        row("idle connections over the file limit",
            f"{args.idle:,} connections that send nothing (serve's file limit: {FILE_LIMIT:,})",
            idle)
    finally:
        if watch is not None:
            watch.finish()
        procs.stop_all()
        if serve is not None:
            for pid in b.leftovers(os.path.realpath(serve.state_dir)):
                os.kill(pid, 9)
        b.remove_workdir(workdir)

    def served(counts):
        ok, failed, why = counts
        text = f"{ok:,} ok, {failed:,} failed"
        if why:
            text += " (" + ", ".join(f"{k} ×{n}" for k, n in why.most_common(3)) + ")"
        return text

    lines = [
        f"Measured {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())} by `bench/abuse` in "
        f"{(time.time() - started) / 60:.1f} min on {machine['cpu']} (load average "
        f"{machine['load']} before), against {machine['switchyard']} (release build) with "
        f"its default settings and a file limit of {FILE_LIMIT:,} (`prlimit`). A normal "
        "client asked the proxy for `/services/hello/` throughout (a new connection each "
        "time, no retries, 5 s timeout) and an operator the admin API for `/metrics`; "
        "their answers are counted for the time of each attack.",
        "",
        "| attack | what it did | what serve did | normal client | admin API | held |",
        "|---|---|---|---|---|---|",
    ]
    for r in rows:
        held = r["ended"] and r["client"][1] == 0 and r["admin"][1] == 0
        r["held"] = held
        lines.append(f"| {r['attack']} | {r['did']} | {r['serve']} | {served(r['client'])} | "
                     f"{served(r['admin'])} | {'yes' if held else '**no**'} |")
    lines += [
        "",
        "Held: serve ended the attack itself (closed every connection it held, or "
        "refused the request, with nothing counted against the release) and neither the "
        "normal client nor the operator saw a failure meanwhile.",
    ]
    text = "\n".join(lines)
    print(text)
    b.replace_section(args.output, "bench/abuse", text)
    b.log(f"wrote {args.output}")
    if not all(r["held"] for r in rows):
        raise SystemExit(1)


if __name__ == "__main__":
    main()
