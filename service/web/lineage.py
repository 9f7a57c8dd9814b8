"""Lineage queries: remediation runs with their input (import set, error report, poller
import, quarantine re-run), counts (kept on the run row, never counted from the audit), the
objects they wrote and whether the poller imported the corrected ones again, and when."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from sqlalchemy import Connection, Engine, and_, or_, select

from service.models._types import table_of
from service.models.poller import BucketObject, ObjectStatus
from service.models.remediation import OutputObject, RemediationRun
from service.models.reports import ErrorReport, ImportSet
from service.web.params import Page
from service.web.store import Listing, get_action, iso, keyset

RUNS = table_of(RemediationRun)
OUTPUTS = table_of(OutputObject)
OBJECTS = table_of(BucketObject)
IMPORT_SETS = table_of(ImportSet)
REPORTS = table_of(ErrorReport)
RERUN_PREFIX = "quarantine_rerun:"
REPORT_PREFIX = "error_report:"


def run_input(run_key: str, source: str | None) -> dict[str, Any]:
    """What a run remediated, read from its deterministic key (see the jobs that make it)."""
    kind, _, rest = run_key.partition(":")
    if kind == "import_set":
        import_set_id, _, file_id = rest.partition(":")
        return {"type": "import_set", "import_set_id": import_set_id, "file": file_id}
    if kind == "import_set_failed":
        return {"type": "import_set", "import_set_id": rest, "file": source}
    if kind == "poller":
        return {"type": "poller_import", "import_set_id": rest, "object": source}
    if kind == "error_report":
        return {"type": "error_report", "event_id": rest.partition(":")[0], "source": source}
    if kind == RERUN_PREFIX[:-1]:
        return {"type": "quarantine_rerun", "action_id": rest}
    return {"type": "file", "source": source}


def run_json(row: Mapping[str, Any]) -> dict[str, Any]:
    return {
        "id": row["id"],
        "run_key": row["run_key"],
        "trigger": row["trigger"],
        "source": row["source"],
        "generation": row["generation"],
        "status": row["status"],
        "input_rows": row["input_rows"],
        "valid": row["valid"],
        "corrected": row["corrected"],
        "quarantined": row["quarantined"],
        "by_code": row["by_code"],
        "error": row["error"],
        "created_at": iso(row["created_at"]),
        "finished_at": iso(row["finished_at"]),
        "input": run_input(row["run_key"], row["source"]),
    }


def list_runs(engine: Engine, page: Page) -> Listing:
    with engine.connect() as connection:
        listing = keyset(connection, select(RUNS), RUNS.c.id, page)
    return Listing([run_json(row) for row in listing.data], listing.next_cursor)


def get_run(engine: Engine, run_id: int) -> dict[str, Any] | None:
    """A run with its inputs, outputs and the re-import state of its corrected objects."""
    with engine.connect() as connection:
        row = connection.execute(select(RUNS).where(RUNS.c.id == run_id)).first()
        if row is None:
            return None
        run = run_json(dict(row._mapping))
        run["inputs"] = _inputs(connection, run["input"])
        run["outputs"] = _outputs(connection, run_id)
    return run


def _inputs(connection: Connection, found: Mapping[str, Any]) -> list[dict[str, Any]]:
    kind = found["type"]
    if kind in ("import_set", "poller_import"):
        row = connection.execute(
            select(IMPORT_SETS).where(IMPORT_SETS.c.import_set_id == found["import_set_id"])
        ).first()
        return [
            {**found, "import_set": None if row is None else import_set_json(dict(row._mapping))}
        ]
    if kind == "error_report":
        row = connection.execute(
            select(REPORTS).where(REPORTS.c.event_id == found["event_id"])
        ).first()
        return [{**found, "error_report": None if row is None else report_json(dict(row._mapping))}]
    if kind == "quarantine_rerun" and str(found["action_id"]).isdigit():
        return [{**found, "action": get_action(connection, int(found["action_id"]))}]
    return [dict(found)]


def _outputs(connection: Connection, run_id: int) -> list[dict[str, Any]]:
    rows = connection.execute(
        select(OUTPUTS).where(OUTPUTS.c.run_id == run_id).order_by(OUTPUTS.c.id)
    ).all()
    outputs = [output_json(dict(row._mapping)) for row in rows]
    keys = [output["key"] for output in outputs if output["kind"] == "corrected"]
    imports = _imports(connection, keys)
    for output in outputs:
        if output["kind"] == "corrected":
            output["reimport"] = imports.get(output["key"]) or {"imported": False}
    return outputs


def _imports(connection: Connection, keys: list[str]) -> dict[str, dict[str, Any]]:
    """The poller's record of each key (the key index): imported or not, and when."""
    if not keys:
        return {}
    rows = connection.execute(
        select(OBJECTS).where(OBJECTS.c.key.in_(keys)).order_by(OBJECTS.c.id)
    ).all()
    found: dict[str, dict[str, Any]] = {}
    for row in rows:
        imported = row.status == ObjectStatus.IMPORTED
        if row.key in found and found[row.key]["imported"] and not imported:
            continue  # an imported version of the key wins over a later attempt
        found[row.key] = {
            "imported": imported,
            "status": row.status,
            "imported_at": iso(row.processed_at) if imported else None,
            "first_seen": iso(row.first_seen),
            "rows": row.rows,
            "sent": row.sent,
            "failed": row.failed,
            "import_set_id": row.import_set_id,
        }
    return found


