"""StripeFiles: file metadata via the SDK, contents streamed from the configured files host.

stripe-python 16.1.0 has no public method to download file contents (its raw_request JSON-
decodes every body), so contents come from `STRIPE_FILES_BASE + /v1/files/{id}/contents`
with requests. The `url` field of a file object is never followed: only configured hosts.

A download is read to its end within `transfer_seconds` (MFX_TASK_TIME_LIMIT, passed by the
runtime) and as long more as its bytes take at MIN_TRANSFER_RATE (its Content-Length, else
the bytes read so far), as the bucket's streamed GET is: a read timeout bounds a dead
connection only, and contents dripping a byte at a time held a task for as long as they
dripped. At the deadline the thread's connections are shut down (`CallDeadline`; each thread
has its own session) and the download fails with StripeFileError (the task is retried). Only
the worker's tasks download, and the task is given the same time more beyond its own
MFX_TASK_TIME_LIMIT (`CallDeadline.extend_to` tells it, `service.worker.item_deadline` grants it):
a file too large to read within the limit alone, read steadily, is remediated (before, its
task failed at the limit at every try, its rows never corrected).
Metadata goes through the StripeClient, whose requests have their own deadline
(`stripe_client.CALL_SECONDS`).
"""

from __future__ import annotations

import os
import re
import socket
import tempfile
import threading
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import requests
import stripe

from service.adapters.call_deadline import CallDeadline
from service.errors import StripeFileError
from service.logs import log_event

CHUNK = 1024 * 1024
TIMEOUT = (10, 300)  # connect, read (between chunks)
TRANSFER_SECONDS = 900.0  # a download in all, beside its bytes (the default MFX_TASK_TIME_LIMIT)
# Bytes a second a download is given beyond TRANSFER_SECONDS: a large file read steadily ends,
# one dripping a byte at a time does not.
MIN_TRANSFER_RATE = 1024 * 1024
FILE_ID = re.compile(r"^file_[A-Za-z0-9_]+$")


class StripeFileStore:
    def __init__(
        self,
        client: stripe.StripeClient,
        files_base: str,
        api_key: str,
        transfer_seconds: float = TRANSFER_SECONDS,
    ) -> None:
        self._client = client
        self._files_base = files_base.rstrip("/")
        self._api_key = api_key
        self._transfer_seconds = transfer_seconds
        self._local = threading.local()  # this thread's session and the sockets it opened

    def file_metadata(self, file_id: str) -> Mapping[str, Any]:
        """The file object; StripeFileError (with the answer's HTTP status, None when there
        was no answer: a dropped connection, a deadline) when it cannot be read."""
        _check_id(file_id)
        try:
            return self._client.v1.files.retrieve(file_id).to_dict()
        except stripe.StripeError as exc:
            detail = " ".join(str(exc.user_message or type(exc).__name__).split())
            raise StripeFileError(
                f"file {file_id}: metadata: {_answered(exc.http_status)}: {detail}",
                status=exc.http_status,
            ) from exc

    def download_file(self, file_id: str, dest: Path) -> None:
        """Stream the contents to a temp file next to `dest`, then rename (no partial files),
        within the deadline of the module docstring."""
        _check_id(file_id)
        session, sockets = self._thread_session()
        deadline = CallDeadline(self._transfer_seconds, f"file {file_id}: contents", sockets)
        try:
            with deadline.watching():
                size = self._fetch(session, file_id, dest, deadline)
        except TimeoutError as exc:  # `watching`: the deadline passed
            raise StripeFileError(
                f"file {file_id}: contents not read within {deadline.seconds:g} s (answering "
                "too slowly, or not at all): retried"
            ) from exc
        finally:
            deadline.cancel()
        log_event("stripe.file_downloaded", file_id=file_id, bytes=size)

    def _fetch(
        self, session: requests.Session, file_id: str, dest: Path, deadline: CallDeadline
    ) -> int:
        url = f"{self._files_base}/v1/files/{file_id}/contents"
        headers = {"Authorization": f"Bearer {self._api_key}"}
        with session.get(
            url, headers=headers, stream=True, timeout=TIMEOUT, allow_redirects=False
        ) as response:
            if response.status_code != 200:
                raise StripeFileError(
                    f"file {file_id}: contents answered {_answered(response.status_code)}",
                    status=response.status_code,
                )
            length = response.headers.get("Content-Length", "")
            if length.isdigit():
                deadline.extend_to(self._transfer_seconds + int(length) // MIN_TRANSFER_RATE)
            return _stream_to(
                response,
                dest,
                lambda got: deadline.extend_to(self._transfer_seconds + got // MIN_TRANSFER_RATE),
            )

    def _thread_session(self) -> tuple[requests.Session, list[socket.socket]]:
        """This thread's session and the sockets it opened (the only ones its downloads read
        from: a deadline shuts no other thread's)."""
        session: requests.Session | None = getattr(self._local, "session", None)
        if session is None:
            session = self._local.session = requests.Session()
            self._local.sockets = []
        sockets: list[socket.socket] = self._local.sockets
        sockets[:] = [sock for sock in sockets if sock.fileno() != -1]  # closed ones gone
        return session, sockets


# What an answer refusing the key says, beside its status: no try of the task will do better
# until the key changes (STRIPE_API_KEY).
_KEY_REFUSED = {
    401: "the API key was refused (STRIPE_API_KEY rolled or expired?)",
    403: "the API key may not read files (a restricted key without Files read?)",
}


def _answered(status: int | None) -> str:
    """How a reason names an answer: its HTTP status (and what a refused key means), or that
    none came (a dropped connection, a refused one, a deadline)."""
    if status is None:
        return "no answer"
    why = _KEY_REFUSED.get(status)
    return f"HTTP {status}" + (f": {why}" if why else "")


def _check_id(file_id: str) -> None:
    if not FILE_ID.match(file_id):
        raise StripeFileError(f"not a Stripe file id: {file_id!r}")


def _stream_to(response: requests.Response, dest: Path, read: Callable[[int], None]) -> int:
    """The bytes written; `read(n)` after each chunk, `n` the bytes read so far."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    handle, name = tempfile.mkstemp(prefix=".mfx-tmp-", dir=dest.parent)
    size = 0
    try:
        with os.fdopen(handle, "wb") as out:
            for chunk in response.iter_content(CHUNK):
                out.write(chunk)
                size += len(chunk)
                read(size)
        os.replace(name, dest)
    finally:
        Path(name).unlink(missing_ok=True)
    return size
