"""Webhook intake throughput: our POST /webhooks vs a bare Flask endpoint, same gunicorn config.

Both run under the gunicorn options of the Procfile's `web` line (2 workers of 16 threads,
`gthread`), on loopback, and get the same load for the same time:
pre-signed, distinct thin events (generated before the run). The two are measured alternately
over several rounds, the order flipping every round (this box's 2 cores are shared, so load
from elsewhere hits both alike); every round is printed (req/s, p50, p99, ratio ours/bare) and
then the medians, with the load average as a noise indicator, and a check that every answered
event is stored in the inbox (a new SQLite file in WAL mode, or `--database-url`). Load comes
from `wrk` with a Lua script when installed (optionally pinned with `taskset`, `--pin-load`),
else a Python keep-alive generator.

    .venv/bin/python bench/intake.py [--seconds 8] [--rounds 5] [--connections 16] [--pin-load 1]
                                     [--sqlite-synchronous normal|full] [--database-url URL]

Besides req/s, each round prints the server's CPU time per answered request (gunicorn master
and workers, from /proc): on shared cores it moves less than req/s does.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import re
import shlex
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import stripe

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
SECRET = "whsec_bench_intake"
TARGET_RATIO, TARGET_P99_MS = 0.6, 50.0

LUA = """
local lines, n, i = {}, 0, 0
for line in io.lines("%(events)s") do
  local tab = line:find("\\t", 1, true)
  n = n + 1
  lines[n] = {line:sub(1, tab - 1), line:sub(tab + 1)}
end
request = function()
  i = i + 1
  local item = lines[((i - 1) %% n) + 1]
  return wrk.format("POST", "/webhooks",
    {["Content-Type"] = "application/json", ["Stripe-Signature"] = item[1]}, item[2])
end
"""


@dataclass
class Result:
    name: str
    requests: int
    rps: float
    p50_ms: float
    p99_ms: float
    errors: int
    cpu_us: float = 0.0  # server CPU (user + system, master and workers) per answered request


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def make_events(path: Path | None, count: int, prefix: str) -> list[tuple[str, str]]:
    """Distinct thin `error_report_triggered` notifications, signed now."""
    template = json.loads((ROOT / "tests/data/events/thin_error_report_triggered.json").read_text())
    events = []
    t = int(time.time())
    for n in range(count):
        body = json.dumps({**template, "id": f"{prefix}{n:07d}"}, separators=(",", ":"))
        events.append((stripe.WebhookSignature.generate_signature_header(body, SECRET, t), body))
    if path is not None:
        path.write_text("".join(f"{header}\t{body}\n" for header, body in events))
    return events


def procfile_options() -> list[str]:
    """The gunicorn options of the Procfile's `web` line but its bind: what production runs."""
    [line] = [x for x in (ROOT / "Procfile").read_text().splitlines() if x.startswith("web:")]
    words = shlex.split(line.partition(":")[2])[1:-1]  # between `gunicorn` and the app
    at = words.index("--bind")
    return words[:at] + words[at + 2 :]


