"""Run-level alerts, raised when a remediation run finishes: critical when its quarantined
rows reach MFX_QUARANTINE_ALERT_ROWS, warning when it quarantined any row, info when it
corrected everything. One alert per run (keyed by its run key), so a re-delivered event that
finds the run finished raises nothing new."""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Any

from sqlalchemy import Engine

from service.config import Settings
from service.jobs.store.quarantine import top_quarantine_group
from service.jobs.store.runs import run_outputs
from service.logs import log_event
from service.models import RemediationRun
from service.notify.alerts import raise_alert, stored_key
from service.notify.shown import counted
from service.notify.store import alert_exists


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
        message=(
            f"{counted(run.input_rows, 'row')} received: {run.valid} valid, "
            f"{run.corrected} corrected, "
            f"{run.quarantined} quarantined; source {run.source}"
        ),
        detail={"by_code": run.by_code, "input_rows": run.input_rows, "valid": run.valid},
        meter=meter,
        code=code or _top_code(run.by_code),
        customer=customer,
        rows=run.quarantined or run.corrected,
        links=_links(run, outputs),
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
