"""A worker's task downloading a bucket object (`S3Bucket.download`: a report's objects, a
run's input, a re-run's pick) is bounded and given time as the streamed GET is: within
MFX_TASK_TIME_LIMIT from its GET to its last byte and as long more as its bytes take at
MIN_TRANSFER_RATE, the task waiting on it as long. Before, the download had no deadline and
told the task nothing: a large object read slowly but steadily failed its task at every try
("exceeded the 1 s time limit"), and one dripping a byte at a time held its task until the
time limit. Real parts: moto S3 behind the TCP proxy thread of `test_bucket_slow_or_down`,
the worker's `call_with_time_limit`."""

from __future__ import annotations

import time
from dataclasses import replace
from pathlib import Path

import boto3
import pytest
from botocore.config import Config

from service.adapters import s3_bucket
from service.adapters.s3_bucket import S3Bucket
from service.worker.liveness import call_with_time_limit
from tests.integration.test_bucket_slow_or_down import (  # noqa: F401 (the `proxy` fixture)
    BUCKET,
    SHORT,
    FaultyProxy,
    _within,
    proxy,
)

BODY = b"".join(b"r%05d,1764000000\n" % n for n in range(1000))  # 16 KB: ~4 s at ~4 KB/s


def _warm(bucket: S3Bucket) -> S3Bucket:
    """`bucket` with its boto3 session built (a worker's is, by its first task): each thread's
    client is made from it in a moment, where a cold one took 2 s of a 1 s limit on a busy
    machine (both tests failed there: the task at its limit, the download past 3 s)."""
    assert bucket.head("usage/day.csv") is not None
    return bucket


def test_a_task_downloading_a_large_object_slowly_but_steadily_is_given_its_time(
    proxy: FaultyProxy,  # noqa: F811 (the fixture imported above)
    s3_endpoint: str,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    """A 1 s limit, 16 KB given as long more at 1 KB/s (16 s), read at ~4 KB/s (4-8 s).
    Before: TimeLimitExceeded "exceeded the 1 s time limit (MFX_TASK_TIME_LIMIT)" after 1 s
    (the streamed GET, `open_read`, already read it whole in that task)."""
    s3 = boto3.client(
        "s3", endpoint_url=s3_endpoint, config=Config(s3={"addressing_style": "path"})
    )
    s3.put_object(Bucket=BUCKET, Key="usage/big.csv", Body=BODY)
    monkeypatch.setattr(s3_bucket, "MIN_TRANSFER_RATE", 1000)
    bucket = _warm(
        S3Bucket(BUCKET, "usage", f"http://127.0.0.1:{proxy.port}", replace(SHORT, transfer=1))
    )
    proxy.mode = "slow"
    dest = tmp_path / "big.csv"

    def task() -> bytes:
        bucket.download("usage/big.csv", dest)
        return dest.read_bytes()

    started = time.monotonic()
    assert call_with_time_limit(task, 1.0, name="t-download") == BODY
    assert 2 < time.monotonic() - started < 16
    assert [p.name for p in tmp_path.iterdir()] == ["big.csv"]


def test_a_download_slower_than_its_deadline_allows_fails_at_it(
    proxy: FaultyProxy,  # noqa: F811 (the fixture imported above)
    s3_endpoint: str,
    tmp_path: Path,
) -> None:
    """16 KB at ~4 KB/s under a 1 s transfer deadline, given nothing more for its size (1 MiB/s):
    it fails with TimeoutError at its deadline, leaving no partial file; answered at once, the
    same download works. Before, the download had no deadline at all (one dripping a byte at a
    time held its task as long as it dripped): it ended after ~4 s."""
    s3 = boto3.client(
        "s3", endpoint_url=s3_endpoint, config=Config(s3={"addressing_style": "path"})
    )
    s3.put_object(Bucket=BUCKET, Key="usage/big.csv", Body=BODY)
    bucket = _warm(
        S3Bucket(BUCKET, "usage", f"http://127.0.0.1:{proxy.port}", replace(SHORT, transfer=1))
    )
    proxy.mode = "slow"
    dest = tmp_path / "big.csv"
    took, error = _within(15, lambda: bucket.download("usage/big.csv", dest))
    assert isinstance(error, TimeoutError), (error, took)
    assert "s3://slow/usage/big.csv (download): not done within 1 s" in str(error)
    assert took < 3
    assert list(tmp_path.iterdir()) == []
    proxy.mode = "pass"
    bucket.download("usage/big.csv", dest)
    assert dest.read_bytes() == BODY
