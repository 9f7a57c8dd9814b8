"""What the CLI prints of data (bucket keys, error codes, file names) is text on one line: a
key holding rich markup, an escape sequence or a line break is written with its control
characters as code points (`[U+001B]`), never obeyed by the terminal, never a line of its own
and never read as markup. The real console script, on a pipe and on a pseudo-terminal (where
`poll` draws its progress bar), the sandbox as Stripe, a file:// bucket, SQLite and
PostgreSQL; the alert an unreadable file raises names it."""

from __future__ import annotations

import csv
import os
import pty
import re
import select
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from sqlmodel import Session
from sqlmodel import select as select_rows

from service.config import Settings
from service.db import make_engine
from service.models import Alert
from service.worker.loop import InboxWorker
from tests.conftest import SandboxServer

MFX = str(Path(sys.executable).with_name("meterfix"))
DATA = Path(__file__).parent.parent / "data" / "usage"
CURSOR_AND_COLOUR = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")
HEADER = "identifier,timestamp,event_name,payload_stripe_customer_id,payload_value\n"

MARKUP_KEY = "r [/link].csv"  # rich read it as a closing tag: MarkupError
LINK_KEY = "[link=https://evil.example]x[/link].csv"
HOSTILE_KEY = "bad\x1b[31mRED\x1b[0m\x1b]8;;evil.example\x07CLICK\x1b]8;;\x07\nfailed: forged.csv"
HOSTILE_SHOWN = (
    "bad[U+001B][31mRED[U+001B][0m[U+001B]]8;;evil.example[U+0007]CLICK"
    "[U+001B]]8;;[U+0007][U+000A]failed: forged.csv"
)


@pytest.fixture
def poller_env(sandbox_server: SandboxServer, db_url: str, tmp_path: Path) -> dict[str, str]:
    """The environment of a `meterfix poll` on this database, sandbox and a file:// bucket
    holding a usage file under a key of rich markup and an unreadable one (UTF-16) under a
    key of escape sequences and a line break."""
    sandbox_server.admin.create_meter("api_requests")
    bucket = tmp_path / "bucket"
    now = int(time.time())
    for n, key in enumerate((MARKUP_KEY, LINK_KEY)):
        (bucket / key).parent.mkdir(parents=True, exist_ok=True)
        (bucket / key).write_text(HEADER + f"shown-{n}-{now},{now - 30},api_requests,cus_A,1\n")
    (bucket / HOSTILE_KEY).write_bytes("identifier\n".encode("utf-16"))
    env = {k: v for k, v in os.environ.items() if not k.startswith(("STRIPE_", "MFX_", "LOG_"))}
    return env | {
        "DATABASE_URL": db_url,
        "BUCKET_URL": f"file://{bucket}",
        "MFX_WORK_DIR": str(tmp_path / "work"),
        "STRIPE_API_KEY": sandbox_server.api_key,
        "STRIPE_WEBHOOK_SECRETS": sandbox_server.webhook_secret,
        "STRIPE_API_BASE": sandbox_server.bases["api"],
        "STRIPE_FILES_BASE": sandbox_server.bases["files"],
        "STRIPE_METER_EVENTS_BASE": sandbox_server.bases["meter_events"],
        "LOG_FORMAT": "json",
        "LOG_LEVEL": "ERROR",
        "TERM": "xterm-256color",
        "COLUMNS": "120",
    }


def _on_a_terminal(args: list[str], env: dict[str, str]) -> tuple[int, str]:
    """Run `meterfix ARGS` with a pseudo-terminal as stdin, stdout and stderr (as `script`
    does): its exit code and all it wrote."""
    leader, follower = pty.openpty()
    proc = subprocess.Popen(
        [MFX, *args], env=env, stdin=follower, stdout=follower, stderr=follower, close_fds=True
    )
    os.close(follower)
    written = bytearray()
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        ready, _, _ = select.select([leader], [], [], 0.2)
        if ready:
            try:
                chunk = os.read(leader, 65536)
            except OSError:  # EIO: the process and its terminal are gone
                break
            if not chunk:
                break
            written += chunk
        elif proc.poll() is not None:
            break
    os.close(leader)
    return proc.wait(timeout=10), written.decode("utf-8", "replace")


def _lines(output: str) -> list[str]:
    """The lines of what a terminal was sent, rich's cursor moves and colours left out."""
    return [line.strip("\r") for line in CURSOR_AND_COLOUR.sub("", output).split("\n")]


def test_poll_on_a_terminal_draws_a_key_of_markup_as_text_and_says_what_it_did(
    poller_env: dict[str, str], sandbox_server: SandboxServer
) -> None:
    """A key `r [/link].csv` given to the progress bar as its description was read as
    markup: MarkupError, a traceback, exit 1, and no summary although its row was sent."""
    code, output = _on_a_terminal(["poll", "--once"], poller_env)
    assert "Traceback" not in output and "MarkupError" not in output, output
    assert code == 0, output
    summary = [line for line in _lines(output) if line.startswith("import: ")]
    assert summary and summary[0].startswith("import: 2 files, 2 rows, 2 sent"), output
    assert len(sandbox_server.admin.meter_events()) == 2
    assert "\x1b]8;" not in output  # no key became a hyperlink (`[link=…]`), nor opened one
    assert "\x1b[31mRED" not in output and "[U+001B][31mRED" in output
    failed = [line for line in _lines(output) if line.startswith("failed: ")]
    assert len(failed) == 1 and failed[0].startswith(f"failed: {HOSTILE_SHOWN}: "), output


