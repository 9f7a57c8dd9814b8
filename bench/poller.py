"""Poller throughput: parse + validate + batch (target ≥ 100,000 rows/s), then end to end.

    .venv/bin/python bench/poller.py [--rows 1000000] [--e2e-rows 100000] [--no-identifiers]

1. Generates a usage CSV (`--rows`, default 1,000,000) and runs the poller's per-file path
   (the shared CSV reader as columns -> the remediation core's checks -> meter events ->
   stream-request bodies of 100), nothing sent.
2. End to end on loopback: a `file://` bucket holding a `--e2e-rows` slice, the bundled
   sandbox in-process (werkzeug, threaded) as Stripe, SQLite; one `run_poll_pass`, which
   sends every event through the v2 meter event stream and records imported_rows.
`--no-identifiers`: the rows carry no identifier (the poller names each by what it holds).
"""

from __future__ import annotations

import argparse
import csv
import logging
import tempfile
import threading
import time
from pathlib import Path

HEADER = ["identifier", "timestamp", "event_name", "payload_stripe_customer_id", "payload_value"]


def generate(path: Path, rows: int, now: int, identified: bool = True) -> None:
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(HEADER)
        writer.writerows(
            (
                f"id-{i:09d}" if identified else "",
                now - 3600 - i % 86_400,
                "api_requests",
                f"cus_{i % 5000:06d}",
                i % 97,
            )
            for i in range(rows)
        )


def bench_parse(path: Path, now: int) -> tuple[int, int, float]:
    from remediation.formats import FileFormat, read_records
    from remediation.meters import Meter
    from remediation.poller import import_chunks
    from remediation.rownames import RowNames
    from remediation.validation import MeterIndex

    index = MeterIndex([Meter(id="mtr_bench", event_name="api_requests")])
    bodies = rows = 0
    started = time.perf_counter()
    with path.open("rb") as stream:
        records = read_records(stream, FileFormat.CSV)  # as the poller reads a CSV object
        for chunk in import_chunks(records, index, now=now, names=RowNames("bench.csv", "bench")):
            body = {"events": chunk.events}  # one stream request body, not sent
            bodies += 1 if body["events"] else 0
            rows += len(chunk.rows)
    return rows, bodies, time.perf_counter() - started


def bench_end_to_end(
    rows: int, now: int, workdir: Path, identified: bool
) -> tuple[int, float, int]:
    from werkzeug.serving import make_server

    from sandbox.app import create_sandbox_app
    from sandbox.client import SandboxAdmin
    from sandbox.defaults import SANDBOX_API_KEY
    from service.config import Settings
    from service.db.migrate import upgrade
    from service.poller.passes import build_poller_deps, run_poll_pass
    from service.runtime import Runtime

    logging.getLogger("werkzeug").setLevel(logging.WARNING)  # no line per stream request
    server = make_server("127.0.0.1", 0, create_sandbox_app(), threaded=True)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_port}"
    admin = SandboxAdmin(url, timeout=120)
    admin.create_meter("api_requests")
    (workdir / "bucket").mkdir()
    generate(workdir / "bucket" / "usage.csv", rows, now, identified)
    db_url = f"sqlite:///{workdir / 'bench.db'}"
    upgrade(db_url)
    settings = Settings(  # type: ignore[call-arg]
        _env_file=None,
        database_url=db_url,
        bucket_url=f"file://{workdir / 'bucket'}",
        stripe_api_key=SANDBOX_API_KEY,
        stripe_api_base=url,
        stripe_files_base=url,
        stripe_meter_events_base=url,
    )
    runtime = Runtime(settings)
    try:
        started = time.perf_counter()
        report = run_poll_pass(build_poller_deps(runtime))
        elapsed = time.perf_counter() - started
        accepted = len(admin.meter_events())
    finally:
        runtime.close()
        server.shutdown()
    return report.sent, elapsed, accepted


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--e2e-rows", type=int, default=100_000)
    parser.add_argument("--no-identifiers", action="store_true")
    args = parser.parse_args()
    now = int(time.time())
    with tempfile.TemporaryDirectory(prefix="mfx-bench-") as tmp:
        work = Path(tmp)
        path = work / "usage.csv"
        generate(path, args.rows, now, not args.no_identifiers)
        size_mb = path.stat().st_size / 1e6
        rows, bodies, elapsed = bench_parse(path, now)
        print(
            f"parse+validate+batch: {rows:,} rows ({size_mb:.1f} MB) in {elapsed:.2f} s = "
            f"{rows / elapsed:,.0f} rows/s, {bodies:,} request bodies of ≤ 100 events "
            f"(target ≥ 100,000 rows/s)"
        )
        sent, e2e, accepted = bench_end_to_end(args.e2e_rows, now, work, not args.no_identifiers)
        print(
            f"end to end (file:// bucket -> sandbox over loopback, SQLite): {sent:,} rows in "
            f"{e2e:.2f} s = {sent / e2e:,.0f} rows/s; sandbox accepted {accepted:,} events "
            f"(slice of {args.e2e_rows:,} rows)"
        )


if __name__ == "__main__":
    main()
