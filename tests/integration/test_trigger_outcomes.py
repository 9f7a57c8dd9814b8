"""What meterfix does with the events `meterfix trigger` makes: the real sandbox, the service's
webhook endpoint and its worker, a file:// bucket, both databases."""
# ruff: noqa: F811  (the fixture imported from the module that defines it)

from __future__ import annotations

import csv
import subprocess
import time
from pathlib import Path

import requests
from click.testing import CliRunner

from sandbox.defaults import SANDBOX_API_KEY, sandbox_bases
from service.cli import main
from service.models import Alert, ErrorReport, ImportSet, RemediationRun
from tests.integration.test_remediation_tasks import Service, service  # noqa: F401
from tests.integration.test_walkthrough import ADMIN_TOKEN, METERFIX, stack  # noqa: F401


def _trigger(svc: Service, event_type: str) -> None:
    args = ["trigger", event_type, "--to", f"{svc.url}/webhooks", "--sandbox", svc.sandbox.url]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    svc.drain()


def _bucket(svc: Service) -> Path:
    return Path(svc.settings.bucket_url.removeprefix("file://"))


def _corrected_rows(svc: Service) -> list[dict[str, str]]:
    rows: list[dict[str, str]] = []
    for path in sorted((_bucket(svc) / "corrected").rglob("*.csv")):
        with path.open(newline="") as handle:
            rows += list(csv.DictReader(handle))
    return rows


def _alerts(svc: Service) -> list[tuple[str, str, str]]:
    return [(a.severity, a.kind, a.message) for a in svc.rows(Alert)]


def test_a_triggered_failed_import_set_is_repaired_as_a_whole_file(service: Service) -> None:
    """`trigger import_set.failed` named a source object that was nowhere and sent no file:
    the worker raised a critical "cannot remediate | source ... not found" alert, of the
    sandbox's own making. Now the trigger uploads a file Stripe's importer fails whole (a
    `;`-delimited CSV: no `event_name` column) as the import set's `file`, and every row of
    it is written corrected."""
    _trigger(service, "import_set.failed")
    assert [(s, k) for s, k, _ in _alerts(service)] == [("info", "remediation.run")], _alerts(
        service
    )
    [impset] = service.rows(ImportSet)
    assert impset.failed_reason == "Missing required column: event_name."
    source = service.sandbox.sandbox.state.files[impset.source_file_id].content.decode()
    header, *lines = source.splitlines()
    assert ";" in header and "," not in header  # why Stripe failed it whole
    sent = [line.split(";")[0] for line in lines]
    [run] = service.rows(RemediationRun)
    assert (run.trigger, run.status, run.input_rows, run.quarantined) == (
        "import_set.failed",
        "done",
        len(lines),
        0,
    )
    rows = _corrected_rows(service)
    assert [row["identifier"] for row in rows] == [f"{i}-mfx1" for i in sent]
    assert all(row["event_name"] == "api_requests" for row in rows)
    assert all(row["timestamp"].isdigit() and len(row["timestamp"]) == 10 for row in rows)


def test_triggering_a_failed_import_set_twice_repairs_each_file(service: Service) -> None:
    """Each trigger is a new import set with rows of its own: the second is repaired too, no
    identifier written twice."""
    _trigger(service, "import_set.failed")
    _trigger(service, "import_set.failed")
    runs = service.rows(RemediationRun)
    assert [r.status for r in runs] == ["done", "done"]
    ids = [row["identifier"] for row in _corrected_rows(service)]
    assert len(ids) == len(set(ids)) == sum(r.input_rows for r in runs)


def test_a_triggered_error_report_names_rows_meterfix_never_imported(service: Service) -> None:
    """`trigger error_report_triggered` samples rows no import of meterfix holds (the sandbox
    has no refused row of ours to name): the report is kept `unmatched` and its meter's
    warning says so; nothing is written to the bucket."""
    _trigger(service, "error_report_triggered")
    [report] = service.rows(ErrorReport)
    assert report.status == "unmatched"
    assert [(s, k) for s, k, _ in _alerts(service)] == [("warning", "error_report.unmatched")]
    assert not (_bucket(service) / "corrected").exists()


def test_the_readme_trigger_of_a_failed_import_set_gets_its_rows_billed(
    stack: tuple[dict[str, str], str, str], tmp_path: Path
) -> None:
    """As a new user runs it beside `make run` (sandbox, web, worker with the poller on): the
    failed file's rows are corrected, the poller imports the corrected file, and the sandbox
    bills each row once, under `<id>-mfx1`; no critical alert."""
    env, sandbox, web = stack
    result = subprocess.run(
        [METERFIX, "trigger", "data_management.import_set.failed", "--to", f"{web}/webhooks"],
        env=env, cwd=tmp_path, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    events = requests.get(f"{sandbox}/_sandbox/events", timeout=5).json()
    [impset] = [e for e in events if e["type"] == "data_management.import_set.failed"]
    source = impset["data"]["object"]["file"]
    content = requests.get(
        f"{sandbox_bases(sandbox)['files']}/v1/files/{source}/contents",
        auth=(SANDBOX_API_KEY, ""),
        timeout=5,
    ).text
    expected = {line.split(";")[0] + "-mfx1" for line in content.splitlines()[1:]}
    accepted: list[str] = []
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and set(accepted) != expected:
        time.sleep(0.5)
        billed = requests.get(f"{sandbox}/_sandbox/meter_events", timeout=5).json()
        accepted = [str(e["identifier"]) for e in billed]
    assert sorted(accepted) == sorted(expected)
    api = requests.Session()
    api.headers["Authorization"] = f"Bearer {ADMIN_TOKEN}"
    alerts = api.get(f"{web}/api/alerts", timeout=10).json()["data"]
    assert not [a for a in alerts if a["severity"] == "critical"], alerts
