"""A session lock's connection dropped while its holder worked (PostgreSQL restarted, an idle
timeout, `pg_terminate_backend`): PostgreSQL let the lock go with it, another process took it,
and the holder, which nothing told, did the same work as that one. The holder learns of it
(`HeldLock.check`, `HeldLock.fence`) and stops without committing; its item's retry finds
what the other did. PostgreSQL only: a SQLite file lock lives as long as the process."""

from __future__ import annotations

import csv
import io
import threading
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from sqlalchemy import Engine, text
from sqlmodel import select

from sandbox.events import build_error_report_event
from service.adapters.meter_events import StripeMeterEventSink
from service.config import Settings
from service.db import locks, make_engine
from service.db.locks import _LOCK_ID, LockLost, session_lock
from service.jobs import runs
from service.jobs.object_runs import OBJECT_RUN_LOCK_KEY
from service.jobs.quarantine_rerun import RERUN_LOCK_KEY
from service.jobs.store.quarantine_filter import QuarantineFilter
from service.models import (
    BucketObject,
    CorrectionAudit,
    ImportSet,
    InboxEvent,
    QuarantinedRow,
    RemediationRun,
)
from service.notify.leader import NOTIFY_LOCK_KEY, leading
from service.poller import importer
from service.poller.import_batches import CHUNKS_PER_GROUP
from service.poller.importer import import_object
from service.poller.lock import POLLER_LOCK_KEY, held_poller_lock, poller_lock
from service.poller.passes import PassReport, run_poll_pass
from service.poller.snapshot import take_snapshot
from service.web.actions import Actor, queue_rerun
from tests.integration.test_billing_safety import add_rules, bundled_poller, usage_csv
from tests.integration.test_e2e import Loop, _put, running_loop


@pytest.fixture
def loop(
    pg_url: str, s3_endpoint: str, tmp_path: Path, make_app: Callable[[Settings], Flask]
) -> Iterator[Loop]:
    with running_loop(pg_url, s3_endpoint, tmp_path, make_app) as running:
        yield running


def terminate_lock_holder(engine: Engine, seed: int, name: str = "") -> int:
    """`pg_terminate_backend` on the connection holding the session lock (`seed`, `name`) of
    the engine's schema, as a PostgreSQL restart or an idle timeout drops it; its pid."""
    with engine.connect() as connection:
        key = int(connection.execute(_LOCK_ID, {"seed": seed, "name": name}).scalar_one())
        found = connection.execute(
            text(
                "SELECT pid FROM pg_locks WHERE locktype = 'advisory' AND granted "
                "AND objsubid = 1 AND ((classid::int8 << 32) | objid::int8) = :key"
            ),
            {"key": key},
        ).all()
        assert len(found) == 1, f"one connection holds the lock, not {found}"
        pid = int(found[0][0])
        connection.execute(text("SELECT pg_terminate_backend(:pid)"), {"pid": pid})
        for _ in range(100):  # gone, and its locks with it
            alive = connection.execute(
                text("SELECT count(*) FROM pg_stat_activity WHERE pid = :pid"), {"pid": pid}
            ).scalar_one()
            connection.commit()
            if not alive:
                return pid
            time.sleep(0.05)
    raise AssertionError(f"backend {pid} still alive")


def put_unknown_customers(loop: Loop) -> None:
    """usage/day.csv: four rows (c1-c4) of a customer Stripe does not know (`nobody`)."""
    now = int(time.time())
    rows = [[f"c{i}", now - 60, "api_requests", "nobody", str(i)] for i in range(1, 5)]
    _put(loop, "day.csv", usage_csv(rows))


def quarantine_unknown_customers(loop: Loop) -> None:
    """The four rows of `put_unknown_customers` sent, refused by Stripe and quarantined; then
    their customer mapped (`cus_bob`), so that a re-run corrects them."""
    put_unknown_customers(loop)
    with bundled_poller(loop) as deps:
        run_poll_pass(deps)
    loop.sandbox_app.extensions["sandbox"].flush_reports()
    loop.drain()
    with loop.session() as session:
        assert len(session.exec(select(QuarantinedRow)).all()) == 4
    add_rules(loop, '"nobody" = "cus_bob"\n')


