"""The usage bucket: `s3://bucket/prefix` through boto3, or `file://PATH` on local disk.

Both implement `remediation.ports.Bucket`. Keys are full keys inside the bucket: for
`s3://b/usage` they start with `usage/` (the bucket's `prefix`); a `file://` bucket has no
prefix. Lineage travels as S3 user metadata (`mfx-source`, `mfx-generation`, `mfx-sha256`, ...)
or, on disk, in a sidecar `<object>.meta.json`. An upload is skipped (returns False) when the
same key already holds the same content (equal `mfx-sha256`, or an ETag equal to its md5).
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator, Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO, Protocol, cast
from urllib.parse import quote, urlsplit

from remediation.ports import Bucket, ObjectInfo
from service.config import Settings
from service.logs import log_event

if TYPE_CHECKING:  # the stubs package exists only for type checking
    from mypy_boto3_s3 import S3Client

SIDECAR_SUFFIX = ".meta.json"
TEMP_MARK = ".mfx-tmp-"
SHA_KEY = "mfx-sha256"
MULTIPART_BYTES = 8 * 1024 * 1024
CHUNK = 1024 * 1024
_PRINTABLE = "".join(chr(c) for c in range(0x20, 0x7F))


class BucketError(Exception):
    """A bucket operation failed; `reason` says why in one line."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class ObjectNotFound(BucketError, FileNotFoundError):
    """The key does not exist in the bucket."""


class OutputFile(Protocol):
    """A remediation output as `upload_outputs` needs it."""

    @property
    def kind(self) -> str: ...  # corrected | quarantine | audit

    @property
    def path(self) -> Path: ...

    @property
    def metadata(self) -> Mapping[str, Any]: ...


def open_bucket(settings: Settings) -> Bucket:
    """The bucket named by BUCKET_URL (S3_ENDPOINT_URL honoured for S3)."""
    url = settings.bucket_url
    if url.startswith("file://"):
        return FileBucket(Path(url[len("file://") :]).absolute())
    if url.startswith("s3://"):
        parts = urlsplit(url)
        if not parts.netloc:
            raise BucketError(f"BUCKET_URL has no bucket name: {url!r}")
        return S3Bucket(parts.netloc, parts.path, settings.s3_endpoint_url or None)
    raise BucketError(f"BUCKET_URL must start with s3:// or file://, got {url!r}")


def output_key(bucket: Bucket, kind: str, name: str, settings: Settings) -> str:
    """Corrected files under the corrected prefix; quarantine and audit under quarantine
    (the poller never reads the quarantine prefix, so an audit .jsonl is never imported)."""
    sub = settings.mfx_corrected_prefix if kind == "corrected" else settings.mfx_quarantine_prefix
    return bucket.prefix + _dir_prefix(sub) + name


def upload_outputs(bucket: Bucket, outputs: Sequence[OutputFile], settings: Settings) -> list[str]:
    """Upload remediation outputs with their lineage; the keys, in input order.

    Keys are deterministic (prefix + file name), so a re-run uploads nothing new."""
    keys = []
    for output in outputs:
        key = output_key(bucket, output.kind, output.path.name, settings)
        metadata = {name: str(value) for name, value in output.metadata.items()}
        uploaded = bucket.upload(output.path, key, metadata)
        log_event("bucket.output", kind=output.kind, key=key, uploaded=uploaded)
        keys.append(key)
    return keys


def file_digests(path: Path) -> tuple[str, str]:
    """(sha256, md5) hex digests of a file, read in chunks."""
    sha, md5 = hashlib.sha256(), hashlib.md5(usedforsecurity=False)
    with path.open("rb") as handle:
        while chunk := handle.read(CHUNK):
            sha.update(chunk)
            md5.update(chunk)
    return sha.hexdigest(), md5.hexdigest()


def _is_identical(existing: ObjectInfo | None, sha: str, md5: str) -> bool:
    if existing is None:
        return False
    return existing.metadata.get(SHA_KEY) == sha or existing.etag == md5


def _dir_prefix(prefix: str) -> str:
    prefix = prefix.strip("/")
    return f"{prefix}/" if prefix else ""


def _ascii_metadata(metadata: Mapping[str, str], sha: str) -> dict[str, str]:
    """S3 user metadata must be ASCII: non-ASCII characters are percent-encoded (UTF-8)."""
    values = {str(k).lower(): str(v) for k, v in metadata.items()}
    values[SHA_KEY] = sha
    return {k: v if v.isascii() else quote(v, safe=_PRINTABLE) for k, v in values.items()}


