"""The `meterfix` command itself, run as a real process: --version, help without Flask's options
or start-up lines, help on every option, the process role and LOG_LEVEL/LOG_FORMAT in its logs."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from importlib.metadata import version
from pathlib import Path

import click
import pytest

from service.cli import main
from service.commands import COMMANDS as COMMAND_TABLE
from service.worker.item_deadline import MAX_GRANTED_SECONDS
from tests.servers import free_port

MFX = str(Path(sys.executable).parent / "meterfix")
COMMANDS = {"db", "demo", "poll", "remediate", "replay", "sandbox", "serve", "trigger"}
COMMANDS |= {"validate", "worker"}


def _env(**extra: str) -> dict[str, str]:
    """No Stripe settings at all: the embedded defaults (and their start-up line) apply."""
    prefixes = ("STRIPE_", "MFX_", "LOG_", "DATABASE_URL", "BUCKET_URL", "FLASK_")
    env = {k: v for k, v in os.environ.items() if not k.startswith(prefixes)}
    env.update(extra)
    return env


def _run(args: list[str], cwd: Path, **extra: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [MFX, *args], env=_env(**extra), cwd=cwd, capture_output=True, text=True, timeout=60
    )


def test_version_is_meterfix_s(tmp_path: Path) -> None:
    result = _run(["--version"], tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout == f"meterfix {version('meterfix')}\n"
    assert result.stderr == ""


def test_help_lists_commands_without_flasks_options_or_a_log_line(tmp_path: Path) -> None:
    result = _run(["--help"], tmp_path)
    assert result.returncode == 0
    assert result.stderr == ""  # the embedded-defaults line used to come first
    assert result.stdout.startswith("Usage: meterfix [OPTIONS] COMMAND [ARGS]...")
    for flask_option in ("--app", "--env-file", "--debug", "FLASK_"):
        assert flask_option not in result.stdout
    listed = {line.split()[0] for line in result.stdout.split("Commands:")[1].splitlines() if line}
    assert listed >= COMMANDS
    assert not (tmp_path / "meterfix.db").exists()  # help built no app and opened no database


@pytest.mark.parametrize("command", ["worker", "serve", "db", "poll", "sandbox", "validate"])
def test_command_help_builds_no_app(tmp_path: Path, command: str) -> None:
    result = _run([command, "--help"], tmp_path)
    assert result.returncode == 0
    assert result.stderr == ""
    assert result.stdout.startswith(f"Usage: meterfix {command} ")


def _options(command: click.Command, path: str) -> Iterator[tuple[str, click.Option]]:
    ctx = click.Context(main, info_name="meterfix")
    for param in command.params:
        if isinstance(param, click.Option):
            yield f"{path} {'/'.join(param.opts)}", param
    if isinstance(command, click.Group):
        for name in command.list_commands(ctx):
            sub = command.get_command(ctx, name)
            assert sub is not None
            yield from _options(sub, f"{path} {name}")


def test_every_option_has_help() -> None:
    options = dict(_options(main, "meterfix"))
    assert {"meterfix --version", "meterfix worker --once", "meterfix sandbox --port"} <= set(
        options
    )
    assert [name for name, option in options.items() if not option.help] == []


def _imported_after(args: list[str], cwd: Path, heavy: tuple[str, ...]) -> list[str]:
    """Which of `heavy` the `meterfix` process has imported once `args` ran."""
    probe = (
        "import sys\n"
        "from service.cli import main\n"
        "try:\n"
        f"    main({args!r})\n"
        "except SystemExit:\n"
        "    pass\n"
        f"print(sorted(m for m in {heavy!r} if m in sys.modules))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", probe], env=_env(), cwd=cwd, capture_output=True, text=True
    )
    imported: list[str] = json.loads(result.stdout.strip().splitlines()[-1].replace("'", '"'))
    return imported


WEB_AND_DATABASE = (
    "sqlalchemy",
    "sqlmodel",
    "flask",
    "service.app",
    "service.intake.webhooks",
    "service.db",
)


def test_validate_starts_without_the_web_and_database_stack(tmp_path: Path) -> None:
    usage = tmp_path / "usage.csv"
    usage.write_text("identifier,timestamp,event_name,payload_value\n")
    (tmp_path / "meters.json").write_text(
        '[{"id": "mtr_1", "event_name": "api_requests", "status": "active"}]'
    )
    args = ["validate", str(usage), "--meters", str(tmp_path / "meters.json")]
    assert _imported_after(args, tmp_path, WEB_AND_DATABASE) == []


def test_remediate_runs_without_the_web_and_database_stack(tmp_path: Path) -> None:
    data = Path(__file__).parent.parent / "data" / "usage"
    args = ["remediate", str(data / "failed_records.csv"), "--out", str(tmp_path / "out")]
    args += ["--meters", str(data / "meters.json"), "--rules", str(data / "rules.toml")]
    # nor pydantic (~30 MB of the 150 MB a 1M-row run may use): given both files, no setting
    # is read
    heavy = (*WEB_AND_DATABASE, "pydantic", "service.config")
    assert _imported_after([*args, "--now", "1764000000"], tmp_path, heavy) == []
    assert list((tmp_path / "out").glob("*.corrected.*.csv"))  # it ran, and wrote


def test_remediate_does_not_load_pandas_where_it_is_installed(tmp_path: Path) -> None:
    """pyarrow imports pandas, when it is there, the first time it is handed a Python list
    (is it a pandas Series?): 0.7 s and 35 MB of a run that never uses it, over the 150 MB a
    1M-row run may take. A stand-in `pandas` first on the path notes each attempt to load it
    (CI installs no pandas; the real one was found the same way)."""
    stand_in = tmp_path / "site" / "pandas"
    stand_in.mkdir(parents=True)
    attempts = tmp_path / "pandas-loads"
    (stand_in / "__init__.py").write_text(
        f"with open({str(attempts)!r}, 'a') as f:\n    f.write('loaded\\n')\n"
        "raise ImportError('a stand-in for pandas')\n"
    )
    data = Path(__file__).parent.parent / "data" / "usage"
    for name in ("failed_records.csv", "failed_records.jsonl"):
        args = ["remediate", str(data / name), "--out", str(tmp_path / "out" / name), "--json"]
        args += ["--meters", str(data / "meters.json"), "--rules", str(data / "rules.toml")]
        result = _run([*args, "--now", "1764000000"], tmp_path, PYTHONPATH=str(stand_in.parent))
        assert result.returncode == 0, result.stderr
        assert json.loads(result.stdout)["corrected"] > 0  # it ran, and corrected rows
    assert not attempts.exists(), attempts.read_text()


def test_help_imports_no_command_module(tmp_path: Path) -> None:
    modules = tuple(f"service.commands.{name}" for name in ("db", "intake", "remediate"))
    assert _imported_after(["--help"], tmp_path, (*modules, "flask", "pydantic")) == []


def test_each_listed_line_is_the_commands_own_help() -> None:
    ctx = click.Context(main, info_name="meterfix")
    for name, entry in COMMAND_TABLE.items():
        command = main.get_command(ctx, name)
        assert command is not None and command.name == name
        for limit in (30, 60, 200):
            listed = click.Command(name, help=entry.summary).get_short_help_str(limit)
            assert listed == command.get_short_help_str(limit), name


def test_dotenv_is_read_from_the_working_directory_upward(tmp_path: Path) -> None:
    """As Flask's CLI reads it: `.env` of a parent directory too, variables already set kept."""
    rules = tmp_path / "from-dotenv.toml"
    (tmp_path / ".env").write_text(f"MFX_RULES={rules}\n")
    rules.write_text("[policy]\nfuture_skew_seconds = 'x'\n")
    work = tmp_path / "work"
    work.mkdir()
    usage = work / "usage.csv"
    usage.write_text("identifier,timestamp,event_name,payload_value\n")
    (work / "meters.json").write_text(
        '[{"id": "mtr_1", "event_name": "api_requests", "status": "active"}]'
    )
    args = ["validate", str(usage), "--meters", str(work / "meters.json")]
    result = _run(args, work)
    assert result.returncode != 0 and f"bad rules {rules}" in result.stderr
    kept = _run(args, work, MFX_RULES=str(tmp_path / "none.toml"))
    assert f"cannot read rules {tmp_path / 'none.toml'}" in kept.stderr


