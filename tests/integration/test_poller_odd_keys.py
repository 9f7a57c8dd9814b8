"""Files in a `file://` bucket the poller cannot import under their name (not UTF-8): said in
a warning alert, one per file, resolved once the file is renamed or gone; the real poller
pass, the sandbox as Stripe, SQLite and PostgreSQL."""

from __future__ import annotations

import os
import time

from sqlmodel import Session, select

from service.models import Alert
from service.poller.passes import PassReport, run_poll_pass
from tests.conftest import SandboxServer
from tests.integration import test_poller
from tests.integration.test_poller import HEADER, Harness, _rows

settings, harness = test_poller.settings, test_poller.harness  # its fixtures

KIND = "poller.key_not_utf8"


def _root(harness: Harness) -> bytes:
    return os.fsencode(harness.settings.bucket_url.removeprefix("file://"))


def _write(harness: Harness, name: bytes, content: str) -> bytes:
    """A file under a name of raw bytes (as a Windows share or an old zip writes it),
    last written two minutes ago."""
    path = os.path.join(_root(harness), name)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    with os.fdopen(descriptor, "wb") as out:
        out.write(content.encode())
    os.utime(path, (time.time() - 120,) * 2)
    return path


def _alerts(harness: Harness) -> dict[str, Alert]:
    with Session(harness.engine) as session:
        found = session.exec(select(Alert).where(Alert.kind == KIND)).all()
    return {alert.alert_key: alert for alert in found}


def _accepted(sandbox_server: SandboxServer) -> list[str]:
    return sorted(e["identifier"] for e in sandbox_server.admin.meter_events())


def _not_utf8_errors(report: PassReport) -> list[str]:
    return sorted(error for error in report.errors if "not UTF-8" in error)


def test_a_file_name_not_utf8_is_a_warning_alert_counted_once_per_pass(
    harness: Harness, sandbox_server: SandboxServer
) -> None:
    """A usage file named in Latin-1 (`caf\\xe9.csv`) was left out of the listing with a log
    line only: its usage was never billed, and no operator was told. It is a warning alert
    naming the file (its bytes escaped), saying why and what to do; the other files import."""
    _write(harness, b"caf\xe9.csv", HEADER + _rows("cafe", 2))
    _write(harness, b"m\xfcnchen/2026-11.jsonl", '{"identifier":"m-0"}\n')
    _write(harness, b"notes\xe9.txt", "not usage: never imported, nothing to say")
    _write(harness, b"quarantine/q\xe9.csv", HEADER + _rows("q", 1))  # never imported either
    _write(harness, b"a.csv", HEADER + _rows("a", 2))
    first = run_poll_pass(harness.deps)
    second = run_poll_pass(harness.deps)

    assert (first.imported, _accepted(sandbox_server)) == (1, ["a-0", "a-1"])
    assert set(harness.objects()) == {"a.csv"}
    alerts = _alerts(harness)
    cafe, munich = "caf\\xe9.csv", "m\\xfcnchen/2026-11.jsonl"
    assert sorted(alerts) == [f"{KIND}:{cafe}", f"{KIND}:{munich}"]
    alert = alerts[f"{KIND}:{cafe}"]
    assert (alert.severity, alert.status, alert.count) == ("warning", "open", 2)
    assert alert.subject == f"{cafe}: file name not UTF-8, not imported"
    assert alert.message == (
        f"{cafe}: file name is not UTF-8 (another encoding, such as Latin-1): not imported. "
        "Rename it (UTF-8) to have it imported."
    )
    assert alert.detail == {"key": cafe}
    assert alerts[f"{KIND}:{munich}"].count == 2
    reason = "file name is not UTF-8: not imported; rename it (UTF-8)"
    expected = [f"{cafe}: {reason}", f"{munich}: {reason}"]
    assert _not_utf8_errors(first) == _not_utf8_errors(second) == expected


def test_a_file_renamed_to_utf8_is_imported_and_its_alert_resolved(
    harness: Harness, sandbox_server: SandboxServer
) -> None:
    """Renamed (UTF-8) the file is imported under its new name and its alert resolved; a file
    deleted resolves its alert too; one still there keeps its alert open."""
    renamed = _write(harness, b"caf\xe9.csv", HEADER + _rows("cafe", 2))
    deleted = _write(harness, b"old\xe9.csv", HEADER + _rows("old", 1))
    _write(harness, b"still\xe9.csv", HEADER + _rows("still", 1))
    first = run_poll_pass(harness.deps)
    assert (first.imported, len(_alerts(harness))) == (0, 3)

    os.rename(renamed, os.path.join(_root(harness), "café.csv".encode()))
    os.unlink(deleted)
    second = run_poll_pass(harness.deps)

    assert (second.imported, _accepted(sandbox_server)) == (1, ["cafe-0", "cafe-1"])
    assert harness.objects()["café.csv"].status == "imported"
    statuses = {key: a.status for key, a in _alerts(harness).items()}
    assert statuses == {
        f"{KIND}:caf\\xe9.csv": "resolved",
        f"{KIND}:old\\xe9.csv": "resolved",
        f"{KIND}:still\\xe9.csv": "open",
    }
    assert _not_utf8_errors(second) == [
        "still\\xe9.csv: file name is not UTF-8: not imported; rename it (UTF-8)"
    ]


def test_a_file_named_back_in_latin1_opens_its_alert_again(
    harness: Harness, sandbox_server: SandboxServer
) -> None:
    """A resolved alert raised again is a new incident (open, due for a message)."""
    path = _write(harness, b"caf\xe9.csv", HEADER + _rows("cafe", 1))
    run_poll_pass(harness.deps)
    aside = os.path.join(_root(harness), b"aside.txt")
    os.rename(path, aside)
    run_poll_pass(harness.deps)
    assert [a.status for a in _alerts(harness).values()] == ["resolved"]
    os.rename(aside, path)
    run_poll_pass(harness.deps)
    [alert] = _alerts(harness).values()
    assert (alert.status, alert.count, alert.resolved_at) == ("open", 2, None)
    assert _accepted(sandbox_server) == []
