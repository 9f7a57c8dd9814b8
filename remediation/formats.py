"""Usage file formats: detection, streaming readers and writers (one import point)."""

from __future__ import annotations

from remediation.filetypes import FileFormat, detect_format
from remediation.readers import CsvLayout, read_records
from remediation.writers import RecordWriter

__all__ = ["CsvLayout", "FileFormat", "RecordWriter", "detect_format", "read_records"]
