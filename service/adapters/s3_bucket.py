"""`s3://bucket/prefix` through boto3: lineage travels as S3 user metadata (`mfx-source`,
`mfx-generation`, `mfx-sha256`, ...); an upload of the same content is skipped."""

from __future__ import annotations

import io
import os
import re
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO, cast
from urllib.parse import quote

from remediation.ports import ObjectInfo
from service.adapters.bucket_base import (
    CHUNK,
    SHA_KEY,
    dir_prefix,
    file_digests,
    is_identical,
    temp_path,
)
from service.errors import ObjectChanged, ObjectNotFound
from service.logs import log_event

if TYPE_CHECKING:  # the stubs package exists only for type checking
    from mypy_boto3_s3 import S3Client

MULTIPART_BYTES = 8 * 1024 * 1024
_PRINTABLE = "".join(chr(c) for c in range(0x20, 0x7F))


# S3 takes at most 2 KB of user metadata (the UTF-8 bytes of its names and values).
METADATA_BYTES = 2048
_CUT_MARK = "..."


def _ascii_metadata(metadata: Mapping[str, str], sha: str) -> dict[str, str]:
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


class S3Bucket:
    """`s3://bucket/prefix` through boto3 (path-style addressing, SigV4)."""

    list_page_size = 1000  # keys a listing request asks for (S3's most)

    def __init__(self, name: str, prefix: str, endpoint_url: str | None) -> None:
        self.name = name
        self._prefix = dir_prefix(prefix)
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
        """Every object under the bucket prefix + `prefix`, in key order, paginated
        (`list_page_size` keys a request)."""
        paginator = self.client.get_paginator("list_objects_v2")
        pages = paginator.paginate(
            Bucket=self.name,
            Prefix=self._prefix + prefix,
            PaginationConfig={"PageSize": self.list_page_size},
        )
        for page in pages:
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

    def open_read(self, key: str, etag: str | None = None) -> BinaryIO:
        """A streamed body (read in chunks; nothing is buffered whole); with `etag`, of that
        version only (`IfMatch`: an object overwritten since it was listed is ObjectChanged,
        never read as the version listed)."""
        from botocore.exceptions import ClientError

        try:
            if etag is None:
                response = self.client.get_object(Bucket=self.name, Key=key)
            else:
                response = self.client.get_object(Bucket=self.name, Key=key, IfMatch=f'"{etag}"')
        except ClientError as exc:
            if etag is not None and (_is_missing(exc) or _status(exc) == 412):
                raise ObjectChanged(
                    f"s3://{self.name}/{key} is no longer the version with ETag {etag}"
                ) from exc
            if _is_missing(exc):
                raise ObjectNotFound(f"no such object: s3://{self.name}/{key}") from exc
            raise
        return cast(BinaryIO, io.BufferedReader(_RawBody(response["Body"]), CHUNK))

    def download(self, key: str, dest: Path) -> None:
        if self.head(key) is None:
            raise ObjectNotFound(f"no such object: s3://{self.name}/{key}")
        temp = temp_path(dest)
        try:
            self.client.download_file(self.name, key, str(temp), Config=_transfer_config())
            os.replace(temp, dest)
        finally:
            temp.unlink(missing_ok=True)

    def upload(self, src: Path, key: str, metadata: Mapping[str, str]) -> bool:
        sha, md5 = file_digests(src)
        if is_identical(self.head(key), sha, md5):
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


def _status(exc: Exception) -> int | None:
    status = getattr(exc, "response", {}).get("ResponseMetadata", {}).get("HTTPStatusCode")
    return int(status) if isinstance(status, int) else None


def _is_missing(exc: Exception) -> bool:
    error = getattr(exc, "response", {}).get("Error", {})
    return str(error.get("Code")) in {"404", "NoSuchKey", "NotFound"}
