"""Typed settings read from the environment (and `.env`), as the README's Configuration lists."""

from __future__ import annotations

import difflib
import logging
import math
import re
from collections.abc import Iterable
from enum import StrEnum
from typing import Annotated, Any
from urllib.parse import SplitResult, urlsplit
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import Field, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from sandbox.defaults import (
    SANDBOX_API_KEY,
    SANDBOX_BASE,
    SANDBOX_WEBHOOK_SECRET,
    sandbox_bases,
)

STRIPE_API_BASE = "https://api.stripe.com"
STRIPE_FILES_BASE = "https://files.stripe.com"
STRIPE_METER_EVENTS_BASE = "https://meter-events.stripe.com"


# Seconds settings, each at most MAX_SECONDS (a longer time overflowed where it was used).
SECONDS_SETTINGS = (
    "stripe_webhook_tolerance",
    "mfx_poll_interval",
    "mfx_worker_interval",
    "mfx_worker_lease",
    "mfx_task_time_limit",
    "mfx_heartbeat_silence",
)
MAX_SECONDS = 365 * 86400
MAX_RETENTION_DAYS = 36500
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")


class PollerMode(StrEnum):
    OFF = "off"
    ON = "on"
    INDEX = "index"


class SQLiteSynchronous(StrEnum):
    """MFX_SQLITE_SYNCHRONOUS: what a SQLite COMMIT waits for (service.db explains the levels)."""

    NORMAL = "normal"
    FULL = "full"


