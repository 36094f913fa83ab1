"""bench/run: Switchyard against nginx and HAProxy on this machine.

One nginx backend on 127.0.0.1 answers a ~100-byte body (/small) and a
16 KiB one (/large). wrk sends the same load to the backend directly, to
nginx as a reverse proxy, to HAProxy, and to Switchyard with main only,
with a 10% sticky canary (when `switchyard canary` exists), with every
request mirrored to one shadow, beside nginx copying every request to a
second backend with its own `mirror` directive, and with every request
mirrored to a shadow that is always full: its upstream
(bench/holding_backend.py) answers its health check and never a request,
so the shadow's copies in flight (`serve --shadow-concurrency`, 16) wait
for serve's upstream timeout, its queue (`--shadow-queue`, 256) fills, and
every further copy is dropped before anything is built for it. That row,
measured right after main only in each round, shows what a dropped copy
costs; the shadow report's `dropped` count
(`switchyard shadow report --json`; on /metrics
`switchyard_shadow_dropped_total`) is read before and after each of its
runs, printed, and the run stops with an error if a run dropped none. Its
verdict compares it with main only round by round (the median of the
per-round ratios, which cancels what the machine's load does to a round):
throughput at least 0.97× and CPU per request at most 1.03× main only's.
The 3% is a margin for noise, small beside what copies that are sent cost
(the mirrored row: tens of percent); the verdict line gives how far main
only's own rounds were apart, so a run noisier than the margin shows it.
Each proxy gets the same number of worker threads. Runs are interleaved
(A B C … A B C …) so that whatever else the machine does falls on every
target alike; the table holds the median of the rounds. A TCP service is measured
apart: HTTP over connections that Switchyard (`deploy --protocol tcp`,
`listen`), nginx `stream` and HAProxy `mode tcp` forward whole, without
reading a request. With more workers
(`--more-workers`, default 2): nginx, HAProxy and Switchyard (main only)
again, each with that many worker threads, small body, in the same
interleaved rounds. Then serve's memory: idle with
10 services × 3 releases, and under 1,000 concurrent keep-alive
connections. Then HTTPS: nginx, HAProxy and Switchyard each terminating
TLS with the same certificate (a self-signed EC P-256 one), measured for
new TLS connections per second (a full handshake per request:
`Connection: close`) and for keep-alive throughput over TLS, interleaved
the same way (`--tls-only` runs just these; `--memory-only` just the
memory table).

Prints the tables and writes them into BENCHMARKS.md (between markers; the
rest of the file is left alone). Everything it starts, it stops by PID.
"""

import argparse
import json
import os
import statistics
import sys
import tempfile
import threading
import time

import benchlib as b

CANARY_NA = "n/a (canary not available yet)"
NGINX_MIRROR = "nginx, 100% mirrored (`mirror` directive)"
SWITCHYARD_MIRROR = "Switchyard, 100% mirrored to one shadow"
SWITCHYARD_DROPPED = "Switchyard, 100% mirrored to a full shadow (copies dropped)"
# What a copy dropped because its shadow is full may cost against main only,
# compared round by round: 3% either way, a margin for noise (see the
# module's docstring).
DROPPED_MIN_RPS = 0.97
DROPPED_MAX_CPU = 1.03
NGINX_STREAM = "nginx stream"
HAPROXY_TCP = "HAProxy mode tcp"


class Target:
    """A row of the table; one without a URL is not available (n/a)."""

    def __init__(self, name, url, pids=None, note="", script=None, shadow=None):
        self.name = name
        self.url = url
        self.pids = pids  # callable giving the proxy's pids, or None
        self.note = note
        self.script = script
        # callable giving (dropped, mirrored) of the service's shadows, or None
        self.shadow = shadow
        self.runs = {}  # body -> [result]


def measure(target, body, connections, seconds, headers=()):
    pids = target.pids() if target.pids else []
    backend = BACKEND_PIDS()
    shadow0 = target.shadow() if target.shadow else None
    cpu0, bcpu0 = b.cpu_seconds(pids), b.cpu_seconds(backend)
    result = b.wrk(target.url + body, connections, seconds, script=target.script,
                   headers=headers)
    cpu1, bcpu1 = b.cpu_seconds(pids), b.cpu_seconds(backend)
    n = max(result["requests"], 1)
    result["cpu_us"] = (cpu1 - cpu0) / n * 1e6 if pids else None
    result["backend_cpu_us"] = (bcpu1 - bcpu0) / n * 1e6
    if shadow0 is not None:
        shadow1 = target.shadow()
        result["dropped"] = shadow1[0] - shadow0[0]
        result["mirrored"] = shadow1[1] - shadow0[1]
        if result["dropped"] <= 0:
            raise RuntimeError(
                f"{target.name}: no copy was dropped during a run of {result['requests']} "
                f"requests ({result['mirrored']} sent to the shadow): the row would not "
                "measure dropped copies")
    return result