def start_gunicorn(app: str, port: int, env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    command = [
        str(Path(sys.executable).parent / "gunicorn"), *procfile_options(),
        "--bind", f"127.0.0.1:{port}", "--log-level", "warning", app,
    ]  # fmt: skip
    with log.open("ab") as sink:
        return subprocess.Popen(command, env=env, cwd=ROOT, stdout=sink, stderr=sink)


def warm_up(port: int, warm_events: list[tuple[str, str]], server: subprocess.Popen[bytes]) -> None:
    """Wait until the workers answer (the master listens before they have imported the app),
    then let each build its engine and verifier, so the measurement sees a steady state."""
    deadline = time.time() + 30
    pending = list(warm_events)
    last = "no answer"
    while pending:
        if time.time() > deadline or server.poll() is not None:
            raise SystemExit(f"gunicorn on port {port} is not ready: {last}")
        header, body = pending[0]
        try:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
            conn.request("POST", "/webhooks", body, {"Stripe-Signature": header})
            response = conn.getresponse()
            last = f"HTTP {response.status} {response.read()[:200]!r}"
            if response.status == 200:
                pending.pop(0)
            conn.close()
        except OSError as exc:
            last = repr(exc)
            time.sleep(0.1)


def run_wrk(
    port: int, script: Path, seconds: int, connections: int, name: str, pin: str | None = None
) -> Result:
    prefix = ["taskset", "-c", pin] if pin else []
    out = subprocess.run(
        [*prefix, "wrk", "-t1", f"-c{connections}", f"-d{seconds}s", "--latency", "-s",
         str(script), f"http://127.0.0.1:{port}"],
        capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    requests = int(re.search(r"(\d+) requests in", out).group(1))  # type: ignore[union-attr]
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    errors = sum(int(m) for m in re.findall(r"Non-2xx or 3xx responses: (\d+)", out))
    errors += sum(int(m) for m in re.findall(r"Socket errors:.*?(\d+)", out))
    return Result(name, requests, rps, _pct(out, "50%"), _pct(out, "99%"), errors)


def _pct(out: str, label: str) -> float:
    value, unit = re.search(rf"{label}\s+([\d.]+)(us|ms|s)", out).groups()  # type: ignore[union-attr]
    return float(value) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[unit]


def run_python_load(
    port: int, events: list[tuple[str, str]], seconds: int, connections: int, name: str
) -> Result:
    """Fallback when wrk is missing: threads, one keep-alive connection each."""
    latencies: list[float] = []
    errors = [0]
    counter = iter(range(len(events)))
    lock = threading.Lock()
    deadline = time.perf_counter() + seconds

    def client() -> None:
        conn = http.client.HTTPConnection("127.0.0.1", port)
        while time.perf_counter() < deadline:
            with lock:
                header, body = events[next(counter) % len(events)]
            start = time.perf_counter()
            conn.request(
                "POST",
                "/webhooks",
                body,
                {"Stripe-Signature": header, "Content-Type": "application/json"},
            )
            response = conn.getresponse()
            response.read()
            with lock:
                latencies.append(time.perf_counter() - start)
                errors[0] += response.status != 200
        conn.close()

    threads = [threading.Thread(target=client) for _ in range(connections)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    latencies.sort()

    def pct(q: float) -> float:
        return latencies[min(len(latencies) - 1, int(q * len(latencies)))] * 1000

    return Result(name, len(latencies), len(latencies) / seconds, pct(0.5), pct(0.99), errors[0])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=int, default=8, help="per app and round")
    parser.add_argument("--rounds", type=int, default=5, help="alternate bare/ours, take medians")
    parser.add_argument("--connections", type=int, default=16)
    parser.add_argument("--pin-load", metavar="CPUS", help="run wrk under `taskset -c CPUS`")
    parser.add_argument(
        "--database-url",
        help="where our service stores events (default: a new SQLite file); a PostgreSQL URL "
        "gets the migrations applied and keeps the bench's rows (distinct ids per run)",
    )
    parser.add_argument(
        "--sqlite-synchronous",
        choices=("normal", "full"),
        default="normal",
        help="MFX_SQLITE_SYNCHRONOUS for our service (full: fsync on every commit)",
    )
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="mfx-bench-") as tmp:
        return run(Path(tmp), args)


def run(work: Path, args: argparse.Namespace) -> int:
    from service.db.migrate import upgrade

    database_url = args.database_url or f"sqlite:///{work / 'meterfix.db'}"
    upgrade(database_url)
    run_id = f"evt_b{int(time.time())}"
    per_round = 4_000 * args.seconds
    rounds = []  # one events file (distinct ids) per round: every request is a new event
    for n in range(args.rounds):
        events = make_events(work / f"events{n}.tsv", per_round, f"{run_id}_{n}_")
        script = work / f"events{n}.lua"
        script.write_text(LUA % {"events": work / f"events{n}.tsv"})
        rounds.append((events, script))
    env = {k: v for k, v in os.environ.items() if not k.startswith(("STRIPE_", "MFX_"))}
    env.update(
        DATABASE_URL=database_url,
        STRIPE_API_KEY="sk_test_bench",
        STRIPE_WEBHOOK_SECRETS=SECRET,
        PYTHONPATH=str(ROOT),
        MFX_SQLITE_SYNCHRONOUS=args.sqlite_synchronous,
    )
    servers = {name: start_ready(name, app, env, work) for name, app in APPS}
    results: dict[str, list[Result]] = {name: [] for name, _ in APPS}
    load_before = os.getloadavg()[0]
    try:
        for n, (events, script) in enumerate(rounds):  # alternate, flipping the order
            for name in sorted(servers, reverse=n % 2 == 1):
                results[name].append(load(servers[name], events, script, name, args))
    finally:
        for _, server in servers.values():
            server.terminate()
            server.wait(20)
    stored = count_stored(database_url, run_id)
    print(f"load average: {load_before:.2f} before, {os.getloadavg()[0]:.2f} after (2 cores)")
    return report(results, stored, args)


def count_stored(database_url: str, run_id: str) -> int:
    from sqlalchemy import text

    from service.db import make_engine

    engine = make_engine(database_url)
    try:
        with engine.connect() as connection:
            query = text("SELECT COUNT(*) FROM inbox_events WHERE event_id LIKE :prefix")
            return int(connection.execute(query, {"prefix": f"{run_id}_%"}).scalar_one())
    finally:
        engine.dispose()


APPS = (("bare", "bench.bare_app:create_bare_app()"), ("meterfix", "service.app:create_app()"))


def start_ready(
    name: str, app: str, env: dict[str, str], work: Path
) -> tuple[int, subprocess.Popen[bytes]]:
    port = free_port()
    server = start_gunicorn(app, port, env, work / f"{name}.log")
    try:
        warm_up(port, make_events(None, 40, f"evt_warm_{name}_"), server)
    except SystemExit:
        server.kill()
        print((work / f"{name}.log").read_text()[-2000:], file=sys.stderr)
        raise
    return port, server


def load(
    server: tuple[int, subprocess.Popen[bytes]],
    events: list[tuple[str, str]],
    script: Path,
    name: str,
    args: argparse.Namespace,
) -> Result:
    port, process = server
    before = server_cpu_seconds(process.pid)
    if shutil.which("wrk"):
        result = run_wrk(port, script, args.seconds, args.connections, name, args.pin_load)
    else:
        result = run_python_load(port, events, args.seconds, args.connections, name)
    used = server_cpu_seconds(process.pid) - before
    result.cpu_us = used / max(result.requests, 1) * 1e6
    return result


def server_cpu_seconds(master: int) -> float:
    """User + system CPU of a gunicorn master and its workers so far (Linux /proc).

    Requests per second move with whatever else the shared cores run; CPU per request is
    the steadier measure of what one request costs the server."""
    ticks = os.sysconf("SC_CLK_TCK")
    pids = [master]
    for task in Path(f"/proc/{master}/task").glob("*/children"):
        pids += [int(pid) for pid in task.read_text().split()]
    total = 0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:  # a worker gone between the listing and the read
            continue
        total += int(fields[11]) + int(fields[12])  # utime, stime (fields 14 and 15)
    return total / ticks


def print_rounds(results: dict[str, list[Result]]) -> None:
    for n, (b, o) in enumerate(zip(results["bare"], results["meterfix"], strict=True), 1):
        print(
            f"  round {n}: bare {b.rps:6.0f} req/s p50 {b.p50_ms:5.1f} p99 {b.p99_ms:5.1f} ms"
            f" | meterfix {o.rps:6.0f} req/s p50 {o.p50_ms:5.1f} p99 {o.p99_ms:5.1f} ms"
            f" | ratio {o.rps / b.rps:.2f} | CPU/request {b.cpu_us:.0f} vs {o.cpu_us:.0f} us"
        )


def report(results: dict[str, list[Result]], stored: int, args: argparse.Namespace) -> int:
    tool = "wrk" if shutil.which("wrk") else "python"
    database = (
        "PostgreSQL"
        if (args.database_url or "").startswith("postgres")
        else f"SQLite WAL, synchronous={args.sqlite_synchronous}"
    )
    pinned = f", pinned to CPU {args.pin_load}" if args.pin_load else ""
    print(
        f"load: {tool}{pinned}, {args.connections} connections, {args.rounds} rounds x "
        f"{args.seconds} s per app (alternating), gunicorn {' '.join(procfile_options())}, "
        f"{database}"
    )
    print_rounds(results)
    for name, runs in results.items():
        rps = statistics.median(r.rps for r in runs)
        p50 = statistics.median(r.p50_ms for r in runs)
        p99 = statistics.median(r.p99_ms for r in runs)
        each = " ".join(f"{r.rps:.0f}" for r in runs)
        cpu = statistics.median(r.cpu_us for r in runs)
        print(
            f"{name:>9}: {rps:8.0f} req/s  p50 {p50:6.1f} ms  p99 {p99:6.1f} ms  "
            f"server CPU {cpu:4.0f} us/request  (rounds: {each})"
        )
    ratios = [o.rps / b.rps for b, o in zip(results["bare"], results["meterfix"], strict=True)]
    ratio = statistics.median(ratios)
    ours = results["meterfix"]
    p99 = statistics.median(r.p99_ms for r in ours)
    print(
        f"    ratio: {ratio:.2f} median (rounds: {' '.join(f'{x:.2f}' for x in ratios)}; "
        f"target >= {TARGET_RATIO} with p99 < {TARGET_P99_MS:.0f} ms)"
    )
    answered = sum(r.requests for r in ours)
    errors = sum(r.errors for r in ours)
    # wrk stops mid-flight: a request the server stored may not be counted as completed.
    complete = answered <= stored <= answered + args.connections * args.rounds
    print(f"   stored: {stored} inbox rows for {answered} answered requests, {errors} errors "
          f"({'all stored' if complete else 'MISMATCH'})")  # fmt: skip
    meets = ratio >= TARGET_RATIO and p99 < TARGET_P99_MS
    print("   target:", "met" if meets else "NOT met")
    # Figures, not a timed test: exit non-zero only when intake itself misbehaved.
    return 0 if complete and errors == 0 else 1


if __name__ == "__main__":
    raise SystemExit(main())
