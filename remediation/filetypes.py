"""The three usage file formats and how a file name announces one."""

from __future__ import annotations

from enum import StrEnum


class FileFormat(StrEnum):
    CSV = "csv"
    JSON = "json"
    JSONL = "jsonl"


_EXTENSIONS = {
    ".csv": FileFormat.CSV,
    ".json": FileFormat.JSON,
    ".jsonl": FileFormat.JSONL,
    ".ndjson": FileFormat.JSONL,
    ".txt": FileFormat.CSV,
    ".tsv": FileFormat.CSV,
}


def detect_format(name: str) -> FileFormat:
    """The format a file name's extension announces (CSV when it says nothing useful)."""
    lowered = name.lower()
    for ext, fmt in _EXTENSIONS.items():
        if lowered.endswith(ext):
            return fmt
    return FileFormat.CSV