class Settings(BaseSettings):
    """Every knob of the service. Field names map to the upper-case variables in the README."""

    # hide_input_in_errors: a refused value may be a secret (a Slack URL, a database password)
    model_config = SettingsConfigDict(
        env_file=".env", extra="ignore", case_sensitive=False, hide_input_in_errors=True
    )

    stripe_api_key: str = ""
    stripe_webhook_secrets: Annotated[list[str], NoDecode] = Field(default_factory=list)
    stripe_webhook_tolerance: int = 300
    stripe_api_base: str = STRIPE_API_BASE
    stripe_files_base: str = STRIPE_FILES_BASE
    stripe_meter_events_base: str = STRIPE_METER_EVENTS_BASE

    database_url: str = "sqlite:///meterfix.db"
    bucket_url: str = "file://./bucket"
    s3_endpoint_url: str = ""
    mfx_corrected_prefix: str = "corrected/"
    mfx_quarantine_prefix: str = "quarantine/"
    mfx_poller: PollerMode = PollerMode.OFF
    mfx_poll_interval: int = 60
    mfx_rules: str = ""
    mfx_admin_token: str = ""
    mfx_max_body_bytes: int = 1024 * 1024
    mfx_max_attempts: int = 8
    mfx_worker_interval: float = 1.0
    # Where the poller keeps failed-records files until remediation has run (survives restarts).
    mfx_work_dir: str = ".meterfix/work"
    # Seconds a claimed item stays locked without a heartbeat renewing it (a dead worker's
    # item is taken over within a minute); one item may run MFX_TASK_TIME_LIMIT seconds.
    mfx_worker_lease: int = 30
    mfx_task_time_limit: int = 900
    mfx_heartbeat_silence: int = 300  # no worker/poller heartbeat this long: critical alert
    # How long a file may keep failing before the poller stops and alerts (< 23 h, so no
    # identifier is ever re-sent past Stripe's 24 h dedupe window); "6h", "90m", "3600".
    mfx_poller_give_up_after: Annotated[int, NoDecode] = 6 * 3600
    mfx_retention_days: int = 90
    mfx_quarantine_alert_rows: int = 1000  # quarantined rows in one run: critical alert
    mfx_message_examples: Annotated[bool, NoDecode] = True  # off: no row contents in messages
    mfx_public_url: str = "http://127.0.0.1:4242"  # base of dashboard links in messages
    log_level: str = "INFO"
    log_format: str = ""  # text|json; empty: text on a terminal, json otherwise
    # SQLite only: what a COMMIT waits for, `normal` or `full` (see service.db).
    mfx_sqlite_synchronous: SQLiteSynchronous = SQLiteSynchronous.NORMAL

    slack_webhook_url: str = ""
    smtp_url: str = ""
    digest_email_to: str = ""
    digest_email_from: str = ""
    digest_every: str = "1d"  # an interval (15m, 1h, 1d) or a 5-field crontab
    digest_tz: str = "UTC"

    embedded_sandbox: bool = False  # set by the validator below, never from the environment

    @model_validator(mode="after")
    def _embedded_defaults(self) -> Settings:
        """No API key and no secrets: point everything at the bundled sandbox (and say so)."""
        if self.stripe_api_key or self.stripe_webhook_secrets:
            self.embedded_sandbox = False
            return self
        self.embedded_sandbox = True
        self.stripe_api_key = SANDBOX_API_KEY
        self.stripe_webhook_secrets = [SANDBOX_WEBHOOK_SECRET]
        bases = sandbox_bases(SANDBOX_BASE)  # each host on its own URL, as at Stripe
        for name, host in (
            ("stripe_api_base", "api"),
            ("stripe_files_base", "files"),
            ("stripe_meter_events_base", "meter_events"),
        ):
            if getattr(self, name) in (
                STRIPE_API_BASE,
                STRIPE_FILES_BASE,
                STRIPE_METER_EVENTS_BASE,
            ):
                setattr(self, name, bases[host])
        return self

    @field_validator("stripe_webhook_secrets", mode="before")
    @classmethod
    def _split_secrets(cls, value: object) -> object:
        if isinstance(value, str):
            return [part.strip() for part in value.split(",") if part.strip()]
        return value

    @field_validator("mfx_poller_give_up_after", mode="before")
    @classmethod
    def _give_up_after(cls, value: object) -> object:
        seconds = parse_duration(value) if isinstance(value, str) else value
        if isinstance(seconds, int) and not 0 < seconds < GIVE_UP_HORIZON_SECONDS:
            raise ValueError("must be more than 0 and less than 23h (Stripe dedupes for 24 h)")
        return seconds

    @field_validator("mfx_message_examples", mode="before")
    @classmethod
    def _on_off(cls, value: object) -> object:
        if isinstance(value, str) and value.strip().lower() in ("on", "off"):
            return value.strip().lower() == "on"
        return value

    @field_validator("mfx_sqlite_synchronous", mode="before")
    @classmethod
    def _synchronous_level(cls, value: object) -> object:
        return value.strip().lower() if isinstance(value, str) else value  # `FULL` works too

    @field_validator(
        "stripe_webhook_tolerance",
        "mfx_max_body_bytes",
        "mfx_poll_interval",
        "mfx_max_attempts",
        "mfx_worker_lease",
        "mfx_task_time_limit",
        "mfx_heartbeat_silence",
        "mfx_retention_days",
        "mfx_quarantine_alert_rows",
    )
    @classmethod
    def _positive(cls, value: int) -> int:
        if value <= 0:
            raise ValueError("must be a positive number")
        return value

    @field_validator(*SECONDS_SETTINGS)
    @classmethod
    def _at_most_a_year(cls, value: float) -> float:
        """A number of seconds past any use (10^20) passed, then crashed the process or its
        poller thread where it became a time (`timedelta`, a timer): OverflowError."""
        if math.isfinite(value) and value > MAX_SECONDS:
            raise ValueError(f"must be at most {MAX_SECONDS} seconds (a year)")
        return value

    @field_validator("mfx_retention_days")
    @classmethod
    def _at_most_a_century(cls, value: int) -> int:
        if value > MAX_RETENTION_DAYS:
            raise ValueError(f"must be at most {MAX_RETENTION_DAYS} days")
        return value

    @field_validator("mfx_worker_interval")
    @classmethod
    def _positive_seconds(cls, value: float) -> float:
        if not math.isfinite(value) or value <= 0:  # 0 or nan: a busy loop; inf: a crash
            raise ValueError("must be a positive number of seconds")
        return value

    @field_validator("log_level")
    @classmethod
    def _log_level(cls, value: str) -> str:
        """A misspelt level was a warning and INFO: every command starts on a bad value."""
        if value.strip().upper() not in logging.getLevelNamesMapping():  # WARN, FATAL too
            raise ValueError(f"must be one of {', '.join(LOG_LEVELS)}")
        return value

    @field_validator("log_format")
    @classmethod
    def _log_format(cls, value: str) -> str:
        if value.strip().lower() not in ("", "text", "json"):
            raise ValueError("must be text or json (or empty: text on a terminal, else json)")
        return value

    @model_validator(mode="after")
    def _output_prefixes(self) -> Settings:
        """An empty quarantine prefix had the poller import every quarantine and audit file
        written at the bucket's root again (a file of refused rows made more of them, without
        end); a corrected prefix inside the quarantine one was never imported (never billed)."""
        corrected = self.mfx_corrected_prefix.strip("/")
        quarantine = self.mfx_quarantine_prefix.strip("/")
        if not quarantine:
            raise ValueError(
                "MFX_QUARANTINE_PREFIX must name a folder: the poller imports every file "
                "outside it, its own quarantine and audit files included"
            )
        if corrected and _nested(corrected, quarantine):
            raise ValueError(
                "MFX_CORRECTED_PREFIX and MFX_QUARANTINE_PREFIX must be separate folders, "
                "neither inside the other: the poller imports corrected files and never "
                "quarantine ones"
            )
        return self

    @field_validator("database_url")
    @classmethod
    def _database_url(cls, value: str) -> str:
        """SQLite and PostgreSQL through psycopg 3 (what is installed and what the SQL of
        `service.db` is written for); never quotes the URL (it may hold a password). The
        `postgres://` and `postgresql://` platforms hand out (Heroku, Render) are read as
        psycopg 3's: SQLAlchemy took the first for no database and the second for psycopg2,
        which is not installed."""
        for spelling in ("postgres://", "postgresql://"):
            if value.startswith(spelling):
                return "postgresql+psycopg://" + value[len(spelling) :]
        if not value.startswith(_DATABASE_URL_PREFIXES):
            raise ValueError("must be sqlite:///PATH or postgresql+psycopg://user@host/db")
        return value

    @field_validator("bucket_url")
    @classmethod
    def _bucket_url(cls, value: str) -> str:
        """`file://` alone opened the working directory as the bucket."""
        if value.startswith("s3://") and value[len("s3://") :].partition("/")[0]:
            return value
        if value.startswith("file://") and value[len("file://") :]:
            return value
        raise ValueError("must be s3://BUCKET[/PREFIX] or file://PATH")

    @field_validator("mfx_admin_token")
    @classmethod
    def _admin_token(cls, value: str) -> str:
        """Stripped: a secret file's trailing newline made a token no login could match. At
        least 16 characters: the dashboard's cookies are signed with a key drawn from it."""
        token = value.strip()
        if value and len(token) < 16:  # a secret: never quoted
            raise ValueError("must be at least 16 characters (a random one: 32 bytes or more)")
        return token

    @field_validator("mfx_public_url")
    @classmethod
    def _public_url(cls, value: str) -> str:
        """The dashboard links in messages are this plus a path: it needs a scheme and a
        host, and a query or fragment would end up in the middle of every link."""
        parts = _web_address(value)
        if parts is None or parts.query or parts.fragment:
            raise ValueError("must be http(s)://HOST[:PORT][/PATH], without ? or #")
        return value

    @field_validator("slack_webhook_url")
    @classmethod
    def _slack_webhook_url(cls, value: str) -> str:
        if value and _web_address(value) is None:  # a secret: never quoted
            raise ValueError("must be the https://hooks.slack.com/… URL Slack gave (or empty)")
        return value

    @field_validator("digest_email_to", "digest_email_from")
    @classmethod
    def _email_addresses(cls, value: str) -> str:
        """Comma-separated `name@domain` addresses (empty: unset)."""
        addresses = [part.strip() for part in value.split(",") if part.strip()]
        if any(not _EMAIL_ADDRESS.fullmatch(address) for address in addresses):
            raise ValueError("must be comma-separated addresses such as name@domain")
        return value

    @field_validator("digest_tz")
    @classmethod
    def _time_zone(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError) as exc:
            raise ValueError("is not a known time zone (use e.g. UTC or Europe/Paris)") from exc
        return value

    def redacted(self) -> dict[str, object]:
        """Settings safe to log: secrets replaced by their kind."""
        data = self.model_dump()
        data["stripe_api_key"] = _mask(self.stripe_api_key)
        data["stripe_webhook_secrets"] = [_mask(s) for s in self.stripe_webhook_secrets]
        data["mfx_admin_token"] = _mask(self.mfx_admin_token)
        data["slack_webhook_url"] = "set" if self.slack_webhook_url else ""
        data["smtp_url"] = "set" if self.smtp_url else ""
        return data


