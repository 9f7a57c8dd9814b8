"""Whole-file repairs (what makes Stripe fail a file as a whole, `import_set.failed`).

`plan_input` looks at the first KB of a file and returns how to read it despite a BOM, `;` or
tab delimiters, a JSON array named `.jsonl` (or the reverse), and header aliases; or raises
UnreadableFile with the reason (an empty file is dropped, not repaired; a file that is not
usage at all, such as a TOML or YAML document, is refused rather than read as rows). Oversized
inputs are split by the output planner (1,000,000 records / 1 GB per file).
"""

from __future__ import annotations

import csv
import io
import json
import re
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from itertools import islice
from pathlib import Path
from typing import BinaryIO

from remediation.csvlayouts import CsvLayout
from remediation.csvtext import closed_at_end
from remediation.errors import EmptyFile, UnreadableFile
from remediation.filetypes import FileFormat, compressed, detect_format, not_usage
from remediation.jsondocuments import utf16_refusal
from remediation.readers import read_records
from remediation.records import ERROR_FIELDS, MFX_PREFIX, UsageRecord
from remediation.rules import Rules

# What is read to plan a file: enough for a CSV header line of many payload columns (the
# first 1 KB cut a header of 25 note columns, and its aliases past the cut were not renamed).
HEAD_BYTES = 64 * 1024


@dataclass(frozen=True, slots=True)
class InputPlan:
    fmt: FileFormat
    delimiter: str = ","
    header: tuple[str, ...] = ()  # the repaired CSV header
    columns: tuple[str, ...] = ()  # output columns (no error columns)
    # what was repaired, said once for the run (its summary, the run's page): a row's own
    # changes are in its audit (`core.filerepairs`)
    repairs: tuple[str, ...] = field(default_factory=tuple)
    # (column, alias) of each column a header alias was renamed to (`payload_stripe_customer_id`,
    # `customer_id`): the rows held it under the alias, as Stripe read them
    renamed: tuple[tuple[str, str], ...] = ()
    # the event name every row gets: the CSV header has no event_name column, and the rules
    # name a default (`default_event_name`); "" fills nothing
    event_name_fill: str = ""


def repair_header(header: Sequence[str], aliases: Mapping[str, str]) -> list[str]:
    """Rename aliased columns (`customer_id` -> `payload_stripe_customer_id`) when the canonical
    column is not already present. An alias named twice (`value,value`, `Value,value`) is
    refused (`UnreadableFile`), as a column named twice is: the first was renamed and the
    second kept as a column of its own, so the row went out billing the first beside the
    second's other amount. Two aliases named otherwise (`customer_id,customer`) are read row
    by row: the second is a top-level alias, and a row whose two differ is quarantined."""
    present = {name.strip().lower() for name in header}
    renamed = []
    seen: dict[str, int] = {}  # an alias as named (any case) -> its column
    for at, name in enumerate(header, 1):
        low = name.strip().lower()
        target = aliases.get(low)
        if target and low in seen:
            raise UnreadableFile(
                f"ambiguous header: column {name.strip()!r} appears twice (columns {seen[low]} "
                f"and {at}); nothing guessed"
            )
        seen.setdefault(low, at)
        if target and target not in present:
            present.add(target)
            renamed.append(target)
        else:
            renamed.append(name.strip())
    return renamed


def plan_input(path: Path, rules: Rules) -> InputPlan:
    with open(path, "rb") as handle:
        head = handle.read(HEAD_BYTES)
    text = head.decode("utf-8-sig", errors="ignore").lstrip()
    if not text:
        raise EmptyFile("empty file: nothing to import (dropped)")
    refused = not_usage(path.name) or compressed(head) or utf16_refusal(head)
    if refused:
        raise UnreadableFile(refused)
    named = detect_format(path.name)
    fmt, repairs = _actual_format(named, text)
    _refuse_json_of_no_rows(fmt, text)
    if fmt is not FileFormat.CSV:
        return InputPlan(fmt, repairs=repairs)
    return _plan_csv(head, text, repairs, rules)


def _refuse_json_of_no_rows(fmt: FileFormat, text: str) -> None:
    """UnreadableFile when JSON Lines or a JSON array cannot start with a row."""
    if fmt is FileFormat.JSONL and text[0] != "{":
        raise UnreadableFile("not a usage file: JSON Lines must start with an object ('{')")
    if fmt is FileFormat.JSON and text[1:].lstrip()[:1] not in _JSON_VALUE_STARTS:
        raise UnreadableFile(
            f"not a usage file: its first line {_first(text)!r} starts with '[' but is no "
            "JSON array (a TOML table?)"
        )
    wrapper = _wrapping_key(text) if fmt is FileFormat.JSONL else None
    if wrapper is not None:
        raise UnreadableFile(
            f"not a usage file: a JSON object wrapping an array under {wrapper!r}, not a row "
            "(a usage file is a JSON array of rows, or JSON Lines of one row a line)"
        )


