"""Dashboard and admin API page times at scale (target: every page's p95 under 300 ms).

    .venv/bin/python bench/pages.py [--database-url URL] [--runs 10000] [--audit 1000000]
                                    [--quarantined 100000] [--requests 40]

Seeds a fresh database (SQLite file by default, or the PostgreSQL database/schema given) with
`--runs` remediation runs, `--audit` correction-audit rows, `--quarantined` quarantined rows,
alerts, admin actions and inbox events, then serves the real app on a loopback port (werkzeug,
one process) and requests every dashboard page and API endpoint `--requests` times over real
HTTP, printing p50 and p95 per page. A PostgreSQL URL is used as given: point it at an empty
database or schema (e.g. `...?options=-csearch_path%3Dbench`); the bench migrates it.
"""

from __future__ import annotations

import argparse
import logging
import random
import re
import statistics
import tempfile
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import requests
from sqlalchemy import Engine, insert, text
from werkzeug.serving import make_server

CODES = [
    "timestamp_in_future",
    "meter_event_invalid_value",
    "meter_event_customer_not_found",
    "no_meter",
    "timestamp_too_far_in_past",
    "archived_meter",
]
METERS = ["api_requests", "tokens", "storage_gb", "seats"]
TOKEN = "bench-admin-token-0123456789abcdef"
BATCH = 10_000
RESET_RUN_SEQUENCE = (
    "SELECT setval(pg_get_serial_sequence('remediation_runs', 'id'), "
    "(SELECT max(id) FROM remediation_runs))"
)
RESET_RUN_SEQUENCE = (
    "SELECT setval(pg_get_serial_sequence('remediation_runs', 'id'), "
    "(SELECT max(id) FROM remediation_runs))"
)


