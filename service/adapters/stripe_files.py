"""StripeFiles: file metadata via the SDK, contents streamed from the configured files host.

stripe-python 16.1.0 has no public method to download file contents (its raw_request JSON-
decodes every body), so contents come from `STRIPE_FILES_BASE + /v1/files/{id}/contents`
with requests. The `url` field of a file object is never followed: only configured hosts.
"""

from __future__ import annotations

import os
import re
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import requests
import stripe

from service.errors import StripeFileError
from service.logs import log_event

CHUNK = 1024 * 1024
TIMEOUT = (10, 300)  # connect, read (between chunks)
FILE_ID = re.compile(r"^file_[A-Za-z0-9_]+$")


class StripeFileStore:
    def __init__(
        self,
        client: stripe.StripeClient,
        files_base: str,
        api_key: str,
        session: requests.Session | None = None,
    ) -> None:
        self._client = client
        self._files_base = files_base.rstrip("/")
        self._api_key = api_key
        self._session = session or requests.Session()

    def file_metadata(self, file_id: str) -> Mapping[str, Any]:
        _check_id(file_id)
        return self._client.v1.files.retrieve(file_id).to_dict()

    def download_file(self, file_id: str, dest: Path) -> None:
        """Stream the contents to a temp file next to `dest`, then rename (no partial files)."""
        _check_id(file_id)
        url = f"{self._files_base}/v1/files/{file_id}/contents"
        headers = {"Authorization": f"Bearer {self._api_key}"}
        with self._session.get(
            url, headers=headers, stream=True, timeout=TIMEOUT, allow_redirects=False
        ) as response:
            if response.status_code != 200:
                raise StripeFileError(
                    f"file {file_id}: contents answered HTTP {response.status_code}",
                    status=response.status_code,
                )
            size = _stream_to(response, dest)
        log_event("stripe.file_downloaded", file_id=file_id, bytes=size)


def _check_id(file_id: str) -> None:
    if not FILE_ID.match(file_id):
        raise StripeFileError(f"not a Stripe file id: {file_id!r}")


def _stream_to(response: requests.Response, dest: Path) -> int:
    dest.parent.mkdir(parents=True, exist_ok=True)
    handle, name = tempfile.mkstemp(prefix=".mfx-tmp-", dir=dest.parent)
    size = 0
    try:
        with os.fdopen(handle, "wb") as out:
            for chunk in response.iter_content(CHUNK):
                out.write(chunk)
                size += len(chunk)
        os.replace(name, dest)
    finally:
        Path(name).unlink(missing_ok=True)
    return size
