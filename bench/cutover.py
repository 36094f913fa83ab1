"""bench/cutover: nothing fails while releases change.

A load of `--seconds` (default 30) through Switchyard while main switches
between two releases every second (`switchyard assign --yes`), canary
weights change (when `switchyard canary` exists), an instance of the
release that is not main is killed (SIGKILL) and restarted by Switchyard,
twice, and serve itself is replaced once by a new serve process
(`switchyard handover`) with the load running. Reports the requests, the
answers other than 2xx and the socket errors; the target is zero of each.

Prints the report and writes it into BENCHMARKS.md. Everything it starts,
it stops by PID.
"""

import argparse
import json
import os
import re
import signal
import subprocess
import tempfile
import threading
import time

import benchlib as b

HELLO = os.environ.get("HELLO_BIN", os.path.join(b.ROOT, "target", "release", "hello-server"))


def releases(serve, name):
    out = serve.cli("ls", name, "--json")
    services = json.loads(out.stdout)
    service = services[0] if isinstance(services, list) else services
    return {r["version"]: r for r in service["releases"]}


def main_version(serve, name):
    return next(v for v, r in releases(serve, name).items() if r["role"] == "main")


def deploy(serve, name, version, *extra):
    serve.cli("deploy", name, version, "--replicas", "2", "--health", "/healthz",
              "--health-interval", "500ms", *extra,
              "--", HELLO, "--port", "{port}", "--version", version)


# Why a switch may be refused (docs/operating.md, "Switching" and "Self-upgrade"): the
# target has an instance that is not healthy, or serve is handing over.
DOCUMENTED_REFUSALS = (
    "refusing to send traffic to",
    "serve is handing over to a new serve process",
)


