"""`file://PATH`: the usage bucket on local disk, lineage in a sidecar `<object>.meta.json`."""

from __future__ import annotations

import hashlib
import io
import json
import logging
import os
import shutil
import time
from collections.abc import Callable, Iterator, Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, BinaryIO, cast

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
from service.errors import BucketError, ObjectChanged, ObjectNotFound
from service.logs import log_event


class FileBucket:
    """`file://PATH`: objects are files under `root`, lineage in `<object>.meta.json`.

    Writes are atomic (temp file in the same directory, then os.replace). The ETag is the md5
    of the content, cached per (size, mtime) so repeated listings stay cheap."""

    def __init__(self, root: Path) -> None:
        self.root = root
        # path -> (size, mtime_ns, ETag): one entry an object, replaced when it changes
        self._etags: dict[str, tuple[int, int, str]] = {}

    @property
    def prefix(self) -> str:
        return ""

    def _path(self, key: str) -> Path:
        parts = key.split("/")
        if not key or key.startswith("/") or any(p in ("", ".", "..") for p in parts):
            raise BucketError(f"invalid object key: {key!r}")
        return self.root.joinpath(*parts)

    def sweep_temporaries(self, untouched_for: float) -> int:
        """Remove the temp files of writes nobody finished (a writer killed before its
        `os.replace`: a worker's SIGKILL mid-upload left `corrected/…/.mfx-tmp-*` for good)
        untouched for `untouched_for` seconds, past any live writer's; how many."""
        oldest = time.time() - untouched_for
        removed = 0
        for path in self.root.rglob(f"{TEMP_MARK}*"):
            try:
                if path.is_file() and not path.is_symlink() and path.stat().st_mtime < oldest:
                    path.unlink()
                    removed += 1
            except OSError:  # gone meanwhile, or not ours to remove
                continue
        return removed

    def list_objects(self, prefix: str = "") -> Iterator[ObjectInfo]:
        """Objects whose key starts with `prefix`, in key order; sidecars and temp files skipped."""
        for key in sorted(key for key in self._walk(prefix) if _utf8_key(key)):
            info = self._info(key, with_metadata=False)
            if info is not None:
                yield info

    def names_not_utf8(self, prefix: str = "") -> list[str]:
        """The files `list_objects` leaves out, their name not being UTF-8 (S3 keys always
        are), each with its bytes that are not UTF-8 escaped (`caf\\xe9.csv`), in order. No
        record can hold such a name, so the poller asks for them apart, to alert on them."""
        return sorted(_shown(key) for key in self._walk(prefix) if not _is_utf8(key))

    def _walk(self, prefix: str) -> Iterator[str]:
        """Keys of the files under the root starting with `prefix`; sidecars and temp files
        skipped. A name that is not UTF-8 is a key holding lone surrogates."""
        self.check_root()
        for dirpath, _dirs, files in os.walk(self.root):
            for name in files:
                if name.endswith(SIDECAR_SUFFIX) or name.startswith(TEMP_MARK):
                    continue
                key = Path(dirpath, name).relative_to(self.root).as_posix()
                if key.startswith(prefix):
                    yield key

    def check_root(self) -> None:
        """BucketError unless the root is a folder, as S3 answers NoSuchBucket: a BUCKET_URL
        naming a folder that does not exist (`file://./buckt`) or a file (`/etc/passwd`)
        was listed as an empty bucket, every pass "0 files", no alert, and the first upload
        made the mistyped folder. The folder is never made here (`make run` makes `bucket`)."""
        if self.root.is_dir():
            return
        what = "is not a folder" if self.root.exists() else "does not exist"
        raise BucketError(
            f"BUCKET_URL names the folder {self.root}, which {what}: create it, or correct "
            "BUCKET_URL"
        )

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
        known = self._etags.get(str(path))
        if known is not None and known[:2] == (size, mtime_ns):
            return known[2]
        etag = file_digests(path)[1]
        self._etags[str(path)] = (size, mtime_ns, etag)
        return etag

    @staticmethod
    def _read_sidecar(path: Path) -> dict[str, str]:
        sidecar = sidecar_path(path)
        try:
            data = json.loads(sidecar.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return {}
        except ValueError:  # not JSON, not UTF-8: no metadata (as an S3 object without any)
            return {}
        return {str(k): str(v) for k, v in data.items()} if isinstance(data, dict) else {}

    def open_read(self, key: str, etag: str | None = None) -> BinaryIO:
        """The file's bytes. With `etag` (a version the poller listed): ObjectChanged when the
        file is no longer that version, on open or, when it changes while read, at its last
        read (its bytes are hashed as read). Whether it is still being written is the poller's
        to judge, by its own clock (`service.poller.settling`), never by its mtime."""
        path = self._path(key)
        try:
            handle = path.open("rb")
        except (FileNotFoundError, IsADirectoryError) as exc:
            if etag is not None:
                raise ObjectChanged(f"{key} is gone (it was the version with ETag {etag})") from exc
            raise ObjectNotFound(f"no such object: {key}") from exc
        if etag is None:
            return handle
        try:
            stat = os.fstat(handle.fileno())
            if self._etag(path, stat.st_size, stat.st_mtime_ns) != etag:
                raise ObjectChanged(f"{key} is no longer the version with ETag {etag}")
        except BaseException:
            handle.close()
            raise
        return cast(BinaryIO, io.BufferedReader(_Verified(handle, key, etag), CHUNK))

    def download(self, key: str, dest: Path) -> None:
        with self.open_read(key) as source:
            _atomic_write(dest, lambda out: shutil.copyfileobj(source, out, CHUNK))

    def upload(self, src: Path, key: str, metadata: Mapping[str, str]) -> bool:
        sha, md5 = file_digests(src)
        path = self._path(key)
        self.check_root()  # its folders inside are made as needed; never the root itself
        if is_identical(self.head(key), sha, md5):
            log_event("bucket.upload_skipped", key=key, reason="identical object exists")
            return False
        lineage = {str(k).lower(): str(v) for k, v in metadata.items()} | {SHA_KEY: sha}
        sidecar_text = json.dumps(lineage, sort_keys=True, indent=2).encode()
        # Sidecar first: an object never appears without its lineage.
        _atomic_write(sidecar_path(path), lambda out: out.write(sidecar_text))
        with src.open("rb") as source:
            _atomic_write(path, lambda out: shutil.copyfileobj(source, out, CHUNK))
        log_event("bucket.uploaded", key=key, size=src.stat().st_size, sha256=sha)
        return True


# The longest file name most filesystems take, in bytes.
NAME_BYTES = 255


def sidecar_path(path: Path) -> Path:
    """The lineage sidecar of the object at `path`: `<object>.meta.json`, or, when that
    would pass NAME_BYTES, the object name's start and a digest of the whole name (ending
    `.meta.json` all the same, so never listed). Output names run to 254 characters
    (`remediation.outputs.MAX_NAME`): their sidecar failed the upload (`File name too long`)
    and the run with it, on every retry."""
    name = path.name + SIDECAR_SUFFIX
    raw = path.name.encode("utf-8", "surrogateescape")
    if len(name.encode("utf-8", "surrogateescape")) <= NAME_BYTES:
        return path.with_name(name)
    start = raw[:128].decode("utf-8", "ignore")
    return path.with_name(f"{start}-{hashlib.sha256(raw).hexdigest()[:16]}{SIDECAR_SUFFIX}")


def _utf8_key(key: str) -> bool:
    """Whether a path's key is UTF-8, as every S3 key is. A name in another encoding (Latin-1
    from a Windows share or an old zip) reaches Python as lone surrogates no database takes:
    recorded, it failed every poller pass, and no file listed after it was imported. It is
    left out, with its reason, until renamed (the poller raises an alert for it:
    `names_not_utf8`)."""
    if _is_utf8(key):
        return True
    log_event(
        "bucket.key_not_utf8",
        level=logging.WARNING,
        key=_shown(key),
        reason="file name is not UTF-8: not listed; rename it (UTF-8) to have it imported",
    )
    return False


def _is_utf8(key: str) -> bool:
    try:
        key.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _shown(key: str) -> str:
    """A key holding lone surrogates (a name's bytes that are not UTF-8) as text any log,
    database or message takes: those bytes escaped (`caf\\xe9.csv`)."""
    return key.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")


class _Verified(io.RawIOBase):
    """A file read as the version `etag` (the md5 of its bytes): its last read raises
    ObjectChanged when the bytes read hash to another ETag (the file changed while read)."""

    def __init__(self, handle: BinaryIO, key: str, etag: str) -> None:
        self._handle, self._key, self._etag = handle, key, etag
        self._md5 = hashlib.md5(usedforsecurity=False)

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        data = self._handle.read(len(buffer))
        if not data and len(buffer):
            if self._md5.hexdigest() != self._etag:
                raise ObjectChanged(f"{self._key} changed while it was read")
            return 0
        self._md5.update(data)
        buffer[: len(data)] = data
        return len(data)

    def close(self) -> None:
        if not self.closed:
            self._handle.close()
        super().close()


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
