"""bench/instructions: instructions per request of each proxy, counted by
valgrind's callgrind, so the figure holds on a loaded machine.

Each proxy (Switchyard main only and 100% mirrored, nginx, nginx with its
`mirror` directive, HAProxy; one worker each) runs under
`valgrind --tool=callgrind` in front of the same nginx backend. After a
warm-up the counters are zeroed (`callgrind_control -z`), wrk sends a fixed
number of small-body requests over 50 keep-alive connections (bench/count.lua
stops it), the counters are dumped, and the process's instructions are
divided by the requests answered. The backend's work is not counted.

Prints a table and writes it into BENCHMARKS.md between markers. With
KEEP_WORKDIR=1 in the environment the work directory, with each proxy's
callgrind dumps, is kept for `callgrind_annotate` (its path is printed).
"""

import argparse
import glob
import os
import signal
import subprocess
import sys
import tempfile
import time

import benchlib as b

HERE = os.path.dirname(os.path.abspath(__file__))


def counted(pid, workdir, url, requests, connections):
    """Zeroes the counters of the process under callgrind, sends
    `requests` requests, dumps the counters: (instructions, answered)."""
    subprocess.run(["callgrind_control", "-z", str(pid)], check=True, capture_output=True)
    before = set(glob.glob(os.path.join(workdir, "callgrind.out*")))
    done = os.path.join(workdir, "wrk.done")
    env = dict(os.environ, REQUESTS=str(requests), DONE_FILE=done)
    wrk = subprocess.Popen(["wrk", "-t1", f"-c{connections}", "-d900s", "--timeout", "60s",
                            "-s", os.path.join(HERE, "count.lua"), url],
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    # wrk sleeps out its duration even when its thread stopped: SIGINT
    # ends it, with its summary, once the last answer came.
    deadline = time.time() + 900
    while not os.path.exists(done) and wrk.poll() is None and time.time() < deadline:
        time.sleep(0.1)
    subprocess.run(["callgrind_control", "-d", str(pid)], check=True, capture_output=True)
    if wrk.poll() is None:
        wrk.send_signal(signal.SIGINT)
    stdout, stderr = wrk.communicate(timeout=60)
    if wrk.returncode != 0:
        raise RuntimeError(f"wrk failed: {stderr}")
    result = b.parse_wrk(stdout)
    deadline = time.time() + 60
    while time.time() < deadline:
        dumps = set(glob.glob(os.path.join(workdir, "callgrind.out*"))) - before
        for dump in dumps:
            total = totals(dump)
            if total is not None:
                return total, result
        time.sleep(0.2)
    raise RuntimeError(f"no callgrind dump of pid {pid} in {workdir}")


def totals(path):
    try:
        with open(path) as f:
            for line in f:
                if line.startswith(("totals:", "summary:")):
                    return int(line.split()[1])
    except OSError:
        pass
    return None


def valgrind(workdir):
    return ["valgrind", "--tool=callgrind", "--quiet",
            f"--callgrind-out-file={workdir}/callgrind.out.%p"]


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=10000)
    parser.add_argument("--connections", type=int, default=50)
    parser.add_argument("--only", help="comma-separated target names (switchyard, "
                        "switchyard-mirror, nginx, nginx-mirror, haproxy)")
    parser.add_argument("--output", default=os.path.join(b.ROOT, "BENCHMARKS.md"))
    parser.add_argument("--no-write", action="store_true", help="print only")
    args = parser.parse_args()

    machine = b.machine()
    procs = b.Procs()
    workdir = tempfile.mkdtemp(prefix="switchyard-instructions-")
    rows = []
    only = set(args.only.split(",")) if args.only else None
    started = time.time()
    try:
        backend_port, _ = b.start_backend(procs, os.path.join(workdir, "backend"))

        def proxy_nginx(name, path):
            wd = os.path.join(workdir, name)
            port, proc = b.start_nginx_proxy(procs, wd, backend_port, 1,
                                             prefix=valgrind(wd), master=False,
                                             mirror_port=backend_port)
            return proc.pid, wd, f"http://127.0.0.1:{port}{path}"

        def proxy_haproxy(name, path):
            wd = os.path.join(workdir, name)
            port, proc = b.start_haproxy(procs, wd, backend_port, 1, prefix=valgrind(wd))
            return proc.pid, wd, f"http://127.0.0.1:{port}{path}"

        def proxy_switchyard(name, path):
            wd = os.path.join(workdir, name)
            os.makedirs(wd, exist_ok=True)
            serve = b.Serve(procs, wd, workers=1, prefix=valgrind(wd))
            serve.deploy_upstream("bench", "1.0.0", backend_port)
            serve.deploy_upstream("mirror", "1.0.0", backend_port)
            serve.deploy_upstream("mirror", "2.0.0", backend_port)
            return serve.pid, wd, f"http://127.0.0.1:{serve.port}{path}"

        targets = [
            ("switchyard", "Switchyard, main only", proxy_switchyard, "/services/bench/small"),
            ("switchyard-mirror", "Switchyard, 100% mirrored to one shadow", proxy_switchyard,
             "/services/mirror/small"),
            ("nginx", "nginx", proxy_nginx, "/services/bench/small"),
            ("nginx-mirror", "nginx, `mirror` to a second backend", proxy_nginx,
             "/services/mirror/small"),
            ("haproxy", "HAProxy", proxy_haproxy, "/services/bench/small"),
        ]
        for key, label, start, path in targets:
            if only and key not in only:
                continue
            pid, wd, url = start(key, path)
            b.log(f"{label}: warming up")
            b.wrk(url, args.connections, 2, timeout="30s")
            instructions, result = counted(pid, wd, url, args.requests, args.connections)
            n = max(result["requests"], 1)
            rows.append((label, instructions / n, n, result["errors"]))
            b.log(f"{label}: {instructions / n / 1000:.1f} k instructions per request "
                  f"({n} requests, {result['errors']} errors)")
            procs.stop(pid)
    finally:
        procs.stop_all()
        if not os.environ.get("KEEP_WORKDIR"):
            b.remove_workdir(workdir)
        else:
            print(f"kept {workdir}")

    by = dict((r[0], r[1]) for r in rows)
    lines = [
        f"Measured {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())} by `bench/instructions` "
        f"in {(time.time() - started) / 60:.1f} min: each proxy under "
        f"`valgrind --tool=callgrind`, one worker, {args.requests:,} small-body requests "
        f"over {args.connections} keep-alive connections after a warm-up; instructions of the "
        "whole proxy process divided by the requests answered (the backend not counted).",
        "",
        f"- {machine['switchyard']}; {machine['nginx']}; {machine['haproxy']}; "
        f"load average {machine['load']} before",
        "",
        "| proxy | instructions per request | ÷ nginx | ÷ HAProxy | requests | errors |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for label, per, n, errors in rows:
        def r(other):
            return f"{per / by[other]:.2f}×" if other in by else "—"
        lines.append(f"| {label} | {per / 1000:.1f} k | {r('nginx')} | {r('HAProxy')} | "
                     f"{n:,} | {errors} |")
    text = "\n".join(lines)
    print(text)
    if not args.no_write:
        b.replace_section(args.output, "bench/instructions", text)


if __name__ == "__main__":
    sys.exit(main())
