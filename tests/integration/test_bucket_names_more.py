# ruff: noqa: F811  (fixtures imported from the modules that define them)
"""Output names of one error report's runs over objects of one folder and one stem
(`day.csv`, `day.CSV`, `day.jsonl`), against moto S3 through the real poller, Stripe's
connector (the sandbox) and SQLite / PostgreSQL."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest
from sqlmodel import select

from service.adapters.bucket import object_tag, open_bucket
from service.config import Settings
from service.models import OutputObject
from service.poller.passes import PollerDeps
from tests.integration.test_bucket_edges import report_deps, report_loop  # noqa: F401
from tests.integration.test_e2e import BUCKET, Loop, render
from tests.integration.test_e2e_index import _cycles
from tests.integration.test_e2e_index import _rows as _report_rows


def _put(loop: Loop, key: str, ids: list[str], fmt: str) -> None:
    specs = [{"identifier": i, "customer": "acme-42"} for i in ids]
    loop.s3.put_object(Bucket=BUCKET, Key=key, Body=render(_report_rows(specs), fmt))


def _summary_source(loop: Loop, key: str) -> str:
    body = loop.s3.get_object(Bucket=BUCKET, Key=key)["Body"].read().decode()
    last = json.loads(body.splitlines()[-1])
    assert last["kind"] == "summary"
    return str(last["source"])


def test_report_runs_over_objects_of_one_stem_in_one_folder_keep_every_output(
    report_loop: Loop, report_deps: PollerDeps
) -> None:
    """README: "Nothing lost: every input row ends in exactly one output", and the error
    report's outputs go to `report-evt_…/<folder>/` "so two objects of one file name never
    share a corrected key". `eu/day.csv` and `eu/day.CSV` (both CSV) wrote one corrected
    key, `eu/day.corrected.r1.csv`: the second run's rows replaced the first's before Stripe
    imported them (recorded corrected, never billed); with `eu/day.jsonl` all three wrote one
    audit key, `eu/day.r1.audit.jsonl`, two audit trails lost."""
    _put(report_loop, "usage/eu/day.csv", ["c0", "c1", "c2"], "csv")
    _put(report_loop, "usage/eu/day.CSV", ["u0", "u1"], "csv")
    _put(report_loop, "usage/eu/day.jsonl", ["j0"], "jsonl")
    _put(report_loop, "usage/us/day.csv", ["s0"], "csv")  # another folder: today's names
    _cycles(report_loop, report_deps)
    expected = ["c0", "c1", "c2", "j0", "s0", "u0", "u1"]
    assert sorted(report_loop.accepted()) == [f"{i}-mfx1" for i in expected]
    with report_loop.session() as session:
        outputs = list(session.exec(select(OutputObject)))
    keys = {(o.kind, o.source): o.key.split("/", 2)[-1] for o in outputs}
    assert len(set(keys.values())) == len(outputs) == 8, keys
    tags = {o.key.split("/")[2] for o in outputs}
    assert len(tags) == 1 and tags.pop().startswith("report-evt_")
    names = {kind_source: key.split("/", 1)[1] for kind_source, key in keys.items()}
    assert names == {
        ("corrected", "usage/eu/day.csv"): "eu/day.csv/day.corrected.r1.csv",
        ("audit", "usage/eu/day.csv"): "eu/day.csv/day.r1.audit.jsonl",
        ("corrected", "usage/eu/day.CSV"): "eu/day.CSV/day.corrected.r1.csv",
        ("audit", "usage/eu/day.CSV"): "eu/day.CSV/day.r1.audit.jsonl",
        ("corrected", "usage/eu/day.jsonl"): "eu/day.jsonl/day.corrected.r1.jsonl",
        ("audit", "usage/eu/day.jsonl"): "eu/day.jsonl/day.r1.audit.jsonl",
        ("corrected", "usage/us/day.csv"): "us/day.corrected.r1.csv",
        ("audit", "usage/us/day.csv"): "us/day.r1.audit.jsonl",
    }
    for output in outputs:
        if output.kind == "audit":
            assert _summary_source(report_loop, output.key) == output.source
        else:
            body = report_loop.s3.get_object(Bucket=BUCKET, Key=output.key)["Body"].read()
            assert body.decode().count("-mfx1") == output.rows


@pytest.mark.parametrize(
    ("key", "peers", "tag"),
    [
        ("in/eu/day.csv", ["in/eu/day.csv"], "r/eu"),  # only itself
        ("in/eu/day.csv", ["in/us/day.jsonl"], "r/eu"),  # another folder
        ("in/eu/day.csv", ["in/eu/days.csv"], "r/eu"),  # another stem
        ("in/eu/day.csv", ["in/eu/day.jsonl"], "r/eu/day.csv"),
        ("in/eu/day.csv", ["in/eu/day.corrected.r1.csv"], "r/eu/day.csv"),  # our suffixes
        ("in/day.jsonl", ["in/day.txt"], "r/day.jsonl"),  # at the prefix's top
    ],
)
def test_object_tag_names_a_folder_per_object_only_when_its_stem_is_shared(
    make_settings: Callable[..., Settings], key: str, peers: list[str], tag: str
) -> None:
    """`object_tag` keeps today's folder unless another object of the run's set in the same
    folder has the same stem (its outputs would take the same names)."""
    bucket = open_bucket(make_settings(bucket_url="s3://usage/in"))
    assert object_tag("r", bucket, key, peers) == tag


def test_object_tag_of_a_long_file_name_is_a_digest(make_settings: Callable[..., Settings]) -> None:
    """A file name's folder is held to OBJECT_FOLDER_BYTES like the object's folder (an S3
    key runs to 1,024 bytes; the output key must fit too)."""
    bucket = open_bucket(make_settings(bucket_url="s3://usage/in"))
    name = "日" * 100
    tag = object_tag("r", bucket, f"in/eu/{name}.csv", [f"in/eu/{name}.jsonl"])
    other = object_tag("r", bucket, f"in/eu/{name}.jsonl", [f"in/eu/{name}.csv"])
    assert tag.startswith("r/eu/file-") and other.startswith("r/eu/file-") and tag != other
    assert len(tag) == len("r/eu/file-") + 16


def test_cli_upload_of_another_extension_of_one_name_is_refused_saying_why(
    tmp_path: Path, s3_endpoint: str
) -> None:
    """README: `meterfix remediate --upload` never replaces an output the poller may have
    imported. `day.csv` then `day.jsonl` (one folder, one stem) make one audit key: the
    second upload is refused whole, and the refusal named only "another input of this file
    name" (they are two file names), so the user could not tell what to rename."""
    from tests.integration.test_cli_upload import _bucket, _remediate

    s3 = _bucket(s3_endpoint)
    (tmp_path / "a").mkdir()
    csv_file, jsonl_file = tmp_path / "a" / "day.csv", tmp_path / "a" / "day.jsonl"
    rows = _report_rows([{"identifier": "x1", "timestamp": 1764000000123}])
    csv_file.write_bytes(render(rows, "csv"))
    jsonl_file.write_bytes(render(rows, "jsonl").replace(b"x1", b"j1"))
    first = _remediate(tmp_path, s3_endpoint, csv_file)
    assert first.returncode == 0, first.stderr
    second = _remediate(tmp_path, s3_endpoint, jsonl_file, out="out2")  # one --out: refused
    assert second.returncode != 0
    assert "in/quarantine/day.r1.audit.jsonl already holds another file" in second.stderr
    assert "`day.csv` and `day.jsonl` make one audit name" in second.stderr
    keys = sorted(o["Key"] for o in s3.list_objects_v2(Bucket="usage")["Contents"])
    assert keys == ["in/corrected/day.corrected.r1.csv", "in/quarantine/day.r1.audit.jsonl"]
    audit = s3.get_object(Bucket="usage", Key="in/quarantine/day.r1.audit.jsonl")["Body"]
    assert json.loads(audit.read().decode().splitlines()[-1])["source"] == str(csv_file)
