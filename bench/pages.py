"""Dashboard and admin API page times at scale (target: every page's p95 under 300 ms).

    .venv/bin/python bench/pages.py [--database-url URL] [--runs 10000] [--audit 1000000]
                                    [--quarantined 100000] [--requests 40]
                                    [--run-corrections 1000000]

Seeds a fresh database (SQLite file by default, or the PostgreSQL database/schema given) with
`--runs` remediation runs, `--audit` correction-audit rows and `--quarantined` quarantined rows
shaped as the service writes them, with their inputs, objects, events, alerts and admin actions
(see `bench/pages_seed.py`), and one more run of `--run-corrections` corrections (besides
`--audit`'s), whose corrections pages are measured. Then serves the real app on a loopback
port (werkzeug, one process, one request at a time), logs in through the login form (CSRF
token read from it), and requests every dashboard page and API endpoint: one untimed warm-up
round, then `--requests` rounds, each round every page once (so a page's requests spread over
the whole measurement).
Meanwhile a background writer does what a live service does: a worker and a poller heartbeat
every 10 s and a new run (with its audit, quarantined rows and objects) every 15 s (the
seeded history has one every 4 minutes), so the overview's recent sums and its charts change
while it is measured and its charts are drawn again, as they would be.

Every answer must be 200 with the page's real content (rows in a list, a run's objects, JSON
data); otherwise a warning is printed and the verdict fails. A PostgreSQL URL is used as given:
point it at an empty database or schema (e.g. `...?options=-csearch_path%3Dbench`); the bench
migrates it.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import logging
import os
import re
import statistics
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import requests
from pages_seed import Plan, Seeder, live_run, seed
from sqlalchemy import Engine
from werkzeug.serving import make_server

TOKEN = "bench-admin-token-0123456789abcdef"
TARGET_MS = 300.0


@dataclass(frozen=True)
class Page:
    path: str
    check: Callable[[requests.Response], str | None]  # None when the content is right
    label: str = ""  # how the page is listed (the path when empty)
    prepare: Callable[[], None] | None = None  # done before each request, not timed

    @property
    def name(self) -> str:
        return self.label or self.path


def html(*markers: str, rows: str | None = None) -> Callable[[requests.Response], str | None]:
    """A dashboard page: its markers present, at least one `rows` marker (a list not empty)."""

    def check(response: requests.Response) -> str | None:
        body = response.text
        if "login-form" in body:
            return "the login page came back (not logged in)"
        missing = [m for m in markers if m not in body]
        if missing:
            return f"missing {missing}"
        if rows is not None and f'data-testid="{rows}"' not in body:
            return f"no {rows} in the page"
        return None

    return check


def listing(min_rows: int = 1) -> Callable[[requests.Response], str | None]:
    def check(response: requests.Response) -> str | None:
        data = response.json()
        if not isinstance(data.get("data"), list) or len(data["data"]) < min_rows:
            return f"fewer than {min_rows} items in data"
        return None

    return check


def has(*keys: str) -> Callable[[requests.Response], str | None]:
    def check(response: requests.Response) -> str | None:
        data = response.json()
        empty = [key for key in keys if not data.get(key)]
        return f"empty or missing {empty}" if empty else None

    return check


def csv_rows(response: requests.Response) -> str | None:
    rows = list(csv.reader(io.StringIO(response.text)))
    return None if len(rows) > 1 and rows[0][0] == "id" else "no rows in the CSV"


def pages(plan: Plan, overview_state: OverviewState) -> list[Page]:
    runs = plan.run_of_kind
    run = runs["import_set"]
    code, rare, meter, customer = plan.busy_code, plan.rare_code, plan.meter, plan.customer
    today = datetime.now(UTC).date()
    since, until = (today - timedelta(days=7)).isoformat(), (today - timedelta(days=6)).isoformat()
    middle_q = (plan.quarantine_ids[0] + plan.quarantine_ids[1]) // 2
    table = 'data-testid="quarantine-table"'
    return [
        # The cold case first: its setup drops the kept sums and charts, and the pages after
        # it draw them again, so the plain pages at the end of the five are warm.
        Page(
            "/",
            html("<svg"),
            "/ cold (a process's first view: 30 days of codes summed, charts drawn)",
            overview_state.forget,
        ),
        Page(
            "/",
            html("<svg"),
            "/ just after a run finished (its day's codes summed, charts drawn)",
            overview_state.new_run,
        ),
        Page("/?by=hour", html("<svg"), "/?by=hour just after a run finished"),  # the same run
        Page("/", html('data-testid="chart-rows"', "<svg", 'data-testid="worker-health"')),
        Page("/?by=hour", html('data-testid="chart-codes"', "<svg")),
        Page("/runs", html('data-testid="runs-table"', rows="run-row")),
        Page(f"/runs?cursor={plan.runs // 2}", html(rows="run-row")),
        Page("/runs?view=import_sets", html(rows="import-set-row")),
        Page("/runs?view=reports", html(rows="report-row")),
        *[
            Page(f"/runs/{runs[kind]}", html('data-testid="run-input-detail"', rows="output-row"))
            for kind in ("import_set", "poller", "error_report", "quarantine_rerun")
        ],
        Page("/quarantine", html(table, rows="quarantine-row")),
        Page(f"/quarantine?code={code}&meter={meter}", html(rows="quarantine-row")),
        Page(f"/quarantine?code={rare}", html(rows="quarantine-row")),
        Page(f"/quarantine?code={rare}&meter=egress_gb&customer={customer}", html(table)),
        Page(f"/quarantine?customer={customer}", html(rows="quarantine-row")),
        Page(f"/quarantine?run={run}", html(rows="quarantine-row")),
        Page(f"/quarantine?since={since}&until={until}", html(rows="quarantine-row")),
        Page(f"/quarantine?cursor={middle_q}", html(rows="quarantine-row")),
        Page("/events", html(rows="event-row")),
        Page("/events?status=dead", html(rows="event-row")),
        Page("/events?status=pending", html(rows="event-row")),
        Page("/alerts", html(rows="alert-row")),
        Page("/alerts?status=open", html(rows="alert-row")),
        Page("/alerts?status=resolved&severity=critical", html(rows="alert-row")),
        Page("/api/alerts", listing()),
        Page("/api/alerts?status=open", listing()),
        Page("/api/runs", listing()),
        Page("/api/runs?limit=500", listing(500)),
        Page(f"/api/runs/{runs['error_report']}", has("inputs", "outputs", "by_code")),
        Page("/api/quarantine", listing()),
        Page("/api/quarantine?limit=500", listing(500)),
        Page(f"/api/quarantine?code={code}&meter={meter}&since={since}", listing()),
        Page(f"/api/quarantine?customer={customer}", listing()),
        Page(f"/api/quarantine?run={run}", listing()),
        Page(f"/api/quarantine?code={rare}&until={until}", listing()),
        Page(f"/api/quarantine.csv?run={run}", csv_rows),
        *corrections_pages(plan),
        Page("/api/events", listing()),
        Page("/api/events?status=dead", listing()),
        Page("/api/health", has("heartbeats", "worker_heartbeat_age_seconds")),
    ]


def corrections_pages(plan: Plan) -> list[Page]:
    """The corrections of the big run (`--run-corrections`): its first page, one halfway, a
    rare code (a filtered page reads the run's rows up to its bound), an identifier, and the
    first page of its rows without an identifier."""
    if not plan.big_run:
        return []
    base, middle = f"/runs/{plan.big_run}/corrections", plan.big_run_middle
    row = "correction-row"
    return [
        Page(base, html('data-testid="corrections-table"', rows=row)),
        Page(f"{base}?cursor={middle}", html(rows=row)),
        Page(f"{base}?code=archived_meter", html(rows=row)),
        Page(f"{base}?code=no_meter&cursor={middle}", html(rows=row)),
        Page(f"/api{base}", listing()),
        Page(f"/api{base}?limit=500&cursor={middle}", listing(500)),
        Page(f"/api{base}?code=archived_meter&cursor={middle}", listing()),
        Page(f"/api{base}?rule=meter_successor", listing(0)),
        Page(f"/api{base}?identifier={plan.big_run_identifier}", listing()),
        Page(
            f"/api{base}?cursor={plan.big_run_last_named}",
            listing(),
            f"/api{base}?cursor=<last with an identifier>",
        ),
    ]


def login(session: requests.Session, base: str) -> None:
    """Log in through the dashboard's form, with the CSRF token read from it; fails loudly."""
    form = session.get(f"{base}/login", timeout=30)
    field = re.search(r'<input[^>]*name="csrf_token"[^>]*>', form.text)
    value = re.search(r'value="([^"]+)"', field.group(0)) if field else None
    if value is None:
        raise SystemExit("bench: no CSRF token in the login form")
    answer = session.post(
        f"{base}/login",
        data={"token": TOKEN, "csrf_token": value.group(1), "next": "/"},
        timeout=30,
        allow_redirects=False,
    )
    if answer.status_code != 302 or "meterfix_session" not in session.cookies:
        raise SystemExit(f"bench: login failed ({answer.status_code})")


def measure(base: str, paths: list[Page], rounds: int) -> dict[str, list[float]]:
    """One warm-up round (checked, not timed), then `rounds` rounds of every page once."""
    browser = requests.Session()
    login(browser, base)
    api = requests.Session()
    api.headers["Authorization"] = f"Bearer {TOKEN}"
    times: dict[str, list[float]] = {page.name: [] for page in paths}
    problems: dict[str, str] = {}
    for number in range(rounds + 1):
        for page in paths:
            client = api if page.path.startswith("/api/") else browser
            if page.prepare is not None:
                page.prepare()
            began = time.perf_counter()
            response = client.get(base + page.path, timeout=60, allow_redirects=False)
            took = (time.perf_counter() - began) * 1000
            if number:
                times[page.name].append(took)
            problem = _problem(page, response)
            if problem and page.name not in problems:
                problems[page.name] = problem
                print(f"WARNING {page.name}: {problem}")
    return {path: (values if path not in problems else []) for path, values in times.items()}


def _problem(page: Page, response: requests.Response) -> str | None:
    if response.status_code != 200:
        return f"HTTP {response.status_code} {response.headers.get('Location', '')}".strip()
    try:
        return page.check(response)
    except (ValueError, KeyError, json.JSONDecodeError) as exc:
        return f"unreadable answer: {exc}"


class OverviewState:
    """The overview's two costly cases, set up before a request: a run that just finished
    (its bucket's codes summed again, both charts drawn again), and a process's first view
    (every bucket's codes summed, the charts drawn)."""

    def __init__(self, engine: Engine, first_run: int) -> None:
        import random

        self.seeder = Seeder(engine, random.Random(13), datetime.now(UTC))
        self.next_run = first_run

    def new_run(self) -> None:
        live_run(self.seeder, self.next_run)
        self.next_run += 1

    def forget(self) -> None:
        from service.web import charts, overview

        for key in [key for key in overview._KEPT if key[1] is overview.Bucket.DAY]:
            del overview._KEPT[key]
        charts._rows_svg.cache_clear()
        charts._codes_svg.cache_clear()


class LiveService(threading.Thread):
    """Heartbeats every 10 s and a new run every 15 s, as a running worker and poller would."""

    def __init__(self, engine: Engine, next_run: int) -> None:
        super().__init__(daemon=True)
        import random

        self.engine, self.next_run, self.stop = engine, next_run, threading.Event()
        self.seeder = Seeder(engine, random.Random(11), datetime.now(UTC))
        self.runs = 0

    def run(self) -> None:
        from service.worker.heartbeats import beat

        last_beat, last_run = 0.0, time.monotonic()
        while True:
            now = time.monotonic()
            if now - last_beat >= 10:
                for instance, role in (("bench-worker-0", "worker"), ("bench-poller-0", "poller")):
                    beat(self.engine, instance, role, {"state": "idle"})
                last_beat = now
            if now - last_run >= 15:
                live_run(self.seeder, self.next_run)
                self.next_run, self.runs, last_run = self.next_run + 1, self.runs + 1, now
            if self.stop.wait(1):
                return


def report(
    dialect: str,
    args: argparse.Namespace,
    results: dict[str, list[float]],
    load: tuple[tuple[float, ...], tuple[float, ...]],
    live_runs: int,
) -> bool:
    print(
        f"\n{dialect}: {args.runs:,} runs, {args.audit:,} audit rows, "
        f"{args.quarantined:,} quarantined rows; {args.requests} timed requests per page "
        f"(after one warm-up), {live_runs} runs added meanwhile"
    )
    print(
        f"load average before {'/'.join(f'{x:.1f}' for x in load[0])}, after "
        f"{'/'.join(f'{x:.1f}' for x in load[1])} (1/5/15 min; {os.cpu_count()} cores)"
    )
    print(f"{'page':<66} {'p50 ms':>8} {'p95 ms':>8} {'max ms':>8}")
    worst, ok = 0.0, True
    for path, times in results.items():
        if not times:
            ok = False
            print(f"{path:<66} {'failed':>8} {'failed':>8} {'failed':>8}")
            continue
        times.sort()
        p95 = times[min(len(times) - 1, round(0.95 * (len(times) - 1)))]
        worst = max(worst, p95)
        flag = "  <- over target" if p95 >= TARGET_MS else ""
        print(f"{path:<66} {statistics.median(times):>8.1f} {p95:>8.1f} {times[-1]:>8.1f}{flag}")
    met = ok and worst < TARGET_MS
    print(f"worst p95 {worst:.1f} ms (target < {TARGET_MS:.0f} ms): {'met' if met else 'NOT met'}")
    return met


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--database-url", default="")
    parser.add_argument("--runs", type=int, default=10_000)
    parser.add_argument("--audit", type=int, default=1_000_000)
    parser.add_argument("--quarantined", type=int, default=100_000)
    parser.add_argument("--requests", type=int, default=40)
    parser.add_argument("--run-corrections", type=int, default=1_000_000)
    args = parser.parse_args()
    logging.getLogger("meterfix").setLevel(logging.ERROR)
    logging.getLogger("werkzeug").setLevel(logging.ERROR)

    from service.app import create_app
    from service.config import Settings
    from service.db import make_engine
    from service.db.migrate import upgrade

    with tempfile.TemporaryDirectory(prefix="mfx-pages-") as tmp:
        url = args.database_url or f"sqlite:///{Path(tmp) / 'pages.db'}"
        upgrade(url)
        engine = make_engine(url)
        plan = seed(engine, args.runs, args.audit, args.quarantined, args.run_corrections)
        settings = Settings(
            _env_file=None,  # type: ignore[call-arg]
            database_url=url,
            bucket_url=f"file://{tmp}/bucket",
            stripe_api_key="sk_test_bench",
            stripe_webhook_secrets=["whsec_test_bench"],
            mfx_admin_token=TOKEN,
            mfx_work_dir=f"{tmp}/work",
            mfx_poller="on",
        )
        app = create_app(settings)
        server = make_server("127.0.0.1", 0, app, threaded=False)
        thread = threading.Thread(target=server.serve_forever, daemon=True)
        thread.start()
        live = LiveService(engine, args.runs + 1)
        live.start()
        before = os.getloadavg()
        try:
            base = f"http://127.0.0.1:{server.server_port}"
            state = OverviewState(engine, args.runs + 100_000)
            results = measure(base, pages(plan, state), args.requests)
        finally:
            after = os.getloadavg()
            live.stop.set()
            live.join()
            server.shutdown()
        app.extensions["meterfix"].close()
        engine.dispose()
    dialect = "postgresql" if url.startswith("postgresql") else "sqlite"
    met = report(dialect, args, results, (before, after), live.runs)
    raise SystemExit(0 if met else 1)


if __name__ == "__main__":
    main()
