"""What both bucket implementations share: the errors, the lineage constants and the helpers
for digests, identical-content checks, key prefixes and temp files (no SDK imported here)."""

from __future__ import annotations

import hashlib
import os
import tempfile
from pathlib import Path

from remediation.ports import ObjectInfo

SIDECAR_SUFFIX = ".meta.json"
TEMP_MARK = ".mfx-tmp-"
SHA_KEY = "mfx-sha256"
CHUNK = 1024 * 1024


def file_digests(path: Path) -> tuple[str, str]:
    """(sha256, md5) hex digests of a file, read in chunks."""
    sha, md5 = hashlib.sha256(), hashlib.md5(usedforsecurity=False)
    with path.open("rb") as handle:
        while chunk := handle.read(CHUNK):
            sha.update(chunk)
            md5.update(chunk)
    return sha.hexdigest(), md5.hexdigest()


def is_identical(existing: ObjectInfo | None, sha: str, md5: str) -> bool:
    if existing is None:
        return False
    return existing.metadata.get(SHA_KEY) == sha or existing.etag == md5


def dir_prefix(prefix: str) -> str:
    prefix = prefix.strip("/")
    return f"{prefix}/" if prefix else ""


def temp_path(dest: Path) -> Path:
    dest.parent.mkdir(parents=True, exist_ok=True)
    handle, name = tempfile.mkstemp(prefix=TEMP_MARK, dir=dest.parent)
    os.close(handle)
    return Path(name)
