"""An upload to the bucket (`S3Bucket.upload`: a run's corrected and quarantine files, from a
worker's task, `remediate --upload` or `demo`) is bounded and given time as a download is:
within MFX_TASK_TIME_LIMIT from its first request to its answer and as long more as its bytes
take at MIN_TRANSFER_RATE, the task waiting on it as long. Before, it went through boto3's
transfer threads, whose sockets no deadline lists: an endpoint answering a byte at a time
held the upload (and the worker task's thread) for as long as it dripped, and a large file
sent slowly but steadily failed its task at its time limit ("exceeded the 1 s time limit").
Real parts: moto S3 behind the TCP proxy thread of `test_bucket_slow_or_down`, the worker's
`call_with_time_limit`."""

from __future__ import annotations

import hashlib
import time
from dataclasses import replace
from pathlib import Path

import boto3
import pytest
from botocore.config import Config

from service.adapters import s3_bucket
from service.adapters.s3_bucket import S3Bucket, S3Limits
from service.worker.liveness import call_with_time_limit
from tests.integration.test_bucket_slow_or_down import (  # noqa: F401 (the `proxy` fixture)
    BUCKET,
    SHORT,
    FaultyProxy,
    _within,
    proxy,
)

BODY = b"".join(b"r%05d,1764000000\n" % n for n in range(1000))  # 16 KB: ~4 s at ~4 KB/s
KEY = "usage/corrected/big.csv"
LINEAGE = {"mfx-source": "usage/big.csv", "mfx-generation": "1"}


def _stored(s3_endpoint: str) -> tuple[bytes, dict[str, str]]:
    """The object at KEY and its user metadata, read from moto itself (not the proxy)."""
    s3 = boto3.client(
        "s3", endpoint_url=s3_endpoint, config=Config(s3={"addressing_style": "path"})
    )
    found = s3.get_object(Bucket=BUCKET, Key=KEY)
    return found["Body"].read(), dict(found["Metadata"])


def _bucket(through: FaultyProxy, limits: S3Limits) -> S3Bucket:
    """The bucket behind the proxy `through`, its boto3 session built (a worker's is, by its
    first task): each thread's client is made from it in a moment, where a cold one took 2 s
    of a 1 s limit on a busy machine."""
    bucket = S3Bucket(BUCKET, "usage", f"http://127.0.0.1:{through.port}", limits)
    assert bucket.head(KEY) is None
    return bucket


def test_an_upload_answered_a_byte_at_a_time_fails_within_its_deadline(
    proxy: FaultyProxy,  # noqa: F811 (the fixture imported above)
    s3_endpoint: str,
    tmp_path: Path,
) -> None:
    """The PUT's answer dripping a byte every 0.5 s (each read well within its timeout), the
    HEAD before it answered at once: the upload fails with TimeoutError naming its key at its
    1 s deadline (the HEAD's own is 3 s), and answered at once, the same upload works.
    Before, it hung for as long as the answer dripped (minutes: still running at 15 s)."""
    src = tmp_path / "big.csv"
    src.write_bytes(BODY)
    bucket = _bucket(proxy, replace(SHORT, transfer=1))
    proxy.mode = "drip_uploads"
    took, error = _within(15, lambda: bucket.upload(src, KEY, LINEAGE))
    assert isinstance(error, TimeoutError), (error, took)
    assert f"s3://slow/{KEY} (upload): not done within 1 s" in str(error)
    assert took < 6
    proxy.mode = "pass"
    assert bucket.head(KEY) is None
    assert bucket.upload(src, KEY, LINEAGE)
    sha = hashlib.sha256(BODY).hexdigest()
    assert _stored(s3_endpoint) == (BODY, LINEAGE | {"mfx-sha256": sha})


def test_a_task_uploading_a_large_file_slowly_but_steadily_is_given_its_time(
    proxy: FaultyProxy,  # noqa: F811 (the fixture imported above)
    s3_endpoint: str,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    """A 2 s limit, 16 KB given as long more at 1 KB/s (16 s), accepted at ~4 KB/s (4-8 s):
    the object is whole, with its lineage and digest, and the same upload again is skipped.
    Before: TimeLimitExceeded "exceeded the 2 s time limit (MFX_TASK_TIME_LIMIT)" at 2 s.
    Reads wait up to 10 s: the answer comes once the proxy passed the last byte, the
    client's socket buffers holding most of the body until then."""
    src = tmp_path / "big.csv"
    src.write_bytes(BODY)
    monkeypatch.setattr(s3_bucket, "MIN_TRANSFER_RATE", 1000)
    bucket = _bucket(proxy, replace(SHORT, transfer=2, read=10))
    proxy.mode = "slow_in"
    started = time.monotonic()
    assert call_with_time_limit(lambda: bucket.upload(src, KEY, LINEAGE), 2.0, name="t-upload")
    assert 3 < time.monotonic() - started < 18
    sha = hashlib.sha256(BODY).hexdigest()
    assert _stored(s3_endpoint) == (BODY, LINEAGE | {"mfx-sha256": sha})
    proxy.mode = "pass"
    assert not bucket.upload(src, KEY, LINEAGE)  # the same content: skipped
