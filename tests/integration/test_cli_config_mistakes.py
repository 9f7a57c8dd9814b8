"""Configuration mistakes a new user makes, each said in one clear line where it is made: a
`file://` bucket folder that does not exist (a typo) or is a file, an S3 bucket, credentials
or endpoint that are not there, a misspelt setting in the file commands, a missing
STRIPE_API_KEY; the heartbeat a finished `poll --once` leaves; and the wording of `db
upgrade`, `digest --since 0`, refused settings and `sandbox --help`. The real console script
(a subprocess), moto S3, SQLite and PostgreSQL. Each test failed on the code before its fix."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import boto3
import pytest
from sqlalchemy import select

from service.config import Settings
from service.db import make_engine
from service.db.migrate import MIGRATIONS_DIR, upgrade
from service.models._types import table_of
from service.models.alerts import Alert
from service.models.health import Heartbeat
from service.poller.job import PASSES_FAILING, poll_forever
from service.poller.lock import poller_lock
from service.poller.passes import PassReport, build_poller_deps
from service.runtime import Runtime
from tests.servers import free_port

MFX = str(Path(sys.executable).with_name("meterfix"))
DATA = Path(__file__).parent.parent / "data" / "usage"
HEADER = "identifier,timestamp,event_name,payload_stripe_customer_id,payload_value\n"


def _env(**extra: str) -> dict[str, str]:
    """The test's environment without any meterfix setting, and `extra`."""
    prefixes = ("STRIPE_", "MFX_", "LOG_", "DATABASE_URL", "BUCKET_URL", "S3_", "FLASK_")
    env = {k: v for k, v in os.environ.items() if not k.startswith(prefixes)}
    return env | {"LOG_FORMAT": "json"} | extra


def _run(args: list[str], cwd: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [MFX, *args], env=env, cwd=cwd, capture_output=True, text=True, timeout=120
    )


def _errors(stderr: str) -> list[str]:
    """The lines of stderr that are not log lines (click's `Error: ...`)."""
    return [line for line in stderr.splitlines() if line and not line.startswith("{")]


def _one_clear_line(result: subprocess.CompletedProcess[str], *says: str) -> str:
    assert result.returncode == 1, (result.stdout, result.stderr)
    assert "Traceback" not in result.stderr, result.stderr
    [line] = _errors(result.stderr)
    assert line.startswith("Error: "), line
    for text in says:
        assert text in line, line
    return line


# 1. a file:// bucket folder that is not there


@pytest.mark.parametrize("kind", ["missing", "a file"])
def test_poll_once_on_a_bucket_folder_that_is_not_there_fails_naming_it(
    kind: str, db_url: str, tmp_path: Path
) -> None:
    """`BUCKET_URL=file://./buckt` (a typo) or a file was listed as an empty bucket: `poll
    --once` said "0 files" and exited 0, the worker's poller listed 0 every pass."""
    (tmp_path / "bucket").mkdir()
    (tmp_path / "bucket" / "day.csv").write_text(HEADER + "k1,1,api_requests,cus_A,1\n")
    if kind == "a file":
        (tmp_path / "buckt").write_text("not a folder\n")
    env = _env(DATABASE_URL=db_url, BUCKET_URL="file://./buckt", MFX_POLLER="index")
    result = _run(["poll", "--once"], tmp_path, env)
    what = "does not exist" if kind == "missing" else "is not a folder"
    _one_clear_line(result, "poll failed:", f"folder {tmp_path / 'buckt'}, which {what}")
    assert "0 files" not in result.stdout
    assert (tmp_path / "buckt").exists() == (kind == "a file")  # never made


def test_the_workers_poller_on_a_missing_bucket_folder_raises_passes_failing(
    db_url: str, make_settings: Callable[..., Settings], tmp_path: Path
) -> None:
    """The worker's poller listed 0 objects every pass, beat healthy, no alert. Now every
    pass fails, and past MFX_HEARTBEAT_SILENCE the `poller.passes_failing` alert names the
    folder; the folder made, the next pass resolves it."""
    folder = tmp_path / "buckt"
    settings = make_settings(
        database_url=db_url,
        bucket_url=f"file://{folder}",
        mfx_poller="index",
        mfx_heartbeat_silence=1,
    )
    runtime = Runtime(settings)
    deps = build_poller_deps(runtime)
    reports: list[PassReport] = []
    stop = threading.Event()
    poller = threading.Thread(
        target=poll_forever, args=(replace(deps), stop, 0.2, reports.append), daemon=True
    )
    alerts = table_of(Alert)

    def alert() -> tuple[str, str, str] | None:
        with runtime.engine.connect() as conn:
            row = conn.execute(
                select(alerts.c.status, alerts.c.message, alerts.c.severity).where(
                    alerts.c.alert_key == PASSES_FAILING
                )
            ).first()
        return None if row is None else (row.status, row.message, row.severity)

    try:
        poller.start()
        _wait_for(lambda: alert() is not None, 20)
        status, message, severity = alert() or ("", "", "")
        assert (status, severity) == ("open", "critical")
        assert f"BUCKET_URL names the folder {folder}, which does not exist" in message
        assert not reports  # no pass ran as if the bucket were empty
        folder.mkdir()
        _wait_for(lambda: (alert() or ("",))[0] == "resolved", 20)
        assert reports and reports[-1].ran
    finally:
        stop.set()
        poller.join(10)
        runtime.close()


