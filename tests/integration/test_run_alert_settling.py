"""When a run's alert is settled once its quarantined rows are taken again (`run:<run key>`,
`service.notify.runs`): the bundled poller marking a re-upload's rows batch after batch counts
the run's rows once per import, not once a batch; in index mode, once per version indexed; an
alert resolved by hand is never reopened; a crash between a marking and its settle (or between
raising a run's alert and settling it) is caught up by the hourly sweep of open run alerts.
Real parts: moto S3, the sandbox (Stripe and its connector), the worker; SQLite and
PostgreSQL."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from flask import Flask
from sqlalchemy import Engine, event
from sqlmodel import Session, col, select

from service.config import Settings
from service.db import make_engine
from service.jobs.store.taken_again import mark_rows_taken_again
from service.models import QuarantinedRow, RemediationRun
from service.notify.runs import alert_for_run_again, settle_open_run_alerts
from service.notify.schedule import NotifyJobs
from service.poller.passes import build_poller_deps, run_poll_pass
from service.runtime import Runtime
from tests.conftest import SandboxServer
from tests.integration.test_billing_safety import (  # noqa: F401 (`loop`: a fixture)
    bundled_poller,
    loop,
    reported,
    usage_csv,
)
from tests.integration.test_e2e import Loop, _put
from tests.integration.test_refused_again_off_mode import (  # noqa: F401 (`index_loop`)
    _held,
    _reported_first_version,
    _rows,
    index_loop,
)
from tests.integration.test_refused_again_off_mode import _put as _put_usage
from tests.integration.test_rerun_run_alerts import (
    BEARER,
    FIRST_KEY,
    _alert,
    _first_run,
    _fix_rules,
    _rerun,
)
from tests.integration.test_web_rerun import _settings

GHOSTS = 250  # rows Stripe refuses: three of the poller's 100-event batches


@contextmanager
def _counted_runs(engine: Engine) -> Iterator[list[str]]:
    """The statements that count a run's quarantined rows (`run_takes`: grouped by re-run)
    while the block runs."""
    seen: list[str] = []

    def note(_conn: Any, _cursor: Any, statement: str, *_: Any) -> None:
        flat = " ".join(statement.split()).lower()
        if "from quarantined_rows" in flat and "group by quarantined_rows.rerun_id" in flat:
            seen.append(flat)

    event.listen(engine, "before_cursor_execute", note)
    try:
        yield seen
    finally:
        event.remove(engine, "before_cursor_execute", note)


def _run_alert_of(running: Loop, identifier: str) -> tuple[int, str]:
    """The run holding `identifier` in quarantine, and its alert's key."""
    with Session(running.engine) as session:
        [held] = session.exec(
            select(QuarantinedRow).where(QuarantinedRow.identifier == identifier)
        ).all()
        run = session.get(RemediationRun, held.run_id)
    assert run is not None and run.id is not None
    return run.id, f"run:{run.run_key}"


def test_a_re_upload_the_poller_sends_in_many_batches_counts_the_run_once(
    loop: Loop,  # noqa: F811 (the fixture imported above)
) -> None:
    """250 rows naming no meter (`legacy_calls`): the poller refuses them and a run over the
    file quarantines them. The customer fixes them by hand and uploads the file again: the
    poller sends them in three batches, marking each batch's rows taken again as Stripe
    acknowledges it. Each marking counted every row of the run again (`run_takes`: 90 ms a
    batch for a 100,000-row run, SQLite's write lock held meanwhile): now the run is counted
    once, after the import's last marking, and its alert resolved then."""
    now = int(time.time()) - 60
    rows = [[f"x{i:03d}", now, "legacy_calls", "cus_alice", "5"] for i in range(GHOSTS)]
    with bundled_poller(loop) as deps:
        _put(loop, "day.csv", usage_csv(rows))
        run_poll_pass(deps)  # none sent: no meter by that name
        loop.drain()  # the run of the poller's failed records quarantines them
        run_id, key = _run_alert_of(loop, "x000")
        assert _alert(loop.engine, key).subject.endswith(f"{GHOSTS} rows quarantined")
        fixed = [[*row[:2], "api_requests", *row[3:]] for row in rows]
        _put(loop, "day.csv", usage_csv(fixed))
        with _counted_runs(deps.engine) as counted:
            run_poll_pass(deps)
    assert sorted(loop.accepted()) == [str(row[0]) for row in rows]  # each once, as fixed
    assert len(counted) == 1 and "quarantined_rows.run_id = " in counted[0], counted
    with Session(loop.engine) as session:
        held = session.exec(select(QuarantinedRow).where(QuarantinedRow.run_id == run_id)).all()
    assert len(held) == GHOSTS and all(row.taken_again for row in held)
    alert = _alert(loop.engine, key)
    assert (alert.status, alert.count) == ("resolved", 1)
    assert alert.subject.endswith(f"{GHOSTS} rows quarantined; all {GHOSTS} taken again")
    assert alert.message.endswith(
        f"\nTaken again since: {GHOSTS} of its {GHOSTS} quarantined rows, by a later version "
        f"of their file or another take ({GHOSTS} rows, marked); none waiting."
    ), alert.message