def documented_refusal(stderr):
    return any(reason in stderr for reason in DOCUMENTED_REFUSALS)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=int, default=30)
    parser.add_argument("--connections", type=int, default=20)
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--output", default=os.path.join(b.ROOT, "BENCHMARKS.md"))
    args = parser.parse_args()

    machine = b.machine()
    procs = b.Procs()
    workdir = tempfile.mkdtemp(prefix="switchyard-cutover-")
    serve = None
    events = []
    counts = {"switches": 0, "refused": 0, "kills": 0, "canary changes": 0}
    # Refusals other than the documented ones (see DOCUMENTED_REFUSALS).
    undocumented = []
    handover = None
    # Set once the load is over; false when the run broke off before.
    instances_ok = False
    restarts = 0

    def note(text):
        events.append(f"{time.time() - t0:5.1f} s  {text}")
        b.log(events[-1])

    t0 = time.time()
    try:
        serve = b.Serve(procs, os.path.join(workdir, "switchyard"), workers=args.workers)
        state_dir = os.path.realpath(serve.state_dir)
        deploy(serve, "web", "1.0.0")
        deploy(serve, "web", "2.0.0", "--standby")
        canary = serve.has_verb("canary")
        url = f"http://127.0.0.1:{serve.port}/services/web/"
        b.wrk(url, args.connections, 1)

        result = {}

        def load():
            result.update(b.wrk(url, args.connections, args.seconds, timeout="5s"))

        loader = threading.Thread(target=load)
        t0 = time.time()
        loader.start()
        kill_at = {int(args.seconds * 0.25), int(args.seconds * 0.75)}
        handover_at = args.seconds // 2
        second = 0
        while time.time() - t0 < args.seconds - 1:
            second += 1
            next_tick = t0 + second
            current = main_version(serve, "web")
            other = "2.0.0" if current == "1.0.0" else "1.0.0"
            out = serve.cli("assign", "web", other, "--yes", check=False)
            if out.returncode == 0:
                counts["switches"] += 1
                current, other = other, current
            else:
                counts["refused"] += 1
                note(f"switch to {other} refused: {out.stderr.strip()}")
                if not documented_refusal(out.stderr):
                    undocumented.append(out.stderr.strip())
            if canary:
                weight = (second * 10) % 60
                # The canary is the release not main (the next switch
                # makes it main, which ends its canary).
                out = serve.cli("canary", "web", other, "--percent", str(weight),
                                "--sticky-header", "x-user", check=False)
                counts["canary changes"] += out.returncode == 0
            if second in kill_at:
                standby = releases(serve, "web")[other]
                pids = [i["pid"] for i in standby["instances"] if i.get("pid")]
                if pids:
                    os.kill(pids[0], signal.SIGKILL)
                    counts["kills"] += 1
                    note(f"killed instance pid {pids[0]} of web {standby['version']} "
                         f"({standby['role']})")
            if second == handover_at:
                out = serve.cli("handover", "--json", check=False, timeout=120)
                if out.returncode == 0:
                    handover = json.loads(out.stdout)
                    procs.register("switchyard serve (took over)", handover["new_pid"])
                    note(f"handover: serve pid {handover['old_pid']} → {handover['new_pid']}")
                else:
                    note(f"handover failed: {out.stderr.strip()}")
            time.sleep(max(0.0, next_tick - time.time()))
        loader.join()
        # Every killed instance came back.
        healthy = []
        deadline = time.time() + 15
        while time.time() < deadline:
            rel = releases(serve, "web")
            healthy = [i for r in rel.values() for i in r["instances"] if i["health"] == "healthy"]
            if len(healthy) == 4:
                break
            time.sleep(0.2)
        restarts = sum(i.get("restarts", 0) for r in releases(serve, "web").values()
                       for i in r["instances"])
        instances_ok = len(healthy) == 4
    finally:
        procs.stop_all()
        if serve is not None:
            for pid in b.leftovers(os.path.realpath(serve.state_dir)):
                os.kill(pid, signal.SIGKILL)
        b.remove_workdir(workdir)

    ok = result.get("errors", 1) == 0
    passed = ok and bool(handover) and instances_ok and not undocumented
    text = "\n".join([
        f"Measured {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())} by `bench/cutover` on "
        f"{machine['cpu']} (load average {machine['load']} before): `wrk -t1 "
        f"-c{args.connections} -d{args.seconds}s` through Switchyard (`serve --workers "
        f"{args.workers}`) to `web`, two releases of 2 `hello-server` instances each, while:",
        "",
        f"- main switched every second: {counts['switches']} switches, {counts['refused']} "
        "refused (a switch is refused while the target has an instance that is not healthy, "
        "or while serve hands over)",
        "- canary weights: " + (f"{counts['canary changes']} changes" if canary
                                else "n/a (canary not available yet)"),
        f"- {counts['kills']} instances of the release that was not main killed (SIGKILL); "
        f"Switchyard restarted them (all 4 instances healthy at the end: "
        f"{'yes' if instances_ok else 'NO'}; {restarts} restart(s) counted by the serve running "
        "at the end, which counts only its own)",
        "- one self-upgrade: " + (
            f"serve pid {handover['old_pid']} handed over to pid {handover['new_pid']}"
            if handover else "FAILED"),
        "",
        "| requests | req/s | p99 ms | non-2xx | socket errors |",
        "|---:|---:|---:|---:|---:|",
        f"| {result.get('requests', 0):,} | {result.get('rps', 0):,.0f} | "
        f"{result.get('p99', float('nan')):.2f} | {result.get('non2xx', '?')} | "
        f"{result.get('socket_errors', '?')} |",
        "",
        f"- switches refused for another reason than the documented ones: "
        f"{len(undocumented)}" + (f" (first: {undocumented[0]})" if undocumented else ""),
        "",
        "Target: zero non-2xx and zero socket errors, every switch refused only for "
        "a documented reason, every instance healthy at the end — "
        + ("**holds**." if passed else "**does not hold**."),
        "",
        "Timeline:",
        "",
        "```",
        *events,
        "```",
    ])
    print(text)
    b.replace_section(args.output, "bench/cutover", text)
    b.log(f"wrote {args.output}")
    if not passed:
        raise SystemExit(1)


if __name__ == "__main__":
    main()
