"""Structured logs: one event name plus fields per line, never secrets.

Every line carries an ISO-8601 UTC time, the level, the process role (`web`, `worker`,
`poller`, `cli`, `sandbox`) and the event, so the processes of `make run` can be told apart.
`LOG_FORMAT` is `text` (the default on a terminal) or `json` (one object per line, the default
otherwise); `LOG_LEVEL` is the threshold. One handler on the root logger writes every line,
libraries' too (werkzeug's request lines, Flask's tracebacks): their event is the logger's
name and their text a `message` field. Values are JSON-escaped, so no input can forge a line.
"""

from __future__ import annotations

import json
import logging
import re
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any, TextIO

LOGGER = logging.getLogger("meterfix")
# Loggers of our own code whose level follows LOG_LEVEL; libraries keep theirs (their DEBUG
# lines can carry credentials, e.g. botocore's request headers).
OWN_LOGGERS = ("meterfix", "sandbox")
RESERVED = ("time", "level", "role", "event")
_BARE_VALUE = re.compile(r"[\w.,:/@+%=-]+", re.ASCII)  # printed without quotes in text lines
_TERMINAL_STYLE = re.compile(r"\x1b\[[0-9;]*m")  # werkzeug colours its request lines
_said: set[tuple[str, str]] = set()  # bad settings already reported by this process


class Role(StrEnum):
    """Which process wrote a line."""

    WEB = "web"
    WORKER = "worker"
    POLLER = "poller"
    CLI = "cli"
    SANDBOX = "sandbox"


class LogFormat(StrEnum):
    TEXT = "text"
    JSON = "json"


class EventLine:
    """A record's message: the event and its fields, rendered only if a handler writes it
    (`str()` gives the text form, which is also what pytest's caplog shows)."""

    __slots__ = ("event", "fields")

    def __init__(self, event: str, fields: dict[str, Any]) -> None:
        self.event = event
        self.fields = fields

    def __str__(self) -> str:
        return " ".join([self.event, *_text_fields(self.fields)])


def log_event(event: str, level: int = logging.INFO, **fields: Any) -> None:
    LOGGER.log(level, EventLine(event, fields))


