"""Usage files as the S3 connector reads them: CSV (`payload_<key>` columns), a JSON array,
or JSON Lines (nested `payload`). Whole-file problems raise `WholeFileFailure`."""

from __future__ import annotations

import csv
import io
import json
import uuid
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from sandbox.validation import MeterEventInput, parse_unix_seconds

BASE_COLUMNS = ("identifier", "timestamp", "event_name")
PAYLOAD_PREFIX = "payload_"


class FailedReason(StrEnum):
    EMPTY_FILE = "empty_file"
    UNPARSEABLE_FILE = "unparseable_file"
    MISSING_REQUIRED_COLUMN = "missing_required_column"
    UNSUPPORTED_FILE_TYPE = "unsupported_file_type"


class WholeFileFailure(Exception):
    def __init__(self, reason: FailedReason, message: str) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message


@dataclass(frozen=True)
class UsageRow:
    """One record: its flat columns as written (for the failed-records file and the format
    checks) and the event built from them."""

    columns: dict[str, str]
    event: MeterEventInput


@dataclass(frozen=True)
class UsageFile:
    columns: list[str]
    rows: list[UsageRow]


def parse_usage_file(key: str, content: bytes) -> UsageFile:
    try:
        text = content.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise WholeFileFailure(FailedReason.UNPARSEABLE_FILE, "File is not UTF-8 text.") from exc
    if not text.strip():
        raise WholeFileFailure(FailedReason.EMPTY_FILE, "File is empty.")
    suffix = key.rsplit(".", 1)[-1].lower()
    if suffix == "csv":
        parsed = _parse_csv(text)
    elif suffix in ("json", "jsonl"):
        parsed = _records_file(_load_json(text) if suffix == "json" else _load_jsonl(text))
    else:
        raise WholeFileFailure(FailedReason.UNSUPPORTED_FILE_TYPE, f"Unsupported file: {key}")
    if not parsed.rows:
        raise WholeFileFailure(FailedReason.EMPTY_FILE, "File has no records.")
    return parsed


def _parse_csv(text: str) -> UsageFile:
    reader = csv.DictReader(io.StringIO(text, newline=""))
    columns = [name.strip() for name in reader.fieldnames or []]
    if "event_name" not in columns:
        message = "Missing required column: event_name."
        raise WholeFileFailure(FailedReason.MISSING_REQUIRED_COLUMN, message)
    rows = []
    for raw in reader:
        flat = {name.strip(): (value or "") for name, value in raw.items() if name is not None}
        rows.append(UsageRow(columns=flat, event=_event_from_columns(flat)))
    return UsageFile(columns=columns, rows=rows)


def _event_from_columns(flat: dict[str, str]) -> MeterEventInput:
    payload = {
        name[len(PAYLOAD_PREFIX) :]: value.strip()
        for name, value in flat.items()
        if name.startswith(PAYLOAD_PREFIX) and value.strip() != ""
    }
    return MeterEventInput(
        event_name=flat.get("event_name", "").strip(),
        payload=payload,
        identifier=flat.get("identifier", "").strip() or str(uuid.uuid4()),
        timestamp=_timestamp(flat.get("timestamp", "")),
    )


def _timestamp(text: str) -> int | None:
    """Integer unix seconds, or None (absent: the import time; not an integer: the connector
    rejects the row before it becomes a meter event, see `connector.format_error`)."""
    try:
        return parse_unix_seconds(text)
    except ValueError:
        return None


def _load_json(text: str) -> list[Any]:
    try:
        records = json.loads(text)
    except json.JSONDecodeError as exc:
        raise WholeFileFailure(FailedReason.UNPARSEABLE_FILE, f"Invalid JSON: {exc}") from exc
    if not isinstance(records, list):
        raise WholeFileFailure(FailedReason.UNPARSEABLE_FILE, "A JSON file must hold an array.")
    return records


def _load_jsonl(text: str) -> list[Any]:
    records = []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError as exc:
            message = f"Invalid JSON on line {number}: {exc.msg}"
            raise WholeFileFailure(FailedReason.UNPARSEABLE_FILE, message) from exc
    return records


def _records_file(records: list[Any]) -> UsageFile:
    if not all(isinstance(record, dict) for record in records):
        raise WholeFileFailure(FailedReason.UNPARSEABLE_FILE, "Every record must be an object.")
    flats = [_flatten(record) for record in records]
    if flats and not any("event_name" in flat for flat in flats):
        message = "Missing required field: event_name."
        raise WholeFileFailure(FailedReason.MISSING_REQUIRED_COLUMN, message)
    columns = list(BASE_COLUMNS)
    for flat in flats:
        columns += [name for name in flat if name not in columns]
    rows = [UsageRow(columns=flat, event=_event_from_columns(flat)) for flat in flats]
    return UsageFile(columns=columns, rows=rows)


def _flatten(record: dict[str, Any]) -> dict[str, str]:
    flat: dict[str, str] = {}
    for name, value in record.items():
        if name == "payload" and isinstance(value, dict):
            flat.update({f"{PAYLOAD_PREFIX}{k}": _text(v) for k, v in value.items()})
        else:
            flat[name] = _text(value)
    return flat


def _text(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    return json.dumps(value)
