"""The bucket adapter against real moto S3 over HTTP and a tmp `file://` bucket."""

from __future__ import annotations

import csv
import hashlib
import io
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import boto3
import pytest

from remediation.ports import Bucket
from service.adapters.bucket import (
    SIDECAR_SUFFIX,
    BucketError,
    FileBucket,
    ObjectNotFound,
    S3Bucket,
    file_digests,
    open_bucket,
    upload_outputs,
)
from service.config import Settings

BucketFactory = Callable[[], Bucket]


@pytest.fixture(params=["s3", "file"])
def bucket(
    request: pytest.FixtureRequest, tmp_path: Path, make_settings: Callable[..., Settings]
) -> Bucket:
    if request.param == "file":
        return open_bucket(make_settings(bucket_url=f"file://{tmp_path / 'bucket'}"))
    endpoint: str = request.getfixturevalue("s3_endpoint")
    boto3.client("s3", endpoint_url=endpoint).create_bucket(Bucket="usage")
    return open_bucket(make_settings(bucket_url="s3://usage/in", s3_endpoint_url=endpoint))


def _write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


def _read(bucket: Bucket, key: str) -> bytes:
    with bucket.open_read(key) as stream:
        return b"".join(iter(lambda: stream.read(65536), b""))


def test_open_bucket_parses_urls(make_settings: Callable[..., Settings], tmp_path: Path) -> None:
    s3 = open_bucket(make_settings(bucket_url="s3://b/usage/daily"))
    assert isinstance(s3, S3Bucket)
    assert (s3.name, s3.prefix) == ("b", "usage/daily/")
    assert open_bucket(make_settings(bucket_url="s3://b")).prefix == ""
    relative = open_bucket(make_settings(bucket_url="file://./bkt"))
    assert isinstance(relative, FileBucket)
    assert relative.root == Path.cwd() / "bkt"
    absolute = open_bucket(make_settings(bucket_url=f"file://{tmp_path}/abs"))
    assert isinstance(absolute, FileBucket)
    assert absolute.root == tmp_path / "abs"
    with pytest.raises(BucketError, match="s3:// or file://"):
        # the settings refuse it (tests/integration/test_settings_edges.py); the adapter too
        open_bucket(make_settings().model_copy(update={"bucket_url": "gs://nope"}))


def test_round_trip_with_metadata(bucket: Bucket, tmp_path: Path) -> None:
    data = b"identifier,timestamp\nid-1,1700000000\n"
    src = _write(tmp_path / "a.csv", data)
    key = bucket.prefix + "2026/a.csv"
    assert bucket.upload(src, key, {"mfx-source": "s3://x/é.csv", "mfx-generation": "2"})
    assert _read(bucket, key) == data
    info = bucket.head(key)
    assert info is not None
    assert info.size == len(data)
    assert info.etag == hashlib.md5(data).hexdigest()
    assert info.metadata["mfx-generation"] == "2"
    assert info.metadata["mfx-sha256"] == hashlib.sha256(data).hexdigest()
    assert info.metadata["mfx-source"] in ("s3://x/é.csv", "s3://x/%C3%A9.csv")
    dest = tmp_path / "out" / "copy.csv"
    bucket.download(key, dest)
    assert dest.read_bytes() == data


def test_identical_reupload_is_skipped_changed_content_is_not(
    bucket: Bucket, tmp_path: Path
) -> None:
    key = bucket.prefix + "corrected/a.csv"
    src = _write(tmp_path / "a.csv", b"v1\n")
    assert bucket.upload(src, key, {"mfx-generation": "1"}) is True
    assert bucket.upload(src, key, {"mfx-generation": "1"}) is False
    _write(src, b"v2\n")
    assert bucket.upload(src, key, {"mfx-generation": "1"}) is True
    assert _read(bucket, key) == b"v2\n"


def test_listing_paginates_and_skips_sidecars(bucket: Bucket, tmp_path: Path) -> None:
    src = _write(tmp_path / "x.csv", b"x\n")
    keys = [f"{bucket.prefix}many/{i:05d}.csv" for i in range(23)]
    if isinstance(bucket, S3Bucket):  # bulk put: upload() heads first
        bucket.list_page_size = 5  # S3 pages of 5 keys, as 1,000 a page in a large bucket
        for key in keys:
            bucket.client.put_object(Bucket=bucket.name, Key=key, Body=b"x\n")
    else:
        assert isinstance(bucket, FileBucket)
        (bucket.root / "many").mkdir(parents=True)
        for key in keys:
            (bucket.root / key).write_bytes(b"x\n")
    bucket.upload(src, bucket.prefix + "other/with-meta.csv", {"mfx-source": "t"})
    listed = list(bucket.list_objects("many/"))
    assert [o.key for o in listed] == keys  # S3: pagination crossed four times
    assert all(o.size == 2 and o.etag == hashlib.md5(b"x\n").hexdigest() for o in listed)
    everything = [o.key for o in bucket.list_objects()]
    assert bucket.prefix + "other/with-meta.csv" in everything
    assert not any(k.endswith(SIDECAR_SUFFIX) for k in everything)
    assert len(everything) == 24