def output_json(row: Mapping[str, Any]) -> dict[str, Any]:
    return {
        "id": row["id"],
        "kind": row["kind"],
        "key": row["key"],
        "rows": row["rows"],
        "sha256": row["sha256"],
        "generation": row["generation"],
        "uploaded": bool(row["uploaded"]),
        "created_at": iso(row["created_at"]),
    }


def import_set_json(row: Mapping[str, Any]) -> dict[str, Any]:
    return {
        "id": row["id"],
        "import_set_id": row["import_set_id"],
        "origin": row["origin"],
        "status": row["status"],
        "failed_reason": row["failed_reason"],
        "source_file_id": row["source_file_id"],
        "source_object": row["source_object"],
        "errors_file_id": row["errors_file_id"],
        "errors_row_count": row["errors_row_count"],
        "successes_row_count": row["successes_row_count"],
        "remediation_status": row["remediation_status"],
        "run_key": (row["detail"] or {}).get("run_key"),
        "created_at": iso(row["created_at"]),
        "updated_at": iso(row["updated_at"]),
    }


def report_json(row: Mapping[str, Any]) -> dict[str, Any]:
    return {
        "id": row["id"],
        "event_id": row["event_id"],
        "event_type": row["event_type"],
        "meter_id": row["meter_id"],
        "summary": row["summary"],
        "error_count": row["error_count"],
        "status": row["status"],
        "validation_start": iso(row["validation_start"]),
        "validation_end": iso(row["validation_end"]),
        "created_at": iso(row["created_at"]),
    }


def list_import_sets(engine: Engine, page: Page) -> Listing:
    """Import sets (Stripe's and the poller's) with the id of the run each one got."""
    with engine.connect() as connection:
        listing = keyset(connection, select(IMPORT_SETS), IMPORT_SETS.c.id, page)
        data = [import_set_json(row) for row in listing.data]
        keys = [item["run_key"] for item in data if item["run_key"]]
        ids = _run_ids(connection, keys)
    for item in data:
        item["run_ids"] = [ids[item["run_key"]]] if item["run_key"] in ids else []
    return Listing(data, listing.next_cursor)


def list_reports(engine: Engine, page: Page) -> Listing:
    """Meter error reports with the ids of their runs (one query: a key range per report on
    the unique run key, `error_report:<event id>:<object>`)."""
    with engine.connect() as connection:
        listing = keyset(connection, select(REPORTS), REPORTS.c.id, page)
        data = [report_json(row) for row in listing.data]
        ranges = [
            and_(RUNS.c.run_key >= prefix, RUNS.c.run_key < prefix[:-1] + ";")
            for prefix in (f"{REPORT_PREFIX}{item['event_id']}:" for item in data)
        ]
        rows: list[tuple[str, int]] = []
        if ranges:
            # No ORDER BY: with one, SQLite scans every run instead of probing each range.
            query = select(RUNS.c.run_key, RUNS.c.id).where(or_(*ranges))
            rows = sorted(
                ((str(row[0]), int(row[1])) for row in connection.execute(query)),
                key=lambda row: row[1],
            )
    found: dict[str, list[int]] = {}
    for run_key, run_id in rows:
        event_id = run_key.removeprefix(REPORT_PREFIX).partition(":")[0]
        found.setdefault(event_id, []).append(run_id)
    for item in data:
        item["run_ids"] = found.get(item["event_id"], [])
    return Listing(data, listing.next_cursor)


def _run_ids(connection: Connection, keys: list[str]) -> dict[str, int]:
    if not keys:
        return {}
    rows = connection.execute(select(RUNS.c.run_key, RUNS.c.id).where(RUNS.c.run_key.in_(keys)))
    return {str(row[0]): int(row[1]) for row in rows}
