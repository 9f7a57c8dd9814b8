"""Run-level alerts, raised when a remediation run finishes: critical when its quarantined
rows reach MFX_QUARANTINE_ALERT_ROWS, warning when it quarantined any row, info when it
corrected everything. One alert per run (keyed by its run key), so a re-delivered event that
finds the run finished raises nothing new.

Its rows taken again (by a quarantine re-run, or marked `taken_again`), the alert says so
(`settle_run_alerts`, in the transaction that marks them, or once a task marking them batch
after batch is done: `RunAlertsToSettle`): while some still wait, its subject and message
count them; once none waits, it is resolved (its "resolved" message says what took them).
Its severity and `rows` stay those of the run. `settle_open_run_alerts` (hourly) settles
those a crash left behind."""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from sqlalchemy import Connection, Engine, select, update

from service.config import Settings
from service.db.locks import transaction_lock
from service.jobs.store.other_takes import superseded_by_run
from service.jobs.store.quarantine import QuarantineSpread, quarantine_spread
from service.jobs.store.rerun_takes import RunTakes, run_takes, runs_of_rows
from service.jobs.store.runs import get_run, run_outputs
from service.jobs.store.taken_again import mark_rows_taken_again
from service.logs import log_event
from service.models import RemediationRun
from service.models.alerts import AlertStatus
from service.notify.alerts import TEXT_LIMIT, raise_alert, resolve_alert, stored_key
from service.notify.shown import counted
from service.notify.store import ALERTS, alert_exists


def alert_for_run(
    engine: Engine,
    settings: Settings,
    run: RemediationRun,
    outputs: Sequence[Mapping[str, Any]] = (),
) -> None:
    """Never raises: a failed alert must not fail the run (it is logged). First the older
    entries of the rows the run quarantined again are marked taken again (`_supersede`)."""
    try:
        _supersede(engine, run)
        _alert_for_run(engine, settings, run, outputs)
    except Exception as exc:  # loop edge: the run itself is done and recorded
        log_event(
            "alert.run_alert_failed",
            level=logging.ERROR,
            run_key=run.run_key,
            reason=f"{type(exc).__name__}: {exc}"[:500],
        )


def alert_for_run_again(engine: Engine, settings: Settings, run: RemediationRun) -> None:
    """The alert of a run found done by a retry, unless it exists (in any state): a crash
    between the run's end and its alert lost it for good (the retry returned the run done).
    A re-delivery neither counts it again nor reopens it. Never raises."""
    try:
        assert run.id is not None
        with engine.connect() as connection:
            if alert_exists(connection, stored_key(f"run:{run.run_key}")):
                return
            outputs = run_outputs(connection, run.id)
    except Exception as exc:  # loop edge: the run itself is done and recorded
        reason = f"{type(exc).__name__}: {exc}"[:500]
        log_event("alert.run_alert_failed", level=logging.ERROR, run_key=run.run_key, reason=reason)
        return
    alert_for_run(engine, settings, run, outputs)


def _supersede(engine: Engine, run: RemediationRun) -> None:
    """The entries other runs hold of rows the run quarantined again since (the same
    identifier and timestamp: a copy of the file, or the quarantine file fed back while the
    cause was still there) marked taken again, saying by which run, and their runs' alerts
    told: the newer entry is the one to re-run, so the older one no longer waits (listed as
    waiting, `taken_again=no`, and counted so by the digest and its run's alert, until a
    re-run's pick left it). Before the run's alert: a crash between the two marks them when
    the alert is raised on the retry (`alert_for_run_again`)."""
    if not run.quarantined or run.id is None:
        return
    labels = superseded_by_run(engine, run.id)
    by_label: dict[str, list[int]] = {}
    for row_id, label in labels.items():
        by_label.setdefault(label, []).append(row_id)
    settling = RunAlertsToSettle()
    for label, row_ids in by_label.items():
        mark_rows_taken_again(engine, row_ids, label, settling.note)
    settling.settle(engine)


