"""How an S3 object's bytes move on the calling thread (`s3_bucket.S3Bucket`): a streamed body
read under its transfer's deadline, and downloads and uploads kept off boto3's transfer threads
(whose sockets no `CallDeadline` could shut)."""

from __future__ import annotations

import io
from typing import Any

from service.adapters.call_deadline import CallDeadline

MULTIPART_BYTES = 8 * 1024 * 1024


class RawBody(io.RawIOBase):
    """botocore's StreamingBody as a raw stream, so io.BufferedReader / TextIOWrapper (the
    CSV and JSON readers) can sit on it; closing it releases the HTTP connection, and ends
    the transfer's deadline (a read past it raises TimeoutError)."""

    def __init__(self, body: Any, deadline: CallDeadline) -> None:
        self._body, self._deadline = body, deadline

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        with self._deadline.watching():
            data = self._body.read(len(buffer))
        buffer[: len(data)] = data
        return len(data)

    def close(self) -> None:
        if not self.closed:
            self._deadline.cancel()
            self._body.close()
        super().close()


def transfer_config() -> Any:
    """A download's or an upload's parts, one after the other on the calling thread: boto3's
    transfer threads would open sockets off it, which its `CallDeadline` never lists (they
    could not be shut at the deadline) and which this thread's pool would then hand to its
    next calls, unlisted too."""
    from boto3.s3.transfer import TransferConfig

    return TransferConfig(
        multipart_threshold=MULTIPART_BYTES,
        multipart_chunksize=MULTIPART_BYTES,
        use_threads=False,
    )