def _wrapping_key(text: str) -> str | None:
    """The key of the array a file's first object wraps when it is no row (an API list,
    `{"data": [rows]}`): it names no key of a row in any case (identifier, timestamp,
    event_name, payload, an error field) and holds an array. Read as JSON Lines, it was one
    row, its rows quarantined as one `no_meter`. Decoded from the head; one longer than it
    (a wrapper of many rows) by its first key opening an array of objects."""
    try:
        first = json.JSONDecoder().raw_decode(text)[0]
    except (ValueError, RecursionError):
        found = _FIRST_KEY_OPENS_OBJECTS.match(text)
        if found is None:
            return None
        first = {json.loads(f'"{found[1]}"'): []}
    if type(first) is not dict or any(_row_key(key) for key in first):
        return None
    return next((key for key, value in first.items() if type(value) is list), None)


def _row_key(key: object) -> bool:
    low = str(key).lower()
    return low in _JSON_ROW_KEYS


_JSON_ROW_KEYS = frozenset(("identifier", "timestamp", "event_name", "payload", *ERROR_FIELDS))
_FIRST_KEY_OPENS_OBJECTS = re.compile(r'\{\s*"((?:[^"\\]|\\.)*)"\s*:\s*\[\s*\{')


def _plan_csv(head: bytes, text: str, repairs: tuple[str, ...], rules: Rules) -> InputPlan:
    """A CSV's plan from its header: the delimiter, the header with its aliases renamed,
    the output columns."""
    delimiter = _sniff_delimiter(text)
    first_line, whole = _header_record(text, delimiter)
    if len(head) == HEAD_BYTES and not whole:
        raise UnreadableFile(
            f"its header is longer than {HEAD_BYTES // 1024} KiB (a quote left open?): "
            "no CSV header is"
        )
    if delimiter != ",":
        repairs += (f"delimiter {delimiter!r} read as CSV",)
    header = repair_header(first_line, rules.columns)
    renamed = tuple(
        (name, alias.strip())
        for name, alias in zip(header, first_line, strict=True)
        if name != alias.strip()
    )
    if renamed:
        named = ", ".join(f"{alias!r} -> {name!r}" for name, alias in renamed)
        repairs += (f"header aliases renamed: {named}",)
    header = [_as_our_note(name) for name in header]
    if _QUARANTINE_EXPORT.issubset(name.strip().lower() for name in header):
        raise UnreadableFile(QUARANTINE_EXPORT_REFUSED)
    layout = CsvLayout.from_header(header)
    if not _names_usage(layout):
        raise UnreadableFile(
            f"not a usage file: its first line {_first(text)!r} names none of identifier, "
            "timestamp, event_name, payload_* or an error column"
        )
    columns, repairs = _output_columns(layout, rules, repairs)
    fill = rules.policy.default_event_name if layout.event_name is None else ""
    return InputPlan(
        FileFormat.CSV, delimiter, tuple(header), tuple(columns), repairs, renamed, fill
    )


# Columns of `/api/quarantine.csv` (service.web.quarantine) no usage file has together: fed
# back, each row was quarantined again under a misleading reason (its payload unread), and
# the newer entry left the row's first one for a re-run no more
_QUARANTINE_EXPORT = frozenset(("run_id", "mfx_code", "payload", "record"))
QUARANTINE_EXPORT_REFUSED = (
    "not a usage file: meterfix's quarantine export (/api/quarantine.csv), its payload one "
    "JSON column; fix the rows in the run's quarantine file (quarantine/<run's folder>/"
    "<name>.quarantine.r<n>.csv, on the run's page) and upload that"
)


def _as_our_note(name: str) -> str:
    """A column named `mfx_` in any case (`MFX_CODE`) as one of our notes, which are never
    read: as a column of the row's own it was written to the corrected file, whose rows
    never carry error or `mfx_` fields (error columns are read in any case already)."""
    if name[: len(MFX_PREFIX)].lower() != MFX_PREFIX:
        return name
    return MFX_PREFIX + name[len(MFX_PREFIX) :]


def _output_columns(
    layout: CsvLayout, rules: Rules, repairs: tuple[str, ...]
) -> tuple[list[str], tuple[str, ...]]:
    """The columns a CSV's rows are written in, and `repairs` with event_name's filling."""
    columns = layout.columns()
    if layout.event_name is None and rules.policy.default_event_name:
        repairs += (f"event_name filled with {rules.policy.default_event_name!r}",)
        columns = _with_event_name(columns)
    if "identifier" not in columns:  # a corrected row is written with its derived identifier:
        # without the column it went out with none, and Stripe gave it a new one at each import
        columns = ["identifier", *columns]
    return columns, repairs


