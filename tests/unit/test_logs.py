"""Log lines: ISO time, level, process role and event on every line, text or JSON, LOG_LEVEL."""

from __future__ import annotations

import io
import json
import logging
import re
from collections.abc import Iterator
from typing import Any

import pytest

from service.logs import (
    LOGGER,
    OWN_LOGGERS,
    EventLine,
    Role,
    StderrHandler,
    configure_logging,
    log_event,
)

ISO_UTC = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z")


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


class Captured:
    def __init__(self, capsys: pytest.CaptureFixture[str]) -> None:
        self.capsys = capsys

    def lines(self) -> list[str]:
        return self.capsys.readouterr().err.splitlines()


@pytest.fixture
def stderr(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> Iterator[Captured]:
    """A fresh installation writing to the captured stderr; the process's own is restored."""
    monkeypatch.setattr("service.logs._said", set())
    root = logging.getLogger()
    saved = [h for h in root.handlers if isinstance(h, StderrHandler)]
    levels = {name: logging.getLogger(name).level for name in (*OWN_LOGGERS, "werkzeug")}
    for handler in saved:
        root.removeHandler(handler)
    yield Captured(capsys)
    for handler in [h for h in root.handlers if isinstance(h, StderrHandler)]:
        root.removeHandler(handler)
    for handler in saved:
        root.addHandler(handler)
    for name, level in levels.items():
        logging.getLogger(name).setLevel(level)


def test_json_line_carries_time_level_role_event_and_fields(stderr: Captured) -> None:
    configure_logging(Role.WORKER, level="INFO", log_format="json")
    log_event("inbox.processed", event_id="evt_1", attempt=2, ok=True)
    [line] = stderr.lines()
    parsed = json.loads(line)
    assert list(parsed)[:4] == ["time", "level", "role", "event"]
    assert ISO_UTC.fullmatch(parsed["time"])
    assert parsed | {"time": "t"} == {
        "time": "t",
        "level": "INFO",
        "role": "worker",
        "event": "inbox.processed",
        "attempt": 2,
        "event_id": "evt_1",
        "ok": True,
    }
    assert '"ok": true' in line  # json.dumps' own separators: `grep '"key": value'` works


def test_text_line(stderr: Captured) -> None:
    configure_logging(Role.POLLER, level="INFO", log_format="text")
    log_event("poller.pass", level=logging.WARNING, files=3, key="in/usage 1.csv", reason=None)
    [line] = stderr.lines()
    time, rest = line.split(" ", 1)
    assert ISO_UTC.fullmatch(time)
    assert rest == 'WARNING poller  poller.pass files=3 key="in/usage 1.csv" reason=null'


@pytest.mark.parametrize("log_format", ["text", "json"])
def test_no_value_can_break_or_forge_a_line(stderr: Captured, log_format: str) -> None:
    configure_logging(Role.WEB, log_format=log_format)
    forged = 'x\n2026-01-01T00:00:00.000Z ERROR   web     admin.login user="root"\r\x1b[2J'
    log_event("webhook.rejected", reason=forged, other="\ud800 \u2028")
    [line] = stderr.lines()
    assert "\x1b" not in line and "\r" not in line and "\u2028" not in line


def test_library_lines_are_formatted_too(stderr: Captured) -> None:
    """werkzeug's request lines: same shape, the logger's name as event, no terminal colours."""
    configure_logging(Role.SANDBOX, log_format="json")
    werkzeug = logging.getLogger("werkzeug")
    werkzeug.setLevel(logging.INFO)
    werkzeug.info('%s - "\x1b[35m\x1b[1m%s\x1b[0m" %s', "127.0.0.1", "POST /webhooks HTTP/1.1", 400)
    [line] = stderr.lines()
    parsed = json.loads(line)
    assert (parsed["level"], parsed["role"], parsed["event"]) == ("INFO", "sandbox", "werkzeug")
    assert parsed["message"] == '127.0.0.1 - "POST /webhooks HTTP/1.1" 400'


def test_a_traceback_stays_on_one_line(stderr: Captured) -> None:
    configure_logging(Role.WEB, log_format="text")
    try:
        raise RuntimeError("boom")
    except RuntimeError:
        logging.getLogger("service.app").exception("Exception on /webhooks [POST]")
    [line] = stderr.lines()
    assert " ERROR   web     service.app " in line
    assert 'exception="Traceback (most recent call last):\\n' in line
    assert "RuntimeError: boom" in line


def test_log_level(stderr: Captured) -> None:
    configure_logging(Role.WEB, level="warning", log_format="json")
    log_event("quiet.info")
    log_event("loud.warning", level=logging.WARNING)
    assert [json.loads(line)["event"] for line in stderr.lines()] == ["loud.warning"]
    assert not LOGGER.isEnabledFor(logging.INFO)
    configure_logging(level="DEBUG")
    log_event("now.debug", level=logging.DEBUG)
    assert json.loads(stderr.lines()[-1])["event"] == "now.debug"


def test_bad_settings_are_said_once_and_fall_back(stderr: Captured) -> None:
    configure_logging(Role.CLI, level="LOUD", log_format="yaml")
    events = [json.loads(line) for line in stderr.lines()]
    assert [(e["event"], e["setting"], e["value"]) for e in events] == [
        ("log.bad_setting", "LOG_FORMAT", "yaml"),
        ("log.bad_setting", "LOG_LEVEL", "LOUD"),
    ]
    assert LOGGER.getEffectiveLevel() == logging.INFO


def test_automatic_format_text_on_a_terminal(
    monkeypatch: pytest.MonkeyPatch, stderr: Captured
) -> None:
    terminal = Terminal()
    monkeypatch.setattr("sys.stderr", terminal)
    configure_logging(Role.WEB, log_format="")
    log_event("web.started", port=4242)
    [line] = terminal.getvalue().splitlines()
    assert line.endswith(" INFO    web     web.started port=4242")


def test_automatic_format_json_otherwise(stderr: Captured) -> None:
    configure_logging(Role.WEB, log_format="")
    log_event("web.started", port=4242)
    assert json.loads(stderr.lines()[0])["port"] == 4242


def test_role_set_first_survives_the_apps_settings(stderr: Captured) -> None:
    """The CLI names the role; create_app later applies LOG_LEVEL/LOG_FORMAT only."""
    configure_logging(Role.WORKER)
    configure_logging(level="INFO", log_format="json")
    configure_logging(level="INFO", log_format="json")  # a second app in the same process
    log_event("worker.started")
    [line] = stderr.lines()
    assert json.loads(line)["role"] == "worker"
    assert sum(isinstance(h, StderrHandler) for h in logging.getLogger().handlers) == 1


def test_caplog_and_str_show_event_and_fields(caplog: pytest.LogCaptureFixture) -> None:
    log_event("webhook.rejected", level=logging.WARNING, reason="bad header", status=400)
    assert 'webhook.rejected reason="bad header" status=400' in caplog.text
    assert str(EventLine("e", {"b": 1, "a": "x"})) == "e a=x b=1"


def test_reserved_names_are_not_overwritten(stderr: Captured) -> None:
    configure_logging(Role.WEB, log_format="json")
    log_event("alert.raised", level=logging.WARNING, role="admin", time="later")
    parsed = json.loads(stderr.lines()[0])
    assert (parsed["role"], parsed["role_"], parsed["time_"]) == ("web", "admin", "later")


def test_the_app_applies_log_level_and_format(
    stderr: Captured, make_settings: Any, make_app: Any
) -> None:
    """gunicorn's web processes build the app without the CLI: create_app applies both."""
    configure_logging(Role.WEB, level="INFO", log_format="text")
    make_app(make_settings(log_level="ERROR", log_format="json"))
    log_event("quiet.warning", level=logging.WARNING)
    log_event("loud.error", level=logging.ERROR)
    [line] = stderr.lines()
    assert json.loads(line)["event"] == "loud.error"
