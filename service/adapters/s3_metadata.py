"""S3 user metadata as S3 takes it (`s3_bucket.S3Bucket.upload`): ASCII only, and at most
METADATA_BYTES in all (a long lineage label is cut short rather than the upload refused)."""

from __future__ import annotations

import re
from collections.abc import Mapping
from urllib.parse import quote

from service.adapters.bucket_base import SHA_KEY
from service.logs import log_event

_PRINTABLE = "".join(chr(c) for c in range(0x20, 0x7F))

# S3 takes at most 2 KB of user metadata (the UTF-8 bytes of its names and values).
METADATA_BYTES = 2048
_CUT_MARK = "..."


def ascii_metadata(metadata: Mapping[str, str], sha: str) -> dict[str, str]:
    """S3 user metadata must be ASCII: non-ASCII characters are percent-encoded (UTF-8)."""
    values = {str(k).lower(): str(v) for k, v in metadata.items()}
    values[SHA_KEY] = sha
    ascii_values = {k: v if v.isascii() else quote(v, safe=_PRINTABLE) for k, v in values.items()}
    return _within_limit(ascii_values)


def _within_limit(values: dict[str, str]) -> dict[str, str]:
    """`values` within METADATA_BYTES, its longest value cut short (ending `...`) when over:
    a key of 1,024 bytes percent-encoded in `mfx-source` is up to 3 KB, and S3 refused
    every upload of its outputs (MetadataTooLarge), the run failing on every retry. The
    digests and the generation are short; only the source, a label, is ever long."""
    over = sum(len(k) + len(v) for k, v in values.items()) - METADATA_BYTES
    if over <= 0:
        return values
    name = max(values, key=lambda k: len(values[k]))
    kept = values[name][: max(len(values[name]) - over - len(_CUT_MARK), 0)]
    kept = re.sub(r"%[0-9A-Fa-f]?$", "", kept)  # no escape cut in half
    log_event("bucket.metadata_shortened", name=name, length=len(values[name]), kept=len(kept))
    return values | {name: kept + _CUT_MARK}