def test_a_version_indexed_with_a_row_fixed_by_hand_resolves_the_run_alert(
    index_loop: Loop,  # noqa: F811 (the fixture imported above)
) -> None:
    """Index mode: an error report's run quarantined x1 (a customer nobody maps); the
    customer fixes it by hand and uploads the file again; the poller indexes the version
    (Stripe's connector takes it whole: x1 billed as fixed) and marks x1 taken again. The
    report run's alert said "1 row quarantined" still: resolved now, once the version is
    indexed, its run counted once."""
    loop = index_loop  # noqa: F811 (the other fixture's name, not used here)
    now = _reported_first_version(loop, {"customer": "ghost-9"})
    [(_, _, _, run_key)] = _held(loop)
    key = f"run:{run_key}"
    assert _alert(loop.engine, key).status == "open"
    time.sleep(1.1)  # S3 stamps whole seconds: the version comes after the row's quarantine
    _put_usage(loop, _rows(now, {}, "n1"))
    runtime = Runtime(loop.settings)
    try:
        deps = build_poller_deps(runtime)
        with _counted_runs(deps.engine) as counted:
            assert run_poll_pass(deps).indexed  # and our corrected object of c1
    finally:
        runtime.close()
    [(identifier, _, taken, _)] = _held(loop)
    assert identifier == "x1" and str(taken).startswith("usage/usage.csv (ETag "), taken
    assert len(counted) == 1, counted
    alert = _alert(loop.engine, key)
    assert (alert.status, alert.count) == ("resolved", 1)
    assert alert.subject.endswith("1 row quarantined; taken again"), alert.subject
    assert alert.message.endswith(
        "\nTaken again since: its quarantined row, by a later version of their file or "
        "another take (1 row, marked); none waiting."
    ), alert.message


def test_a_run_alert_resolved_by_hand_is_never_reopened_or_retold(
    sandbox_server: SandboxServer,
    db_url: str,
    tmp_path: Path,
    make_settings: Callable[..., Settings],
    make_app: Callable[[Settings], Flask],
) -> None:
    """The operator resolves the run's alert by hand; re-runs then take one of its rows and
    the rest, and the hourly sweep passes: it stays resolved as the operator left it (its
    subject and message as they were, no new occurrence)."""
    rules = tmp_path / "rules.toml"
    rules.write_text("[policy]\n")
    settings = _settings(make_settings, sandbox_server, db_url, mfx_rules=str(rules))
    engine = make_engine(db_url)
    first = _first_run(sandbox_server, settings, engine, tmp_path)
    _fix_rules(sandbox_server, settings)
    client = make_app(settings).test_client()
    before = _alert(engine, FIRST_KEY)
    answer = client.post(f"/api/alerts/{before.id}/resolve", headers=BEARER)
    assert answer.status_code == 200 and answer.get_json()["status"] == "resolved"
    resolved = _alert(engine, FIRST_KEY)
    one = _rerun(client, settings, engine, "code=no_meter")
    assert (one.input_rows, one.quarantined) == (1, 0)
    assert settle_open_run_alerts(engine) == 0
    _rerun(client, settings, engine, f"run={first.id}")
    assert settle_open_run_alerts(engine) == 0
    after = _alert(engine, FIRST_KEY)
    assert (after.status, after.subject, after.message, after.count) == (
        "resolved",
        f"run #{first.id} (import_set.succeeded): 3 rows quarantined",
        before.message,
        1,
    )
    assert after.resolved_at == resolved.resolved_at
    engine.dispose()


def test_rows_marked_without_their_settle_are_caught_up_by_the_hourly_sweep(
    sandbox_server: SandboxServer,
    db_url: str,
    tmp_path: Path,
    make_settings: Callable[..., Settings],
) -> None:
    """A crash between a task's marking (committed) and its settle, or between raising a
    run's alert and settling it (a retry finds the alert and raises nothing), left the alert
    open saying "3 rows quarantined" with rows taken: the retention job's sweep of open run
    alerts tells it (1 of 3 taken, then all 3: resolved); a sweep with nothing new writes
    nothing."""
    settings = _settings(make_settings, sandbox_server, db_url)
    engine = make_engine(db_url)
    first = _first_run(sandbox_server, settings, engine, tmp_path)
    with Session(engine) as session:
        ids = [
            int(row.id)  # type: ignore[arg-type]
            for row in session.exec(
                select(QuarantinedRow)
                .where(QuarantinedRow.run_id == first.id)
                .order_by(col(QuarantinedRow.id))
            )
        ]
    mark_rows_taken_again(engine, ids[:1], "day.csv (ETag e2), sent by the poller")
    assert _alert(engine, FIRST_KEY).subject.endswith("3 rows quarantined")
    alert_for_run_again(engine, settings, first)  # a retry: the alert exists, left as it is
    assert _alert(engine, FIRST_KEY).subject.endswith("3 rows quarantined")
    NotifyJobs(Runtime(settings, engine=engine), settings, [], "w").retention()  # the hourly job
    alert = _alert(engine, FIRST_KEY)
    assert (alert.status, alert.subject) == (
        "open",
        f"run #{first.id} (import_set.succeeded): 3 rows quarantined; "
        "1 of 3 taken again, 2 still waiting",
    )
    assert settle_open_run_alerts(engine) == 0  # nothing new: nothing written
    mark_rows_taken_again(engine, ids[1:], "day.csv (ETag e3), sent by the poller")
    assert settle_open_run_alerts(engine) == 1
    alert = _alert(engine, FIRST_KEY)
    assert (alert.status, alert.count) == ("resolved", 1)
    assert alert.subject.endswith("3 rows quarantined; all 3 taken again")
    assert alert.message.endswith(
        "\nTaken again since: 3 of its 3 quarantined rows, by a later version of their file "
        "or another take (3 rows, marked); none waiting."
    ), alert.message
    assert settle_open_run_alerts(engine) == 0
    engine.dispose()