def test_poll_writes_a_key_in_its_failed_lines_as_one_line_of_text(
    poller_env: dict[str, str], db_url: str
) -> None:
    """An escape sequence of a key coloured the terminal and opened a hyperlink, and its
    line break forged a second `failed: forged.csv: …` line."""
    proc = subprocess.run(
        [MFX, "poll", "--once"], env=poller_env, capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == 0, proc.stderr
    assert "\x1b" not in proc.stdout and "\x07" not in proc.stdout
    failed = [line for line in proc.stdout.splitlines() if line.startswith("failed: ")]
    assert len(failed) == 1, proc.stdout
    assert failed[0].startswith(f"failed: {HOSTILE_SHOWN}: "), proc.stdout
    assert proc.stdout.startswith("import: 2 files, 2 rows, 2 sent, 0 failed rows, 1 unreadable")


def test_a_file_that_cannot_be_remediated_is_named_in_its_critical_alert(
    poller_env: dict[str, str], db_url: str, make_settings: Callable[..., Settings]
) -> None:
    """The unreadable file's task raised `import_set_failed impset_local_…: cannot
    remediate`, its message `…: save it as UTF-8`, naming no file: the key it was about was
    only in the import set's row."""
    proc = subprocess.run(
        [MFX, "poll", "--once"], env=poller_env, capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == 0, proc.stderr
    settings = make_settings(
        database_url=db_url,
        bucket_url=poller_env["BUCKET_URL"],
        mfx_work_dir=poller_env["MFX_WORK_DIR"],
        stripe_api_key=poller_env["STRIPE_API_KEY"],
        stripe_api_base=poller_env["STRIPE_API_BASE"],
        stripe_files_base=poller_env["STRIPE_FILES_BASE"],
        stripe_meter_events_base=poller_env["STRIPE_METER_EVENTS_BASE"],
    )
    engine = make_engine(db_url)
    try:
        InboxWorker(engine, settings).drain()
        with Session(engine) as session:
            alerts = session.exec(select_rows(Alert).where(Alert.kind == "remediation_input")).all()
    finally:
        engine.dispose()
    [alert] = alerts
    assert alert.severity == "critical" and alert.alert_key.startswith(
        "remediation:import_set_failed:impset_local_"
    )
    assert alert.subject.startswith("import_set_failed impset_local_")
    assert alert.subject.endswith(f": cannot remediate {HOSTILE_KEY}")
    assert alert.message.startswith(f"{HOSTILE_KEY}: ") and "UTF-8" in alert.message
    impset = alert.alert_key.rsplit(":", 1)[1]
    assert alert.links == {"import_set": impset, "objects": [HOSTILE_KEY]}


def _validate(tmp_path: Path, rows: list[list[str]]) -> subprocess.CompletedProcess[str]:
    source = tmp_path / "hostile.csv"
    with source.open("w", newline="") as out:
        csv.writer(out).writerows([[*HEADER.strip().split(","), "error_code", "error_message"]])
        csv.writer(out).writerows(rows)
    meters = str(DATA / "meters.json")
    return subprocess.run(
        [MFX, "validate", str(source), "--meters", meters, "--now", "1764000000"],
        capture_output=True,
        text=True,
        timeout=60,
        env={"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "COLUMNS": "200"},
    )


def test_validate_writes_an_error_code_as_one_line_of_text(tmp_path: Path) -> None:
    """An input row's error code was a cell of the table as it came: its escape sequences
    coloured the terminal and opened a hyperlink, and `line1\\nline2 forged` was two rows."""
    proc = _validate(
        tmp_path,
        [
            ["a-1", "1764000000", "api_requests", "cus_A", "5", "\x1b[31mred\x1b[0m", "m"],
            ["a-2", "1764000000", "api_requests", "cus_A", "5", "line1\nline2 forged", "m"],
            ["a-3", "1764000000", "api_requests", "cus_A", "5", "bidi\u202eexe.csv", "m"],
        ],
    )
    assert proc.returncode == 1, proc.stderr  # rows are invalid: exit 1, no failure
    assert proc.stderr == ""
    assert "\x1b" not in proc.stdout and "\u202e" not in proc.stdout
    assert "[U+001B][31mred[U+001B][0m" in proc.stdout
    assert "bidi[U+202E]exe.csv" in proc.stdout
    [row] = [line for line in proc.stdout.splitlines() if "line1" in line]
    assert "line1[U+000A]line2 forged" in row
    assert not [
        line for line in proc.stdout.splitlines() if "line2" in line and "line1" not in line
    ]