class S3Bucket:
    """`s3://bucket/prefix` through boto3 (path-style addressing, SigV4)."""

    def __init__(self, name: str, prefix: str, endpoint_url: str | None) -> None:
        self.name = name
        self._prefix = _dir_prefix(prefix)
        self._endpoint_url = endpoint_url
        self._client: S3Client | None = None

    @property
    def prefix(self) -> str:
        return self._prefix

    @property
    def client(self) -> S3Client:
        if self._client is None:
            import boto3
            from botocore.config import Config

            config = Config(
                signature_version="s3v4",
                s3={"addressing_style": "path"},
                retries={"max_attempts": 5, "mode": "standard"},
            )
            self._client = boto3.client("s3", endpoint_url=self._endpoint_url, config=config)
        return self._client

    def list_objects(self, prefix: str = "") -> Iterator[ObjectInfo]:
        """Every object under the bucket prefix + `prefix`, in key order, paginated."""
        paginator = self.client.get_paginator("list_objects_v2")
        for page in paginator.paginate(Bucket=self.name, Prefix=self._prefix + prefix):
            for item in page.get("Contents", []):
                yield ObjectInfo(
                    key=item["Key"],
                    etag=item["ETag"].strip('"'),
                    size=item["Size"],
                    last_modified=item["LastModified"],
                )

    def head(self, key: str) -> ObjectInfo | None:
        from botocore.exceptions import ClientError

        try:
            response = self.client.head_object(Bucket=self.name, Key=key)
        except ClientError as exc:
            if _is_missing(exc):
                return None
            raise
        return ObjectInfo(
            key=key,
            etag=response["ETag"].strip('"'),
            size=response["ContentLength"],
            last_modified=response["LastModified"],
            metadata=dict(response.get("Metadata", {})),
        )

    def open_read(self, key: str) -> BinaryIO:
        """A streamed body (read in chunks; nothing is buffered whole)."""
        from botocore.exceptions import ClientError

        try:
            response = self.client.get_object(Bucket=self.name, Key=key)
        except ClientError as exc:
            if _is_missing(exc):
                raise ObjectNotFound(f"no such object: s3://{self.name}/{key}") from exc
            raise
        return cast(BinaryIO, io.BufferedReader(_RawBody(response["Body"]), CHUNK))

    def download(self, key: str, dest: Path) -> None:
        if self.head(key) is None:
            raise ObjectNotFound(f"no such object: s3://{self.name}/{key}")
        temp = _temp_path(dest)
        try:
            self.client.download_file(self.name, key, str(temp), Config=_transfer_config())
            os.replace(temp, dest)
        finally:
            temp.unlink(missing_ok=True)

    def upload(self, src: Path, key: str, metadata: Mapping[str, str]) -> bool:
        sha, md5 = file_digests(src)
        if _is_identical(self.head(key), sha, md5):
            log_event("bucket.upload_skipped", key=key, reason="identical object exists")
            return False
        extra = {"Metadata": _ascii_metadata(metadata, sha)}
        self.client.upload_file(
            str(src), self.name, key, ExtraArgs=extra, Config=_transfer_config()
        )
        log_event("bucket.uploaded", key=key, size=src.stat().st_size, sha256=sha)
        return True


class _RawBody(io.RawIOBase):
    """botocore's StreamingBody as a raw stream, so io.BufferedReader / TextIOWrapper (the
    CSV and JSON readers) can sit on it; closing it releases the HTTP connection."""

    def __init__(self, body: Any) -> None:
        self._body = body

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        data = self._body.read(len(buffer))
        buffer[: len(data)] = data
        return len(data)

    def close(self) -> None:
        if not self.closed:
            self._body.close()
        super().close()


def _transfer_config() -> Any:
    from boto3.s3.transfer import TransferConfig

    return TransferConfig(multipart_threshold=MULTIPART_BYTES, multipart_chunksize=MULTIPART_BYTES)


def _is_missing(exc: Exception) -> bool:
    error = getattr(exc, "response", {}).get("Error", {})
    return str(error.get("Code")) in {"404", "NoSuchKey", "NotFound"}


def _temp_path(dest: Path) -> Path:
    dest.parent.mkdir(parents=True, exist_ok=True)
    handle, name = tempfile.mkstemp(prefix=TEMP_MARK, dir=dest.parent)
    os.close(handle)
    return Path(name)


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
        if _is_identical(self.head(key), sha, md5):
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
    temp = _temp_path(dest)
    try:
        with temp.open("wb") as out:
            fill(out)
            out.flush()
            os.fsync(out.fileno())
        os.replace(temp, dest)
    finally:
        temp.unlink(missing_ok=True)
