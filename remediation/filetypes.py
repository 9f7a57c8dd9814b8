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


# Documents people keep next to usage files (rules, settings, notes): never read as rows.
_NOT_USAGE = {
    ".toml": "TOML",
    ".yaml": "YAML",
    ".yml": "YAML",
    ".ini": "INI",
    ".xml": "XML",
    ".md": "Markdown",
    ".html": "HTML",
    ".xlsx": "Excel",
    ".parquet": "Parquet",
    ".gz": "compressed",
    ".zip": "compressed",
}


def not_usage(name: str) -> str | None:
    """Why a file name says it is no usage file (a TOML or YAML document...), or None."""
    lowered = name.lower()
    for ext, kind in _NOT_USAGE.items():
        if lowered.endswith(ext):
            return f"not a usage file: a {kind} file ({ext}); usage files are .csv, .json or .jsonl"
    return None


# The first bytes of compressed files and archives (a `usage.csv.gz` renamed `usage.csv`)
_COMPRESSED = (
    (b"\x1f\x8b", "gzip-compressed"),
    (b"PK\x03\x04", "zip archive"),
    (b"BZh", "bzip2-compressed"),
    (b"\xfd7zXZ\x00", "xz-compressed"),
    (b"\x28\xb5\x2f\xfd", "zstd-compressed"),
)


def compressed(head: bytes) -> str | None:
    """Why a file whose first bytes are `head` is refused as compressed, or as UTF-16 text
    (its byte order mark: it was "undecodable byte at offset 0"), or None."""
    for magic, kind in _COMPRESSED:
        if head.startswith(magic):
            shown = " ".join(f"{byte:02x}" for byte in magic)
            return f"not UTF-8 text: a {kind} file (it starts with {shown}): decompress it first"
    for bom in UTF16_BOMS:
        if head.startswith(bom):
            shown = " ".join(f"{byte:02x}" for byte in bom)
            return f"not UTF-8 text: UTF-16 text (it starts with {shown}): save it as UTF-8"
    return None


UTF16_BOMS = (b"\xff\xfe", b"\xfe\xff")