def _with_event_name(columns: list[str]) -> list[str]:
    """The output columns with `event_name` where Stripe's template has it: after
    `timestamp`, else after `identifier`, else first. Without it in the header, the filled
    event names were not written, and Stripe failed the corrected file as it failed the
    input (a new generation each time, never billed)."""
    after = [name for name in ("timestamp", "identifier") if name in columns]
    at = columns.index(after[0]) + 1 if after else 0
    return [*columns[:at], "event_name", *columns[at:]]


def whole_file_failure(head: bytes, name: str) -> str | None:
    """Why Stripe's importer fails a file as a whole (`data_management.import_set.failed`),
    read from its first bytes, when a whole-file repair may make it importable: a JSON array
    named `.jsonl` or JSON Lines named `.json`, a CSV delimited by `;`, tab or `|`, a CSV
    header without an `event_name` column. None: none of these (a file that cannot be read
    at all fails when it is read). The bundled poller hands such a file to the same repair
    as Stripe's failure event; read row by row, its rows were quarantined for reasons that
    said nothing of the file (`no single active meter matches event_name ''`)."""
    text = head.decode("utf-8-sig", errors="ignore").lstrip()
    if not text or not_usage(name):
        return None
    fmt, repairs = _actual_format(detect_format(name), text)
    if repairs:
        return repairs[0]
    if fmt is not FileFormat.CSV:
        return None
    delimiter = _sniff_delimiter(text)
    if delimiter != ",":
        return f"delimiter {delimiter!r}: a usage CSV is delimited by commas"
    first_line = _header_record(text, ",")[0]
    if _QUARANTINE_EXPORT.issubset(name.strip().lower() for name in first_line):
        return QUARANTINE_EXPORT_REFUSED  # no row sent; its repair says why it cannot
    if "event_name" not in {name.strip() for name in first_line}:
        return "Missing required column: event_name."
    return None


_JSON_VALUE_STARTS = frozenset('{["]-0123456789tfn') | {""}


def _names_usage(layout: CsvLayout) -> bool:
    core = (layout.identifier, layout.timestamp, layout.event_name)
    return any(i is not None for i in core) or bool(layout.payload or layout.errors)


def _first(text: str) -> str:
    line = text.splitlines()[0] if text else ""
    return line if len(line) <= 60 else line[:60] + "…"


def _actual_format(named: FileFormat, text: str) -> tuple[FileFormat, tuple[str, ...]]:
    if text[0] == "[" and named is not FileFormat.JSON:
        return FileFormat.JSON, (f"{named.value} file holds a JSON array",)
    if text[0] == "{" and named is not FileFormat.JSONL:
        return FileFormat.JSONL, (f"{named.value} file holds JSON Lines",)
    return named, ()


_DELIMITERS = ",;\t|"


def _sniff_delimiter(text: str) -> str:
    """The header line's delimiter: the one under which it names the most columns of a usage
    file (identifier, timestamp, event_name, payload_*, error columns), else the sniffer's
    guess. The sniffer alone took `,` for a `;` header with a column `note,x` (the file then
    refused as naming none of them)."""
    line = text.splitlines()[0]
    try:
        sniffed = csv.Sniffer().sniff(line, delimiters=_DELIMITERS).delimiter
    except csv.Error:
        sniffed = ","
    named = {d: _usage_names(text, d) for d in _DELIMITERS}
    best = max(_DELIMITERS, key=lambda d: (named[d], d == sniffed))
    return best if named[best] > named[sniffed] else sniffed


def _usage_names(text: str, delimiter: str) -> int:
    """How many of the header's names, split by `delimiter`, are a usage file's columns."""
    names = _header_record(text, delimiter)[0]
    return sum(CsvLayout.names_usage(name) for name in names)


def _header_record(text: str, delimiter: str) -> tuple[list[str], bool]:
    """The header's names as the readers read them (`readers.CsvRecords`: csv.reader over
    the text's lines, a quoted name holding a line break), and whether it ends within `text`.
    Read from the first line, a name holding a line break cut the header there: the output
    columns stopped at it and a quarantined row lost the cells past it."""
    lines = io.StringIO(text, newline="")
    reader = csv.reader(closed_at_end(lines), delimiter=delimiter)
    names = next(reader, [])
    lines.seek(0)
    last = next(islice(lines, reader.line_num - 1, None), "")
    return names, last.endswith(("\n", "\r"))


def read_repaired(stream: BinaryIO, plan: InputPlan, rules: Rules) -> Iterator[UsageRecord]:
    """Records of a file read as `plan` says, with the missing event_name column filled in.
    Only a missing column is: an empty cell under one, or a JSON row without the key, is a
    row's own (filled, a failed row of no event name was billed to the default meter)."""
    return read_records(
        stream,
        plan.fmt,
        delimiter=plan.delimiter,
        header=plan.header or None,
        limits=rules.policy.limits,
        renamed=plan.renamed,
        event_name_fill=plan.event_name_fill,
    )
