"""Usage file formats: detection, streaming readers and writers (one import point)."""

from __future__ import annotations

from remediation.csvlayouts import CsvLayout
from remediation.filetypes import FileFormat, detect_format
from remediation.readers import read_records
from remediation.writers import RecordWriter

__all__ = ["CsvLayout", "FileFormat", "RecordWriter", "detect_format", "read_records"]
