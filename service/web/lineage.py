"""Lineage as the dashboard and the API show it: remediation runs with their input (import
set, error report, poller import, quarantine re-run), counts (kept on the run row, never
counted from the audit), the objects they wrote and whether the poller imported the corrected
ones again, and when. The queries are the jobs' and the poller's stores'."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from sqlalchemy import Connection, Engine

from service.db.pages import Listing, Page
from service.jobs.store import reports, rerun_takes, runs
from service.models import ErrorReportStatus
from service.models.poller import ObjectStatus
from service.poller.store import objects_by_keys
from service.web.store import get_action, iso

RERUN_PREFIX = "quarantine_rerun:"


def run_input(run_key: str, source: str | None) -> dict[str, Any]:
    """What a run remediated, read from its deterministic key (see the jobs that make it)."""
    kind, _, rest = run_key.partition(":")
    if kind == "import_set":
        import_set_id, _, file_id = rest.partition(":")  # a digest past the key's length
        file = source if file_id.startswith("sha256:") and source else file_id
        return {"type": "import_set", "import_set_id": import_set_id, "file": file}
    if kind == "import_set_failed":
        return {"type": "import_set", "import_set_id": rest, "file": source}
    if kind == "poller":
        return {"type": "poller_import", "import_set_id": rest, "object": source}
    if kind == "error_report":
        return {"type": "error_report", "event_id": rest.partition(":")[0], "source": source}
    if kind == RERUN_PREFIX[:-1]:  # `quarantine_rerun:<action>[:g<generation>[:i<traced from>]]`
        return {"type": "quarantine_rerun", "action_id": rest.partition(":")[0]}
    return {"type": "file", "source": source}


def run_json(row: Mapping[str, Any]) -> dict[str, Any]:
    return {
        "id": row["id"],
        "run_key": row["run_key"],
        "trigger": row["trigger"],
        "source": row["source"],
        "generation": row["generation"],
        # the generation the run traced its input from (None: a run before migration 0010,
        # taken as its generation less one)
        "input_generation": row["input_generation"],
        "status": row["status"],
        "input_rows": row["input_rows"],
        "valid": row["valid"],
        "corrected": row["corrected"],
        "quarantined": row["quarantined"],
        "by_code": row["by_code"],
        # the whole-file repairs its input was read with ([]: none; None: before they were kept)
        "repairs": row["repairs"],
        "error": row["error"],
        "created_at": iso(row["created_at"]),
        "finished_at": iso(row["finished_at"]),
        "input": run_input(row["run_key"], row["source"]),
    }


def list_runs(engine: Engine, page: Page) -> Listing:
    with engine.connect() as connection:
        listing = runs.list_runs(connection, page)
    return Listing([run_json(row) for row in listing.data], listing.next_cursor)


def get_run_facts(engine: Engine, run_id: int) -> dict[str, Any] | None:
    """A run as the list shows it (no inputs nor outputs): the heading of its corrections."""
    with engine.connect() as connection:
        row = runs.get_run(connection, run_id)
    return None if row is None else run_json(row)


def get_run(engine: Engine, run_id: int) -> dict[str, Any] | None:
    """A run with its inputs, outputs and the re-import state of its corrected objects."""
    with engine.connect() as connection:
        row = runs.get_run(connection, run_id)
        if row is None:
            return None
        run = run_json(row)
        run["inputs"] = _inputs(connection, run["input"])
        run["outputs"] = _outputs(connection, run_id)
        run["quarantine_taken"] = _taken(connection, run_id)
    return run


def _taken(connection: Connection, run_id: int) -> dict[str, Any]:
    """What became of the rows the run quarantined (those kept): how many wait (the
    quarantine page's `taken_again=no`), the re-runs that took some, and how many were taken
    again elsewhere (marked `taken_again`). One query by the run index."""
    takes = rerun_takes.run_takes(connection, run_id)
    return {
        "quarantined": takes.quarantined,
        "taken": takes.taken,
        "waiting": takes.waiting,
        "reruns": [{"run_id": run, "rows": rows} for run, rows in takes.reruns],
        "elsewhere": takes.elsewhere,
    }


def _inputs(connection: Connection, found: Mapping[str, Any]) -> list[dict[str, Any]]:
    kind = found["type"]
    if kind in ("import_set", "poller_import"):
        row = reports.get_import_set(connection, found["import_set_id"])
        return [{**found, "import_set": None if row is None else import_set_json(row)}]
    if kind == "error_report":
        row = reports.get_report(connection, found["event_id"])
        return [{**found, "error_report": None if row is None else report_json(row)}]
    if kind == "quarantine_rerun" and str(found["action_id"]).isdigit():
        return [{**found, "action": get_action(connection, int(found["action_id"]))}]
    return [dict(found)]


def _outputs(connection: Connection, run_id: int) -> list[dict[str, Any]]:
    outputs = [output_json(row) for row in runs.run_outputs(connection, run_id)]
    keys = [output["key"] for output in outputs if output["kind"] == "corrected"]
    imports = _imports(connection, keys)
    for output in outputs:
        if output["kind"] == "corrected":
            output["reimport"] = imports.get(output["key"]) or {"imported": False}
    return outputs


def _imports(connection: Connection, keys: list[str]) -> dict[str, dict[str, Any]]:
    """The poller's record of each key (the key index): imported or not, and when."""
    found: dict[str, dict[str, Any]] = {}
    for row in objects_by_keys(connection, keys):
        key = row["key"]
        imported = row["status"] == ObjectStatus.IMPORTED
        if key in found and found[key]["imported"] and not imported:
            continue  # an imported version of the key wins over a later attempt
        found[key] = {
            "imported": imported,
            "status": row["status"],
            "imported_at": iso(row["processed_at"]) if imported else None,
            "first_seen": iso(row["first_seen"]),
            "rows": row["rows"],
            "sent": row["sent"],
            "failed": row["failed"],
            "import_set_id": row["import_set_id"],
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
        # poller imports: rows left out because another object version sent them
        "sent_by_other_versions": int((row["detail"] or {}).get("sent_by_other_versions") or 0),
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


def _found_short(row: Mapping[str, Any]) -> dict[str, Any]:
    partial = row["status"] == ErrorReportStatus.PARTIAL
    return {"found_short_at": iso(row["found_short_at"]) if partial else None}


def list_import_sets(engine: Engine, page: Page) -> Listing:
    """Import sets (Stripe's and the poller's) with the id of the run each one got."""
    with engine.connect() as connection:
        listing = reports.list_import_sets(connection, page)
        data = [import_set_json(row) for row in listing.data]
        keys = [item["run_key"] for item in data if item["run_key"]]
        ids = runs.run_ids_by_key(connection, keys)
    for item in data:
        item["run_ids"] = [ids[item["run_key"]]] if item["run_key"] in ids else []
    return Listing(data, listing.next_cursor)


def list_reports(engine: Engine, page: Page, picked: reports.ReportFilter) -> Listing:
    """Meter error reports `picked` selects, with the ids of their runs (one query: a key range
    per report on the unique run key, `error_report:<event id>:<object>`) and, a partial
    one, when its task last found it short."""
    with engine.connect() as connection:
        listing = reports.list_reports(connection, page, picked)
        data = [report_json(row) | _found_short(row) for row in listing.data]
        found = runs.report_run_ids(connection, [item["event_id"] for item in data])
    for item in data:
        item["run_ids"] = found.get(item["event_id"], [])
    return Listing(data, listing.next_cursor)