def _alert_for_run(
    engine: Engine, settings: Settings, run: RemediationRun, outputs: Sequence[Mapping[str, Any]]
) -> None:
    # rows re-sent: corrected ones, and valid ones of an input Stripe rejected whole (a
    # whole-file failure's: "all 1 rejected rows corrected" for 3 rows re-sent; with none
    # corrected, no alert at all)
    resent = sum(int(o.get("rows") or 0) for o in outputs if o.get("kind") == "corrected")
    if run.quarantined == 0 and run.corrected == 0 and resent == 0:
        return  # nothing was wrong: nothing to tell
    assert run.id is not None
    with engine.connect() as connection:
        spread = quarantine_spread(connection, run.id)
    quarantined = counted(run.quarantined, "row") + " quarantined"
    if run.quarantined >= settings.mfx_quarantine_alert_rows:
        severity = "critical"
        what = f"{quarantined} (threshold {settings.mfx_quarantine_alert_rows})"
    elif run.quarantined:
        severity, what = "warning", quarantined
    elif resent > run.corrected:
        unchanged = resent - run.corrected
        severity, what = "info", f"{_all(resent)} re-sent ({run.corrected} corrected, "
        what += f"{unchanged} unchanged)"
    else:
        severity, what = "info", f"{_all(run.corrected)} corrected"
    raise_alert(
        engine,
        key=f"run:{run.run_key}",
        severity=severity,
        kind="remediation.run",
        subject=f"run #{run.id} ({run.trigger}): {what}",
        message=_received(run.input_rows, run.valid, run.corrected, run.quarantined, run.source)
        + _spread(spread),
        detail={"by_code": run.by_code, "input_rows": run.input_rows, "valid": run.valid},
        # each only when every row of the alert's `rows` shares it (a run quarantining rows
        # of two codes and customers named its first group's beside the total)
        meter=spread.meter,
        code=spread.code if run.quarantined else _only_code(run.by_code),
        customer=spread.customer,
        rows=run.quarantined or run.corrected,
        links=_links(run, outputs),
    )
    if run.quarantined:  # rows taken before the alert was raised (a retry raising it late)
        settle_runs(engine, [run.id], lagging=True)


def _received(input_rows: int, valid: int, corrected: int, quarantined: int, source: str) -> str:
    return (
        f"{counted(input_rows, 'row')} received: {valid} valid, {corrected} corrected, "
        f"{quarantined} quarantined; source {source}"
    )


def settle_alerts_of_rows(connection: Connection, ids: Sequence[int]) -> None:
    """`settle_run_alerts` of the runs that quarantined the rows with these ids (just taken
    again), in the caller's transaction."""
    settle_run_alerts(connection, runs_of_rows(connection, ids))


def settle_run_alerts(connection: Connection, run_ids: Iterable[int]) -> None:
    """The alerts of these runs told what became of their quarantined rows, in the caller's
    transaction (the one marking rows taken: a crash leaves both or neither): resolved when
    none waits (the quarantine page's `taken_again=no`), their text counting the rows taken
    and waiting while some do. An alert resolved (by this or by hand) is left as it is, and
    the text is made from the rows alone: settling again changes nothing. Counts every row
    of each run: a task marking rows batch after batch notes them (`RunAlertsToSettle`)."""
    for run_id in sorted(set(run_ids)):
        run = get_run(connection, run_id)
        if run is None or not run["quarantined"]:
            continue
        key = stored_key(f"run:{run['run_key']}")
        told = _unresolved_subject(connection, key)
        if told is None:
            continue  # none, or resolved (here or by hand): never opened again
        retold = _retold(connection, run, told)
        if retold is None:
            continue  # nothing taken (or nothing kept): the alert says it as it is
        subject, message, waiting = retold
        _retell_alert(connection, key, {"subject": subject, "message": message})
        if not waiting:
            resolve_alert(connection, key)


def _retold(
    connection: Connection, run: Mapping[str, Any], told: str
) -> tuple[str, str, int] | None:
    """The subject and message of the alert of `run` (its subject now `told`) counting its
    rows taken and waiting, and how many wait; None when none was taken."""
    takes = run_takes(connection, int(run["id"]))
    if not takes.taken:
        return None
    subject = _TAKEN_SUFFIX.sub("", told) + _taken(takes)
    received = _received(
        run["input_rows"], run["valid"], run["corrected"], run["quarantined"], run["source"]
    ) + _spread(quarantine_spread(connection, int(run["id"])))
    return subject[:TEXT_LIMIT], (received + _since(takes))[:TEXT_LIMIT], takes.waiting


