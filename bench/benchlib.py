"""What the benchmarks share: the processes they start (and stop, by PID),
the backend and the proxies' configurations, wrk runs and their parsing,
CPU time and memory read from /proc, and the machine's description.

Every server binds 127.0.0.1. Nothing here stops a process it did not
start.
"""

import os
import platform
import re
import shutil
import signal
import socket
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SWITCHYARD = os.environ.get(
    "SWITCHYARD_BIN", os.path.join(ROOT, "target", "release", "switchyard")
)
CLK_TCK = os.sysconf("SC_CLK_TCK")

# The backend's two answers: ~100 bytes, and 16 KiB.
SMALL_BODY = ("switchyard bench: a small answer of about one hundred bytes, "
              "fixed so every proxy moves the same bytes.\n")
LARGE_SIZE = 16 * 1024


def log(*args):
    print(*args, file=sys.stderr, flush=True)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port, timeout=15.0):
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"nothing listens on 127.0.0.1:{port} after {timeout}s")


def alive(pid):
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


class Procs:
    """Every process a benchmark started, stopped by PID at the end
    (SIGTERM, then SIGKILL): also the ones it did not spawn itself but
    caused (a serve that took over from another), once registered."""

    def __init__(self):
        self.started = []  # (name, pid, Popen or None)

    def start(self, name, argv, **kw):
        kw.setdefault("stdin", subprocess.DEVNULL)
        proc = subprocess.Popen(argv, **kw)
        self.started.append((name, proc.pid, proc))
        return proc

    def register(self, name, pid):
        self.started.append((name, pid, None))

    def stop(self, pid, grace=15.0):
        for i, (name, p, proc) in enumerate(self.started):
            if p == pid:
                del self.started[i]
                _stop(name, p, proc, grace)
                return

    def stop_all(self):
        while self.started:
            name, pid, proc = self.started.pop()
            _stop(name, pid, proc, 15.0)


def _stop(name, pid, proc, grace):
    if proc is not None and proc.poll() is not None:
        return
    if proc is None and not alive(pid):
        return
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    deadline = time.time() + grace
    while time.time() < deadline:
        if proc is not None and proc.poll() is not None:
            return
        if proc is None and not alive(pid):
            return
        time.sleep(0.05)
    log(f"{name} (pid {pid}) ignored SIGTERM; killing it")
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    if proc is not None:
        proc.wait()


def leftovers(state_dir):
    """Processes still carrying this run's state directory in their
    environment (instances Switchyard started for it)."""
    marker = f"SWITCHYARD_STATE_DIR={state_dir}".encode()
    pids = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/environ", "rb") as f:
                if marker in f.read().split(b"\0") and alive(int(entry)):
                    pids.append(int(entry))
        except OSError:
            pass
    return pids


