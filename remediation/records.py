"""The usage record as every part of meterfix sees it, plus the names of its fields in files."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from remediation.codes import code_from_message, first_code, looks_like_code, normalize_code

CORE_FIELDS = ("identifier", "timestamp", "event_name")
PAYLOAD_PREFIX = "payload_"
# Columns (CSV) or top-level keys (JSON) that carry Stripe's error information. They are read
# into `error_code` / `error_message` and never written to a corrected file.
ERROR_FIELDS = ("error", "error_code", "error_message", "errors", "code", "message")
QUARANTINE_FIELDS = ("mfx_code", "mfx_reason")
MFX_PREFIX = "mfx_"


def unnamed_key(position: int) -> str:
    """The key of a CSV column with no name after the file's first such column (a
    spreadsheet's trailing commas): a space and its 1-based position. No column is named so
    (header names are stripped), so each keeps its own cells; written back as ''."""
    return f" {position}"


def header_name(column: str) -> str:
    """The name a CSV header gives `column` (an `unnamed_key` is written unnamed)."""
    return "" if column[:1] == " " and column[1:].isdigit() else column


@dataclass(slots=True)
class UsageRecord:
    """One usage row. `row_number` is the 1-based data row (header excluded)."""

    row_number: int
    identifier: str | None
    timestamp: object  # raw: unix seconds as int or text, or whatever the file held
    event_name: str | None
    payload: dict[str, object]  # keys without the CSV `payload_` prefix, insertion-ordered
    extra: dict[str, object] = field(default_factory=dict)  # unknown columns/keys, verbatim
    error_code: str | None = None
    error_message: str | None = None
    # Set by a reader when the row itself is broken (wrong field count, bad JSON line).
    malformed: str | None = None


def resolve_error(fields: Mapping[str, object]) -> tuple[str | None, str | None]:
    """(code, message) from whichever error columns a failed-records row carries.

    Assumed layout (Stripe does not document it): `error_code`/`code` hold a code,
    `error_message`/`message` a text, `error` either, `errors` a list of codes or objects;
    a JSON `error` object is `{code, message}`.
    """
    if fields.keys() <= _SIMPLE_ERRORS and all(type(v) is str for v in fields.values()):
        pair = [str(fields.get(k) or "").strip() for k in ("error_code", "error_message")]
        return pair[0].lower() or None, pair[1] or None  # the usual pair, as below
    code: str | None = None
    message: str | None = None
    error = fields.get("error")
    if isinstance(error, Mapping):
        code = _text(error.get("code"))
        message = _text(error.get("message"))
        error = None
    code = code or _text(fields.get("error_code")) or _text(fields.get("code"))
    message = message or _text(fields.get("error_message")) or _text(fields.get("message"))
    error_text = _text(error)
    if error_text:
        if looks_like_code(error_text):
            code = code or error_text
        else:
            message = message or error_text
    errors = fields.get("errors")
    if not code and errors:
        code = first_code(errors if isinstance(errors, str) else _json_text(errors))
    return normalize_code(code), message


_SIMPLE_ERRORS = frozenset({"error_code", "error_message"})


def classify_reported(code: str | None, message: str | None) -> str | None:
    """The code a row arrived with: explicit, else from a known message text, else None."""
    if code:
        return code
    from_message = code_from_message(message)
    return from_message.value if from_message else None


def _text(value: object) -> str | None:
    if value is None:
        return None
    text = str(value).strip()
    return text or None


def _json_text(value: object) -> str:
    import json

    return json.dumps(value)