# The seed of the lock a run's alert is settled under in a transaction of its own ("mfx_rals",
# one lock a run on PostgreSQL): on SQLite the write lock taken before the rows are counted,
# so that what is written is what was counted.
RUN_ALERT_LOCK = 0x6D66785F72616C73


def settle_runs(engine: Engine, run_ids: Iterable[int], *, lagging: bool = False) -> int:
    """`settle_run_alerts`, one transaction a run (rows marked taken in transactions of
    their own, committed); `lagging`: only the runs whose alert is open and says less than
    their rows (`_lags`, read without a lock: a run with nothing new takes no write lock).
    How many were settled. Never raises: a failure is logged, and the hourly
    `settle_open_run_alerts` settles it."""
    settled = 0
    for run_id in sorted(set(run_ids)):
        try:
            if lagging and not _lags(engine, run_id):
                continue
            with engine.begin() as connection:
                transaction_lock(connection, RUN_ALERT_LOCK, str(run_id))
                settle_run_alerts(connection, [run_id])
            settled += 1
        except Exception as exc:  # loop edge: what the rows' marking did stands
            reason = f"{type(exc).__name__}: {exc}"[:500]
            log_event("alert.run_settle_failed", level=logging.ERROR, run=run_id, reason=reason)
    return settled


def _lags(engine: Engine, run_id: int) -> bool:
    """Whether the alert of the run `run_id` is open (or acknowledged) and its text says
    less than its rows: some taken since it was told, or none waiting."""
    with engine.connect() as connection:
        run = get_run(connection, run_id)
        if run is None or not run["quarantined"]:
            return False
        unresolved = ALERTS.c.status != AlertStatus.RESOLVED
        key = ALERTS.c.alert_key == stored_key(f"run:{run['run_key']}")
        query = select(ALERTS.c.subject, ALERTS.c.message).where(key, unresolved)
        alert = connection.execute(query).first()
        retold = None if alert is None else _retold(connection, run, str(alert.subject))
    if alert is None or retold is None:
        return False
    return retold[:2] != (alert.subject, alert.message) or not retold[2]


class RunAlertsToSettle:
    """The runs whose quarantined rows a task marks taken batch after batch (`note`, the
    marking's `then`: one query by the rows' ids, whatever the size of their runs), their
    alerts settled once it is done marking (`settle`): each run's rows counted once, not once
    a batch (a 100,000-row run's were counted at each of a re-upload's 1,000 batches, 50 to
    90 ms each, SQLite's write lock held meanwhile). A crash before `settle` leaves them to
    `settle_open_run_alerts`."""

    def __init__(self) -> None:
        self.runs: set[int] = set()

    def note(self, connection: Connection, ids: Sequence[int]) -> None:
        self.runs.update(runs_of_rows(connection, ids))

    def settle(self, engine: Engine) -> None:
        """Settle the alerts of the runs noted so far (never raises)."""
        runs, self.runs = self.runs, set()
        settle_runs(engine, runs)


def settle_open_run_alerts(engine: Engine) -> int:
    """The run alerts still open (or acknowledged) whose text lags their rows, settled: a
    crash between a task's marking and its settle (or between raising a run's alert and
    settling it) left them so. Open run alerts are few; each run counted once, read only,
    and only those whose text would change settled. How many."""
    query = select(ALERTS.c.links).where(
        ALERTS.c.kind == "remediation.run", ALERTS.c.status != AlertStatus.RESOLVED
    )
    with engine.connect() as connection:
        links: list[Any] = list(connection.execute(query).scalars())
    runs = [link["run"] for link in links if isinstance((link or {}).get("run"), int)]
    return settle_runs(engine, runs, lagging=True)


# What `_taken` adds to a run alert's subject (taken away before it is added again).
_TAKEN_SUFFIX = re.compile(r"; (all \d+ |\d+ of \d+ )?taken again(, \d+ still waiting)?$")


def _taken(takes: RunTakes) -> str:
    """`; 3 of 5 taken again, 2 still waiting`, `; all 5 taken again` (`; taken again`:
    its one row)."""
    if not takes.waiting:
        return f"; all {takes.quarantined} taken again" if takes.taken > 1 else "; taken again"
    return f"; {takes.taken} of {takes.quarantined} taken again, {takes.waiting} still waiting"