def _log_lines(stderr: str) -> list[dict[str, object]]:
    return [json.loads(line) for line in stderr.splitlines() if line.startswith("{")]


def test_each_process_names_its_role(tmp_path: Path) -> None:
    assert _run(["db", "upgrade"], tmp_path).returncode == 0
    roles = {}
    for args, role in ((["worker", "--once"], "worker"), (["db", "upgrade"], "cli")):
        result = _run(args, tmp_path)
        assert result.returncode == 0, result.stderr
        lines = _log_lines(result.stderr)
        assert lines and {line["role"] for line in lines} == {role}
        roles[role] = lines[0]
    first = roles["cli"]
    assert first["event"] == "config.embedded_defaults" and first["level"] == "WARNING"
    assert str(first["time"]).endswith("Z")
    nowhere = f"http://127.0.0.1:{free_port()}"  # no sandbox there: the pass fails, logged
    poll = _run(["poll", "--once"], tmp_path, STRIPE_API_BASE=nowhere, STRIPE_FILES_BASE=nowhere)
    assert {line["role"] for line in _log_lines(poll.stderr)} == {"poller"}


def _first_line(args: list[str], cwd: Path, **extra: str) -> str:
    with subprocess.Popen(
        [MFX, *args], env=_env(**extra), cwd=cwd, stderr=subprocess.PIPE, text=True
    ) as process:
        assert process.stderr is not None
        try:
            return process.stderr.readline()
        finally:
            process.terminate()
            process.wait(10)


