"""`s3://bucket/prefix` through boto3: lineage travels as S3 user metadata (`mfx-source`,
`mfx-generation`, `mfx-sha256`, ...); an upload of the same content is skipped.

Every request is bounded in time (`S3Limits`): a connection opens within CONNECT_SECONDS, a
read waits READ_SECONDS at most for its next byte, a request is tried ATTEMPTS times. Those
bound a dead connection, never a slow one (an answer dripping a byte a second never trips a
read timeout: a poller pass hung on it for hours), so a listing page or a HEAD has a deadline
in all (CALL_SECONDS), and a streamed GET (`open_read`) one from its request to its last byte
(MFX_TASK_TIME_LIMIT), as a `download` is from its first GET to its last byte and an `upload`
from its first request to S3's answer to its last (each given as long more as the object's
bytes take at MIN_TRANSFER_RATE, and the worker's task reading or writing it as long:
`CallDeadline.extend_to`): at the deadline the thread's connections are shut down and the
call raises TimeoutError (`CallDeadline`). Each thread has its own client (and connection
pool), so the connections shut are only ever the ones the late call may be using; a download
and an upload run on the calling thread and its client for that (`s3_transfers`: boto3's
transfer threads open sockets no deadline lists: a download, and then an upload, had no
deadline, nor gave its task any time; an endpoint answering an upload a byte at a time held
it, and the task's thread or `remediate --upload`, for as long as it dripped, and a large
object moved steadily failed its task at every try).

A request S3 refuses, or that cannot be made (no credentials, the endpoint unreachable), is a
BucketError saying so in one line (`_s3_errors`): `meterfix demo` and `remediate --upload`
printed boto3's tracebacks (S3UploadFailedError, NoCredentialsError, EndpointConnectionError).
"""

from __future__ import annotations

import io
import os
import socket
import threading
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO, TypeVar, cast

from remediation.ports import ObjectInfo
from service.adapters.bucket_base import (
    CHUNK,
    dir_prefix,
    file_digests,
    is_identical,
    temp_path,
)
from service.adapters.call_deadline import CallDeadline
from service.adapters.s3_errors import is_missing, s3_reason, s3_status
from service.adapters.s3_metadata import ascii_metadata
from service.adapters.s3_transfers import RawBody, transfer_config
from service.errors import BucketError, ObjectChanged, ObjectNotFound
from service.logs import log_event

if TYPE_CHECKING:  # the stubs package exists only for type checking
    from mypy_boto3_s3 import S3Client

CONNECT_SECONDS = 10.0  # to open a connection
READ_SECONDS = 30.0  # one read waiting for its next byte (botocore's default: 60)
ATTEMPTS = 3  # tries of one request in all: 5xx, throttling, a dropped connection
CALL_SECONDS = 120.0  # one request in all (a listing page, a HEAD): its tries and reads
TRANSFER_SECONDS = 900.0  # a streamed object from its GET to its last byte (the default
# MFX_TASK_TIME_LIMIT: `open_bucket` passes the setting)
# Bytes a second a streamed object is given beyond TRANSFER_SECONDS: a large object read
# steadily ends, one trickling a byte at a time does not (a 10 GiB object: ~3 h in all).
MIN_TRANSFER_RATE = 1024 * 1024
T = TypeVar("T")


@dataclass(frozen=True)
class S3Limits:
    """How long S3 may take (seconds), and how often a request is tried (module docstring)."""

    connect: float = CONNECT_SECONDS
    read: float = READ_SECONDS
    attempts: int = ATTEMPTS
    call: float = CALL_SECONDS
    transfer: float = TRANSFER_SECONDS