def shadow_counts(serve, service):
    """Copies of `service`'s requests dropped because a shadow was full,
    and copies sent to a shadow, so far (summed over its shadows)."""
    out = serve.cli("shadow", "report", service, "--json")
    reports = json.loads(out.stdout)
    return (sum(r["dropped"] for r in reports), sum(r["mirrored"] for r in reports))


def per_round(a, base, body, key):
    """The median over rounds of a's figure ÷ base's in the same round."""
    pairs = zip(a.runs.get(body, []), base.runs.get(body, []))
    values = [x[key] / y[key] for x, y in pairs if x.get(key) and y.get(key)]
    return statistics.median(values) if values else None


def median(runs, key):
    values = [r[key] for r in runs if r.get(key) is not None]
    return statistics.median(values) if values else None


def summary(target, body):
    runs = target.runs.get(body, [])
    return {
        "rps": median(runs, "rps"),
        "p50": median(runs, "p50"),
        "p99": median(runs, "p99"),
        "cpu_us": median(runs, "cpu_us"),
        "backend_cpu_us": median(runs, "backend_cpu_us"),
        "errors": sum(r["errors"] for r in runs),
        "dropped": sum(r.get("dropped", 0) for r in runs),
        "mirrored": sum(r.get("mirrored", 0) for r in runs),
        "requests": sum(r["requests"] for r in runs),
        "rounds": len(runs),
    }


def fmt(value, spec, none="—"):
    return none if value is None else format(value, spec)


def ratio(a, base):
    if a is None or base in (None, 0):
        return "—"
    return f"{a / base:.2f}×"


