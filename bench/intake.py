"""Webhook intake throughput: our POST /webhooks vs a bare Flask endpoint, same gunicorn config.

Both run under gunicorn (sync, 2 workers) on loopback and get the same load for the same time:
pre-signed, distinct thin events (generated before the run). Prints req/s, p50 and p99 for each,
the ratio ours/bare, and checks that every answered event is stored in the inbox (SQLite, WAL).
Load comes from `wrk` with a Lua script when installed, else a Python keep-alive generator.

    .venv/bin/python bench/intake.py [--seconds 10] [--connections 16]
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import re
import shutil
import socket
import sqlite3
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


def start_gunicorn(app: str, port: int, env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    command = [
        str(Path(sys.executable).parent / "gunicorn"),
        "--workers", "2", "--worker-class", "sync",
        "--bind", f"127.0.0.1:{port}", "--log-level", "warning", app,
    ]  # fmt: skip
    with log.open("ab") as sink:
        return subprocess.Popen(command, env=env, cwd=ROOT, stdout=sink, stderr=sink)


def warm_up(port: int, warm_events: list[tuple[str, str]]) -> None:
    """Wait until the workers answer (the master listens before they have imported the app),
    then let each build its engine and verifier, so the measurement sees a steady state."""
    deadline = time.time() + 30
    pending = list(warm_events)
    while pending:
        if time.time() > deadline:
            raise SystemExit(f"nothing answers on port {port}")
        header, body = pending[0]
        try:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
            conn.request("POST", "/webhooks", body, {"Stripe-Signature": header})
            if conn.getresponse().status == 200:
                pending.pop(0)
            conn.close()
        except OSError:
            time.sleep(0.1)


def run_wrk(port: int, script: Path, seconds: int, connections: int, name: str) -> Result:
    out = subprocess.run(
        ["wrk", "-t1", f"-c{connections}", f"-d{seconds}s", "--latency", "-s", str(script),
         f"http://127.0.0.1:{port}"],
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
    parser.add_argument("--seconds", type=int, default=10)
    parser.add_argument("--connections", type=int, default=16)
    args = parser.parse_args()
    from service.db import upgrade

    with tempfile.TemporaryDirectory(prefix="mfx-bench-") as tmp:
        work = Path(tmp)
        db = work / "meterfix.db"
        upgrade(f"sqlite:///{db}")
        events = make_events(work / "events.tsv", 40_000 * max(1, args.seconds // 10), "evt_b_")
        script = work / "events.lua"
        script.write_text(LUA % {"events": work / "events.tsv"})
        env = {k: v for k, v in os.environ.items() if not k.startswith(("STRIPE_", "MFX_"))}
        env.update(
            DATABASE_URL=f"sqlite:///{db}",
            STRIPE_API_KEY="sk_test_bench",
            STRIPE_WEBHOOK_SECRETS=SECRET,
            PYTHONPATH=str(ROOT),
        )
        use_wrk = shutil.which("wrk") is not None
        results = []
        for name, app in (
            ("bare", "bench.bare_app:create_bare_app()"),
            ("meterfix", "service.app:create_app()"),
        ):
            port = free_port()
            server = start_gunicorn(app, port, env, work / f"{name}.log")
            try:
                warm_up(port, make_events(None, 40, f"evt_warm_{name}_"))
                if use_wrk:
                    result = run_wrk(port, script, args.seconds, args.connections, name)
                else:
                    result = run_python_load(port, events, args.seconds, args.connections, name)
            finally:
                server.terminate()
                server.wait(20)
            results.append(result)
        query = "SELECT COUNT(*) FROM inbox_events WHERE event_id LIKE 'evt_b_%'"
        stored = sqlite3.connect(db).execute(query).fetchone()[0]
        return report(results, stored, "wrk" if use_wrk else "python", args)


def report(results: list[Result], stored: int, tool: str, args: argparse.Namespace) -> int:
    bare, ours = results
    print(
        f"load: {tool}, {args.connections} connections, {args.seconds} s each, gunicorn sync -w 2"
    )
    for r in results:
        print(
            f"{r.name:>9}: {r.rps:8.0f} req/s  p50 {r.p50_ms:6.1f} ms  p99 {r.p99_ms:6.1f} ms  "
            f"({r.requests} requests, {r.errors} errors)"
        )
    ratio = ours.rps / bare.rps
    print(f"    ratio: {ratio:.2f} (ours/bare; target >= {TARGET_RATIO}, p99 < {TARGET_P99_MS} ms)")
    # wrk stops mid-flight: a request the server stored may not be counted as completed.
    complete = ours.requests <= stored <= ours.requests + args.connections
    print(f"   stored: {stored} inbox rows for {ours.requests} answered requests "
          f"({'all stored' if complete else 'MISMATCH'})")  # fmt: skip
    meets = ratio >= TARGET_RATIO and ours.p99_ms < TARGET_P99_MS
    print("   target:", "met" if meets else "NOT met")
    # Figures, not a timed test: exit non-zero only when intake itself misbehaved.
    return 0 if complete and ours.errors == 0 else 1


if __name__ == "__main__":
    raise SystemExit(main())