@pytest.mark.parametrize(
    ("args", "role"), [(["serve", "--port"], "web"), (["sandbox", "--port"], "sandbox")]
)
def test_long_running_processes_name_their_role(tmp_path: Path, args: list[str], role: str) -> None:
    assert _run(["db", "upgrade"], tmp_path).returncode == 0
    line = json.loads(_first_line([*args, str(free_port())], tmp_path))
    assert line["role"] == role


def test_log_format_text_and_log_level(tmp_path: Path) -> None:
    assert _run(["db", "upgrade"], tmp_path).returncode == 0
    text = _run(["worker", "--once"], tmp_path, LOG_FORMAT="text")
    [line] = text.stderr.splitlines()
    assert " WARNING worker  config.embedded_defaults " in line
    quiet = _run(["worker", "--once"], tmp_path, LOG_LEVEL="ERROR")
    assert quiet.returncode == 0 and quiet.stderr == ""
    # a bad value stops every command at start (it was a warning, then INFO)
    bad = _run(["worker", "--once"], tmp_path, LOG_LEVEL="LOUD")
    assert bad.returncode == 1 and bad.stderr.strip().splitlines() == [
        "Error: bad configuration: LOG_LEVEL: must be one of DEBUG, INFO, WARNING, ERROR, CRITICAL"
    ]


def test_log_settings_in_dotenv_apply_to_a_cli_command(tmp_path: Path) -> None:
    """A CLI command reads the settings for its logs only when LOG_LEVEL or LOG_FORMAT is set:
    set in `.env`, in any case, they still apply."""
    assert _run(["db", "upgrade"], tmp_path).returncode == 0
    loud = _run(["db", "upgrade"], tmp_path)
    assert [line["event"] for line in _log_lines(loud.stderr)] == ["config.embedded_defaults"]
    (tmp_path / ".env").write_text("log_level=ERROR\n")
    quiet = _run(["db", "upgrade"], tmp_path)
    assert quiet.returncode == 0 and quiet.stderr == ""
    (tmp_path / ".env").write_text("Log_Format=text\n")
    text = _run(["db", "upgrade"], tmp_path)
    assert " WARNING cli     config.embedded_defaults " in text.stderr