def tables(targets, bodies):
    out = []
    for body in bodies:
        label = "~100-byte body" if body == "/small" else "16 KiB body"
        by_name = {t.name: summary(t, body) for t in targets}
        nginx, haproxy, direct = by_name["nginx"], by_name["HAProxy"], by_name["direct"]
        out.append(f"#### {label} (`GET {body}`)\n")
        out.append("| target | req/s | p50 ms | p99 ms | errors | proxy CPU µs/req | backend CPU µs/req |")
        out.append("|---|---:|---:|---:|---:|---:|---:|")
        for t in targets:
            if t.url is None:
                out.append(f"| {t.name} | {t.note} | | | | | |")
                continue
            s = by_name[t.name]
            out.append(
                f"| {t.name} | {fmt(s['rps'], ',.0f')} | {fmt(s['p50'], '.2f')} | "
                f"{fmt(s['p99'], '.2f')} | {s['errors']} | {fmt(s['cpu_us'], '.1f')} | "
                f"{fmt(s['backend_cpu_us'], '.1f')} |")
        out.append("")
        out.append("Ratios (req/s: higher is better; latency and CPU: lower is better):\n")
        out.append("| target | req/s ÷ nginx | ÷ HAProxy | ÷ direct | p50 ÷ nginx | ÷ HAProxy | ÷ direct "
                   "| p99 ÷ nginx | ÷ HAProxy | ÷ direct | CPU/req ÷ nginx | ÷ HAProxy |")
        out.append("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
        for t in targets:
            if t.name == "direct" or t.url is None:
                continue
            s = by_name[t.name]
            cells = []
            for key in ("rps", "p50", "p99"):
                cells += [ratio(s[key], nginx[key]), ratio(s[key], haproxy[key]),
                          ratio(s[key], direct[key])]
            cells += [ratio(s["cpu_us"], nginx["cpu_us"]), ratio(s["cpu_us"], haproxy["cpu_us"])]
            out.append(f"| {t.name} | " + " | ".join(cells) + " |")
        out.append("")
    return "\n".join(out)


def tcp_table(targets, bodies):
    """The TCP forwarders side by side: each connection forwarded whole
    (wrk's keep-alive HTTP/1.1 through it), throughput and CPU per request
    and per MB moved, against nginx `stream` and HAProxy `mode tcp`."""
    out = ["| target | body | req/s | ÷ nginx stream | ÷ HAProxy | p99 ms | errors "
           "| proxy CPU µs/req | proxy CPU ms/MB | ÷ nginx stream | ÷ HAProxy |",
           "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for body in bodies:
        size = len(b.SMALL_BODY.rstrip()) if body == "/small" else b.LARGE_SIZE
        by_name = {t.name: summary(t, body) for t in targets}
        nginx, haproxy = by_name[NGINX_STREAM], by_name[HAPROXY_TCP]

        def per_mb(s):
            return None if s["cpu_us"] is None else s["cpu_us"] / 1e3 / (size / 1e6)

        for t in targets:
            s = by_name[t.name]
            out.append(
                f"| {t.name} | `{body}` | {fmt(s['rps'], ',.0f')} | {ratio(s['rps'], nginx['rps'])} | "
                f"{ratio(s['rps'], haproxy['rps'])} | "
                f"{fmt(s['p99'], '.2f')} | {s['errors']} | {fmt(s['cpu_us'], '.1f')} | "
                f"{fmt(per_mb(s), '.1f')} | {ratio(per_mb(s), per_mb(nginx))} | "
                f"{ratio(per_mb(s), per_mb(haproxy))} |")
    out.append("")
    return "\n".join(out)


def verdicts(targets, canary_available):
    by_name = {t.name: summary(t, "/small") for t in targets}
    sy = by_name["Switchyard, main only"]
    nginx, haproxy = by_name["nginx"], by_name["HAProxy"]
    lines = []

    def check(label, value, holds):
        mark = "holds" if holds else "**does not hold**"
        lines.append(f"- {label}: {value} — {mark}")

    for other, s in (("nginx", nginx), ("HAProxy", haproxy)):
        r = sy["rps"] / s["rps"] if s["rps"] else 0
        check(f"throughput ≥ 1.0× {other}", f"{r:.2f}×", r >= 1.0)
    for other, s in (("nginx", nginx), ("HAProxy", haproxy)):
        if sy["cpu_us"] and s["cpu_us"]:
            r = sy["cpu_us"] / s["cpu_us"]
            check(f"CPU per request ≤ {other}'s", f"{r:.2f}× ({sy['cpu_us']:.1f} vs "
                  f"{s['cpu_us']:.1f} µs)", r <= 1.0)
    if canary_available and "Switchyard, 10% sticky canary" in by_name:
        c = by_name["Switchyard, 10% sticky canary"]
        cost = 1 - c["rps"] / sy["rps"]
        check("a canary rule costs < 5% of main-only throughput", f"{cost:+.1%}", cost < 0.05)
    else:
        lines.append(f"- a canary rule costs < 5%: {CANARY_NA}")
    m = by_name[SWITCHYARD_MIRROR]
    nm = by_name[NGINX_MIRROR]
    if m["rps"] and nm["rps"]:
        r = m["rps"] / nm["rps"]
        check("100% mirrored: throughput ≥ 1.0× nginx's `mirror`", f"{r:.2f}×", r >= 1.0)
    if m["cpu_us"] and nm["cpu_us"]:
        r = m["cpu_us"] / nm["cpu_us"]
        check("100% mirrored: CPU per request ≤ nginx's `mirror`",
              f"{r:.2f}× ({m['cpu_us']:.1f} vs {nm['cpu_us']:.1f} µs)", r <= 1.0)
    cost = 1 - m["rps"] / sy["rps"]
    lines.append(f"- what 100% mirroring costs against main only: {cost:+.1%} of throughput "
                 f"(CPU per request {m['cpu_us']:.1f} vs {sy['cpu_us']:.1f} µs); nginx's "
                 f"`mirror`: {1 - nm['rps'] / nginx['rps']:+.1%}")
    full = {t.name: t for t in targets}
    if SWITCHYARD_DROPPED in full and full[SWITCHYARD_DROPPED].url is not None:
        d, main_only = full[SWITCHYARD_DROPPED], full["Switchyard, main only"]
        s = by_name[SWITCHYARD_DROPPED]
        rounds = [r["rps"] for r in main_only.runs.get("/small", [])]
        spread = (max(rounds) - min(rounds)) / statistics.median(rounds) if rounds else 0
        r = per_round(d, main_only, "/small", "rps")
        if r is not None:
            check(f"copies dropped because the shadow is full cost nothing measurable: "
                  f"throughput ≥ {DROPPED_MIN_RPS:.2f}× main only "
                  "(median of the rounds' ratios)",
                  f"{r:.2f}× ({s['rps']:,.0f} vs {sy['rps']:,.0f} req/s; "
                  f"{s['dropped']:,} copies dropped; main only's own rounds span "
                  f"{spread:.1%})", r >= DROPPED_MIN_RPS)
        r = per_round(d, main_only, "/small", "cpu_us")
        if r is not None:
            check(f"copies dropped because the shadow is full: CPU per request "
                  f"≤ {DROPPED_MAX_CPU:.2f}× main only's (median of the rounds' ratios)",
                  f"{r:.2f}× ({s['cpu_us']:.1f} vs {sy['cpu_us']:.1f} µs)",
                  r <= DROPPED_MAX_CPU)
    return "\n".join(lines)


def dropped_text(targets, bodies, report):
    """How many copies the full shadow's row dropped in its measured runs
    (the proof that it measured dropped copies), and its shadow report."""
    t = next(t for t in targets if t.name == SWITCHYARD_DROPPED)
    parts = []
    for body in bodies:
        s = summary(t, body)
        share = s["dropped"] / s["requests"] if s["requests"] else 0
        parts.append(f"`GET {body}`: {s['dropped']:,} copies dropped of {s['requests']:,} "
                     f"requests ({share:.1%}), {s['mirrored']:,} sent to the shadow")
    return ("The full shadow's row (its upstream answers the health check and never a copy; "
            "the shadow report's `dropped` read before and after each run; a copy is dropped "
            "as its request arrives, wrk counts the requests answered within its run): "
            + "; ".join(parts)
            + f". At the end (`switchyard shadow report dropped`): `{report}`")


def more_workers_table(targets, workers):
    """The proxies with `workers` worker threads each, small body: the
    rows, their ratios, and the targets' verdicts."""
    s = {t.name: summary(t, "/small") for t in targets}
    names = [t.name for t in targets]
    nginx, haproxy, sy = (s[n] for n in names)
    out = ["| proxy | req/s | ÷ nginx | ÷ HAProxy | p99 ms | p99 ÷ nginx | errors "
           "| proxy CPU µs/req | ÷ nginx | ÷ HAProxy |",
           "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for name in names:
        r = s[name]
        out.append(
            f"| {name} | {fmt(r['rps'], ',.0f')} | {ratio(r['rps'], nginx['rps'])} | "
            f"{ratio(r['rps'], haproxy['rps'])} | {fmt(r['p99'], '.2f')} | "
            f"{ratio(r['p99'], nginx['p99'])} | {r['errors']} | {fmt(r['cpu_us'], '.1f')} | "
            f"{ratio(r['cpu_us'], nginx['cpu_us'])} | {ratio(r['cpu_us'], haproxy['cpu_us'])} |")
    out += ["", f"Targets ({workers} workers each, small body, 50 connections):", ""]
    for other, o in (("nginx", nginx), ("HAProxy", haproxy)):
        if sy["rps"] and o["rps"]:
            r = sy["rps"] / o["rps"]
            mark = "holds" if r >= 1.0 else "**does not hold**"
            out.append(f"- throughput ≥ 1.0× {other}: {r:.2f}× — {mark}")
    for other, o in (("nginx", nginx), ("HAProxy", haproxy)):
        if sy["cpu_us"] and o["cpu_us"]:
            r = sy["cpu_us"] / o["cpu_us"]
            mark = "holds" if r <= 1.0 else "**does not hold**"
            out.append(f"- CPU per request ≤ {other}'s: {r:.2f}× ({sy['cpu_us']:.1f} vs "
                       f"{o['cpu_us']:.1f} µs) — {mark}")
    out.append("")
    return "\n".join(out)


def setup_canary(serve, backend_port):
    """A service with a 10% sticky canary, if this build has `switchyard
    canary`; returns (ok, note)."""
    if not serve.has_verb("canary"):
        return False, CANARY_NA
    serve.deploy_upstream("canary", "1.0.0", backend_port)
    serve.deploy_upstream("canary", "2.0.0", backend_port, "--standby")
    attempts = [
        ["canary", "canary", "2.0.0", "--percent", "10", "--sticky-header", "x-user"],
    ]
    errors = []
    for argv in attempts:
        out = serve.cli(*argv, check=False)
        if out.returncode == 0:
            return True, "switchyard " + " ".join(argv)
        errors.append((out.stderr or out.stdout).strip().splitlines()[-1:])
    return False, f"n/a (`switchyard canary` exists but could not be set up: {errors})"


def memory(procs, workdir, backend_port, nginx_pids, haproxy_pids, workers, seconds):
    """RSS of a fresh serve idle with 10 services × 3 releases, then under
    1,000 concurrent keep-alive connections; nginx and HAProxy alongside."""
    serve = b.Serve(procs, os.path.join(workdir, "memory"), workers=workers)
    time.sleep(1)
    empty = b.rss_kib([serve.pid])
    for i in range(10):
        name = f"svc{i}"
        serve.deploy_upstream(name, "1.0.0", backend_port)
        serve.deploy_upstream(name, "2.0.0", backend_port, "--standby")
        serve.deploy_upstream(name, "3.0.0", backend_port, "--standby")
    time.sleep(3)
    idle = b.rss_kib([serve.pid])
    rows = []
    for name, url, pids in (
        ("Switchyard", f"http://127.0.0.1:{serve.port}/services/svc0/small", lambda: [serve.pid]),
        ("nginx", f"http://127.0.0.1:{NGINX_PORT}/services/bench/small", nginx_pids),
        ("HAProxy", f"http://127.0.0.1:{HAPROXY_PORT}/services/bench/small", haproxy_pids),
    ):
        before = b.rss_kib(pids())
        peak = [before]
        done = threading.Event()

        def sample():
            while not done.is_set():
                peak[0] = max(peak[0], b.rss_kib(pids()))
                time.sleep(0.2)

        sampler = threading.Thread(target=sample)
        sampler.start()
        result = b.wrk(url, 1000, seconds, timeout="10s")
        done.set()
        sampler.join()
        rows.append((name, before, peak[0], result))
    lines = [
        f"Switchyard serve: **{empty / 1024:.1f} MiB** with no service, **{idle / 1024:.1f} MiB** "
        f"idle with 10 services × 3 releases (external upstreams, health-checked every second).",
        "",
        f"Under 1,000 concurrent keep-alive connections (`wrk -c1000 -d{seconds}s`, small body), "
        "peak resident size sampled every 0.2 s (all processes of each proxy):",
        "",
        "| proxy | RSS before | peak RSS under 1,000 connections | req/s | errors |",
        "|---|---:|---:|---:|---:|",
    ]
    for name, before, peak, result in rows:
        lines.append(f"| {name} | {before / 1024:.1f} MiB | {peak / 1024:.1f} MiB | "
                     f"{result['rps']:,.0f} | {result['errors']} |")
    return "\n".join(lines)


TLS_MODES = (
    ("new", "new TLS connection per request (`Connection: close`)", ("Connection: close",)),
    ("keepalive", "keep-alive over TLS", ()),
)


def https_rows(procs, workdir, backend_port, workers, rounds, seconds, connections):
    """nginx, HAProxy and Switchyard over HTTPS with one certificate; the
    small body, new connections and keep-alive, interleaved rounds."""
    cert, key, both = b.make_certificate(os.path.join(workdir, "tls"))
    nginx_port, nginx = b.start_nginx_proxy(procs, os.path.join(workdir, "nginx-tls"),
                                            backend_port, workers, tls=(cert, key))
    haproxy_port, haproxy = b.start_haproxy(procs, os.path.join(workdir, "haproxy-tls"),
                                            backend_port, workers, tls=both)
    tls_port = b.free_port()
    serve = b.Serve(procs, os.path.join(workdir, "switchyard-tls"), workers=workers,
                    extra=("--tls-listen", f"127.0.0.1:{tls_port}"))
    b.wait_port(tls_port, 30)
    serve.cli("tls", "add", "--default", "--cert", cert, "--key", key)
    serve.deploy_upstream("bench", "1.0.0", backend_port)
    base = "https://127.0.0.1:"
    targets = [
        Target("nginx", f"{base}{nginx_port}/services/bench",
               lambda: b.descendants(nginx.pid)),
        Target("HAProxy", f"{base}{haproxy_port}/services/bench",
               lambda: b.descendants(haproxy.pid)),
        Target("Switchyard", f"{base}{tls_port}/services/bench", lambda: [serve.pid]),
    ]
    b.log("HTTPS: warming up")
    for t in targets:
        b.wrk(t.url + "/small", connections, 1)
    for round_ in range(1, rounds + 1):
        for mode, _, headers in TLS_MODES:
            for t in targets:
                r = measure(t, "/small", connections, seconds, headers=headers)
                t.runs.setdefault(mode, []).append(r)
                b.log(f"HTTPS round {round_} {mode:9} {t.name:12} {r['rps']:>10,.0f} req/s  "
                      f"p99 {r['p99']:.2f} ms  errors {r['errors']}  "
                      f"cpu {fmt(r['cpu_us'], '.1f')} µs/req")
    return targets


def https_table(targets, rounds, seconds, connections, versions):
    out = [
        f"Measured {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())} by `bench/run`: "
        f"{rounds} interleaved round(s) of `wrk -t1 -c{connections} -d{seconds}s` per proxy and "
        "mode, small body (`GET /small`), medians shown, errors summed. Every proxy terminates "
        "TLS with the same self-signed EC P-256 certificate (TLS 1.3 chosen by wrk's OpenSSL) "
        "and forwards in cleartext to the same backend, doing the header work of the table "
        f"above; one worker thread each. {versions}",
        "",
        "**The machine was shared with other work while this ran** (2 cores, other builds and "
        "tests): absolute numbers move between runs; compare the ratios, which come from this "
        "one interleaved run only.",
        "",
        "| proxy | mode | req/s | p50 ms | p99 ms | errors | proxy CPU µs/req |",
        "|---|---|---:|---:|---:|---:|---:|",
    ]
    by = {(t.name, mode): summary(t, mode) for t in targets for mode, _, _ in TLS_MODES}
    for mode, label, _ in TLS_MODES:
        for t in targets:
            s = by[(t.name, mode)]
            out.append(f"| {t.name} | {label} | {fmt(s['rps'], ',.0f')} | {fmt(s['p50'], '.2f')} "
                       f"| {fmt(s['p99'], '.2f')} | {s['errors']} | {fmt(s['cpu_us'], '.1f')} |")
    out += ["", "Ratios (req/s: higher is better; p99 and CPU: lower is better):", "",
            "| proxy | mode | req/s ÷ nginx | ÷ HAProxy | p99 ÷ nginx | ÷ HAProxy "
            "| CPU/req ÷ nginx | ÷ HAProxy |",
            "|---|---|---:|---:|---:|---:|---:|---:|"]
    for mode, label, _ in TLS_MODES:
        nginx, haproxy = by[("nginx", mode)], by[("HAProxy", mode)]
        for t in targets:
            s = by[(t.name, mode)]
            cells = []
            for key in ("rps", "p99", "cpu_us"):
                cells += [ratio(s[key], nginx[key]), ratio(s[key], haproxy[key])]
            out.append(f"| {t.name} | {label} | " + " | ".join(cells) + " |")
    return "\n".join(out)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=int, default=4, help="per wrk run")
    parser.add_argument("--connections", type=int, default=50)
    parser.add_argument("--workers", type=int, default=1,
                        help="worker threads of every proxy (nginx worker_processes, HAProxy "
                             "nbthread, serve --workers)")
    parser.add_argument("--more-workers", type=int, default=2,
                        help="also measure nginx, HAProxy and Switchyard (main only, small "
                             "body) with this many worker threads each; 0 skips those rows")
    parser.add_argument("--no-memory", action="store_true")
    parser.add_argument("--memory-only", action="store_true",
                        help="only serve's memory against nginx's and HAProxy's "
                             "(written to its own section)")
    parser.add_argument("--no-tls", action="store_true", help="skip the HTTPS rows")
    parser.add_argument("--tls-only", action="store_true",
                        help="only the HTTPS rows (written to their own section)")
    parser.add_argument("--output", default=os.path.join(b.ROOT, "BENCHMARKS.md"))
    args = parser.parse_args()
    if args.rounds < 1:
        parser.error("--rounds must be at least 1")

    started = time.time()
    machine = b.machine()
    procs = b.Procs()
    workdir = tempfile.mkdtemp(prefix="switchyard-bench-")
    global BACKEND_PIDS, NGINX_PORT, HAPROXY_PORT
    if args.tls_only:
        try:
            backend_port, backend = b.start_backend(procs, os.path.join(workdir, "backend"))
            BACKEND_PIDS = lambda: b.descendants(backend.pid)  # noqa: E731
            targets = https_rows(procs, workdir, backend_port, args.workers, args.rounds,
                                 args.seconds, args.connections)
        finally:
            procs.stop_all()
            b.remove_workdir(workdir)
        versions = f"{machine['switchyard']}; {machine['nginx']}; {machine['haproxy']}; " \
                   f"{machine['wrk']}; load average {machine['load']} before."
        text = https_table(targets, args.rounds, args.seconds, args.connections, versions)
        print(text)
        b.replace_section(args.output, "bench/run tls", text)
        b.log(f"wrote {args.output}")
        return
    if args.memory_only:
        try:
            backend_port, backend = b.start_backend(procs, os.path.join(workdir, "backend"))
            BACKEND_PIDS = lambda: b.descendants(backend.pid)  # noqa: E731
            NGINX_PORT, nginx = b.start_nginx_proxy(procs, os.path.join(workdir, "nginx"),
                                                    backend_port, args.workers)
            HAPROXY_PORT, haproxy = b.start_haproxy(procs, os.path.join(workdir, "haproxy"),
                                                    backend_port, args.workers)
            mem = memory(procs, workdir, backend_port, lambda: b.descendants(nginx.pid),
                         lambda: b.descendants(haproxy.pid), args.workers,
                         max(args.seconds, 5))
        finally:
            procs.stop_all()
            b.remove_workdir(workdir)
        print(mem)
        b.replace_section(args.output, "bench/run memory", mem)
        b.log(f"wrote {args.output}")
        return
    more = args.more_workers if args.more_workers not in (0, args.workers) else None
    more_targets = []
    tls_text = None
    try:
        backend_port, backend = b.start_backend(procs, os.path.join(workdir, "backend"))
        BACKEND_PIDS = lambda: b.descendants(backend.pid)  # noqa: E731
        NGINX_PORT, nginx = b.start_nginx_proxy(procs, os.path.join(workdir, "nginx"),
                                                backend_port, args.workers,
                                                mirror_port=backend_port)
        HAPROXY_PORT, haproxy = b.start_haproxy(procs, os.path.join(workdir, "haproxy"),
                                                backend_port, args.workers)
        haproxy_tcp_port, haproxy_tcp = b.start_haproxy_tcp(
            procs, os.path.join(workdir, "haproxy-tcp"), backend_port, args.workers)
        nginx_stream_port, nginx_stream = b.start_nginx_stream(
            procs, os.path.join(workdir, "nginx-stream"), backend_port, args.workers)
        serve = b.Serve(procs, os.path.join(workdir, "switchyard"), workers=args.workers)
        serve.deploy_upstream("bench", "1.0.0", backend_port)
        # The second release of a service is a shadow: it gets every request.
        serve.deploy_upstream("mirror", "1.0.0", backend_port)
        serve.deploy_upstream("mirror", "2.0.0", backend_port)
        # A shadow that never answers a copy: its queue fills, then every
        # copy is dropped.
        holding_port, _ = b.start_holding_backend(procs)
        serve.deploy_upstream("dropped", "1.0.0", backend_port)
        serve.deploy_upstream("dropped", "2.0.0", holding_port)
        canary_ok, canary_note = setup_canary(serve, backend_port)
        tcp_port = b.free_port()
        serve.deploy_upstream("tcp", "1.0.0", backend_port, "--protocol", "tcp")
        serve.cli("listen", "tcp", f"127.0.0.1:{tcp_port}")

        nginx_pids = lambda: b.descendants(nginx.pid)  # noqa: E731
        haproxy_pids = lambda: b.descendants(haproxy.pid)  # noqa: E731
        serve_pids = lambda: [serve.pid]  # noqa: E731
        base = "http://127.0.0.1:"
        targets = [
            Target("direct", f"{base}{backend_port}"),
            Target("nginx", f"{base}{NGINX_PORT}/services/bench", nginx_pids),
            Target("HAProxy", f"{base}{HAPROXY_PORT}/services/bench", haproxy_pids),
            Target("Switchyard, main only", f"{base}{serve.port}/services/bench", serve_pids),
            # Measured right after main only, which it is judged against.
            Target(SWITCHYARD_DROPPED, f"{base}{serve.port}/services/dropped", serve_pids,
                   shadow=lambda: shadow_counts(serve, "dropped")),
        ]
        if canary_ok:
            targets.append(Target("Switchyard, 10% sticky canary",
                                  f"{base}{serve.port}/services/canary", serve_pids,
                                  script=os.path.join(os.path.dirname(__file__), "sticky.lua")))
        else:
            targets.append(Target("Switchyard, 10% sticky canary", None, note=canary_note))
        targets.append(Target(NGINX_MIRROR, f"{base}{NGINX_PORT}/services/mirror", nginx_pids))
        targets.append(Target(SWITCHYARD_MIRROR,
                              f"{base}{serve.port}/services/mirror", serve_pids))
        tcp_targets = [
            Target(NGINX_STREAM, f"{base}{nginx_stream_port}",
                   lambda: b.descendants(nginx_stream.pid)),
            Target(HAPROXY_TCP, f"{base}{haproxy_tcp_port}",
                   lambda: b.descendants(haproxy_tcp.pid)),
            Target("Switchyard, TCP service", f"{base}{tcp_port}", serve_pids),
        ]
        if more:
            more_nginx_port, more_nginx = b.start_nginx_proxy(
                procs, os.path.join(workdir, "nginx-more"), backend_port, more)
            more_haproxy_port, more_haproxy = b.start_haproxy(
                procs, os.path.join(workdir, "haproxy-more"), backend_port, more)
            more_serve = b.Serve(procs, os.path.join(workdir, "switchyard-more"), workers=more)
            more_serve.deploy_upstream("bench", "1.0.0", backend_port)
            more_targets = [
                Target(f"nginx, {more} workers", f"{base}{more_nginx_port}/services/bench",
                       lambda: b.descendants(more_nginx.pid)),
                Target(f"HAProxy, {more} workers", f"{base}{more_haproxy_port}/services/bench",
                       lambda: b.descendants(more_haproxy.pid)),
                Target(f"Switchyard, {more} workers, main only",
                       f"{base}{more_serve.port}/services/bench", lambda: [more_serve.pid]),
            ]
        bodies = ["/small", "/large"]
        measured = [t for t in targets + tcp_targets if t.url is not None]

        b.log(f"warming up {len(measured)} targets")
        for t in measured + more_targets:
            for body in bodies:
                b.wrk(t.url + body, args.connections, 1, script=t.script)
        dropped, mirrored = shadow_counts(serve, "dropped")
        b.log(f"full shadow after the warm-up: {dropped:,} copies dropped, {mirrored:,} sent")
        if dropped == 0:
            raise RuntimeError("the full shadow dropped no copy during the warm-up: "
                               f"the row {SWITCHYARD_DROPPED!r} would not measure dropped copies")
        for round_ in range(1, args.rounds + 1):
            for body in bodies:
                for t in measured + (more_targets if body == "/small" else []):
                    r = measure(t, body, args.connections, args.seconds)
                    t.runs.setdefault(body, []).append(r)
                    b.log(f"round {round_} {body:6} {t.name:40} {r['rps']:>10,.0f} req/s  "
                          f"p99 {r['p99']:.2f} ms  errors {r['errors']}  "
                          f"cpu {fmt(r['cpu_us'], '.1f')} µs/req"
                          + (f"  dropped {r['dropped']:,} sent {r['mirrored']:,}"
                             if "dropped" in r else ""))
        shadow = serve.cli("shadow", "report", "mirror", check=False).stdout.strip()
        full_shadow = serve.cli("shadow", "report", "dropped", check=False).stdout
        full_shadow = (full_shadow.strip().splitlines() or ["(no report)"])[0]
        mem = None
        if not args.no_memory:
            b.log("memory: 10 services × 3 releases, then 1,000 connections")
            mem = memory(procs, workdir, backend_port, nginx_pids, haproxy_pids, args.workers,
                         max(args.seconds, 5))
        if not args.no_tls:
            b.log("HTTPS: nginx, HAProxy and Switchyard with one certificate")
            tls_targets = https_rows(procs, workdir, backend_port, args.workers, args.rounds,
                                     args.seconds, args.connections)
            versions = f"{machine['switchyard']}; {machine['nginx']}; {machine['haproxy']}; " \
                       f"{machine['wrk']}."
            tls_text = https_table(tls_targets, args.rounds, args.seconds, args.connections,
                                   versions)
        with open("/proc/loadavg") as f:
            load_after = " ".join(f.read().split()[:3])
    finally:
        procs.stop_all()
        b.remove_workdir(workdir)

    elapsed = time.time() - started
    text = "\n".join([
        f"Measured {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())} by `bench/run` "
        f"in {elapsed / 60:.1f} min: {args.rounds} interleaved rounds of "
        f"`wrk -t1 -c{args.connections} -d{args.seconds}s` per target and body; medians shown, "
        "errors summed (socket errors and non-2xx).",
        "",
        f"- machine: {machine['cpu']}, {machine['memory']}, Linux {machine['kernel']}; "
        f"load average {machine['load']} before, {load_after} after",
        f"- {machine['switchyard']} (release build, `serve --workers {args.workers}`); "
        f"{machine['nginx']}; {machine['haproxy']}; {machine['wrk']}",
        f"- every proxy: {args.workers} worker thread(s) (nginx `worker_processes {args.workers}`, "
        f"HAProxy `nbthread {args.workers}`); the backend is one nginx worker; wrk, the backend "
        "and the proxy share the machine's cores",
        "- same work in each proxy: the `/services/bench` prefix stripped, `X-Forwarded-For`, "
        "`-Proto`, `-Host` and `-Prefix` set, one response header added, keep-alive to the backend "
        "(nginx `keepalive 2048`, HAProxy `http-reuse always`)",
        f"- canary row: {canary_note}",
        "",
        tables(targets, bodies),
        "#### TCP services (connections forwarded whole)\n",
        tcp_table(tcp_targets, bodies),
        *([f"#### {more} workers each (`GET /small`)\n",
           f"nginx `worker_processes {more}`, HAProxy `nbthread {more}`, "
           f"`serve --workers {more}`, measured in the same interleaved rounds as the rows above.\n",
           more_workers_table(more_targets, more)] if more_targets else []),
        f"Mirroring at the end (`switchyard shadow report mirror`; under full load copies beyond "
        f"the shadow's queue are dropped and counted): `{shadow}`",
        "",
        dropped_text(targets, bodies, full_shadow),
        "",
        "Targets (small body, 50 connections):",
        "",
        verdicts(targets, canary_ok),
    ])
    print(text)
    b.replace_section(args.output, "bench/run", text)
    if mem:
        print()
        print(mem)
        b.replace_section(args.output, "bench/run memory", mem)
    if tls_text:
        print()
        print(tls_text)
        b.replace_section(args.output, "bench/run tls", tls_text)
    b.log(f"wrote {args.output}")


BACKEND_PIDS = list
NGINX_PORT = HAPROXY_PORT = None

if __name__ == "__main__":
    main()