def test_missing_key_errors(bucket: Bucket, tmp_path: Path) -> None:
    key = bucket.prefix + "nope.csv"
    assert bucket.head(key) is None
    with pytest.raises(ObjectNotFound):
        bucket.open_read(key)
    with pytest.raises(FileNotFoundError):
        bucket.download(key, tmp_path / "x")
    assert not (tmp_path / "x").exists()
    assert list(bucket.list_objects("nothing-here/")) == []


def test_large_file_goes_multipart(
    s3_endpoint: str, make_settings: Callable[..., Settings], tmp_path: Path
) -> None:
    boto3.client("s3", endpoint_url=s3_endpoint).create_bucket(Bucket="big")
    bucket = open_bucket(make_settings(bucket_url="s3://big/p", s3_endpoint_url=s3_endpoint))
    data = os.urandom(20 * 1024 * 1024)
    src = _write(tmp_path / "big.csv", data)
    assert bucket.upload(src, "p/big.csv", {"mfx-generation": "1"})
    info = bucket.head("p/big.csv")
    assert info is not None
    assert info.etag.endswith("-3")  # 8 MB parts: a multipart upload
    assert info.metadata["mfx-sha256"] == hashlib.sha256(data).hexdigest()
    assert hashlib.sha256(_read(bucket, "p/big.csv")).digest() == hashlib.sha256(data).digest()
    assert bucket.upload(src, "p/big.csv", {"mfx-generation": "1"}) is False  # sha, not md5


def test_file_bucket_rejects_escaping_keys(tmp_path: Path) -> None:
    (tmp_path / "b").mkdir()
    bucket = FileBucket(tmp_path / "b")
    for key in ("../evil.csv", "/etc/passwd", "a//b.csv", ""):
        with pytest.raises(BucketError):
            bucket.head(key)


def test_file_bucket_sidecar_and_no_temp_leftovers(tmp_path: Path) -> None:
    (tmp_path / "b").mkdir()
    bucket = FileBucket(tmp_path / "b")
    src = _write(tmp_path / "a.jsonl", b'{"a":1}\n')
    bucket.upload(src, "q/a.jsonl", {"MFX-Source": "file_123"})
    files = sorted(p.name for p in (tmp_path / "b" / "q").iterdir())
    assert files == ["a.jsonl", "a.jsonl.meta.json"]
    info = bucket.head("q/a.jsonl")
    assert info is not None
    assert info.metadata["mfx-source"] == "file_123"


@dataclass
class _Output:
    kind: str
    path: Path
    metadata: dict[str, Any] = field(default_factory=dict)


def test_upload_outputs_places_by_kind(
    bucket: Bucket, tmp_path: Path, make_settings: Callable[..., Settings]
) -> None:
    settings = make_settings()
    outputs = [
        _Output("corrected", _write(tmp_path / "f.r1.csv", b"c\n"), {"mfx-generation": 1}),
        _Output("quarantine", _write(tmp_path / "f.quarantine.csv", b"q\n")),
        _Output("audit", _write(tmp_path / "f.audit.jsonl", b"{}\n")),
    ]
    keys = upload_outputs(bucket, outputs, settings)
    p = bucket.prefix
    assert keys == [
        f"{p}corrected/f.r1.csv",
        f"{p}quarantine/f.quarantine.csv",
        f"{p}quarantine/f.audit.jsonl",
    ]
    assert _read(bucket, keys[0]) == b"c\n"
    head = bucket.head(keys[0])
    assert head is not None and head.metadata["mfx-generation"] == "1"
    assert upload_outputs(bucket, outputs, settings) == keys  # idempotent, nothing new


def test_open_read_works_under_text_readers(bucket: Bucket, tmp_path: Path) -> None:
    data = "identifier,value\n" + "".join(f"id-{i},{i}\n" for i in range(50_000))
    key = bucket.prefix + "t.csv"
    bucket.upload(_write(tmp_path / "t.csv", data.encode()), key, {})
    with bucket.open_read(key) as stream:
        text = io.TextIOWrapper(stream, encoding="utf-8", newline="")
        rows = list(csv.reader(text))
        text.detach()
    assert len(rows) == 50_001 and rows[-1] == ["id-49999", "49999"]


def test_file_bucket_remembers_one_etag_an_object_however_often_it_changes(
    tmp_path: Path,
) -> None:
    """A long-lived process (the poller on a `file://` bucket) lists the same objects again
    and again: the ETags it remembers are one an object, the latest, not one a version."""
    (tmp_path / "b").mkdir()
    bucket = FileBucket(tmp_path / "b")
    for n in range(1, 6):
        src = _write(tmp_path / f"v{n}.csv", b"a\n" * n)
        bucket.upload(src, "usage/u.csv", {})
        [info] = bucket.list_objects("usage/")
        assert info.etag == file_digests(src)[1]
        assert info.size == 2 * n
    assert len(bucket._etags) == 1
