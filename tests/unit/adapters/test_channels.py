"""Channel settings: SMTP_URL forms, secrets kept out of reasons, channels built once."""

from __future__ import annotations

import ssl
from pathlib import Path
from typing import Any

import pytest

from service.adapters.channels import ChannelName, build_channels, redact, settings_secrets
from service.adapters.smtp import EmailChannel, SmtpTarget
from service.config import Settings
from service.runtime import Runtime


def test_smtp_url_forms() -> None:
    plain = SmtpTarget.parse("smtp://me%40corp:p%40ss@mail.example.com")
    assert (plain.host, plain.port, plain.implicit_tls) == ("mail.example.com", 587, False)
    assert (plain.username, plain.password) == ("me@corp", "p@ss")
    tls = SmtpTarget.parse("smtps://mail.example.com:2465")
    assert (tls.port, tls.implicit_tls, tls.username) == (2465, True, "")
    with pytest.raises(ValueError) as bad:
        SmtpTarget.parse("http://u:hunter2@mail.example.com")
    assert "hunter2" not in str(bad.value)


def _settings(tmp_path: Path, **values: Any) -> Settings:
    return Settings(_env_file=None, database_url=f"sqlite:///{tmp_path}/x.db", **values)  # type: ignore[call-arg]


def test_channels_from_settings_and_secrets(tmp_path: Path) -> None:
    settings = _settings(
        tmp_path,
        slack_webhook_url="https://hooks.slack.com/services/T/B/abc",
        smtp_url="smtp://u:s%2Fcret@mail.example.com:25",
        digest_email_to="a@example.com",
    )
    assert [c.name for c in build_channels(settings)] == ["slack", "email"]
    assert [c.name for c in build_channels(settings, "email")] == ["email"]
    assert [c.name for c in build_channels(_settings(tmp_path, smtp_url="smtp://h"))] == []
    reason = redact(
        "failed for s/cret at https://hooks.slack.com/services/T/B/abc", settings_secrets(settings)
    )
    assert reason == "failed for [redacted] at [redacted]"


def test_the_runtime_builds_each_channel_once(tmp_path: Path) -> None:
    settings = _settings(
        tmp_path, smtp_url="smtps://mail.example.com", digest_email_to="a@example.com"
    )
    tls = ssl.create_default_context()
    runtime = Runtime(settings, smtp_tls_context=tls)
    email = runtime.channel(ChannelName.EMAIL)
    assert isinstance(email, EmailChannel) and email._tls is tls
    assert runtime.channels == [email] and runtime.channel(ChannelName.EMAIL) is email
    assert runtime.channel(ChannelName.SLACK) is None  # not configured
    bad = Runtime(_settings(tmp_path, smtp_url="http://mail", digest_email_to="a@example.com"))
    with pytest.raises(ValueError):  # a bad SMTP_URL is said when the channels are built
        bad.channel(ChannelName.EMAIL)
