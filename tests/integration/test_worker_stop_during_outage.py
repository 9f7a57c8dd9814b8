"""`meterfix worker` (MFX_POLLER=on) stopped by SIGTERM while every batch of its bundled
poller's import is retrying through a Stripe outage (the stream answers 503): the sink takes
the stop and cuts its backoffs short, the worker exits within a second or two, and the next
worker sends every row once. A real worker process, the sandbox over HTTP."""

# ruff: noqa: F811  (fixtures imported from the module that defines them)
from __future__ import annotations

import os
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from remediation.poller import index_chunks
from sandbox.client import SandboxAdmin
from service.config import Settings
from service.poller import pass_objects
from service.poller.passes import run_poll_pass
from tests.conftest import SandboxServer
from tests.integration.test_poller import Harness, _rows, settings  # noqa: F401
from tests.integration.test_worker_stop_mid_import import (  # noqa: F401
    HEADER,
    STREAM,
    _env,
    _finish_with_the_next_worker,
    _kill,
    _object_status,
    _poller_beats,
    _start,
    _stop,
    _wait_for,
    paced_url,
)

ROWS = 2_000  # 20 batches: 16 in flight, all backing off


def _put(tmp_path: Path) -> set[str]:
    bucket = tmp_path / "bucket"
    bucket.mkdir()
    ts = int(time.time()) - 60
    ids = [f"o-{i}" for i in range(ROWS)]
    body = "".join(f"{ident},{ts},api_requests,cus_A,1\n" for ident in ids)
    (bucket / "outage.csv").write_text(HEADER + body)
    old = time.time() - 600  # settled: the poller takes it at once
    os.utime(bucket / "outage.csv", (old, old))
    return set(ids)


def _stream_requests(admin: SandboxAdmin) -> int:
    return sum(1 for r in admin.requests() if r["path"] == STREAM)


def test_sigterm_while_batches_retry_through_an_outage_stops_at_once(
    db_url: str, sandbox_server: SandboxServer, paced_url: str, tmp_path: Path
) -> None:
    """README (Liveness): "Ctrl-C or SIGTERM stops a worker within a second or two even
    mid-item". Instead: the pass saw the stop only when a batch in flight finished, each
    backing off through the outage for up to a minute: the supervisor killed the worker 10 s
    after SIGTERM (`worker.process_killed`)."""
    admin = sandbox_server.admin
    admin.create_meter("api_requests")
    ids = _put(tmp_path)
    admin.inject_fault("POST", STREAM, 503, count=-1)
    env = _env(db_url, sandbox_server, paced_url, tmp_path)
    first_log = tmp_path / "first.log"
    worker = _start(env, tmp_path, first_log)
    try:
        # each of the 8 batches being sent at its fifth attempt: backoffs of 4-16 s
        _wait_for(lambda: _stream_requests(admin) >= 40, 40, "the batches to be backing off")
    except BaseException:
        _kill(worker)
        raise
    log, took = _stop(worker, first_log)
    assert took < 4, f"the worker took {took:.1f} s to stop mid-outage"
    assert "poller.import_stopped" in log, log[-2000:]
    assert _object_status(db_url) == "seen"  # stopped part-way: neither failed nor imported
    assert [beat.get("doing") for beat in _poller_beats(db_url)] == ["stopped"]
    assert admin.meter_events() == []

    admin.clear_faults()
    _finish_with_the_next_worker(db_url, env, tmp_path)
    accepted = [e["identifier"] for e in admin.meter_events()]
    assert len(accepted) == ROWS and set(accepted) == ids  # every row, each once


def test_a_stop_mid_index_leaves_the_file_to_the_next_pass(
    settings: Settings,
    sandbox_server: SandboxServer,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """MFX_POLLER=index: a stop (SIGTERM) while one long file is indexed is seen at the next
    chunk of rows. Instead: the file was indexed to its end (minutes for a large one) before
    the pass looked at the stop again."""
    h = Harness(settings.model_copy(update={"mfx_poller": "index"}), tmp_path)
    h.deps.sink, h.deps.meters = None, None
    stop = h.deps.stop = threading.Event()
    h.put("big.csv", HEADER + _rows("b", 5000), tmp_path)

    def stopped_after_the_first(*args: Any, **kwargs: Any) -> Iterator[Any]:
        for number, refs in enumerate(index_chunks(*args, **kwargs)):
            if number == 1:
                stop.set()
            yield refs

    monkeypatch.setattr(pass_objects, "index_chunks", stopped_after_the_first)
    report = run_poll_pass(h.deps)
    assert (report.stopped, report.indexed) == (True, 0)
    assert h.objects()["big.csv"].status == "seen"
    assert len(h.imported()) == 1000  # the first chunk, before the stop
    monkeypatch.undo()
    h.deps.stop = None
    again = run_poll_pass(h.deps)
    assert (again.indexed, again.rows) == (1, 5000)
    assert sorted(r.identifier for r in h.imported()) == sorted(f"b-{i}" for i in range(5000))
    assert h.objects()["big.csv"].status == "indexed"
    h.engine.dispose()
