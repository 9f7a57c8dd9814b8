"""Settings at their edges: a configuration mistake is one line naming the variable and what
it takes (`Error: bad configuration: VAR: …`), exit 1, before anything runs; never a
traceback, a busy loop or a quiet fallback. Each test failed on the code before its fix (the
docstrings say what happened).

The first value of each test goes through the real console script (`meterfix …`, a process
of its own: ~1.5 s); the others are read in this process as `meterfix worker` reads them
before it starts (`_read_as_the_worker`), the settings and then the notify jobs' schedule and
channels."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
from pathlib import Path

import pytest
from pydantic import ValidationError

from service.adapters.channels import ChannelName, build_channel
from service.app import create_app
from service.config import Settings
from service.config.diagnostics import settings_problems
from service.notify.windows import DigestSchedule
from tests.integration.test_worker_process import MFX

TIMEOUT = 20  # a refused command exits at once; one that runs anyway is stopped here


@pytest.fixture(scope="module")
def migrated(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A directory holding a SQLite database at the current schema, made once (each
    `meterfix db upgrade` is a process of its own: ~2 s a test on a loaded machine)."""
    folder = tmp_path_factory.mktemp("migrated")
    result = _run(["db", "upgrade"], folder)
    assert result.returncode == 0, result.stderr
    return folder


@pytest.fixture
def workdir(tmp_path: Path, migrated: Path) -> Path:
    """A working directory with a current SQLite schema (a copy of `migrated`'s), so a
    command that is not refused runs in full (a missing schema would refuse it for another
    reason)."""
    for database in migrated.glob("meterfix.db*"):
        shutil.copy(database, tmp_path / database.name)
    return tmp_path


def _env(cwd: Path, **extra: str) -> dict[str, str]:
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("STRIPE_", "MFX_", "DIGEST_", "LOG_"))
        and k not in ("DATABASE_URL", "BUCKET_URL", "SLACK_WEBHOOK_URL", "SMTP_URL")
    }
    env.update(
        DATABASE_URL=f"sqlite:///{cwd / 'meterfix.db'}",
        BUCKET_URL=f"file://{cwd / 'bucket'}",
        LOG_FORMAT="json",
    )
    return env | extra


