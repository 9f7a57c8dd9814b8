"""`file://PATH`: the usage bucket on local disk, lineage in a sidecar `<object>.meta.json`."""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Callable, Iterator, Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import BinaryIO

from remediation.ports import ObjectInfo
from service.adapters.bucket_base import (
    CHUNK,
    SHA_KEY,
    SIDECAR_SUFFIX,
    TEMP_MARK,
    file_digests,
    is_identical,
    temp_path,
)
from service.errors import BucketError, ObjectNotFound
from service.logs import log_event


class FileBucket:
    """`file://PATH`: objects are files under `root`, lineage in `<object>.meta.json`.

    Writes are atomic (temp file in the same directory, then os.replace). The ETag is the md5
    of the content, cached per (size, mtime) so repeated listings stay cheap."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self._etags: dict[tuple[str, int, int], str] = {}

    @property
    def prefix(self) -> str:
        return ""

    def _path(self, key: str) -> Path:
        parts = key.split("/")
        if not key or key.startswith("/") or any(p in ("", ".", "..") for p in parts):
            raise BucketError(f"invalid object key: {key!r}")
        return self.root.joinpath(*parts)

    def list_objects(self, prefix: str = "") -> Iterator[ObjectInfo]:
        """Objects whose key starts with `prefix`, in key order; sidecars and temp files skipped."""
        if not self.root.is_dir():
            return
        keys = []
        for dirpath, _dirs, files in os.walk(self.root):
            for name in files:
                if name.endswith(SIDECAR_SUFFIX) or name.startswith(TEMP_MARK):
                    continue
                key = Path(dirpath, name).relative_to(self.root).as_posix()
                if key.startswith(prefix):
                    keys.append(key)
        for key in sorted(keys):
            info = self._info(key, with_metadata=False)
            if info is not None:
                yield info

    def head(self, key: str) -> ObjectInfo | None:
        return self._info(key, with_metadata=True)

    def _info(self, key: str, *, with_metadata: bool) -> ObjectInfo | None:
        path = self._path(key)
        try:
            stat = path.stat()
        except FileNotFoundError:
            return None
        if not path.is_file():
            return None
        return ObjectInfo(
            key=key,
            etag=self._etag(path, stat.st_size, stat.st_mtime_ns),
            size=stat.st_size,
            last_modified=datetime.fromtimestamp(stat.st_mtime, UTC),
            metadata=self._read_sidecar(path) if with_metadata else {},
        )

    def _etag(self, path: Path, size: int, mtime_ns: int) -> str:
        cache_key = (str(path), size, mtime_ns)
        if cache_key not in self._etags:
            self._etags[cache_key] = file_digests(path)[1]
        return self._etags[cache_key]

    @staticmethod
    def _read_sidecar(path: Path) -> dict[str, str]:
        sidecar = path.with_name(path.name + SIDECAR_SUFFIX)
        try:
            data = json.loads(sidecar.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return {}
        except ValueError:  # not JSON, not UTF-8: no metadata (as an S3 object without any)
            return {}
        return {str(k): str(v) for k, v in data.items()} if isinstance(data, dict) else {}

    def open_read(self, key: str) -> BinaryIO:
        try:
            return self._path(key).open("rb")
        except (FileNotFoundError, IsADirectoryError) as exc:
            raise ObjectNotFound(f"no such object: {key}") from exc

    def download(self, key: str, dest: Path) -> None:
        with self.open_read(key) as source:
            _atomic_write(dest, lambda out: shutil.copyfileobj(source, out, CHUNK))

    def upload(self, src: Path, key: str, metadata: Mapping[str, str]) -> bool:
        sha, md5 = file_digests(src)
        path = self._path(key)
        if is_identical(self.head(key), sha, md5):
            log_event("bucket.upload_skipped", key=key, reason="identical object exists")
            return False
        lineage = {str(k).lower(): str(v) for k, v in metadata.items()} | {SHA_KEY: sha}
        sidecar_text = json.dumps(lineage, sort_keys=True, indent=2).encode()
        # Sidecar first: an object never appears without its lineage.
        _atomic_write(
            path.with_name(path.name + SIDECAR_SUFFIX), lambda out: out.write(sidecar_text)
        )
        with src.open("rb") as source:
            _atomic_write(path, lambda out: shutil.copyfileobj(source, out, CHUNK))
        log_event("bucket.uploaded", key=key, size=src.stat().st_size, sha256=sha)
        return True


def _atomic_write(dest: Path, fill: Callable[[BinaryIO], object]) -> None:
    temp = temp_path(dest)
    try:
        with temp.open("wb") as out:
            fill(out)
            out.flush()
            os.fsync(out.fileno())
        os.replace(temp, dest)
    finally:
        temp.unlink(missing_ok=True)