def seed(engine: Engine, runs: int, audit: int, quarantined: int) -> dict[str, Any]:
    from service.models import (
        AdminAction,
        Alert,
        CorrectionAudit,
        InboxEvent,
        OutputObject,
        QuarantinedRow,
        RemediationRun,
    )

    rng = random.Random(7)
    now = datetime.now(UTC)
    start = now - timedelta(days=30)
    step = (now - start) / max(runs, 1)

    def rows_of_runs() -> Iterator[dict[str, Any]]:
        for i in range(runs):
            valid, corrected, quar = rng.randint(0, 50), rng.randint(0, 100), rng.randint(0, 20)
            code = CODES[i % len(CODES)]
            yield {
                "id": i + 1,
                "run_key": f"bench:{i}",
                "trigger": ["import_set.succeeded", "poller", "error_report"][i % 3],
                "source": f"usage/2026/11/file-{i:06d}.csv",
                "source_sha256": f"{i:064x}",
                "generation": 1,
                "status": "done",
                "input_rows": valid + corrected + quar,
                "valid": valid,
                "corrected": corrected,
                "quarantined": quar,
                "by_code": {code: {"corrected": corrected, "quarantined": quar}},
                "error": None,
                "created_at": start + step * i,
                "finished_at": start + step * i + timedelta(seconds=2),
            }

    def rows_of_outputs() -> Iterator[dict[str, Any]]:
        for i in range(runs):
            for kind in ("corrected", "quarantine"):
                yield {
                    "run_id": i + 1,
                    "kind": kind,
                    "key": f"{kind}/run-{i}/file-{i:06d}.{kind}.mfx1.csv",
                    "rows": 10,
                    "sha256": f"{i:064x}",
                    "generation": 1,
                    "source": f"usage/2026/11/file-{i:06d}.csv",
                    "uploaded": True,
                    "created_at": start + step * i,
                }

    def rows_of_audit() -> Iterator[dict[str, Any]]:
        for i in range(audit):
            run = i % runs + 1
            yield {
                "run_id": run,
                "source": f"usage/2026/11/file-{run - 1:06d}.csv",
                "row_number": i // runs + 1,
                "identifier": f"evt-{i:09d}",
                "new_identifier": f"evt-{i:09d}-mfx1",
                "code": CODES[i % len(CODES)],
                "rule": "unit_seconds",
                "field": "timestamp",
                "before": "1764460800000",
                "after": "1764460800",
            }

    def rows_of_quarantine() -> Iterator[dict[str, Any]]:
        for i in range(quarantined):
            run = i % runs + 1
            meter = METERS[i % len(METERS)]
            customer = f"cus_{i % 2000:06d}"
            yield {
                "run_id": run,
                "source": f"usage/2026/11/file-{run - 1:06d}.csv",
                "row_number": i // runs + 1,
                "identifier": f"q-{i:09d}",
                "code": CODES[i % len(CODES)],
                "reason": "value 'abc' is not a number",
                "meter": meter,
                "customer": customer,
                "record": {
                    "identifier": f"q-{i:09d}",
                    "timestamp": "1764460800",
                    "event_name": meter,
                    "payload": {"stripe_customer_id": customer, "value": "abc"},
                },
                "created_at": start + (now - start) * (i / max(quarantined, 1)),
            }

    def rows_of_alerts() -> Iterator[dict[str, Any]]:
        for i in range(2000):
            yield {
                "alert_key": f"bench:{i}",
                "severity": ["info", "warning", "critical"][i % 3],
                "status": ["open", "acknowledged", "resolved"][i % 3],
                "kind": "remediation.run",
                "subject": f"run {i}: rows quarantined",
                "message": "12 rows quarantined (meter_event_invalid_value)",
                "meter": METERS[i % len(METERS)],
                "code": CODES[i % len(CODES)],
                "customer": None,
                "count": 1,
                "rows": 12,
                "links": {"run": i % runs + 1},
                "detail": {},
                "created_at": start + step * i,
                "last_seen_at": start + step * i,
            }

    def rows_of_events() -> Iterator[dict[str, Any]]:
        for i in range(20_000):
            yield {
                "event_id": f"evt_bench_{i:08d}",
                "event_type": "v1.billing.meter.error_report_triggered",
                "style": "thin",
                "livemode": False,
                "body": '{"id": "evt_bench"}',
                "received_at": start + (now - start) * (i / 20_000),
                "status": ["done", "done", "done", "dead", "pending"][i % 5],
                "attempts": 1,
                "last_error": "HTTP 500" if i % 5 == 3 else None,
            }

    def rows_of_actions() -> Iterator[dict[str, Any]]:
        for i in range(1000):
            yield {
                "action": "acknowledge",
                "target_type": "alert",
                "target_id": str(i * 3 + 2),
                "source_address": "127.0.0.1",
                "via": "api",
                "detail": {},
                "created_at": now,
            }

    plan = [
        (RemediationRun, rows_of_runs()),
        (OutputObject, rows_of_outputs()),
        (CorrectionAudit, rows_of_audit()),
        (QuarantinedRow, rows_of_quarantine()),
        (Alert, rows_of_alerts()),
        (InboxEvent, rows_of_events()),
        (AdminAction, rows_of_actions()),
    ]
    for model, rows in plan:
        began = time.perf_counter()
        count = _bulk(engine, model, rows)
        took = time.perf_counter() - began
        print(f"seeded {model.__tablename__:<18} {count:>9,} rows in {took:6.1f} s")
    if engine.dialect.name == "postgresql":
        with engine.begin() as connection:
            connection.execute(text(RESET_RUN_SEQUENCE))
            connection.execute(text("ANALYZE"))
    else:
        with engine.begin() as connection:
            connection.execute(text("ANALYZE"))
    return {"run_id": runs // 2, "code": CODES[1], "meter": METERS[0], "customer": "cus_000042"}


def _bulk(engine: Engine, model: Any, rows: Iterator[dict[str, Any]]) -> int:
    table = model.__table__
    total = 0
    batch: list[dict[str, Any]] = []
    with engine.begin() as connection:
        for row in rows:
            batch.append(row)
            if len(batch) >= BATCH:
                connection.execute(insert(table), batch)
                total += len(batch)
                batch = []
        if batch:
            connection.execute(insert(table), batch)
            total += len(batch)
    return total


def pages(ids: dict[str, Any]) -> list[str]:
    run, code, meter, customer = ids["run_id"], ids["code"], ids["meter"], ids["customer"]
    since = (datetime.now(UTC) - timedelta(days=7)).date().isoformat()
    return [
        "/",
        "/runs",
        f"/runs/{run}",
        "/quarantine",
        f"/quarantine?code={code}&meter={meter}",
        f"/quarantine?customer={customer}",
        "/events",
        "/events?status=dead",
        "/alerts",
        "/alerts?status=open",
        "/api/alerts",
        "/api/alerts?status=open",
        "/api/runs",
        f"/api/runs/{run}",
        "/api/quarantine",
        f"/api/quarantine?code={code}&meter={meter}&since={since}",
        f"/api/quarantine?customer={customer}",
        f"/api/quarantine?run={run}",
        "/api/events?status=dead",
        "/api/health",
    ]


def login(session: requests.Session, base: str) -> None:
    """Log in through the dashboard's form (the CSRF token is read from the page)."""
    form = session.get(f"{base}/login", timeout=30)
    match = re.search(r'name="csrf_token"\s+value="([^"]+)"', form.text) or re.search(
        r'value="([^"]+)"\s+name="csrf_token"', form.text
    )
    data = {"token": TOKEN}
    if match:
        data["csrf_token"] = match.group(1)
    session.post(f"{base}/login", data=data, timeout=30, allow_redirects=False)


def measure(base: str, paths: list[str], count: int) -> list[tuple[str, int, float, float]]:
    browser = requests.Session()
    login(browser, base)
    api = requests.Session()
    api.headers["Authorization"] = f"Bearer {TOKEN}"
    results = []
    for path in paths:
        client = api if path.startswith("/api/") else browser
        times: list[float] = []
        status = 0
        for _ in range(count):
            began = time.perf_counter()
            response = client.get(base + path, timeout=60)
            times.append((time.perf_counter() - began) * 1000)
            status = response.status_code
        times.sort()
        p95 = times[min(len(times) - 1, round(0.95 * (len(times) - 1)))]
        results.append((path, status, statistics.median(times), p95))
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--database-url", default="")
    parser.add_argument("--runs", type=int, default=10_000)
    parser.add_argument("--audit", type=int, default=1_000_000)
    parser.add_argument("--quarantined", type=int, default=100_000)
    parser.add_argument("--requests", type=int, default=40)
    args = parser.parse_args()
    logging.getLogger("meterfix").setLevel(logging.ERROR)
    logging.getLogger("werkzeug").setLevel(logging.ERROR)

    from service.app import create_app
    from service.config import Settings
    from service.db import make_engine, upgrade

    with tempfile.TemporaryDirectory(prefix="mfx-pages-") as tmp:
        url = args.database_url or f"sqlite:///{Path(tmp) / 'pages.db'}"
        upgrade(url)
        engine = make_engine(url)
        ids = seed(engine, args.runs, args.audit, args.quarantined)
        engine.dispose()
        settings = Settings(
            _env_file=None,  # type: ignore[call-arg]
            database_url=url,
            bucket_url=f"file://{tmp}/bucket",
            stripe_api_key="sk_test_bench",
            stripe_webhook_secrets=["whsec_test_bench"],
            mfx_admin_token=TOKEN,
            mfx_work_dir=f"{tmp}/work",
        )
        app = create_app(settings)
        server = make_server("127.0.0.1", 0, app, threaded=False)
        thread = threading.Thread(target=server.serve_forever, daemon=True)
        thread.start()
        try:
            results = measure(f"http://127.0.0.1:{server.server_port}", pages(ids), args.requests)
        finally:
            server.shutdown()
        app.extensions["meterfix"].close()
    dialect = "postgresql" if url.startswith("postgresql") else "sqlite"
    print(
        f"\n{dialect}: {args.runs:,} runs, {args.audit:,} audit rows, "
        f"{args.quarantined:,} quarantined rows; {args.requests} requests per page"
    )
    print(f"{'page':<60} {'status':>6} {'p50 ms':>8} {'p95 ms':>8}")
    worst = 0.0
    for path, status, p50, p95 in results:
        worst = max(worst, p95)
        print(f"{path:<60} {status:>6} {p50:>8.1f} {p95:>8.1f}")
    verdict = "met" if worst < 300 and all(r[1] == 200 for r in results) else "NOT met"
    print(f"worst p95 {worst:.1f} ms (target < 300 ms): {verdict}")


if __name__ == "__main__":
    main()
