"""Typed settings read from the environment (and `.env`), as the README's Configuration lists."""

from __future__ import annotations

import logging
import math
from enum import StrEnum
from typing import Annotated
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import Field, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from service.config.embedded import (
    STRIPE_API_BASE,
    STRIPE_FILES_BASE,
    STRIPE_METER_EVENTS_BASE,
    use_embedded_sandbox,
)
from service.config.values import (
    DATABASE_URL_PREFIXES,
    EMAIL_ADDRESS,
    GIVE_UP_HORIZON_SECONDS,
    LOG_LEVELS,
    MAX_RETENTION_DAYS,
    MAX_SECONDS,
    SECONDS_SETTINGS,
    mask,
    nested,
    parse_duration,
    web_address,
)


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
        """No Stripe setting at all: the bundled sandbox (`service.config.embedded`)."""
        use_embedded_sandbox(self)
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
        if corrected and nested(corrected, quarantine):
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
        if not value.startswith(DATABASE_URL_PREFIXES):
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
        parts = web_address(value)
        if parts is None or parts.query or parts.fragment:
            raise ValueError("must be http(s)://HOST[:PORT][/PATH], without ? or #")
        return value

    @field_validator("slack_webhook_url")
    @classmethod
    def _slack_webhook_url(cls, value: str) -> str:
        if value and web_address(value) is None:  # a secret: never quoted
            raise ValueError("must be the https://hooks.slack.com/… URL Slack gave (or empty)")
        return value

    @field_validator("digest_email_to", "digest_email_from")
    @classmethod
    def _email_addresses(cls, value: str) -> str:
        """Comma-separated `name@domain` addresses (empty: unset)."""
        addresses = [part.strip() for part in value.split(",") if part.strip()]
        if any(not EMAIL_ADDRESS.fullmatch(address) for address in addresses):
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
        data["stripe_api_key"] = mask(self.stripe_api_key)
        data["stripe_webhook_secrets"] = [mask(s) for s in self.stripe_webhook_secrets]
        data["mfx_admin_token"] = mask(self.mfx_admin_token)
        data["slack_webhook_url"] = "set" if self.slack_webhook_url else ""
        data["smtp_url"] = "set" if self.smtp_url else ""
        return data


def load_settings() -> Settings:
    """The settings from the environment and `.env`: the one place they are read (the app
    factory, the console script and the builder of the file commands call it). Raises
    pydantic's ValidationError; `settings_problems` says it in one line."""
    return Settings()