def pause_first_run(monkeypatch: pytest.MonkeyPatch) -> tuple[threading.Event, threading.Event]:
    """The next run pauses once remediated, before its uploads: (set when it pauses, set to
    let it go on); the runs after it do not."""
    worked, go_on = threading.Event(), threading.Event()
    remediate = runs._remediate_request

    def first_run_pauses(*args: Any, **kwargs: Any) -> Any:
        result = remediate(*args, **kwargs)
        if not worked.is_set():  # the first run only: the lock dropped while it works
            worked.set()
            assert go_on.wait(60)
        return result

    monkeypatch.setattr(runs, "_remediate_request", first_run_pauses)
    return worked, go_on


def due_now(engine: Engine) -> None:
    """The retries' time has come."""
    with engine.begin() as connection:
        connection.execute(
            text("UPDATE inbox_events SET next_attempt_at = :at WHERE status = 'pending'"),
            {"at": datetime.now(UTC) - timedelta(seconds=1)},
        )


def test_a_run_whose_object_lock_dropped_uploads_and_commits_nothing_and_its_retry_once(
    loop: Loop, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two error reports about the same rows of `day.csv`. While the first report's run
    worked, its lock's connection was terminated; the second report's run took the lock and
    corrected the rows. The first then went on: two runs over the object done, every
    correction audited twice, two corrected files of the same `<id>-mfx1` rows (Stripe's
    connector, importing them a day apart, bills them twice); the only sign an AdminShutdown
    at its unlock. Now the first run stops before its uploads (`LockLost`), commits nothing,
    and its retry leaves the rows the second corrected: one corrected file, one audit row a
    correction."""
    add_rules(loop, '"nobody" = "cus_bob"\n')
    worked, go_on = pause_first_run(monkeypatch)
    put_unknown_customers(loop)
    with bundled_poller(loop) as deps:
        run_poll_pass(deps)
        sandbox = loop.sandbox_app.extensions["sandbox"]
        assert len(sandbox.flush_reports()) == 1
        reports: dict[str, Any] = {}
        holder = threading.Thread(target=lambda: reports.update(first=loop.worker().drain()))
        holder.start()
        try:
            assert worked.wait(60), "the first report's run did not start"
            terminate_lock_holder(loop.engine, OBJECT_RUN_LOCK_KEY, "day.csv")
            meter = next(
                m["id"] for m in loop.sandbox.meters() if m["event_name"] == "api_requests"
            )
            code, message = "meter_event_customer_not_found", "No customer"
            again = build_error_report_event(meter, [(code, message, f"c{i}") for i in (4, 3, 2)])
            sandbox.deliver_to_webhook([sandbox.add_event(again)])
            second = loop.worker().drain()  # takes the lock the first run lost
            assert not second.failed, second.failed
        finally:
            go_on.set()
            holder.join(60)
        [(_, reason)] = reports["first"].retrying  # stopped, to be retried
        due_now(loop.engine)
        loop.drain()  # the first report's retry
        run_poll_pass(deps)  # the corrected rows
    with loop.session() as session:
        audit = session.exec(select(CorrectionAudit)).all()
        done = session.exec(select(RemediationRun)).all()
        tasks = session.exec(select(InboxEvent).where(InboxEvent.style == "task")).all()
    corrected = sorted(str(a.new_identifier) for a in audit if a.rule == "map_customer")
    assert corrected == [f"c{i}-mfx1" for i in range(1, 5)]
    assert sorted(r.corrected for r in done) == [0, 4], [(r.run_key, r.corrected) for r in done]
    assert {r.status for r in done} == {"done"}
    outputs = [key for key in loop.objects() if ".corrected." in key]
    assert len(outputs) == 1, outputs
    assert sorted(loop.accepted()) == [f"c{i}-mfx1" for i in range(1, 5)]
    assert {t.status for t in tasks} == {"done"}, [(t.event_type, t.status) for t in tasks]
    assert "was lost (its database connection dropped)" in reason, reason


def test_a_rerun_whose_lock_dropped_uploads_and_commits_nothing_and_its_retry_once(
    loop: Loop, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Four rows quarantined (a customer Stripe does not know); the operator maps it and
    clicks "Re-run" twice. While the first re-run worked, its lock's connection was
    terminated; the second re-run took the lock, picked the same rows (the first had not
    marked them taken) and corrected them. The first then went on: two corrected files of the
    same `<id>-mfx1` rows, each correction audited twice. Now the first stops before its
    uploads, and its retry finds the rows taken: one corrected file, one audit row each."""
    quarantine_unknown_customers(loop)
    with bundled_poller(loop) as deps:
        worked, go_on = pause_first_run(monkeypatch)
        queue_rerun(loop.engine, QuarantineFilter(), Actor("api", "127.0.0.1"))
        reports: dict[str, Any] = {}
        holder = threading.Thread(target=lambda: reports.update(first=loop.worker().drain()))
        holder.start()
        try:
            assert worked.wait(60), "the first re-run's run did not start"
            terminate_lock_holder(loop.engine, RERUN_LOCK_KEY)
            queue_rerun(loop.engine, QuarantineFilter(), Actor("api", "127.0.0.1"))
            second = loop.worker().drain()  # takes the lock the first re-run lost
            assert not second.failed, second.failed
        finally:
            go_on.set()
            holder.join(60)
        [(_, reason)] = reports["first"].retrying  # stopped, to be retried
        due_now(loop.engine)
        loop.drain()  # the first re-run's retry
        run_poll_pass(deps)  # the corrected rows
    with loop.session() as session:
        audit = session.exec(select(CorrectionAudit)).all()
        held = session.exec(select(QuarantinedRow)).all()
        tasks = session.exec(select(InboxEvent).where(InboxEvent.style == "task")).all()
    corrected = sorted(str(a.new_identifier) for a in audit if a.rule == "map_customer")
    assert corrected == [f"c{i}-mfx1" for i in range(1, 5)]
    assert len({q.rerun_id for q in held}) == 1, [(q.identifier, q.rerun_id) for q in held]
    outputs = [key for key in loop.objects() if ".corrected." in key]
    assert len(outputs) == 1, outputs
    assert sorted(loop.accepted()) == [f"c{i}-mfx1" for i in range(1, 5)]
    assert {t.status for t in tasks} == {"done"}, [(t.event_type, t.status) for t in tasks]
    assert "was lost (its database connection dropped)" in reason, reason


def test_a_notify_leader_whose_lock_dropped_learns_it_before_it_sends(pg_url: str) -> None:
    """The digest leader's lock dropped with its connection while it sent; another worker
    leads the next pass. The first learns it is no longer the leader before its next send."""
    engines = [make_engine(pg_url), make_engine(pg_url)]
    try:
        with leading(engines[0], ":meterfix.digest") as lock:
            assert lock and lock.held()
            lock.check()
            terminate_lock_holder(engines[0], NOTIFY_LOCK_KEY, ":meterfix.digest")
            with leading(engines[1], ":meterfix.digest") as other:
                assert other  # another worker leads now
            assert not lock.held()
            with pytest.raises(LockLost, match="was lost"):
                lock.check()
        with leading(engines[0], ":meterfix.digest") as again:  # let go: taken again
            assert again
    finally:
        for engine in engines:
            engine.dispose()


def test_a_lock_taken_over_waits_for_what_its_holder_before_fenced_and_commits(
    pg_url: str,
) -> None:
    """A holder's fence passed, first in the transaction of its results; its lock's
    connection then dropped before that transaction committed. The next holder waits for the
    transaction to end before its own work (it reads what the first committed); a fence
    after the drop fails, and the transaction commits nothing."""
    engine = make_engine(pg_url)
    taken = threading.Event()

    def next_holder() -> None:
        with session_lock(engine, 0x7465, "fenced", wait=True) as lock:
            assert lock.held()
            taken.set()

    try:
        with session_lock(engine, 0x7465, "fenced", wait=True) as lock, engine.connect() as results:
            transaction = results.begin()
            lock.fence(results)  # held: passes
            terminate_lock_holder(engine, 0x7465, "fenced")
            waiting = threading.Thread(target=next_holder)
            waiting.start()
            assert not taken.wait(1.5), "the next holder did not wait for the fenced commit"
            transaction.commit()
            assert taken.wait(10)
            waiting.join(10)
            with engine.connect() as late, late.begin(), pytest.raises(LockLost):
                lock.fence(late)
    finally:
        engine.dispose()


def test_a_poller_pass_whose_lock_dropped_stops_sending_and_the_next_pass_resumes(
    loop: Loop, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A pass imported a large file (each stream request slowed, as Stripe over a network)
    when its poller lock's connection was terminated; another worker's pass took the lock and
    imported the same file from the acknowledged batches while the first went on sending: the
    sandbox dropped thousands of repeated submissions (180,300 of a 250,000-row file), and
    the first logged only an AdminShutdown at its unlock. Now the first stops at its next
    batch (a warning, the pass not failed), and the second resumes from what was
    acknowledged: every row reaches the sandbox once, repeated at most the batches that were
    in flight."""
    rows = 20_000  # 200 batches: about 5 s at the pace below
    slow_stream(monkeypatch)
    now = int(time.time())
    ids = [f"u-{i}" for i in range(rows)]
    _put(loop, "big.csv", usage_csv([[i, now - 60, "api_requests", "cus_bob", "1"] for i in ids]))
    reports: dict[str, PassReport] = {}
    with bundled_poller(loop) as first, bundled_poller(loop) as second:
        holder = threading.Thread(target=lambda: reports.update(first=run_poll_pass(first)))
        holder.start()
        try:
            deadline = time.monotonic() + 60
            while acknowledged_batches(loop.engine) < 20:  # mid-import
                assert time.monotonic() < deadline, "the first pass did not send"
                time.sleep(0.05)
            terminate_lock_holder(loop.engine, POLLER_LOCK_KEY)
            reports["second"] = run_poll_pass(second)  # takes the lock the first lost
        finally:
            holder.join(60)
    accepted = loop.accepted()
    assert len(accepted) == rows and set(accepted) == set(ids)
    repeated = loop.sandbox.duplicates()
    # sent again by the second pass: the batches the first had in flight (2 * the sink's 8
    # workers) and those acknowledged it had not recorded yet (fewer than CHUNKS_PER_GROUP),
    # of 100 events each
    in_flight = (2 * 8 + CHUNKS_PER_GROUP) * 100
    assert len(repeated) <= in_flight, f"{len(repeated)} repeated submissions"
    with loop.session() as session:
        [obj] = session.exec(select(BucketObject)).all()
    assert (obj.status, obj.sent) == ("imported", rows)
    assert not holder.is_alive()
    assert reports["second"].ran and reports["second"].imported == 1, reports["second"]
    assert reports["first"].imported == 0 and reports["first"].stopped, reports["first"]
    assert getattr(reports["first"], "lock_lost", False), reports["first"]


def test_a_pass_leaving_after_its_lock_dropped_keeps_off_the_next_pass_copy(
    loop: Loop, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The pass whose lock dropped left late (a loaded machine), after the next pass had
    copied the same object version to the work directory: a version's copy had one name, and
    the first removed the second's as it left. The second then failed the object
    (FileNotFoundError, backed off) and only the rows the first sent reached the sandbox, as
    in the test above when it failed (4,000 of 20,000). Each copy is the pass's own now: the
    second imports the rest."""
    rows = 6_000
    slow_stream(monkeypatch)
    copied = threading.Event()

    def second_copies(*args: Any, **kwargs: Any) -> Path:
        path = take_snapshot(*args, **kwargs)
        if threading.current_thread() is threading.main_thread():  # the second pass
            copied.set()
            time.sleep(1)  # the first leaves meanwhile
        return path

    def first_leaves_late(*args: Any, **kwargs: Any) -> Any:
        try:
            return import_object(*args, **kwargs)
        except LockLost:
            assert copied.wait(30), "the second pass did not copy the object"
            raise

    monkeypatch.setattr("service.poller.pass_objects.take_snapshot", second_copies)
    monkeypatch.setattr("service.poller.pass_objects.import_object", first_leaves_late)
    now = int(time.time())
    ids = [f"u-{i}" for i in range(rows)]
    _put(loop, "big.csv", usage_csv([[i, now - 60, "api_requests", "cus_bob", "1"] for i in ids]))
    reports: dict[str, PassReport] = {}
    with bundled_poller(loop) as first, bundled_poller(loop) as second:
        holder = threading.Thread(target=lambda: reports.update(first=run_poll_pass(first)))
        holder.start()
        try:
            deadline = time.monotonic() + 60
            while acknowledged_batches(loop.engine) < 10:  # mid-import
                assert time.monotonic() < deadline, "the first pass did not send"
                time.sleep(0.05)
            terminate_lock_holder(loop.engine, POLLER_LOCK_KEY)
            reports["second"] = run_poll_pass(second)
        finally:
            holder.join(60)
    assert not holder.is_alive()
    assert reports["first"].lock_lost, reports["first"]
    assert reports["second"].imported == 1 and not reports["second"].errors, reports["second"]
    accepted = loop.accepted()
    assert len(accepted) == rows and set(accepted) == set(ids)


def test_a_pass_leaving_after_its_lock_dropped_keeps_off_the_failed_records_of_the_next(
    loop: Loop, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The first pass's lock dropped as it began copying the object (a large object, a slow
    bucket), and the next pass imported the version and recorded its failed-records file,
    named, as every pass of a version named it, by the import set alone. The first, its copy
    done, started that file afresh (removed it) before it learned of the lost lock: the
    remediation found the recorded file gone ("re-import the object") and the refused rows
    were never quarantined. Each pass's file is its own now: the recorded one holds the
    next pass's rows, and the remediation takes them."""
    refused = put_every_tenth_row_refused(loop)
    held = FirstPassHeld()

    def first_copies_late(*args: Any, **kwargs: Any) -> Path:
        if held.in_first_pass():
            held.hold()
        return take_snapshot(*args, **kwargs)

    monkeypatch.setattr("service.poller.pass_objects.take_snapshot", first_copies_late)
    reports = second_pass_while_first_held(loop, held, "the first pass did not take the object")
    assert reports["first"].lock_lost, reports["first"]
    assert (reports["second"].sent, reports["second"].failed_rows) == (90, 10), reports["second"]
    recorded = Path(recorded_failed_records(loop))
    assert recorded.exists(), "the recorded failed-records file is gone"
    assert identifiers_in(recorded) == refused
    assert_the_remediation_quarantined(loop, refused)


def test_a_pass_whose_lock_dropped_after_its_last_check_records_no_import_set(
    loop: Loop, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The first pass's lock dropped just after its last `check_lock` (its rows sent, its
    failed-records file written), and the next pass imported the version and recorded its
    own file. The first, going on late, still saved its import set (the save was not fenced):
    the import set named the first's file, and the next pass's file was recorded nowhere. The
    save is fenced now: the first records nothing and removes its own file; the import set
    names the next pass's file, whose rows the remediation quarantines."""
    refused = put_every_tenth_row_refused(loop)
    held = FirstPassHeld()
    paths: dict[str, Path] = {}
    save = importer.save_poller_import_set

    def first_saves_late(*args: Any, **kwargs: Any) -> ImportSet:
        pass_name = "first" if held.in_first_pass() else "second"
        paths[pass_name] = Path(str(kwargs["detail"]["failed_records_path"]))
        if pass_name == "first":
            held.hold()
        return save(*args, **kwargs)

    def the_second_recorded() -> None:
        assert recorded_failed_records(loop) == str(paths["second"])

    monkeypatch.setattr(importer, "save_poller_import_set", first_saves_late)
    reports = second_pass_while_first_held(
        loop, held, "the first pass did not import the object", the_second_recorded
    )
    assert reports["first"].lock_lost and reports["first"].imported == 0, reports["first"]
    assert (reports["second"].sent, reports["second"].failed_rows) == (90, 10), reports["second"]
    assert paths["first"] != paths["second"]
    with loop.session() as session:
        [import_set] = session.exec(select(ImportSet)).all()
        [obj] = session.exec(select(BucketObject)).all()
    assert import_set.detail["failed_records_path"] == str(paths["second"]), "the first's file"
    assert (import_set.rows_processed, import_set.successes_row_count) == (100, 90)
    assert import_set.errors_row_count == 10 and import_set.remediation_status == "pending"
    assert (obj.status, obj.import_set_id, obj.sent, obj.failed) == (
        "imported",
        import_set.import_set_id,
        90,
        10,
    )
    assert not paths["first"].exists(), "the first pass's file, recorded nowhere, is left"
    assert identifiers_in(paths["second"]) == refused
    assert_the_remediation_quarantined(loop, refused)


def put_every_tenth_row_refused(loop: Loop) -> set[str]:
    """usage/day.csv: 100 rows of `cus_bob`, every tenth naming no meter (`legacy_calls`),
    which the poller refuses into its failed-records file; the identifiers of those ten."""
    now = int(time.time())
    meters = ["legacy_calls" if i % 10 == 0 else "api_requests" for i in range(100)]
    rows = [[f"u-{i}", now - 60, meter, "cus_bob", "1"] for i, meter in enumerate(meters)]
    _put(loop, "day.csv", usage_csv(rows))
    return {f"u-{i}" for i, meter in enumerate(meters) if meter == "legacy_calls"}


class FirstPassHeld:
    """Holds the first of two passes (the one run in a thread) at a step a test patches,
    until the second (run in the main thread) is done: `reached` once the first is held,
    `released` to let it go on."""

    def __init__(self) -> None:
        self.reached, self.released = threading.Event(), threading.Event()

    @staticmethod
    def in_first_pass() -> bool:
        return threading.current_thread() is not threading.main_thread()

    def hold(self) -> None:
        self.reached.set()
        assert self.released.wait(60), "the second pass did not end"


def second_pass_while_first_held(
    loop: Loop,
    held: FirstPassHeld,
    not_reached: str,
    while_held: Callable[[], None] = lambda: None,
) -> dict[str, PassReport]:
    """Two bundled poller passes: the first, in a thread, runs until `held` holds it; its
    lock's connection is then terminated and the second runs (and `while_held`, the first
    still held); the first let go to end. Their reports, by "first" and "second"."""
    reports: dict[str, PassReport] = {}
    with bundled_poller(loop) as first, bundled_poller(loop) as second:
        holder = threading.Thread(target=lambda: reports.update(first=run_poll_pass(first)))
        holder.start()
        try:
            assert held.reached.wait(60), not_reached
            terminate_lock_holder(loop.engine, POLLER_LOCK_KEY)
            reports["second"] = run_poll_pass(second)
            while_held()
        finally:
            held.released.set()
            holder.join(60)
    assert not holder.is_alive()
    return reports


def recorded_failed_records(loop: Loop) -> str:
    """The failed-records file the (only) import set records."""
    with loop.session() as session:
        [import_set] = session.exec(select(ImportSet)).all()
    return str(import_set.detail["failed_records_path"])


def identifiers_in(failed_records: Path) -> set[str]:
    """The identifiers of the rows a failed-records file holds."""
    rows = csv.DictReader(io.StringIO(failed_records.read_text()))
    return {row["identifier"] for row in rows}


def assert_the_remediation_quarantined(loop: Loop, refused: set[str]) -> None:
    """The worker's remediation of the import set quarantines the `refused` rows, and no
    failed-records file is left in the poller's work directory."""
    loop.drain()
    with loop.session() as session:
        quarantined = [row.identifier for row in session.exec(select(QuarantinedRow))]
        [import_set] = session.exec(select(ImportSet)).all()
    assert sorted(quarantined) == sorted(refused)
    assert import_set.remediation_status == "done"
    assert sorted((Path(loop.settings.mfx_work_dir) / "poller").rglob("*.failed.*")) == []


def slow_stream(monkeypatch: pytest.MonkeyPatch) -> None:
    """Each stream request slowed, as Stripe over a network: 0.2 s."""
    send_batch = StripeMeterEventSink.send_batch

    def slowed(self: Any, batch: Any) -> int:
        time.sleep(0.2)
        return int(send_batch(self, batch))

    monkeypatch.setattr(StripeMeterEventSink, "send_batch", slowed)


def acknowledged_batches(engine: Engine) -> int:
    with engine.connect() as connection:
        return int(
            connection.execute(
                text("SELECT count(*) FROM poller_batches WHERE acked_at IS NOT NULL")
            ).scalar_one()
        )


def test_a_pass_run_under_the_callers_poller_lock_checks_that_lock(pg_url: str) -> None:
    """`poll --retry` decides under the poller lock what to send, then runs the pass under it
    (`locked=True`): the pass checks the caller's lock, lost with its connection as any
    (it took an unlosable one, and sent on)."""
    engine = make_engine(pg_url)
    try:
        with poller_lock(engine) as lock:
            assert lock and held_poller_lock() is lock
            terminate_lock_holder(engine, POLLER_LOCK_KEY)
            with pytest.raises(LockLost, match="was lost"):
                held_poller_lock().check()
        assert held_poller_lock().held()  # none taken here: the caller holds it elsewhere
    finally:
        engine.dispose()


def test_a_try_for_a_lock_whose_holder_before_keeps_a_fenced_transaction_open_gives_up(
    pg_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A caller that only tries (a poller pass, a notify leader) took the lock of a holder
    whose connection dropped while a fenced transaction of its stayed open (the process
    paused). Instead: it waited for that transaction without end, holding the lock, so no
    one led. It gives up after TRY_FENCE_SECONDS, the lock let go, and takes it once the
    transaction ends."""
    monkeypatch.setattr(locks, "TRY_FENCE_SECONDS", 1)
    engine = make_engine(pg_url)
    try:
        with session_lock(engine, 0x7465, "paused", wait=True) as lock, engine.connect() as work:
            transaction = work.begin()
            lock.fence(work)  # held: passes; the transaction stays open (the holder paused)
            terminate_lock_holder(engine, 0x7465, "paused")
            started = time.monotonic()
            with session_lock(engine, 0x7465, "paused", wait=False) as tried:
                assert not tried and time.monotonic() - started < 5
            started = time.monotonic()
            with session_lock(engine, 0x7465, "paused", wait=False) as again:
                # let go by the first try: this one took it and waited for the fence again
                assert not again and time.monotonic() - started >= 0.9
            transaction.commit()
        with session_lock(engine, 0x7465, "paused", wait=False) as taken:
            assert taken and taken.held()
    finally:
        engine.dispose()


def test_queueing_a_rerun_does_not_wait_for_a_rerun_running(pg_url: str) -> None:
    """Instead: the lock queueing a re-run takes (on what re-runs read) was the very lock a
    re-run task holds while it runs, so a click on "Re-run" waited in the web request until
    the running re-run ended."""
    engine = make_engine(pg_url)
    answered: dict[str, Any] = {}
    try:
        with session_lock(engine, RERUN_LOCK_KEY, wait=True) as running:
            assert running
            asking = threading.Thread(
                target=lambda: answered.update(
                    queue_rerun(engine, QuarantineFilter(), Actor("api", "127.0.0.1"))
                ),
                daemon=True,
            )
            asking.start()
            asking.join(10)
            assert not asking.is_alive(), "queueing waited for the running re-run"
        assert answered == {"queued": False, "rows": 0, "filters": {}}
    finally:
        engine.dispose()
