"""The bucket at its edges: unusual but possible keys and names (not UTF-8, long, non-ASCII,
two objects of one file name, `#` in a prefix), against a `file://` bucket and moto S3,
through the real poller and SQLite / PostgreSQL."""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from urllib.parse import quote

import boto3
import pytest
from flask import Flask
from sqlmodel import Session, select

from remediation.filetypes import FileFormat
from remediation.outputs import lineage, output_name, source_stem
from service.adapters.bucket import file_digests, open_bucket, output_key
from service.adapters.meter_events import StripeMeterEventSink
from service.adapters.stripe_client import build_stripe_client
from service.adapters.stripe_meters import StripeMeterSource
from service.config import PollerMode, Settings
from service.db import make_engine
from service.models import BucketObject, OutputObject
from service.poller.passes import PollerDeps, build_poller_deps, run_poll_pass
from service.runtime import Runtime
from tests.conftest import SandboxServer
from tests.integration.test_e2e import BUCKET, Loop, render, running_loop
from tests.integration.test_e2e_index import _cycles
from tests.integration.test_e2e_index import _rows as _report_rows

HEADER = "identifier,timestamp,event_name,payload_stripe_customer_id,payload_value\n"


def _rows(prefix: str, count: int) -> str:
    ts = int(time.time()) - 60
    return "".join(f"{prefix}-{i},{ts},api_requests,cus_A,{i + 1}\n" for i in range(count))


@pytest.fixture
def poller_settings(
    sandbox_server: SandboxServer,
    make_settings: Callable[..., Settings],
    db_url: str,
    tmp_path: Path,
) -> Settings:
    sandbox_server.admin.create_meter("api_requests")
    return make_settings(
        database_url=db_url,
        bucket_url=f"file://{tmp_path / 'bucket'}",
        stripe_api_key=sandbox_server.api_key,
        stripe_api_base=sandbox_server.bases["api"],
        stripe_files_base=sandbox_server.bases["files"],
        stripe_meter_events_base=sandbox_server.bases["meter_events"],
    )


def _deps(settings: Settings, tmp_path: Path) -> PollerDeps:
    client = build_stripe_client(settings)
    return PollerDeps(
        engine=make_engine(settings.database_url),
        settings=settings,
        bucket=open_bucket(settings),
        meters=StripeMeterSource(client),
        sink=StripeMeterEventSink(client, settings),
        work_dir=tmp_path / "work",
        on_failed_rows=lambda s, p: None,
    )