def test_remediate_upload_to_a_missing_bucket_folder_makes_no_folder(tmp_path: Path) -> None:
    """`remediate --upload` made the mistyped folder and wrote its outputs there."""
    env = _env(BUCKET_URL="file://./buckt")
    args = ["remediate", str(DATA / "failed_records.csv"), "--out", "out", "--upload"]
    args += ["--meters", str(DATA / "meters.json"), "--rules", str(DATA / "rules.toml")]
    result = _run([*args, "--now", "1764000000"], tmp_path, env)
    _one_clear_line(result, "upload to file://./buckt failed", "which does not exist")
    assert not (tmp_path / "buckt").exists()


def test_demo_into_a_missing_bucket_folder_makes_no_folder(sqlite_url: str, tmp_path: Path) -> None:
    result = _run(["demo"], tmp_path, _env(DATABASE_URL=sqlite_url, BUCKET_URL="file://./buckt"))
    _one_clear_line(result, "cannot write to file://./buckt", "which does not exist")
    assert not (tmp_path / "buckt").exists()


# 2. S3 errors: one line, no traceback


@pytest.fixture
def s3_env(s3_endpoint: str, sqlite_url: str) -> dict[str, str]:
    """A moto endpoint holding no bucket `no-such-bucket` (the AWS credentials are the
    `s3_endpoint` fixture's)."""
    boto3.client("s3", endpoint_url=s3_endpoint).create_bucket(Bucket="usage")
    return _env(
        DATABASE_URL=sqlite_url,
        BUCKET_URL="s3://no-such-bucket/usage",
        S3_ENDPOINT_URL=s3_endpoint,
    )


def _remediate_upload() -> list[str]:
    args = ["remediate", str(DATA / "failed_records.csv"), "--out", "out", "--upload"]
    args += ["--meters", str(DATA / "meters.json"), "--rules", str(DATA / "rules.toml")]
    return [*args, "--now", "1764000000"]


@pytest.mark.parametrize("command", ["demo", "remediate"])
def test_a_bucket_that_does_not_exist_is_one_line(
    command: str, s3_env: dict[str, str], tmp_path: Path
) -> None:
    """Two tracebacks ending in S3UploadFailedError (NoSuchBucket), exit 1."""
    args = ["demo"] if command == "demo" else _remediate_upload()
    line = _one_clear_line(
        _run(args, tmp_path, s3_env), "s3://no-such-bucket/usage", "the bucket no-such-bucket"
    )
    assert line.endswith("does not exist (NoSuchBucket)"), line


@pytest.mark.parametrize("command", ["demo", "remediate"])
def test_no_aws_credentials_is_one_line(
    command: str, s3_env: dict[str, str], tmp_path: Path
) -> None:
    """A NoCredentialsError traceback; the line names no secret (there is none to name)."""
    env = {k: v for k, v in s3_env.items() if not k.startswith("AWS_")}
    env |= {
        "AWS_SHARED_CREDENTIALS_FILE": str(tmp_path / "none"),
        "AWS_CONFIG_FILE": str(tmp_path / "none"),
        "AWS_EC2_METADATA_DISABLED": "true",
        "AWS_DEFAULT_REGION": "us-east-1",
        "HOME": str(tmp_path),
    }
    args = ["demo"] if command == "demo" else _remediate_upload()
    _one_clear_line(_run(args, tmp_path, env), "no AWS credentials (set AWS_ACCESS_KEY_ID")


