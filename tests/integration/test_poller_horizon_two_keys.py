"""The 23 h re-send horizon when the rows of one file were sent, never acknowledged, by two
other keys: each is named with its own batches, rows, first send and retry (the sandbox
through the real stripe SDK, a file:// bucket, SQLite, and PostgreSQL when
MFX_TEST_DATABASE_URL is set)."""

# ruff: noqa: F811  (fixtures imported from the module that defines them)
from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from sqlmodel import Session, col, select

from service.config import Settings
from service.models import Alert
from service.poller.passes import run_poll_pass
from tests.conftest import SandboxServer
from tests.integration.test_poller_billing_gaps import _one_worker
from tests.integration.test_poller_horizon_other_version import _lines
from tests.integration.test_poller_incidents import _pass_moved_by_its_backoffs
from tests.integration.test_poller_resume import (  # noqa: F401
    STREAM,
    _put,
    poller,
    settings,
)


def _answers_lost(
    settings: Settings, sandbox_server: SandboxServer, poller: Any, at: datetime, files: int
) -> None:
    """A pass at `at` whose every answer is lost (the batches land, never acknowledged)."""
    sandbox_server.admin.inject_fault("POST", STREAM, 500, count=-1, after=True)
    assert run_poll_pass(poller(_one_worker(settings), at=at)).retry_files == files
    sandbox_server.admin.clear_faults()


def test_rows_two_other_keys_sent_past_the_horizon_name_each_key(
    settings: Settings, sandbox_server: SandboxServer, poller: Any, tmp_path: Path
) -> None:
    """a.csv (10 rows) sent at t0 and b.csv (30 rows) at t0+30 min, every answer lost; a day's
    file holding both files' rows, at t0+23 h 45, sends nothing (right), but its error and
    alert said "2 unacknowledged batches of a.csv ... (40 rows)" first sent at t0, and told
    to retry a.csv alone: b.csv's rows counted as a.csv's, b.csv never named."""
    t0 = datetime.now(UTC).replace(second=0, microsecond=0) - timedelta(hours=23, minutes=50)
    t1 = t0 + timedelta(minutes=30)
    a, b = _lines("a", 10), _lines("b", 30)
    _put(settings, "a.csv", a, tmp_path)
    _answers_lost(settings, sandbox_server, poller, t0, files=1)
    _put(settings, "b.csv", b, tmp_path)
    _answers_lost(settings, sandbox_server, poller, t1, files=2)  # a.csv backing off too
    _put(settings, "day.csv", [*a, *b], tmp_path)
    deps, report = _pass_moved_by_its_backoffs(
        settings, poller, t0 + timedelta(hours=23, minutes=45)
    )
    [day] = [e for e in report.errors if e.startswith("day.csv:")]
    for key, rows, first in (("a.csv", 10, t0), ("b.csv", 30, t1)):
        assert (
            f"1 unacknowledged batches of {key} (ETag " in day
            and f"({rows} rows) were first sent at {first:%Y-%m-%d %H:%M} UTC "
            f"(`meterfix poll --retry {key} --yes` decides on them)"
            in day
        ), day
    assert "40 rows" not in day
    with Session(deps.engine) as session:
        [alert] = session.exec(
            select(Alert).where(col(Alert.alert_key).startswith("poller.gave_up:day.csv:"))
        ).all()
    assert alert.subject == (
        "day.csv: not sent: a.csv and b.csv sent rows of it in batches over 23 h old"
    )
    assert (
        "then run `meterfix poll --retry a.csv --yes` and `meterfix poll --retry b.csv --yes` "
        "(their unacknowledged batches count as never sent) and `meterfix poll --retry "
        "day.csv`" in alert.message
    ), alert.message