def descendants(pid):
    """`pid` and every process below it (nginx's workers, say)."""
    parents = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                ppid = int(f.read().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            continue
        parents.setdefault(ppid, []).append(int(entry))
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        todo.extend(parents.get(p, []))
    return out


def cpu_seconds(pids):
    """User plus system time of these processes (all their threads)."""
    ticks = 0
    for pid in pids:
        try:
            with open(f"/proc/{pid}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            ticks += int(fields[11]) + int(fields[12])
        except (OSError, ValueError, IndexError):
            pass
    return ticks / CLK_TCK


def rss_kib(pids):
    """Resident size (VmRSS) summed over these processes, in KiB."""
    total = 0
    for pid in pids:
        try:
            with open(f"/proc/{pid}/status") as f:
                for line in f:
                    if line.startswith("VmRSS:"):
                        total += int(line.split()[1])
        except OSError:
            pass
    return total


# ------------------------------------------------------------------- wrk

_UNITS = {"us": 0.001, "ms": 1.0, "s": 1000.0}


def _ms(text):
    m = re.fullmatch(r"([\d.]+)(us|ms|s)", text)
    return float(m.group(1)) * _UNITS[m.group(2)] if m else float("nan")


def parse_wrk(out):
    result = {"rps": 0.0, "p50": float("nan"), "p99": float("nan"),
              "requests": 0, "socket_errors": 0, "non2xx": 0}
    for line in out.splitlines():
        line = line.strip()
        if line.startswith("Requests/sec:"):
            result["rps"] = float(line.split()[1])
        elif re.match(r"\d+ requests in", line):
            result["requests"] = int(line.split()[0])
        elif line.startswith("50%"):
            result["p50"] = _ms(line.split()[1])
        elif line.startswith("99%"):
            result["p99"] = _ms(line.split()[1])
        elif line.startswith("Socket errors:"):
            result["socket_errors"] = sum(int(n) for n in re.findall(r"\d+", line))
        elif line.startswith("Non-2xx or 3xx responses:"):
            result["non2xx"] = int(line.split()[-1])
    result["errors"] = result["socket_errors"] + result["non2xx"]
    return result


def wrk(url, connections, seconds, threads=1, script=None, timeout="5s", headers=()):
    argv = ["wrk", f"-t{threads}", f"-c{connections}", f"-d{seconds}s",
            "--latency", "--timeout", timeout]
    for header in headers:
        argv += ["-H", header]
    if script:
        argv += ["-s", script]
    argv.append(url)
    out = subprocess.run(argv, capture_output=True, text=True,
                         timeout=seconds + 30)
    if out.returncode != 0:
        raise RuntimeError(f"wrk failed: {out.stderr}")
    return parse_wrk(out.stdout)


# ------------------------------------------------------- backend, proxies

def _nginx_common(workdir):
    temp = "\n".join(f"  {kind}_temp_path {workdir}/{kind};" for kind in
                     ("client_body", "proxy", "fastcgi", "uwsgi", "scgi"))
    return temp


def start_backend(procs, workdir, workers=1):
    """nginx answering /small (~100 bytes), /large (16 KiB) and / (health)."""
    os.makedirs(workdir, exist_ok=True)
    # nginx's workers run as another user: they must reach the file.
    for d in (os.path.dirname(workdir), workdir):
        os.chmod(d, 0o755)
    large = os.path.join(workdir, "large.bin")
    with open(large, "wb") as f:
        f.write(b"0123456789abcdef" * (LARGE_SIZE // 16))
    os.chmod(large, 0o644)
    port = free_port()
    conf = os.path.join(workdir, "nginx.conf")
    with open(conf, "w") as f:
        f.write(f"""daemon off;
master_process on;
worker_processes {workers};
pid {workdir}/nginx.pid;
error_log stderr error;
events {{ worker_connections 16384; }}
http {{
{_nginx_common(workdir)}
  access_log off;
  keepalive_requests 10000000;
  keepalive_timeout 300s;
  sendfile on;
  open_file_cache max=16;
  server {{
    listen 127.0.0.1:{port} backlog=4096;
    default_type text/plain;
    location = /small {{ return 200 "{SMALL_BODY.rstrip()}"; }}
    location = /large {{ alias {large}; }}
    location / {{ return 200 "ok"; }}
  }}
}}
""")
    proc = procs.start("backend nginx", ["nginx", "-c", conf, "-p", workdir],
                       stdout=subprocess.DEVNULL)
    wait_port(port)
    return port, proc


def start_holding_backend(procs):
    """A backend that answers its health check (`GET /`) and never any
    other request (bench/holding_backend.py): a shadow that is always
    full."""
    port = free_port()
    script = os.path.join(ROOT, "bench", "holding_backend.py")
    proc = procs.start("holding backend", [sys.executable, script, str(port)],
                       stdout=subprocess.DEVNULL)
    wait_port(port)
    return port, proc


def make_certificate(workdir):
    """A self-signed EC P-256 certificate for 127.0.0.1 and bench.test
    (openssl), the one every proxy serves in the HTTPS rows: (cert, key,
    both in one file for HAProxy)."""
    os.makedirs(workdir, exist_ok=True)
    cert, key = os.path.join(workdir, "bench.crt"), os.path.join(workdir, "bench.key")
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt",
                    "ec_paramgen_curve:P-256", "-nodes", "-days", "7", "-subj", "/CN=bench.test",
                    "-addext", "subjectAltName=DNS:bench.test,IP:127.0.0.1",
                    "-keyout", key, "-out", cert], check=True, capture_output=True)
    both = os.path.join(workdir, "bench.pem")
    with open(both, "w") as f:
        f.write(open(cert).read() + open(key).read())
    return cert, key, both


def start_nginx_proxy(procs, workdir, backend_port, workers, tls=None, prefix=(), master=True,
                      mirror_port=None):
    """nginx as a reverse proxy: keep-alive upstream pool larger than the
    connection count (nginx's pool is per worker), the prefix stripped and
    X-Forwarded-* set as Switchyard does, one response header added.
    `tls=(cert, key)`: over HTTPS instead (TLS 1.2 and 1.3). `prefix` runs
    it through a command that execs it (valgrind), `master` False keeps it
    to one process. With `mirror_port`, `/services/mirror/` does the same
    and copies every request to that port (nginx's own `mirror`
    directive), as Switchyard's mirrored row does."""
    os.makedirs(workdir, exist_ok=True)
    port = free_port()
    if tls:
        listen = (f"listen 127.0.0.1:{port} ssl backlog=4096;\n"
                  f"    ssl_certificate {tls[0]};\n    ssl_certificate_key {tls[1]};\n"
                  "    ssl_protocols TLSv1.2 TLSv1.3;")
    else:
        listen = f"listen 127.0.0.1:{port} backlog=4096;"
    conf = os.path.join(workdir, "nginx.conf")
    with open(conf, "w") as f:
        f.write(f"""daemon off;
master_process {"on" if master else "off"};
worker_processes {workers};
pid {workdir}/nginx.pid;
error_log stderr error;
worker_rlimit_nofile 20000;
events {{ worker_connections 16384; }}
http {{
{_nginx_common(workdir)}
  access_log off;
  keepalive_requests 10000000;
  keepalive_timeout 300s;
  upstream backend {{
    server 127.0.0.1:{backend_port};
    keepalive 2048;
    keepalive_requests 10000000;
    keepalive_timeout 300s;
  }}
  upstream shadow {{
    server 127.0.0.1:{mirror_port or backend_port};
    keepalive 2048;
    keepalive_requests 10000000;
    keepalive_timeout 300s;
  }}
  map $request_uri $shadow_uri {{
    ~^/services/mirror(?<rest>/.*)$ $rest;
    default $request_uri;
  }}
  server {{
    {listen}
    location /services/bench/ {{
      proxy_pass http://backend/;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_set_header Host $http_host;
      proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
      proxy_set_header X-Forwarded-Proto $scheme;
      proxy_set_header X-Forwarded-Host $http_host;
      proxy_set_header X-Forwarded-Prefix /services/bench;
      add_header x-proxy nginx;
    }}
{_nginx_mirror(mirror_port)}
  }}
}}
""")
    proc = procs.start("nginx proxy", [*prefix, "nginx", "-c", conf, "-p", workdir],
                       stdout=subprocess.DEVNULL)
    wait_port(port)
    return port, proc


def _nginx_mirror(mirror_port):
    """`/services/mirror/`: proxied like `/services/bench/`, and every
    request copied to a second backend whose answer nginx discards."""
    if mirror_port is None:
        return ""
    return f"""    location /services/mirror/ {{
      mirror /shadow;
      proxy_pass http://backend/;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_set_header Host $http_host;
      proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
      proxy_set_header X-Forwarded-Proto $scheme;
      proxy_set_header X-Forwarded-Host $http_host;
      proxy_set_header X-Forwarded-Prefix /services/mirror;
      add_header x-proxy nginx;
    }}
    location = /shadow {{
      internal;
      proxy_pass http://shadow$shadow_uri;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_set_header Host $http_host;
    }}"""


def start_haproxy(procs, workdir, backend_port, workers, tls=None, prefix=()):
    """HAProxy with `http-reuse always`, doing the same header work.
    `tls=PEM` (certificate and key): over HTTPS instead."""
    os.makedirs(workdir, exist_ok=True)
    port = free_port()
    bind = f"127.0.0.1:{port} ssl crt {tls}" if tls else f"127.0.0.1:{port}"
    proto = "https" if tls else "http"
    conf = os.path.join(workdir, "haproxy.cfg")
    with open(conf, "w") as f:
        f.write(f"""global
  nbthread {workers}
  maxconn 8000
defaults
  mode http
  option http-keep-alive
  http-reuse always
  timeout connect 5s
  timeout client 300s
  timeout server 300s
  timeout http-keep-alive 300s
frontend proxy
  bind {bind}
  option forwardfor
  http-request set-header X-Forwarded-Proto {proto}
  http-request set-header X-Forwarded-Host %[req.hdr(host)]
  http-request set-header X-Forwarded-Prefix /services/bench
  http-request replace-path /services/bench(/.*) \\1
  http-response set-header x-proxy haproxy
  default_backend backend
backend backend
  server b1 127.0.0.1:{backend_port}
""")
    proc = procs.start("haproxy", [*prefix, "haproxy", "-db", "-f", conf],
                       stdout=subprocess.DEVNULL)
    wait_port(port)
    return port, proc


def start_haproxy_tcp(procs, workdir, backend_port, workers):
    """HAProxy `mode tcp`: each connection forwarded whole to the backend,
    as a Switchyard TCP service forwards it."""
    os.makedirs(workdir, exist_ok=True)
    port = free_port()
    conf = os.path.join(workdir, "haproxy.cfg")
    with open(conf, "w") as f:
        f.write(f"""global
  nbthread {workers}
  maxconn 8000
defaults
  mode tcp
  timeout connect 5s
  timeout client 300s
  timeout server 300s
frontend tcp
  bind 127.0.0.1:{port}
  default_backend backend
backend backend
  server b1 127.0.0.1:{backend_port}
""")
    proc = procs.start("haproxy tcp", ["haproxy", "-db", "-f", conf],
                       stdout=subprocess.DEVNULL)
    wait_port(port)
    return port, proc


NGINX_STREAM_MODULE = "/usr/lib/nginx/modules/ngx_stream_module.so"


def start_nginx_stream(procs, workdir, backend_port, workers):
    """nginx's `stream` module: each connection forwarded whole to the
    backend, as HAProxy `mode tcp` and a Switchyard TCP service do."""
    os.makedirs(workdir, exist_ok=True)
    port = free_port()
    conf = os.path.join(workdir, "nginx.conf")
    with open(conf, "w") as f:
        f.write(f"""load_module {NGINX_STREAM_MODULE};
daemon off;
worker_processes {workers};
pid {workdir}/nginx.pid;
error_log stderr error;
worker_rlimit_nofile 20000;
events {{ worker_connections 16384; }}
stream {{
  server {{
    listen 127.0.0.1:{port} backlog=4096;
    proxy_pass 127.0.0.1:{backend_port};
    proxy_connect_timeout 5s;
    proxy_timeout 300s;
  }}
}}
""")
    proc = procs.start("nginx stream", ["nginx", "-p", workdir, "-c", conf],
                       stdout=subprocess.DEVNULL)
    wait_port(port)
    return port, proc


class Serve:
    """A `switchyard serve` this benchmark started, and its CLI."""

    def __init__(self, procs, workdir, workers=None, extra=(), prefix=()):
        """`prefix` runs serve through another command that execs it
        (`prlimit --nofile=…`), so the PID is serve's."""
        os.makedirs(workdir, exist_ok=True)
        self.state_dir = os.path.join(workdir, "state")
        self.port, self.admin_port = free_port(), free_port()
        argv = [*prefix, SWITCHYARD, "serve", "--listen", f"127.0.0.1:{self.port}",
                "--admin", f"127.0.0.1:{self.admin_port}",
                "--state-dir", self.state_dir, *extra]
        if workers:
            argv += ["--workers", str(workers)]
        self.log_path = os.path.join(workdir, "serve.log")
        env = dict(os.environ, SWITCHYARD_LOG="warn")
        with open(self.log_path, "ab") as out:
            self.proc = procs.start("switchyard serve", argv, stdout=out,
                                    stderr=out, env=env)
        self.pid = self.proc.pid
        self.admin = f"http://127.0.0.1:{self.admin_port}"
        wait_port(self.admin_port, 30)
        wait_port(self.port, 30)

    def cli(self, *args, check=True, timeout=120):
        env = dict(os.environ, SWITCHYARD_ADMIN=self.admin)
        out = subprocess.run([SWITCHYARD, *args], capture_output=True,
                             text=True, env=env, timeout=timeout)
        if check and out.returncode != 0:
            raise RuntimeError(f"switchyard {' '.join(args)} failed:\n"
                               f"{out.stdout}{out.stderr}")
        return out

    def has_verb(self, verb):
        return self.cli(verb, "--help", check=False).returncode == 0

    def deploy_upstream(self, name, version, port, *extra):
        self.cli("deploy", name, version, "--upstream", f"127.0.0.1:{port}",
                 "--health", "/", "--health-interval", "1s", *extra)


# ---------------------------------------------------------------- machine

def _first_line(argv):
    try:
        out = subprocess.run(argv, capture_output=True, text=True, timeout=10)
        text = (out.stdout + out.stderr).strip()
        return text.splitlines()[0] if text else "?"
    except (OSError, subprocess.TimeoutExpired):
        return "?"


def machine():
    model = "?"
    with open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    with open("/proc/meminfo") as f:
        mem_kib = int(f.readline().split()[1])
    with open("/proc/loadavg") as f:
        load = " ".join(f.read().split()[:3])
    return {
        "cpu": f"{os.cpu_count()} × {model}",
        "memory": f"{mem_kib / 1024 / 1024:.1f} GiB",
        "kernel": platform.release(),
        "load": load,
        "nginx": _first_line(["nginx", "-v"]),
        "haproxy": _first_line(["haproxy", "-v"]),
        "wrk": _first_line(["wrk", "--version"]).split("Copyright")[0].strip(),
        "switchyard": _first_line([SWITCHYARD, "--version"]),
        "rustc": _first_line(["rustc", "--version"]),
    }


def remove_workdir(workdir):
    """Removes a run's temporary directory, unless BENCH_KEEP is set (its
    logs and configurations then stay for a look)."""
    if os.environ.get("BENCH_KEEP"):
        log(f"kept {workdir}")
    else:
        shutil.rmtree(workdir, ignore_errors=True)


def replace_section(path, name, text):
    """Rewrites the part of `path` between `<!-- NAME:begin -->` and
    `<!-- NAME:end -->` (appending it when missing); the rest stays."""
    begin, end = f"<!-- {name}:begin -->", f"<!-- {name}:end -->"
    block = f"{begin}\n{text.rstrip()}\n{end}"
    try:
        with open(path) as f:
            doc = f.read()
    except FileNotFoundError:
        doc = "# Benchmarks\n"
    if begin in doc and end in doc:
        head, rest = doc.split(begin, 1)
        tail = rest.split(end, 1)[1]
        doc = head + block + tail
    else:
        doc = doc.rstrip() + "\n\n" + block + "\n"
    with open(path, "w") as f:
        f.write(doc)