def _since(takes: RunTakes) -> str:
    """What took the rows: `Taken again since: 3 of its 5 quarantined rows, by run #14 (2
    rows), by a later version of their file or another take (1 row, marked taken again);
    2 still waiting.`"""
    parts = [f"by run #{run_id} ({counted(rows, 'row')})" for run_id, rows in takes.reruns]
    if takes.elsewhere:
        rows = counted(takes.elsewhere, "row")
        parts.append(f"by a later version of their file or another take ({rows}, marked)")
    waiting = f"{takes.waiting} still waiting" if takes.waiting else "none waiting"
    after = " Rows a re-run quarantined again wait under its own run's alert." * bool(takes.reruns)
    of = (
        "its quarantined row"
        if takes.quarantined == 1
        else f"{takes.taken} of its {takes.quarantined} quarantined rows"
    )
    return f"\nTaken again since: {of}, {', '.join(parts)}; {waiting}.{after}"


def _all(rows: int) -> str:
    """`all 3 rejected rows`, `1 rejected row`."""
    return ("all " if rows > 1 else "") + counted(rows, "rejected row")


def _only_code(by_code: Mapping[str, Any]) -> str | None:
    """The one code a run's rows were corrected for (None when there were several)."""

    def total(code: str) -> int:
        slot = by_code.get(code)
        return sum(int(v) for v in slot.values()) if isinstance(slot, dict) else 0

    codes = [code for code in by_code if total(code)]
    return codes[0] if len(codes) == 1 else None


SPREAD_CODES = 5  # codes a run alert's message names; the rest counted


def _spread(spread: QuarantineSpread) -> str:
    """The line a run alert's message adds when its quarantined rows differ in code, meter or
    customer (none then names one): `\nQuarantined rows: 2 codes (meter_event_invalid_value
    1 row, timestamp_too_far_in_past 1 row), 2 customers.` Customers and meters counted,
    never named (MFX_MESSAGE_EXAMPLES=off keeps customers out of messages)."""
    parts = []
    if len(spread.codes) > 1:
        named = [f"{code} {counted(rows, 'row')}" for code, rows in spread.codes[:SPREAD_CODES]]
        more = len(spread.codes) - SPREAD_CODES
        named += [f"{counted(more, 'more code')}"] if more > 0 else []
        parts.append(f"{len(spread.codes)} codes ({', '.join(named)})")
    if spread.meters > 1:
        parts.append(f"{spread.meters} meters")
    if spread.customers > 1:
        parts.append(f"{spread.customers} customers")
    return f"\nQuarantined rows: {', '.join(parts)}." if parts else ""


def _links(run: RemediationRun, outputs: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    links: dict[str, Any] = {"run": run.id, "source": run.source}
    kind, _, rest = run.run_key.partition(":")  # see service.jobs.remediation: run keys
    if kind in ("import_set", "import_set_failed", "poller") and rest:
        links["import_set"] = rest.split(":", 1)[0]
    corrected = [str(o["key"]) for o in outputs if o.get("kind") == "corrected"]
    quarantine = [str(o["key"]) for o in outputs if o.get("kind") == "quarantine"]
    if corrected:
        links["objects"] = corrected
    if quarantine:
        links["quarantine"] = quarantine[0] if len(quarantine) == 1 else quarantine
    return links


def _unresolved_subject(connection: Connection, key: str) -> str | None:
    """The subject of the alert `key` while it is open or acknowledged; else None. Its row
    locked until the caller's transaction ends (PostgreSQL): of two transactions marking rows
    of one run at once (a re-run, the poller), the second counts the rows after the first
    committed (each counting before the other's marks, neither resolved it)."""
    query = (
        select(ALERTS.c.subject)
        .where(ALERTS.c.alert_key == key, ALERTS.c.status != AlertStatus.RESOLVED)
        .with_for_update()
    )
    subject = connection.execute(query).scalar()
    return None if subject is None else str(subject)


def _retell_alert(connection: Connection, key: str, values: Mapping[str, Any]) -> None:
    """New text (`values`: subject, message) for the open or acknowledged alert `key`, as
    the same occurrence (its count, last seen and messages unchanged)."""
    unresolved = (ALERTS.c.alert_key == key) & (ALERTS.c.status != AlertStatus.RESOLVED)
    connection.execute(update(ALERTS).where(unresolved).values(**values))