def test_a_worker_starting_removes_the_temp_files_a_killed_writer_left_in_a_file_bucket(
    tmp_path: Path,
) -> None:
    """A worker killed while it uploaded to a `file://` bucket left `.mfx-tmp-*` beside the
    object (1.4 MB under `corrected/impset_…/` in a probe), never removed. A worker starting
    removes those nothing touched for twice an item's time limit; a young one (a live
    writer's), objects and other files stay."""
    bucket = tmp_path / "bucket"
    folder = bucket / "corrected" / "impset_x"
    folder.mkdir(parents=True)
    old = time.time() - 2 * 900 - 60
    for name in (".mfx-tmp-old1", ".mfx-tmp-young", "day.corrected.r1.csv", "notes.mfx-tmp-x"):
        (folder / name).write_text("x")
        if name != ".mfx-tmp-young":
            os.utime(folder / name, (old, old))
    (bucket / ".mfx-tmp-old2").write_text("x")
    os.utime(bucket / ".mfx-tmp-old2", (old, old))
    assert _run(["db", "upgrade"], tmp_path).returncode == 0
    result = _run(["worker", "--once"], tmp_path, BUCKET_URL=f"file://{bucket}")
    assert result.returncode == 0, result.stderr
    assert sorted(p.name for p in folder.iterdir()) == [
        ".mfx-tmp-young",
        "day.corrected.r1.csv",
        "notes.mfx-tmp-x",
    ]
    assert not (bucket / ".mfx-tmp-old2").exists()
    [line] = [
        e for e in _log_lines(result.stderr) if e["event"] == "worker.bucket_temporaries_removed"
    ]
    assert line["files"] == 2


def test_a_worker_starting_removes_what_a_killed_worker_left_in_the_temp_dir(
    tmp_path: Path,
) -> None:
    """A worker killed mid-item left its download (`meterfix-dl-*`, ~20 MB for 200,000 rows)
    and its run's outputs (`meterfix-run-*`, ~70 MB) for ever: a worker killed again and
    again on one big file filled the disk. A worker starting removes such directories that
    nothing touched for twice an item's time limit and the most its transfers may be granted
    (`MAX_GRANTED_SECONDS`: no live item's); others stay, and one a large file's item may
    still read (a96a83e)."""
    temp = tmp_path / "tmp"
    temp.mkdir()
    old = time.time() - 2 * 900 - MAX_GRANTED_SECONDS - 60
    granted = time.time() - 2 * 900 - 60  # past the limit, within what a transfer is granted
    for name in ("meterfix-dl-abc", "meterfix-run-def", "meterfix-dl-young", "other-dl-abc"):
        (temp / name).mkdir()
        (temp / name / "failed.csv").write_text("x")
        if name != "meterfix-dl-young":
            os.utime(temp / name / "failed.csv", (old, old))
            os.utime(temp / name, (old, old))
    (temp / "meterfix-dl-granted").mkdir()
    (temp / "meterfix-dl-granted" / "failed.csv").write_text("x")
    os.utime(temp / "meterfix-dl-granted" / "failed.csv", (granted, granted))
    os.utime(temp / "meterfix-dl-granted", (granted, granted))
    assert _run(["db", "upgrade"], tmp_path).returncode == 0
    result = _run(["worker", "--once"], tmp_path, TMPDIR=str(temp))
    assert result.returncode == 0, result.stderr
    left = sorted(p.name for p in temp.iterdir())
    assert left == ["meterfix-dl-granted", "meterfix-dl-young", "other-dl-abc"]
    [line] = [e for e in _log_lines(result.stderr) if e["event"] == "worker.leftovers_removed"]
    assert line["directories"] == 2
