"""The import-set handlers read both documented and assumed field names."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from handlers import REGISTRY
from handlers.records import OutcomeStatus, RemediationKind, RemediationStatus
from tests.unit.handlers.fakes import RecordingContext

EVENTS = Path(__file__).resolve().parents[2] / "data" / "events"


def _handle(name: str, ctx: RecordingContext) -> Any:
    event = json.loads((EVENTS / f"{name}.json").read_text())
    return REGISTRY[event["type"]](event, ctx)


def test_succeeded_with_failed_records_file() -> None:
    ctx = RecordingContext()
    assert _handle("snapshot_import_set_succeeded", ctx).status is OutcomeStatus.RECORDED
    record = ctx.import_sets["impset_test_inferred_0001"]
    assert (record.status, record.errors_file_id, record.errors_row_count) == (
        "succeeded_with_errors",
        "file_test_failedrecords0001",
        3,
    )
    assert (record.successes_row_count, record.rows_processed) == (97, 100)
    assert record.source_file_id == "file_test_sourceupload0001"
    assert record.remediation_status is RemediationStatus.PENDING
    assert ctx.remediations == [(RemediationKind.IMPORT_SET_ERRORS, "impset_test_inferred_0001")]


def test_alternative_keys_file_id_and_count() -> None:
    ctx = RecordingContext()
    _handle("snapshot_import_set_succeeded_alt_keys", ctx)
    record = ctx.import_sets["impset_test_altkeys_0001"]
    assert (record.errors_file_id, record.errors_row_count) == ("file_test_failedrecords0003", 2)
    assert (record.source_file_id, record.source_object) == (
        "file_test_sourceupload0003",
        "2026/01/usage.csv",
    )
    assert record.successes_row_count == 8


def test_failed_whole_file() -> None:
    ctx = RecordingContext()
    _handle("snapshot_import_set_failed", ctx)
    record = ctx.import_sets["impset_test_failed_0001"]
    assert record.status == "failed" and record.errors_file_id is None
    assert record.failed_reason == "Missing required column: event_name"
    assert record.remediation_status is RemediationStatus.NONE
    assert ctx.remediations == [(RemediationKind.IMPORT_SET_FAILED, "impset_test_failed_0001")]


def test_same_event_twice_is_unchanged() -> None:
    ctx = RecordingContext()
    _handle("snapshot_import_set_failed", ctx)
    assert _handle("snapshot_import_set_failed", ctx).status is OutcomeStatus.UNCHANGED