def _run(args: list[str], cwd: Path, **extra: str) -> subprocess.CompletedProcess[str]:
    """`meterfix ARGS`; stopped (its whole process group) after TIMEOUT seconds."""
    proc = subprocess.Popen(
        [MFX, *args],
        env=_env(cwd, **extra),
        cwd=cwd,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        stdout, stderr = proc.communicate(timeout=TIMEOUT)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        stdout, stderr = proc.communicate()
        stderr += f"\n[still running after {TIMEOUT} s: stopped]"
    return subprocess.CompletedProcess(proc.args, proc.returncode, stdout, stderr)


def _read_as_the_worker(
    args: list[str], cwd: Path, monkeypatch: pytest.MonkeyPatch, **extra: str
) -> subprocess.CompletedProcess[str]:
    """What `meterfix ARGS` (a `worker` or `poll`) says of its settings before it starts, read
    in this process: the settings from the environment and `.env` of `cwd`, then (a worker)
    the digest schedule and the channels, as `commands.intake._check_notify_settings` reads
    them. Refused: exit 1 and the one line on stderr; else exit 0 and nothing."""
    monkeypatch.chdir(cwd)
    for name in os.environ:
        monkeypatch.delenv(name)
    for name, value in _env(cwd, **extra).items():
        monkeypatch.setenv(name, value)
    try:
        settings = Settings()
        if args[0] == "worker":
            DigestSchedule(settings.digest_every, settings.digest_tz)
            for name in ChannelName:
                build_channel(settings, name)
    except ValidationError as exc:
        line = f"Error: bad configuration: {settings_problems(exc)}\n"
        return subprocess.CompletedProcess(args, 1, "", line)
    except ValueError as exc:
        return subprocess.CompletedProcess(args, 1, "", f"Error: bad configuration: {exc}\n")
    return subprocess.CompletedProcess(args, 0, "", "")


def _outcome(
    args: list[str], cwd: Path, monkeypatch: pytest.MonkeyPatch, first: bool, **extra: str
) -> subprocess.CompletedProcess[str]:
    """`meterfix ARGS` run for the `first` value of a test, else read in this process."""
    if first:
        return _run(args, cwd, **extra)
    return _read_as_the_worker(args, cwd, monkeypatch, **extra)


def _assert_refused(
    result: subprocess.CompletedProcess[str], variable: str, says: str, *, first: bool = True
) -> None:
    """Exit 1, nothing on stdout, and a last line on stderr naming `variable` and saying
    `says`; with `first`, the only line (refused with the settings, before the app's start-up
    line)."""
    assert "Traceback" not in result.stderr, result.stderr[-3000:]
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 or not first, result.stderr[-3000:]
    line = lines[-1]
    assert line.startswith(f"Error: bad configuration: {variable}"), line
    assert says in line, line
    assert (result.returncode, result.stdout) == (1, "")


@pytest.mark.parametrize("value", ["0", "-5"])
def test_poll_interval_not_positive_is_refused_not_a_busy_loop(
    workdir: Path, value: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """README: MFX_POLL_INTERVAL is the "seconds between poller passes". `0` or a negative
    number was taken: `poll_forever` waits `stop.wait(0)` between passes, so `meterfix poll`
    (and the worker's poller thread) ran pass after pass with no pause, listing the bucket
    and calling Stripe as fast as it could, until stopped."""
    result = _outcome(["poll"], workdir, monkeypatch, value == "0", MFX_POLL_INTERVAL=value)
    _assert_refused(result, "MFX_POLL_INTERVAL", "must be a positive number")


@pytest.mark.parametrize("value", ["0", "-1", "nan", "inf"])
def test_worker_interval_not_a_positive_number_is_refused(
    workdir: Path, value: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """MFX_WORKER_INTERVAL is how long the worker waits between inbox passes. `0`, a negative
    number or `nan` made `stop.wait()` return at once (a busy loop on the database); `inf`
    raised OverflowError in the loop. All were taken and the worker started."""
    first = value == "0"
    result = _outcome(["worker", "--once"], workdir, monkeypatch, first, MFX_WORKER_INTERVAL=value)
    _assert_refused(result, "MFX_WORKER_INTERVAL", "must be a positive number")


@pytest.mark.parametrize("value", ["mysql://u@127.0.0.1/db", "meterfix.db"])
def test_database_url_of_another_kind_is_one_line(
    workdir: Path, value: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """DATABASE_URL of a database meterfix does not run on (`mysql://`) or a bare path: the
    worker died with a SQLAlchemy traceback (ModuleNotFoundError: MySQLdb, ArgumentError) on
    its first use of the engine."""
    first = value.startswith("mysql")
    result = _outcome(["worker", "--once"], workdir, monkeypatch, first, DATABASE_URL=value)
    _assert_refused(result, "DATABASE_URL", "postgresql+psycopg://")


@pytest.mark.parametrize(
    "value", ["gs://usage", "s3:/usage", "s3://", "s3:///in", "file:", "file://"]
)
def test_bucket_url_malformed_is_refused_at_start(
    workdir: Path, value: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """README: BUCKET_URL is `s3://bucket/prefix` or `file://dir`. Anything else was taken:
    the worker started (its remediation tasks and poller thread failing on every try), and
    `file://` with no path opened the working directory as the bucket."""
    first = value == "gs://usage"
    result = _outcome(["worker", "--once"], workdir, monkeypatch, first, BUCKET_URL=value)
    _assert_refused(result, "BUCKET_URL", "s3://BUCKET")


def test_empty_file_bucket_url_does_not_import_the_working_directory(workdir: Path) -> None:
    """`BUCKET_URL=file://` (the path forgotten): `meterfix poll --once` listed the working
    directory as the bucket (`listed=4`: the database, its WAL files, and the usage file a
    user happened to keep there), ready to import any usage file in it into Stripe."""
    (workdir / "usage.csv").write_text("identifier,timestamp,event_name\nid-1,1,x\n")
    result = _run(["poll", "--once"], workdir, BUCKET_URL="file://")
    _assert_refused(result, "BUCKET_URL", "file://PATH")


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("MFX_PUBLIC_URL", "meterfix.example.com"),
        ("MFX_PUBLIC_URL", "https://"),
        ("MFX_PUBLIC_URL", "https://meterfix.example.com/?x=1"),
        ("SLACK_WEBHOOK_URL", "hooks.slack.com/services/T0/B0/secret"),
        ("SLACK_WEBHOOK_URL", "ftp://hooks.slack.com/services/T0/B0/secret"),
    ],
)
def test_web_address_without_scheme_or_host_is_refused(
    workdir: Path, variable: str, value: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """MFX_PUBLIC_URL is the base of every dashboard link in messages: without a scheme they
    read `meterfix.example.com/runs/7` (no link in Slack or email) and the session cookie
    lost Secure; with a query each link was `…/?x=1/runs/7`. A SLACK_WEBHOOK_URL without
    `https://` was taken and every digest and critical alert failed at send time (retried
    for hours). The Slack URL is a secret: the line must not quote it."""
    first = value.startswith("hooks.slack.com")
    result = _outcome(["worker", "--once"], workdir, monkeypatch, first, **{variable: value})
    _assert_refused(result, variable, "http")
    assert "secret" not in result.stderr


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("DIGEST_EMAIL_TO", "ops"),
        ("DIGEST_EMAIL_TO", "ops@example.com, finance example.com"),
        ("DIGEST_EMAIL_FROM", "meterfix"),
    ],
)
def test_email_address_that_is_no_address_is_refused(
    workdir: Path, variable: str, value: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """DIGEST_EMAIL_TO is "comma-separated recipients", DIGEST_EMAIL_FROM the sender. `ops`
    (the domain forgotten) or a recipient with a space was taken: the worker started and the
    mail server refused (or a local one delivered it nowhere) at the first digest."""
    extra = {"SMTP_URL": "smtp://127.0.0.1:1", "DIGEST_EMAIL_TO": "ops@example.com"}
    first = value == "ops"
    result = _outcome(
        ["worker", "--once"], workdir, monkeypatch, first, **(extra | {variable: value})
    )
    _assert_refused(result, variable, "name@domain")


@pytest.mark.parametrize(
    ("variable", "value", "says"),
    [
        ("DIGEST_EVERY", "2w", "neither an interval"),
        ("DIGEST_EVERY", "30s", "at least 1m"),
        ("DIGEST_TZ", "Europe/Pariss", "not a known time zone"),
        ("SMTP_URL", "smtp//user:hunter2@mail.example.com", "smtp://user:pass@host:port"),
    ],
)
def test_worker_refuses_a_bad_schedule_or_smtp_url_before_it_starts(
    workdir: Path, variable: str, value: str, says: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """README: `meterfix worker` schedules the digests on DIGEST_EVERY in DIGEST_TZ, and
    sends them through SMTP_URL. A bad value was only logged (`notify.not_started`) from the
    notify thread while the worker went on running: no digests, no critical alerts and no
    retention purge at all, for as long as it ran. `worker --once` exited 0. The SMTP
    password is a secret: the line must not quote it. (DIGEST_EVERY and SMTP_URL are read
    by the worker as its notify jobs read them, after the app's start-up line.)"""
    extra = {variable: value, "DIGEST_EMAIL_TO": "ops@example.com"}
    first = variable != "DIGEST_TZ"  # read by the worker itself; DIGEST_TZ by the settings too
    result = _outcome(["worker", "--once"], workdir, monkeypatch, first, **extra)
    _assert_refused(result, variable, says, first=variable == "DIGEST_TZ")
    assert "hunter2" not in result.stderr


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("SLACK_WEBHOOK_URL", ""),
        ("SMTP_URL", ""),
        ("DIGEST_EMAIL_FROM", ""),
        ("DIGEST_EMAIL_TO", "ops@example.com, finance@example.com,"),
        ("MFX_PUBLIC_URL", "https://ops.example.com/meterfix/"),
        ("BUCKET_URL", "s3://usage"),
        ("DATABASE_URL", "sqlite://"),
        ("MFX_POLL_INTERVAL", " 60 "),
        ("DIGEST_EVERY", "0 9 * * 1-5"),
        ("DIGEST_TZ", "Europe/Paris"),
        ("LOG_LEVEL", "WARN"),  # logging's other names of levels (FATAL, NOTSET) too
    ],
)
def test_valid_and_empty_values_still_start(
    workdir: Path, variable: str, value: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """What stays accepted: an empty optional setting means unset, a public URL behind a
    path, an S3 bucket with no prefix, an in-memory SQLite, spaces around a number, a
    crontab and a named zone. (Settings only: `worker --once` then runs its pass.)"""
    first = variable == "DIGEST_EVERY"
    result = _outcome(["worker", "--once"], workdir, monkeypatch, first, **{variable: value})
    assert result.returncode == 0, result.stderr
    assert "bad configuration" not in result.stderr, result.stderr
    assert "Traceback" not in result.stderr, result.stderr


def test_app_factory_refuses_a_bad_secret_without_quoting_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Under gunicorn the app factory (`service.app:create_app()`) is what reads the settings,
    and the worker process prints its exception. A SLACK_WEBHOOK_URL pasted without its
    scheme was taken (every message then failing at send time); refused, pydantic's message
    would quote the input, the Slack URL being a secret that grants posting to the channel."""
    monkeypatch.chdir(tmp_path)
    for name, value in _env(tmp_path).items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("SLACK_WEBHOOK_URL", "hooks.slack.com/services/T0/B0/s3cr3tpart")
    with pytest.raises(ValidationError) as refused:
        create_app()
    assert settings_problems(refused.value).startswith("SLACK_WEBHOOK_URL: ")
    assert "s3cr3tpart" not in str(refused.value)


@pytest.mark.parametrize("spelling", ["postgres://", "postgresql://"])
def test_the_postgres_urls_platforms_give_are_read_as_psycopg(spelling: str) -> None:
    """Heroku and Render hand out `postgres://…` (SQLAlchemy: NoSuchModuleError) and others
    `postgresql://…` (SQLAlchemy: psycopg2, not installed): both crashed the worker with a
    traceback. They are PostgreSQL through psycopg 3, as `postgresql+psycopg://` is."""
    from service.config import Settings

    url = f"{spelling}user:secret@db.example.com:5432/billing?sslmode=require"
    settings = Settings(database_url=url)
    assert settings.database_url == (
        "postgresql+psycopg://user:secret@db.example.com:5432/billing?sslmode=require"
    )


@pytest.mark.parametrize(
    ("variable", "value", "says"),
    [
        ("MFX_QUARANTINE_PREFIX", "", "must name a folder"),
        ("MFX_QUARANTINE_PREFIX", "/", "must name a folder"),
        ("MFX_QUARANTINE_PREFIX", "corrected", "and MFX_QUARANTINE_PREFIX must be separate"),
        ("MFX_CORRECTED_PREFIX", "quarantine/fixed/", "separate folders"),
    ],
)
def test_a_quarantine_prefix_the_poller_would_import_or_hide_corrected_files_in_is_refused(
    workdir: Path, variable: str, value: str, says: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An empty MFX_QUARANTINE_PREFIX was taken: quarantine and audit files were written at
    the bucket's root, where the poller imported them again (a probe: 292 runs and 870
    objects in 30 s, a refused row sent five times). The corrected prefix inside the
    quarantine one (or the same folder): corrected files were never imported, never billed."""
    first = value == ""
    result = _outcome(["poll"], workdir, monkeypatch, first, **{variable: value})
    named = "MFX_QUARANTINE_PREFIX" if "must name" in says else "MFX_CORRECTED_PREFIX"
    _assert_refused(result, named, says)


@pytest.mark.parametrize(
    ("variable", "value", "says"),
    [
        ("MFX_POLL_INTERVAL", "99999999999999999999", "at most 31536000 seconds"),
        ("MFX_WORKER_INTERVAL", "1e308", "at most 31536000 seconds"),
        ("MFX_WORKER_LEASE", "99999999999999", "at most 31536000 seconds"),
        ("MFX_TASK_TIME_LIMIT", "99999999999999", "at most 31536000 seconds"),
        ("MFX_RETENTION_DAYS", "9999999999", "at most 36500 days"),
        ("LOG_LEVEL", "verbose", "must be one of DEBUG, INFO"),
        ("LOG_FORMAT", "xml", "must be text or json"),
    ],
)
def test_a_value_past_any_use_or_no_log_setting_is_refused(
    workdir: Path, variable: str, value: str, says: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A poll interval of 10^20 seconds was taken, then killed the worker's poller thread
    with an OverflowError (`timedelta`) while the worker ran on without it; 1e308 for the
    worker's interval, or a huge lease, crashed the worker. `LOG_LEVEL=verbose` was a warning
    and INFO, though "a bad value stops every command at start"."""
    first = variable in ("MFX_POLL_INTERVAL", "LOG_LEVEL")
    result = _outcome(["worker", "--once"], workdir, monkeypatch, first, **{variable: value})
    _assert_refused(result, variable, says)


def test_a_misspelt_variable_is_named_and_the_database_password_never_logged(
    workdir: Path,
) -> None:
    """`MFX_POLER=on` left the poller off without a word (the bucket's usage never imported)
    and `STRIPE_WEBHOOK_SECRET` was dropped; the start-up line quoted DATABASE_URL whole,
    password included, at every start of every command."""
    result = _run(
        ["db", "upgrade"],
        workdir,
        MFX_POLER="on",
        STRIPE_WEBHOOK_SECRET="whsec_test_misspelt",
        MFX_TEST_DATABASE_URL="sqlite://",  # ours, not a setting: no word
        STRIPE_DEVICE_NAME="laptop",  # the Stripe CLI's: no word
        DATABASE_URL="postgresql://meterfix:S3cretDbPass@127.0.0.1:9/billing",
    )
    assert "S3cretDbPass" not in result.stderr + result.stdout
    said = [json.loads(line) for line in result.stderr.splitlines() if line.startswith("{")]
    unknown = [line["message"] for line in said if line["event"] == "config.unknown_variable"]
    assert unknown == [
        "MFX_POLER is not a meterfix setting: ignored (did you mean MFX_POLLER?)",
        "STRIPE_WEBHOOK_SECRET is not a meterfix setting: ignored "
        "(did you mean STRIPE_WEBHOOK_SECRETS?)",
    ]
    [embedded] = [line for line in said if line["event"] == "config.embedded_defaults"]
    assert embedded["database_url"] == "postgresql+psycopg://meterfix:***@127.0.0.1:9/billing"
