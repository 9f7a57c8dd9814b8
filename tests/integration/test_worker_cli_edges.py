# ruff: noqa: F811  (the `gate` fixture imported from the module that defines it)
"""The worker and the CLI at their edges: a bad rules file at start, Ctrl-C in `--once`, and
arguments out of range, each a clear line, never a traceback or a silent failure. Each test
failed on the code before its fix (the docstrings say what went wrong)."""

from __future__ import annotations

import os
import signal
import subprocess
from pathlib import Path
from typing import Any

import pytest

from service.models.inbox import InboxStatus
from tests.integration.intake_helpers import inbox_rows
from tests.integration.test_worker_process import (  # noqa: F401  (the `gate` fixture)
    MFX,
    _deliver,
    _env,
    gate,
)
from tests.integration.test_worker_process import _run as _cli


def _file_env(tmp_path: Path, db_url: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("STRIPE_", "MFX_"))}
    env.update(DATABASE_URL=db_url, BUCKET_URL=f"file://{tmp_path / 'bucket'}")
    return env


def test_once_ctrl_c_mid_item_hands_the_item_back(
    db_url: str, sandbox_server: Any, gate: Any, make_settings: Any, make_app: Any, tmp_path: Path
) -> None:
    """README (Liveness): "Ctrl-C or SIGTERM stops a worker within a second or two even
    mid-item: the item is handed back and taken at once by the next worker." `meterfix worker
    --once` (the README's one pass, for cron, tests and debugging) installs no signal
    handler: Ctrl-C mid-item leaves the row `processing`, locked by a dead process for the
    whole lease (30 s) with the attempt counted, and a SIGTERM (cron's timeout) the same;
    each interrupted pass brings the item one attempt nearer to being dead-lettered."""
    gated, gate_url = gate
    _deliver(sandbox_server, db_url, make_settings, make_app)
    env = _env(db_url, sandbox_server, gate_url)  # the default lease (30 s)
    worker = subprocess.Popen(
        [MFX, "worker", "--once"],
        env=env,
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert gated.entered.wait(30), "the worker never fetched the event"
        worker.send_signal(signal.SIGINT)
        _, stderr = worker.communicate(timeout=15)
    finally:
        worker.kill()
        worker.wait(10)
    assert "Traceback" not in stderr
    [row] = inbox_rows(db_url)
    assert (row.status, row.attempts, row.locked_by) == (InboxStatus.PENDING, 0, None)


def test_demo_name_with_a_folder_is_one_clear_line(sqlite_url: str, tmp_path: Path) -> None:
    """README: "Every command exits non-zero with one clear line on failure." `meterfix demo
    --name day/usage.csv` (a bucket key under a folder, as producers write them) dies with a
    FileNotFoundError traceback: the file is first written to a temporary directory under that
    name, outside the error handling, and the folder does not exist there."""
    (tmp_path / "bucket").mkdir()  # as `make run` makes it
    result = _cli(
        ["demo", "--name", "incoming/demo.csv"], _file_env(tmp_path, sqlite_url), tmp_path
    )
    assert "Traceback" not in result.stderr, result.stderr
    assert result.returncode == 0, result.stderr
    written = (tmp_path / "bucket" / "incoming" / "demo.csv").read_text().splitlines()
    assert len(written) == 9 and written[0].startswith("identifier,")  # a header, 8 rows
    refused = _cli(["demo", "--name", "../x.csv"], _file_env(tmp_path, sqlite_url), tmp_path)
    assert refused.returncode != 0 and "a key inside the bucket" in refused.stderr
    assert "Traceback" not in refused.stderr


def test_digest_since_a_very_long_window_is_one_clear_line(sqlite_url: str, tmp_path: Path) -> None:
    """README: "Every command exits non-zero with one clear line on failure." `meterfix digest
    --since 999999999d --dry-run` passes the duration check (at most 9 digits) and then dies
    with an OverflowError traceback computing the window's start before year 1."""
    result = _cli(
        ["digest", "--dry-run", "--since", "999999999d"], _file_env(tmp_path, sqlite_url), tmp_path
    )
    assert "Traceback" not in result.stderr, result.stderr[-500:]
    assert result.returncode != 0 and "the window would start before year 1" in result.stderr


def test_serve_refuses_a_port_past_65535(sqlite_url: str, tmp_path: Path) -> None:
    """README: "Every command exits non-zero with one clear line on failure." `meterfix serve
    --port 99999` is taken as is (`--port` is a bare int): it prints "Dashboard:
    http://127.0.0.1:99999/login" and serves on port 34463 (99999 modulo 65536) instead of
    refusing the argument, so the dashboard and webhooks are not where it says they are."""
    env = _file_env(tmp_path, sqlite_url)
    with subprocess.Popen(
        [MFX, "serve", "--port", "99999"],
        env=env,
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    ) as server:
        try:
            _, stderr = server.communicate(timeout=15)
        except subprocess.TimeoutExpired:
            server.kill()
            _, stderr = server.communicate()
            pytest.fail(f"serve --port 99999 kept running: {stderr[-400:]}")
    assert server.returncode != 0
    assert "Traceback" not in stderr and "99999" in stderr


def test_worker_with_an_unreadable_rules_file_does_not_run_a_dead_poller_silently(
    db_url: str, sandbox_server: Any, tmp_path: Path
) -> None:
    """README: "Every command exits non-zero with one clear line on failure"; the poller is
    alerted on when it stops beating, but "a role that never beat is not alerted on".
    `meterfix worker` with MFX_POLLER=on and a rules file with a TOML mistake (an operator's
    edit, then a restart) starts and keeps running: its poller thread dies at once with a
    traceback (`build_poller_deps` reads `runtime.rules` outside `poll_forever`'s loop edge),
    is never restarted, never beats, so no silence alert is ever raised; no usage file is
    imported for as long as the worker runs. (`meterfix poll` with the same file says
    "cannot poll: ..." and exits 1.)"""
    from sqlalchemy import select as sa_select

    from service.db import make_engine
    from service.models._types import table_of
    from service.models.health import Heartbeat

    rules = tmp_path / "rules.toml"
    rules.write_text("[policy\nfuture_skew_seconds = 60\n")  # an unclosed table header
    (tmp_path / "bucket").mkdir()
    env = _env(
        db_url,
        sandbox_server,
        sandbox_server.url,
        BUCKET_URL=f"file://{tmp_path / 'bucket'}",
        MFX_POLLER="on",
        MFX_POLL_INTERVAL="1",
        MFX_RULES=str(rules),
        MFX_WORK_DIR=str(tmp_path / "work"),
    )
    worker = subprocess.Popen(
        [MFX, "worker"],
        env=env,
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        try:
            _, stderr = worker.communicate(timeout=10)
        except subprocess.TimeoutExpired:
            worker.send_signal(signal.SIGINT)
            _, stderr = worker.communicate(timeout=20)
            engine = make_engine(db_url)
            with engine.connect() as connection:
                roles = set(connection.execute(sa_select(table_of(Heartbeat).c.role)).scalars())
            engine.dispose()
            assert "poller" in roles, (
                "the worker ran 10 s with MFX_POLLER=on and its poller never beat: "
                + stderr[stderr.find("Exception in thread") :][:300]
            )
        else:
            assert worker.returncode != 0 and "Traceback" not in stderr, stderr[-500:]
    finally:
        worker.kill()
        worker.wait(10)
