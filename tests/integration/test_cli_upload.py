"""`meterfix remediate --upload`: outputs land in S3 (moto over HTTP) with lineage metadata."""

from __future__ import annotations

import csv
import hashlib
import io
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import boto3
from botocore.config import Config

DATA = Path(__file__).parent.parent / "data" / "usage"
METERFIX = str(Path(sys.executable).with_name("meterfix"))


def _remediate(
    tmp_path: Path, endpoint: str, file: Path = DATA / "failed_records.csv", out: str = "out"
) -> subprocess.CompletedProcess[str]:
    env = {
        "PATH": "/usr/bin:/bin",
        "HOME": str(tmp_path),
        "BUCKET_URL": "s3://usage/in",
        "S3_ENDPOINT_URL": endpoint,
        **{k: os.environ[k] for k in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY")},
        "AWS_DEFAULT_REGION": "us-east-1",
    }
    args = ["remediate", str(file), "--out", str(tmp_path / out)]
    args += ["--meters", str(DATA / "meters.json"), "--rules", str(DATA / "rules.toml")]
    args += ["--now", "1764000000", "--upload", "--json"]
    return subprocess.run(
        [METERFIX, *args], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60
    )


def _bucket(endpoint: str) -> Any:
    """A boto3 client of the moto server, with the bucket `usage` made."""
    s3 = boto3.client(
        "s3",
        endpoint_url=endpoint,
        config=Config(signature_version="s3v4", s3={"addressing_style": "path"}),
    )
    s3.create_bucket(Bucket="usage")
    return s3


def test_upload_lands_in_s3_with_lineage(tmp_path: Path, s3_endpoint: str) -> None:
    s3 = _bucket(s3_endpoint)
    proc = _remediate(tmp_path, s3_endpoint)
    assert proc.returncode == 0, proc.stderr
    uploaded = json.loads(proc.stdout)["uploaded"]
    assert sorted(uploaded) == sorted(
        [
            "in/corrected/failed_records.corrected.r1.csv",
            "in/corrected/failed_records.corrected.r1.layout2.csv",
            "in/quarantine/failed_records.quarantine.r1.csv",
            "in/quarantine/failed_records.r1.audit.jsonl",
        ]
    )
    key = "in/corrected/failed_records.corrected.r1.csv"
    head = s3.head_object(Bucket="usage", Key=key)
    assert head["Metadata"]["mfx-generation"] == "1"
    assert head["Metadata"]["mfx-kind"] == "corrected"
    assert head["Metadata"]["mfx-source"].endswith("failed_records.csv")
    body = s3.get_object(Bucket="usage", Key=key)["Body"].read().decode()
    rows = list(csv.DictReader(io.StringIO(body)))
    assert {r["identifier"] for r in rows} >= {"r1-mfx1", "r2-mfx1", "r7-mfx1"}
    assert "error_code" not in rows[0]
    audit_key = "in/quarantine/failed_records.r1.audit.jsonl"
    audit_meta = s3.head_object(Bucket="usage", Key=audit_key)["Metadata"]
    audit = s3.get_object(Bucket="usage", Key=audit_key)["Body"].read()
    assert audit_meta["mfx-kind"] == "audit"
    assert audit_meta["mfx-rows"] == str(audit.count(b"\n")) != "0"  # was recorded as 0
    assert audit_meta["mfx-sha256"] == hashlib.sha256(audit).hexdigest()
    assert json.loads(audit.splitlines()[-1])["kind"] == "summary"
    quarantine = s3.get_object(Bucket="usage", Key="in/quarantine/failed_records.quarantine.r1.csv")
    assert "value 'abc' is not a number" in quarantine["Body"].read().decode()
    etags = {k: s3.head_object(Bucket="usage", Key=k)["ETag"] for k in uploaded}
    again = _remediate(tmp_path, s3_endpoint)  # deterministic: nothing new is written
    assert again.returncode == 0, again.stderr
    assert json.loads(again.stdout)["uploaded"] == uploaded
    # and it says so: the keys were all "uploaded" before, though nothing was written
    assert json.loads(again.stdout)["unchanged"] == uploaded
    assert json.loads(proc.stdout)["unchanged"] == []
    assert {k: s3.head_object(Bucket="usage", Key=k)["ETag"] for k in uploaded} == etags
    assert '"uploaded": false' in again.stderr


def test_upload_never_replaces_another_file_under_an_output_key(
    tmp_path: Path, s3_endpoint: str
) -> None:
    """`--upload` writes no tag folder: another input of the same file name (another day's
    `failed_records.csv`) makes the same keys. Replacing a corrected file the poller may have
    imported sends its rows again under the same identifiers (billed twice once Stripe's
    dedupe window is past) or loses the rows not yet imported: nothing is uploaded then."""
    s3 = _bucket(s3_endpoint)
    first = _remediate(tmp_path, s3_endpoint)
    assert first.returncode == 0, first.stderr
    uploaded = json.loads(first.stdout)["uploaded"]
    bodies = {k: s3.get_object(Bucket="usage", Key=k)["Body"].read() for k in uploaded}

    other = tmp_path / "next-day" / "failed_records.csv"
    other.parent.mkdir()
    lines = (DATA / "failed_records.csv").read_text().splitlines(keepends=True)
    other.write_text("".join([lines[0], *lines[2:]]))  # one row fewer: other outputs
    second = _remediate(tmp_path / "next-day", s3_endpoint, other)
    assert second.returncode != 0
    key = "in/corrected/failed_records.corrected.r1.csv"
    assert f"{key} already holds another file" in second.stderr
    assert "nothing was uploaded" in second.stderr
    assert {k: s3.get_object(Bucket="usage", Key=k)["Body"].read() for k in uploaded} == bodies