@pytest.mark.parametrize("command", ["demo", "remediate", "poll"])
def test_an_endpoint_that_does_not_answer_is_one_line(
    command: str, s3_env: dict[str, str], tmp_path: Path
) -> None:
    """An EndpointConnectionError traceback (poll said it in one line, with its type)."""
    down = f"http://127.0.0.1:{free_port()}"
    env = s3_env | {"S3_ENDPOINT_URL": down, "MFX_POLLER": "index"}
    if command == "poll":
        assert _run(["db", "upgrade"], tmp_path, env).returncode == 0
    args = {"demo": ["demo"], "remediate": _remediate_upload(), "poll": ["poll", "--once"]}
    line = _one_clear_line(_run(args[command], tmp_path, env), f"cannot connect to {down}/")
    assert "EndpointConnectionError" not in line


# 3. a misspelt setting in validate and remediate


@pytest.mark.parametrize("command", ["validate", "remediate"])
def test_a_misspelt_setting_is_warned_of_on_stderr(command: str, tmp_path: Path) -> None:
    """`MFX_RULE=rules.toml` (for MFX_RULES): the built-in rules, different counts, unsaid."""
    env = _env(MFX_RULE=str(DATA / "rules.toml"))
    args = [command, str(DATA / "failed_records.csv"), "--meters", str(DATA / "meters.json")]
    args += ["--json", "--now", "1764000000"] + (["--out", "out"] if command == "remediate" else [])
    result = _run(args, tmp_path, env)
    assert result.returncode in (0, 1), result.stderr
    assert json.loads(result.stdout)["input_rows"] > 0  # stdout: the summary alone
    warnings = [
        json.loads(line)
        for line in result.stderr.splitlines()
        if '"config.unknown_variable"' in line
    ]
    assert [(w["level"], w["message"]) for w in warnings] == [
        ("WARNING", "MFX_RULE is not a meterfix setting: ignored (did you mean MFX_RULES?)")
    ]


# 4. STRIPE_API_KEY missing while other Stripe settings are set

MISSING_KEY = "STRIPE_API_KEY is not set, though other Stripe settings are"


@pytest.mark.parametrize("command", ["validate", "poll", "worker"])
def test_a_missing_api_key_is_said_at_start(command: str, db_url: str, tmp_path: Path) -> None:
    """STRIPE_WEBHOOK_SECRETS set, STRIPE_API_KEY forgotten: every file failed later with
    Stripe's "Invalid API Key provided.", nothing named the variable."""
    (tmp_path / "bucket").mkdir()
    (tmp_path / "bucket" / "day.csv").write_text(HEADER + f"k1,{int(time.time())},a,cus_A,1\n")
    env = _env(
        DATABASE_URL=db_url,
        BUCKET_URL=f"file://{tmp_path / 'bucket'}",
        STRIPE_WEBHOOK_SECRETS="whsec_abc",
        STRIPE_API_BASE=f"http://127.0.0.1:{free_port()}",  # never called
        MFX_POLLER="on",
    )
    args = {
        "validate": ["validate", str(DATA / "failed_records.csv")],
        "poll": ["poll", "--once"],
        "worker": ["worker", "--once"],
    }
    _one_clear_line(_run(args[command], tmp_path, env), MISSING_KEY, "sk_")


def test_serve_without_an_api_key_says_so_at_start(sqlite_url: str, tmp_path: Path) -> None:
    """The web stores webhooks without calling Stripe, so it starts; its first lines name the
    missing key (it logged only the opposite mistake, `config.no_webhook_secret`). A port
    held by this test ends it right after its start-up lines."""
    env = _env(DATABASE_URL=sqlite_url, STRIPE_WEBHOOK_SECRETS="whsec_abc")
    with socket.socket() as held:
        held.bind(("127.0.0.1", 0))
        held.listen()
        port = held.getsockname()[1]
        result = _run(["serve", "--port", str(port)], tmp_path, env)
    said = [json.loads(line) for line in result.stderr.splitlines() if line.startswith("{")]
    [line] = [entry for entry in said if entry["event"] == "config.no_api_key"]
    assert line["level"] == "ERROR" and line["message"].startswith(MISSING_KEY)


def test_a_poller_in_index_mode_needs_no_api_key(db_url: str, tmp_path: Path) -> None:
    """Index mode reads the bucket only: it calls no Stripe, and runs without a key."""
    (tmp_path / "bucket").mkdir()
    env = _env(
        DATABASE_URL=db_url,
        BUCKET_URL=f"file://{tmp_path / 'bucket'}",
        STRIPE_WEBHOOK_SECRETS="whsec_abc",
        MFX_POLLER="index",
    )
    result = _run(["poll", "--once"], tmp_path, env)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("index: 0 files")


# 5. the heartbeat a finished `poll --once` leaves