def _nested(one: str, other: str) -> bool:
    """Whether two folders (no slash at either end) are one, or one is inside the other."""
    return one == other or one.startswith(other + "/") or other.startswith(one + "/")


def load_settings() -> Settings:
    """The settings from the environment and `.env`: the one place they are read (the app
    factory, the console script and the builder of the file commands call it). Raises
    pydantic's ValidationError; `settings_problems` says it in one line."""
    return Settings()


def settings_problems(exc: ValidationError) -> str:
    """`MFX_WORKER_LEASE: Value error, must be a positive number; ...`: one line (a check of
    several settings at once names them in its message)."""
    return "; ".join(
        f"{'.'.join(map(str, e['loc'])).upper()}: {_problem(e)}" if e["loc"] else _problem(e)
        for e in exc.errors()
    )


def _problem(error: Any) -> str:
    """pydantic's message without its "Value error, " prefix; a boolean setting (only
    MFX_MESSAGE_EXAMPLES) says it takes on or off, as the README writes it."""
    if error["type"].startswith("bool_"):
        return "must be on or off"
    return str(error["msg"]).removeprefix("Value error, ")


# Variables of ours that are not settings: read by the sandbox command, the tests and the
# benches (`MFX_BENCH_*`)
OTHER_VARIABLES = (
    "MFX_SANDBOX_STATE_FILE",
    "MFX_TEST_DATABASE_URL",
    "MFX_FUZZ_EXAMPLES",
    "MFX_CORPUS_REGENERATE",
)
# Families whose near misses are worth a word (others' STRIPE_* variables are left alone)
_FAMILIES = ("MFX_", "STRIPE_", "DIGEST_", "SMTP_", "SLACK_", "LOG_", "DATABASE_", "BUCKET_")