def test_a_file_name_that_is_not_utf8_does_not_stop_the_poller(
    poller_settings: Settings,
    sandbox_server: SandboxServer,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """README: "Bounded input: no file can hang, crash or exhaust the remediation or the
    poller." A file copied into a `file://` bucket under a Latin-1 name (`m\xfcnchen.csv`, as
    a Windows share or an old zip writes it) failed every pass at its record (the key is no
    text a database takes), so no file listed after it was ever imported."""
    root = tmp_path / "bucket"
    root.mkdir(exist_ok=True)
    with open(os.path.join(os.fsencode(root), b"m\xfcnchen.csv"), "wb") as out:
        out.write((HEADER + _rows("m", 1)).encode())
    os.utime(os.path.join(os.fsencode(root), b"m\xfcnchen.csv"), (time.time() - 120,) * 2)
    (root / "a.csv").write_text(HEADER + _rows("a", 2))
    deps = _deps(poller_settings, tmp_path)
    try:
        report = run_poll_pass(deps)
        with Session(deps.engine) as session:
            keys = sorted(o.key for o in session.exec(select(BucketObject)))
    finally:
        deps.engine.dispose()
    accepted = sorted(e["identifier"] for e in sandbox_server.admin.meter_events())
    assert (report.imported, accepted, keys) == (1, ["a-0", "a-1"], ["a.csv"])
    [warned] = [r.getMessage() for r in caplog.records if "bucket.key_not_utf8" in r.getMessage()]
    assert "xfcnchen.csv" in warned and "rename it" in warned


@pytest.fixture
def report_loop(
    db_url: str, s3_endpoint: str, tmp_path: Path, make_app: Callable[[Settings], Flask]
) -> Iterator[Loop]:
    """Stripe's S3 connector (the sandbox) imports the bucket and reports data errors;
    meterfix indexes and remediates (as in test_e2e_index)."""
    with running_loop(
        db_url, s3_endpoint, tmp_path, make_app, poller=PollerMode.INDEX, data_errors="report"
    ) as running:
        yield running


@pytest.fixture
def report_deps(report_loop: Loop) -> Iterator[PollerDeps]:
    runtime = Runtime(report_loop.settings)
    try:
        yield build_poller_deps(runtime)
    finally:
        runtime.close()


def test_report_rows_of_two_objects_of_one_file_name_are_both_corrected(
    report_loop: Loop, report_deps: PollerDeps
) -> None:
    """README: the worker "corrects what can be corrected ... re-uploads a corrected file to
    the bucket" and "Nothing lost: every input row ends in exactly one output". One error
    report about `usage/eu/2026-11.csv` and `usage/us/2026-11.csv` wrote both runs' corrected
    files to `corrected/report-evt_…/2026-11.corrected.r1.csv`: the us run's 2 rows replaced
    the eu run's 4 before Stripe imported them, so eu0..eu3 were recorded corrected and
    never billed."""
    for region, ids in (("eu", ["eu0", "eu1", "eu2", "eu3"]), ("us", ["us0", "us1"])):
        specs = [{"identifier": i, "customer": "acme-42"} for i in ids]
        body = render(_report_rows(specs), "csv")
        report_loop.s3.put_object(Bucket=BUCKET, Key=f"usage/{region}/2026-11.csv", Body=body)
    _cycles(report_loop, report_deps)
    expected = ["eu0-mfx1", "eu1-mfx1", "eu2-mfx1", "eu3-mfx1", "us0-mfx1", "us1-mfx1"]
    assert sorted(report_loop.accepted()) == expected
    with report_loop.session() as session:
        outputs = session.exec(select(OutputObject).where(OutputObject.kind == "corrected"))
        written = {(o.source, o.key.rsplit("/", 2)[-2], o.rows) for o in outputs}
    assert written == {("usage/eu/2026-11.csv", "eu", 4), ("usage/us/2026-11.csv", "us", 2)}
    keys = [o["Key"] for o in report_loop.s3.list_objects_v2(Bucket=BUCKET)["Contents"]]
    assert sum(k.endswith("/eu/2026-11.corrected.r1.csv") for k in keys) == 1
    assert sum(k.endswith("/us/2026-11.corrected.r1.csv") for k in keys) == 1


def test_a_corrected_file_of_a_long_name_is_uploaded_to_a_file_bucket(
    make_settings: Callable[..., Settings], tmp_path: Path
) -> None:
    """README: the worker "re-uploads a corrected file to the bucket" and the bucket module
    says lineage travels "on disk, in a sidecar `<object>.meta.json`". Output names run to 254
    characters (`remediation.outputs.MAX_NAME`), so an input named with 240 characters (a name
    the disk holds) made a corrected file whose sidecar name was past the 255 bytes a file
    name may have: `File name too long`, the run failed on every retry, its rows never
    re-sent."""
    settings = make_settings(bucket_url=f"file://{tmp_path / 'bucket'}")
    bucket = open_bucket(settings)
    name = output_name(source_stem("usage/" + "d" * 240 + ".csv"), "corrected", 1, FileFormat.CSV)
    assert len(name) == 254
    src = tmp_path / "out.csv"
    src.write_text(HEADER + _rows("d", 1))
    key = output_key(settings, bucket, "corrected", name, "impset_local_1")
    assert bucket.upload(src, key, {"mfx-generation": "1"})
    info = bucket.head(key)
    assert info is not None and info.metadata["mfx-generation"] == "1"
    assert [o.key for o in bucket.list_objects()] == [key]
    assert not bucket.upload(src, key, {"mfx-generation": "1"})  # same content: skipped


# S3's limit on an object's user metadata: the UTF-8 bytes of its names and values (moto
# does not enforce it; S3 answers 400 MetadataTooLarge).
S3_METADATA_BYTES = 2048


def test_lineage_of_a_long_unicode_key_fits_s3_user_metadata(
    make_settings: Callable[..., Settings], s3_endpoint: str, tmp_path: Path
) -> None:
    """README: "S3 keys run to 1,024 bytes"; the bucket module: "Lineage travels as S3 user
    metadata (`mfx-source`, ...)". A key of 330 CJK characters (990 bytes) is
    percent-encoded into a 2,970-character `mfx-source`: past the 2 KB S3 takes, so every
    upload of that object's corrected file was refused and the run failed on every retry."""
    boto3.client("s3", endpoint_url=s3_endpoint).create_bucket(Bucket="usage")
    settings = make_settings(bucket_url="s3://usage/in", s3_endpoint_url=s3_endpoint)
    bucket = open_bucket(settings)
    source = "in/" + "用" * 330 + ".csv"
    src = tmp_path / "out.csv"
    src.write_text(HEADER + _rows("u", 1))
    meta = lineage(source, 1, "corrected", 1, file_digests(src)[0])
    key = output_key(settings, bucket, "corrected", "u.corrected.r1.csv", "report-evt_1")
    assert bucket.upload(src, key, meta)
    info = bucket.head(key)
    assert info is not None
    size = sum(len(k.encode()) + len(v.encode()) for k, v in info.metadata.items())
    assert size <= S3_METADATA_BYTES, size
    assert info.metadata["mfx-sha256"] == file_digests(src)[0]
    assert info.metadata["mfx-generation"] == "1" and info.metadata["mfx-kind"] == "corrected"
    assert info.metadata["mfx-source"].startswith(quote("in/用用", safe="/:._-"))
    assert not bucket.upload(src, key, meta)  # the same content again: skipped


@pytest.mark.parametrize("folder", ["usage#eu", "usage?eu", "usage;eu", "2026 #1"])
def test_bucket_url_prefix_is_taken_whole(
    make_settings: Callable[..., Settings], s3_endpoint: str, tmp_path: Path, folder: str
) -> None:
    """README: `BUCKET_URL` is "`s3://bucket/prefix`" and the poller lists the bucket under
    it. S3 keys may hold `#`, `?` and `;`, but the prefix was read as a web address: for
    `s3://usage/usage#eu` the poller listed `usage/` (`#eu` taken for a fragment), importing
    another folder's usage, and wrote its outputs there."""
    s3 = boto3.client("s3", endpoint_url=s3_endpoint)
    s3.create_bucket(Bucket="usage")
    s3.put_object(Bucket="usage", Key=f"{folder}/mine.csv", Body=b"a\n")
    s3.put_object(Bucket="usage", Key="usage/other.csv", Body=b"b\n")
    bucket = open_bucket(
        make_settings(bucket_url=f"s3://usage/{folder}", s3_endpoint_url=s3_endpoint)
    )
    assert bucket.prefix == f"{folder}/"
    assert [o.key for o in bucket.list_objects()] == [f"{folder}/mine.csv"]