def _poller_details(db_url: str) -> list[dict[str, object]]:
    engine = make_engine(db_url)
    beats = table_of(Heartbeat)
    try:
        with engine.connect() as conn:
            rows = conn.execute(select(beats.c.detail).where(beats.c.role == "poller")).all()
    finally:
        engine.dispose()
    return [dict(row.detail) for row in rows]


def test_poll_once_leaves_a_heartbeat_saying_it_exited(db_url: str, tmp_path: Path) -> None:
    """Its row kept `{"doing": "pass"}` (or the import of a key): /api/health showed the
    poller in a pass after the process was gone, and the silence alert would call it stuck."""
    (tmp_path / "bucket").mkdir()
    (tmp_path / "bucket" / "day.csv").write_text(HEADER + f"k1,{int(time.time())},a,cus_A,1\n")
    env = _env(DATABASE_URL=db_url, BUCKET_URL="file://./bucket", MFX_POLLER="index")
    result = _run(["poll", "--once"], tmp_path, env)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("index: 1 files")
    assert _poller_details(db_url) == [{"doing": "exited", "pass": "ran"}]


def test_a_skipped_poll_once_says_it_exited_skipped(db_url: str, tmp_path: Path) -> None:
    """Another poller's pass under way: the skipped pass left `{"doing": "pass"}`."""
    (tmp_path / "bucket").mkdir()
    env = _env(DATABASE_URL=db_url, BUCKET_URL="file://./bucket", MFX_POLLER="index")
    engine = make_engine(db_url)
    try:
        with poller_lock(engine) as held:
            assert held
            result = _run(["poll", "--once"], tmp_path, env)
    finally:
        engine.dispose()
    assert result.returncode == 0, result.stderr
    assert result.stdout == "skipped: another instance holds the poller lock\n"
    assert _poller_details(db_url) == [{"doing": "exited", "pass": "skipped"}]


# 6. wording


def test_db_upgrade_says_what_it_applied(tmp_path: Path) -> None:
    """A brand-new database was told "database is at the latest schema" after every
    migration had been applied."""
    from alembic.script import ScriptDirectory

    scripts = ScriptDirectory(str(MIGRATIONS_DIR))
    head = scripts.get_current_head()
    total = len(list(scripts.walk_revisions()))
    url = f"sqlite:///{tmp_path / 'new.db'}"
    first = _run(["db", "upgrade"], tmp_path, _env(DATABASE_URL=url))
    assert (
        first.stdout == f"created the database schema: applied {total} migrations (now at {head})\n"
    )
    again = _run(["db", "upgrade"], tmp_path, _env(DATABASE_URL=url))
    assert again.stdout == f"database is already at the latest schema ({head}): nothing to apply\n"
    older = f"sqlite:///{tmp_path / 'old.db'}"
    upgrade(older, "0010")
    later = _run(["db", "upgrade"], tmp_path, _env(DATABASE_URL=older))
    applied = len(list(scripts.iterate_revisions(head, "0010")))
    assert later.stdout == (
        f"upgraded the database schema from 0010: applied {applied} migrations (now at {head})\n"
    )


def test_digest_since_0_is_refused(sqlite_url: str, tmp_path: Path) -> None:
    """`digest --since 0 --dry-run` said "nothing happened in the last 0"."""
    result = _run(["digest", "--since", "0", "--dry-run"], tmp_path, _env(DATABASE_URL=sqlite_url))
    _one_clear_line(result, "--since 0: the window must be longer than 0")
    assert result.stdout == ""


def test_refused_settings_say_no_pydantic_prefix_and_on_or_off(tmp_path: Path) -> None:
    """ "MFX_WORKER_LEASE: Value error, must be ..."; "Input should be a valid boolean"."""
    env = _env(MFX_WORKER_LEASE="0", MFX_MESSAGE_EXAMPLES="maybe")
    line = _one_clear_line(_run(["worker", "--once"], tmp_path, env))
    assert line == (
        "Error: bad configuration: MFX_WORKER_LEASE: must be a positive number; "
        "MFX_MESSAGE_EXAMPLES: must be on or off"
    )


def test_sandbox_help_says_what_webhook_url_defaults_to(tmp_path: Path) -> None:
    result = _run(["sandbox", "--help"], tmp_path, _env())
    assert result.returncode == 0, result.stderr
    text = " ".join(result.stdout.split())  # click wraps the help at 80 columns
    option = text[text.index("--webhook-url") : text.index("--connector-interval")]
    assert option == (
        "--webhook-url TEXT Deliver flushed reports and import sets here [default: none, the "
        "events are kept in the sandbox; `make run` gives http://127.0.0.1:4242/webhooks] "
    )


def _wait_for(condition: Callable[[], bool], seconds: float) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.1)
