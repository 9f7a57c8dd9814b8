"""Usage files as the S3 connector reads them: CSV (`payload_<key>` columns), a JSON array,
or JSON Lines (the nested `payload` object only; other top-level keys are not payload).
Whole-file problems raise `WholeFileFailure`."""

from __future__ import annotations

import csv
import io
import json
import uuid
from collections.abc import Iterable
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
        rows.append(UsageRow(columns=flat, event=_event(flat, _csv_payload(flat))))
    return UsageFile(columns=columns, rows=rows)


def _csv_payload(flat: dict[str, str]) -> dict[str, str]:
    """A CSV row's payload: its `payload_<key>` columns."""
    return _without_blanks(
        (name[len(PAYLOAD_PREFIX) :], value)
        for name, value in flat.items()
        if name.startswith(PAYLOAD_PREFIX)
    )


def _record_payload(record: dict[str, Any]) -> dict[str, str]:
    """A JSON record's payload: its nested `payload` object only. A top-level `payload_<key>`
    field is an extra field of the record, as any other (the JSON template has no such key)."""
    nested = record.get("payload")
    if not isinstance(nested, dict):
        return {}
    return _without_blanks((str(key), _text(value)) for key, value in nested.items())


def _without_blanks(pairs: Iterable[tuple[str, str]]) -> dict[str, str]:
    return {key: value.strip() for key, value in pairs if value.strip() != ""}


def _event(flat: dict[str, str], payload: dict[str, str]) -> MeterEventInput:
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
    rows = [
        UsageRow(columns=flat, event=_event(flat, _record_payload(record)))
        for flat, record in zip(flats, records, strict=True)
    ]
    return UsageFile(columns=columns, rows=rows)


def _flatten(record: dict[str, Any]) -> dict[str, str]:
    """The record as flat columns (for the failed-records file and the format checks): its
    nested `payload` as `payload_<key>` columns, which win over a top-level field of the same
    name (an extra field, never payload: see `_record_payload`)."""
    nested = record.get("payload")
    items = nested.items() if isinstance(nested, dict) else ()
    payload_columns = {f"{PAYLOAD_PREFIX}{key}": _text(value) for key, value in items}
    flat: dict[str, str] = {}
    for name, value in record.items():
        if name == "payload" and isinstance(value, dict):
            flat.update(payload_columns)
        elif name not in payload_columns:
            flat[name] = _text(value)
    return flat


def _text(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    return json.dumps(value)