class RepeatedFailure:
    """One failure repeated every few seconds, logged as one: its first line, then one every
    `every` seconds (or when its reason changes) counting the failures since, and one line
    when it ends (`recovered`: "... recovered after N s"). A bucket down for an hour wrote
    `poller.pass_failed` every poll interval, a database down `worker.database_error` every
    second: the lines that said anything else scrolled away."""

    def __init__(
        self,
        event: str,
        recovered: str,
        every: float = 300.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.event, self.recovered, self.every, self._clock = event, recovered, every, clock
        self._since: float | None = None  # when the failures began (the clock's time)
        self._count = 0
        self._last: tuple[float, str] | None = None  # when a line was written, and its fields

    def failed(self, level: int = logging.ERROR, **fields: Any) -> None:
        now = self._clock()
        self._since = now if self._since is None else self._since
        self._count += 1
        said = repr(sorted(fields.items()))
        if self._last is None or said != self._last[1] or now - self._last[0] >= self.every:
            again = {"failures": self._count, "failing_for": round(now - self._since)}
            log_event(self.event, level=level, **fields, **(again if self._count > 1 else {}))
            self._last = (now, said)

    def failing_for(self) -> float | None:
        """Seconds since the failures began; None when the last try worked."""
        return None if self._since is None else self._clock() - self._since

    def succeeded(self) -> None:
        if self._since is None:
            return
        seconds = round(self._clock() - self._since)
        log_event(self.recovered, after_seconds=seconds, failures=self._count)
        self._since, self._count, self._last = None, 0, None


class LineFormatter(logging.Formatter):
    def __init__(self, role: Role, log_format: LogFormat) -> None:
        super().__init__()
        self.role = role
        self.log_format = log_format

    def format(self, record: logging.LogRecord) -> str:
        event, fields = _event_and_fields(record)
        if record.exc_info:
            fields["exception"] = self.formatException(record.exc_info)
        when = datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds")
        head = (when.replace("+00:00", "Z"), record.levelname, self.role.value, event)
        if self.log_format is LogFormat.TEXT:
            prefix = f"{head[0]} {head[1]:<7} {head[2]:<7} {head[3]}"
            return " ".join([prefix, *_text_fields(fields)])
        line = dict(zip(RESERVED, head, strict=True))
        for key in sorted(fields):
            line[f"{key}_" if key in line else key] = fields[key]
        return json.dumps(line, default=str)


class StderrHandler(logging.StreamHandler):  # type: ignore[type-arg]  # typeshed: generic
    """Writes to whatever sys.stderr is when a line is written, as a process's own stderr
    would be: a test runner that swaps it (click's, pytest's) sees the log lines, and a
    swapped stream that was closed since is never written to."""

    def __init__(self) -> None:
        super().__init__(sys.stderr)

    def emit(self, record: logging.LogRecord) -> None:
        self.stream = sys.stderr
        super().emit(record)


def configure_logging(
    role: Role | None = None, level: str | None = None, log_format: str | None = None
) -> None:
    """Install the handler (once per process: role web, INFO and the automatic format until
    told otherwise), then apply what is given. The CLI names the role before any app exists;
    `create_app` applies LOG_LEVEL and LOG_FORMAT from its settings (under gunicorn, where no
    CLI runs, the role stays web)."""
    handler = _installed_handler() or _install()
    formatter: LineFormatter = handler.formatter  # type: ignore[assignment]  # ours, see _install
    if role is not None:
        formatter.role = role
    if log_format is not None:
        formatter.log_format = _log_format(log_format, handler.stream)
    if level is not None:
        _apply_level(handler, level)


def _installed_handler() -> StderrHandler | None:
    for handler in logging.getLogger().handlers:
        if isinstance(handler, StderrHandler):
            return handler
    return None


def _install() -> StderrHandler:
    handler = StderrHandler()
    handler.setFormatter(LineFormatter(Role.WEB, _log_format("", sys.stderr)))
    logging.getLogger().addHandler(handler)
    for name in OWN_LOGGERS:
        logging.getLogger(name).setLevel(logging.INFO)
    LOGGER.propagate = True
    return handler


def _log_format(value: str, stream: TextIO) -> LogFormat:
    chosen = value.strip().lower()
    if chosen in set(LogFormat):
        return LogFormat(chosen)
    if chosen:
        _bad_setting("LOG_FORMAT", value)
    return LogFormat.TEXT if _is_terminal(stream) else LogFormat.JSON


def _is_terminal(stream: TextIO) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):  # a closed or unusual stream
        return False


def _apply_level(handler: logging.Handler, value: str) -> None:
    level = logging.getLevelNamesMapping().get(value.strip().upper())
    if level is None:
        _bad_setting("LOG_LEVEL", value)
        level = logging.INFO
    handler.setLevel(level)
    for name in OWN_LOGGERS:
        logging.getLogger(name).setLevel(level)


def _bad_setting(setting: str, value: str) -> None:
    """Said once per process (the CLI and then its app both apply the settings)."""
    if (setting, value) not in _said:
        _said.add((setting, value))
        log_event("log.bad_setting", level=logging.WARNING, setting=setting, value=value)


def _event_and_fields(record: logging.LogRecord) -> tuple[str, dict[str, Any]]:
    if isinstance(record.msg, EventLine):
        return record.msg.event, dict(record.msg.fields)
    message = _TERMINAL_STYLE.sub("", record.getMessage())
    return record.name, {"message": message}


def _text_fields(fields: dict[str, Any]) -> list[str]:
    return [f"{key}={_text_value(fields[key])}" for key in sorted(fields)]


def _text_value(value: Any) -> str:
    if isinstance(value, str) and _BARE_VALUE.fullmatch(value):
        return value
    return json.dumps(value, default=str)
