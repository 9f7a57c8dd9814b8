"""Run-level alerts, raised when a remediation run finishes: critical when its quarantined
rows reach MFX_QUARANTINE_ALERT_ROWS, warning when it quarantined any row, info when it
corrected everything. One alert per run (keyed by its run key), so a re-delivered event that
finds the run finished raises nothing new.

Its rows taken again (by a quarantine re-run, or marked `taken_again`), the alert says so
(`settle_run_alerts`, in the transaction that marks them): while some still wait, its subject
and message count them; once none waits, it is resolved (its "resolved" message says what
took them). Its severity and `rows` stay those of the run."""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from sqlalchemy import Connection, Engine, select, update

from service.config import Settings
from service.jobs.store.quarantine import top_quarantine_group
from service.jobs.store.reruns import RunTakes, run_takes, runs_of_rows
from service.jobs.store.runs import get_run, run_outputs
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
    """Never raises: a failed alert must not fail the run (it is logged)."""
    try:
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
    code, meter, customer = top_quarantine_group(engine, run.id)
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
        message=_received(run.input_rows, run.valid, run.corrected, run.quarantined, run.source),
        detail={"by_code": run.by_code, "input_rows": run.input_rows, "valid": run.valid},
        meter=meter,
        code=code or _top_code(run.by_code),
        customer=customer,
        rows=run.quarantined or run.corrected,
        links=_links(run, outputs),
    )
    if run.quarantined:  # rows taken before the alert was raised (a retry raising it late)
        with engine.begin() as connection:
            settle_run_alerts(connection, [run.id])


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
    the text is made from the rows alone: settling again changes nothing."""
    for run_id in sorted(set(run_ids)):
        run = get_run(connection, run_id)
        if run is None or not run["quarantined"]:
            continue
        key = stored_key(f"run:{run['run_key']}")
        told = _unresolved_subject(connection, key)
        if told is None:
            continue  # none, or resolved (here or by hand): never opened again
        takes = run_takes(connection, run_id)
        if not takes.taken:
            continue  # nothing taken (or nothing kept): the alert says it as it is
        subject = _TAKEN_SUFFIX.sub("", told) + _taken(takes)
        received = _received(
            run["input_rows"], run["valid"], run["corrected"], run["quarantined"], run["source"]
        )
        message = (received + _since(takes))[:TEXT_LIMIT]
        _retell_alert(connection, key, {"subject": subject[:TEXT_LIMIT], "message": message})
        if not takes.waiting:
            resolve_alert(connection, key)


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
    return (
        f"\nTaken again since: {takes.taken} of its {takes.quarantined} quarantined rows, "
        f"{', '.join(parts)}; {waiting}.{after}"
    )


def _all(rows: int) -> str:
    """`all 3 rejected rows`, `1 rejected row`."""
    return ("all " if rows > 1 else "") + counted(rows, "rejected row")


def _top_code(by_code: Mapping[str, Any]) -> str | None:
    def total(code: str) -> int:
        slot = by_code.get(code)
        return sum(int(v) for v in slot.values()) if isinstance(slot, dict) else 0

    return max(sorted(by_code), key=total) if by_code else None


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