class S3Bucket:
    """`s3://bucket/prefix` through boto3 (path-style addressing, SigV4)."""

    list_page_size = 1000  # keys a listing request asks for (S3's most)

    def __init__(
        self, name: str, prefix: str, endpoint_url: str | None, limits: S3Limits | None = None
    ) -> None:
        self.name = name
        self._prefix = dir_prefix(prefix)
        self._endpoint_url = endpoint_url
        self.limits = limits or S3Limits()
        self._local = threading.local()  # this thread's client and the sockets it opened
        self._session: Any = None
        self._building = threading.Lock()  # a boto3 session builds one client at a time

    @property
    def prefix(self) -> str:
        return self._prefix

    @property
    def client(self) -> S3Client:
        """This thread's client: its connections are used by no other thread, so the ones a
        late call's deadline shuts are only this thread's (`CallDeadline`). Built once a
        thread: a boto3 client is cheap beside the requests a thread makes."""
        client: S3Client | None = getattr(self._local, "client", None)
        if client is None:
            with self._building:
                client = self._new_client()
            self._local.client, self._local.sockets = client, []
        return client

    def _new_client(self) -> S3Client:
        import boto3
        from botocore.config import Config

        config = Config(
            signature_version="s3v4",
            s3={"addressing_style": "path"},
            connect_timeout=self.limits.connect,
            read_timeout=self.limits.read,
            retries={"total_max_attempts": self.limits.attempts, "mode": "standard"},
        )
        if self._session is None:
            self._session = boto3.session.Session()
        client = self._session.client("s3", endpoint_url=self._endpoint_url, config=config)
        return cast("S3Client", client)

    def _deadline(self, seconds: float, what: str) -> CallDeadline:
        """A deadline for a call of this thread's client, over the sockets it has opened."""
        _ = self.client  # built, with its list of sockets
        sockets: list[socket.socket] = self._local.sockets
        sockets[:] = [sock for sock in sockets if sock.fileno() != -1]  # closed ones gone
        return CallDeadline(seconds, f"s3://{self.name}/{what}", sockets)

    def _within(self, seconds: float, what: str, call: Callable[[], T]) -> T:
        """`call()` (a request of this thread's client), failed by TimeoutError past `seconds`."""
        deadline = self._deadline(seconds, what)
        try:
            with deadline.watching():
                return call()
        finally:
            deadline.cancel()

    def list_objects(self, prefix: str = "") -> Iterator[ObjectInfo]:
        """Every object under the bucket prefix + `prefix`, in key order, paginated
        (`list_page_size` keys a request, each page within `limits.call`)."""
        what = f"{self._prefix + prefix} (a listing page)"
        with self._s3_errors(f"cannot list s3://{self.name}/{self._prefix + prefix}"):
            paginator = self.client.get_paginator("list_objects_v2")
            pages = iter(
                paginator.paginate(
                    Bucket=self.name,
                    Prefix=self._prefix + prefix,
                    PaginationConfig={"PageSize": self.list_page_size},
                )
            )
        while (page := self._listing_page(what, pages)) is not None:
            for item in page.get("Contents", []):
                yield ObjectInfo(
                    key=item["Key"],
                    etag=item["ETag"].strip('"'),
                    size=item["Size"],
                    last_modified=item["LastModified"],
                )

    def _listing_page(self, what: str, pages: Iterator[Any]) -> Any:
        with self._s3_errors(f"cannot list s3://{self.name}/{self._prefix}"):
            return self._within(self.limits.call, what, lambda: next(pages, None))

    @contextmanager
    def _s3_errors(self, doing: str) -> Iterator[None]:
        """boto3's and botocore's errors as a BucketError: `doing` and why, in one line."""
        from boto3.exceptions import Boto3Error
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            yield
        except (ClientError, BotoCoreError, Boto3Error) as exc:
            raise BucketError(f"{doing}: {s3_reason(exc, self.name)}") from exc

    def head(self, key: str) -> ObjectInfo | None:
        from botocore.exceptions import ClientError

        with self._s3_errors(f"cannot read s3://{self.name}/{key}"):
            try:
                response = self._within(
                    self.limits.call,
                    f"{key} (HEAD)",
                    lambda: self.client.head_object(Bucket=self.name, Key=key),
                )
            except ClientError as exc:
                if is_missing(exc):
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
        never read as the version listed). Read to its end within `limits.transfer`, and as
        long more as its bytes take at `MIN_TRANSFER_RATE` (a 1 GiB object at 1 MiB/s, read
        steadily, failed at 900 s every pass until the poller gave it up)."""
        deadline = self._deadline(self.limits.transfer, f"{key} (GET, read to its end)")
        try:
            with deadline.watching(), self._s3_errors(f"cannot read s3://{self.name}/{key}"):
                response = self._get(key, etag)
        except BaseException:
            deadline.cancel()
            raise
        size = int(response.get("ContentLength") or 0)
        deadline.extend_to(self.limits.transfer + size // MIN_TRANSFER_RATE)
        return cast(BinaryIO, io.BufferedReader(RawBody(response["Body"], deadline), CHUNK))

    def _get(self, key: str, etag: str | None) -> Any:
        from botocore.exceptions import ClientError

        try:
            if etag is None:
                return self.client.get_object(Bucket=self.name, Key=key)
            return self.client.get_object(Bucket=self.name, Key=key, IfMatch=f'"{etag}"')
        except ClientError as exc:
            if etag is not None and (is_missing(exc) or s3_status(exc) == 412):
                raise ObjectChanged(
                    f"s3://{self.name}/{key} is no longer the version with ETag {etag}"
                ) from exc
            if is_missing(exc):
                raise ObjectNotFound(f"no such object: s3://{self.name}/{key}") from exc
            raise

    def download(self, key: str, dest: Path) -> None:
        """`key` to `dest`, within `limits.transfer` from its first GET to its last byte and as
        long more as its bytes take at `MIN_TRANSFER_RATE` (its size from the HEAD), as
        `open_read`; on this thread, through its client, so its sockets are the deadline's."""
        found = self.head(key)
        if found is None:
            raise ObjectNotFound(f"no such object: s3://{self.name}/{key}")
        deadline = self._deadline(self.limits.transfer, f"{key} (download)")
        deadline.extend_to(self.limits.transfer + found.size // MIN_TRANSFER_RATE)
        temp = temp_path(dest)
        try:
            with deadline.watching(), self._s3_errors(f"cannot download s3://{self.name}/{key}"):
                self.client.download_file(self.name, key, str(temp), Config=transfer_config())
            os.replace(temp, dest)
        finally:
            deadline.cancel()
            temp.unlink(missing_ok=True)

    def upload(self, src: Path, key: str, metadata: Mapping[str, str]) -> bool:
        """`src` to `key` with its lineage, unless an identical object is there (its HEAD
        within `limits.call`); within `limits.transfer` from its first request to S3's answer
        to its last and as long more as its bytes take at `MIN_TRANSFER_RATE`, as `download`;
        on this thread, through its client, so its sockets are the deadline's."""
        sha, md5 = file_digests(src)
        if is_identical(self.head(key), sha, md5):
            log_event("bucket.upload_skipped", key=key, reason="identical object exists")
            return False
        size = src.stat().st_size
        extra = {"Metadata": ascii_metadata(metadata, sha)}
        deadline = self._deadline(self.limits.transfer, f"{key} (upload)")
        deadline.extend_to(self.limits.transfer + size // MIN_TRANSFER_RATE)
        try:
            with deadline.watching(), self._s3_errors(f"cannot upload to s3://{self.name}/{key}"):
                self.client.upload_file(
                    str(src), self.name, key, ExtraArgs=extra, Config=transfer_config()
                )
        finally:
            deadline.cancel()
        log_event("bucket.uploaded", key=key, size=size, sha256=sha)
        return True