def unknown_variables(names: Iterable[str]) -> list[tuple[str, str | None]]:
    """The environment's names meterfix would silently ignore, each with the setting it
    looks like a misspelling of (None: none): every unknown `MFX_` name (ours alone), and
    other families' near misses (`STRIPE_WEBHOOK_SECRET` for `STRIPE_WEBHOOK_SECRETS`).
    `MFX_POLER=on` left the poller off, unsaid: the bucket's usage never imported."""
    known = [name.upper() for name in Settings.model_fields if name != "embedded_sandbox"]
    known += OTHER_VARIABLES
    found = []
    for name in sorted({name.upper() for name in names}):
        if name in known or name.startswith("MFX_BENCH") or not name.startswith(_FAMILIES):
            continue
        like = difflib.get_close_matches(name, known, n=1, cutoff=0.8)
        if like or name.startswith("MFX_"):
            found.append((name, like[0] if like else None))
    return found


def unknown_variable_warnings(names: Iterable[str]) -> list[str]:
    """`unknown_variables` as the warnings every command logs (`config.unknown_variable`)."""
    return [
        f"{name} is not a meterfix setting: ignored" + (f" (did you mean {like}?)" if like else "")
        for name, like in unknown_variables(names)
    ]


def missing_api_key(settings: Settings) -> str | None:
    """The one line a command that calls Stripe says when STRIPE_API_KEY is not set while
    other Stripe settings are (without any, the embedded sandbox's key is used): every call
    then failed later, file by file, with Stripe's "Invalid API Key provided", never
    naming the variable. None when a key is set."""
    if settings.stripe_api_key.strip():
        return None
    return (
        "STRIPE_API_KEY is not set, though other Stripe settings are: set it to your secret "
        "key (sk_... or rk_...), which every call to Stripe needs (with no Stripe setting at "
        "all, the bundled sandbox is used)"
    )


_DATABASE_URL_PREFIXES = ("sqlite://", "sqlite+pysqlite://", "postgresql+psycopg://")
_EMAIL_ADDRESS = re.compile(r"[^@\s,<>]+@[^@\s,<>]+")


def _web_address(value: str) -> SplitResult | None:
    """`value` split when it is an http(s) URL with a host (and a numeric port), else None."""
    parts = urlsplit(value)
    try:
        parts.port  # noqa: B018  (raises ValueError for a port that is not a number)
    except ValueError:
        return None
    return parts if parts.scheme in ("http", "https") and parts.hostname else None


# Stripe dedupes meter event identifiers for at least 24 hours; we stay an hour inside.
GIVE_UP_HORIZON_SECONDS = 23 * 3600
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_duration(text: str) -> int:
    """ "90" (seconds), "15m", "6h", "1d" -> seconds; ValueError with the accepted forms."""
    value = text.strip().lower()
    unit = _UNITS.get(value[-1:], 0)
    number = value[:-1] if unit else value
    if not number.isascii() or not number.isdigit() or len(number) > 9:
        raise ValueError(f"{text!r} is not a duration (use e.g. 90, 15m, 6h or 1d)")
    return int(number) * (unit or 1)


def _mask(secret: str) -> str:
    if not secret:
        return ""
    prefix = secret.split("_", 2)
    return "_".join(prefix[:2]) + "_…" if len(prefix) > 2 else "…"
