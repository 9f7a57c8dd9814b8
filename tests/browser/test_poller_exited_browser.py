"""The overview's poller card after `meterfix poll --once` exited. Its last heartbeat says
`{"doing": "exited"}` (`beat_exited`), but the card drew it as a healthy poller ("2 s ago",
the card neither muted nor red) until MFX_HEARTBEAT_SILENCE passed, and /api/health gave no
state to tell it from a running one. The real console script, the dashboard in headless
Chromium, SQLite and PostgreSQL. Failed before: no "exited" on the card, no `state`."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from sqlalchemy import Engine, update

from service.config import Settings
from service.db import make_engine
from service.models._types import table_of
from service.models.health import Heartbeat
from tests.browser.login import log_in
from tests.integration import web_seed as seed
from tests.servers import serve_wsgi

TOKEN = "browser-token-exited-0123456789"
MFX = str(Path(sys.executable).with_name("meterfix"))
HEADER = "identifier,timestamp,event_name,payload_stripe_customer_id,payload_value\n"
SILENCE = 300


def _env(**extra: str) -> dict[str, str]:
    prefixes = ("STRIPE_", "MFX_", "LOG_", "DATABASE_URL", "BUCKET_URL", "S3_", "FLASK_")
    env = {k: v for k, v in os.environ.items() if not k.startswith(prefixes)}
    return env | {"LOG_FORMAT": "json"} | extra


@pytest.fixture
def site(
    db_url: str,
    tmp_path: Path,
    make_settings: Callable[..., Settings],
    make_app: Callable[[Settings], Flask],
) -> Iterator[tuple[str, Engine]]:
    settings = make_settings(
        database_url=db_url,
        mfx_admin_token=TOKEN,
        mfx_poller="index",
        mfx_heartbeat_silence=SILENCE,
        stripe_api_key="sk_test_browser",
        stripe_webhook_secrets="whsec_test_browser",
    )
    engine = make_engine(db_url)
    seed.heartbeat(engine, "host:1:worker", "worker", age_seconds=2)
    with serve_wsgi(make_app(settings)) as server:
        yield server.url, engine
    engine.dispose()


def _poll_once(db_url: str, tmp_path: Path) -> None:
    bucket = tmp_path / "bucket"
    bucket.mkdir(exist_ok=True)
    (bucket / "day.csv").write_text(HEADER + f"k1,{int(time.time())},a,cus_A,1\n")
    env = _env(DATABASE_URL=db_url, BUCKET_URL="file://./bucket", MFX_POLLER="index")
    result = subprocess.run(
        [MFX, "poll", "--once"], env=env, cwd=tmp_path, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr


def _card(page: Any, url: str) -> tuple[str, str, str]:
    page.goto(url + "/")
    card = page.get_by_test_id("poller-health")
    age = page.get_by_test_id("poller-heartbeat-age").inner_text()
    return card.get_attribute("class") or "", age, card.inner_text()


def _state(page: Any, url: str) -> tuple[str, dict[str, Any]]:
    health = page.request.get(url + "/api/health", headers={"Authorization": f"Bearer {TOKEN}"})
    assert health.status == 200
    poller = health.json()["heartbeats"]["poller"]
    return poller["state"], poller


def _age_beats(engine: Engine, seconds: int) -> None:
    beats = table_of(Heartbeat)
    then = datetime.now(UTC) - timedelta(seconds=seconds)
    with engine.begin() as connection:
        connection.execute(update(beats).where(beats.c.role == "poller").values(last_beat_at=then))


def test_a_poller_that_ran_once_and_exited_is_shown_exited_not_healthy(
    page: Any, site: tuple[str, Engine], db_url: str, tmp_path: Path, artifacts_dir: Path
) -> None:
    url, engine = site
    _poll_once(db_url, tmp_path)
    log_in(page, url + "/", TOKEN)
    classes, age, text = _card(page, url)
    page.screenshot(path=str(artifacts_dir / "overview-poller-exited.png"), full_page=True)
    assert age == "exited"
    assert "muted" in classes.split() and "bad" not in classes.split()
    assert "not running" in text and "exited " in text and "(pass ran)" in text
    state, poller = _state(page, url)
    assert state == "exited" and poller["detail"] == {"doing": "exited", "pass": "ran"}

    # past the silence limit: red (the silence alert is raised), still saying it exited
    _age_beats(engine, SILENCE + 60)
    classes, age, text = _card(page, url)
    assert age == "exited" and "bad" in classes.split()
    assert _state(page, url)[0] == "exited"


def test_a_running_poller_is_green_and_a_silent_one_red(
    page: Any, site: tuple[str, Engine], artifacts_dir: Path
) -> None:
    url, engine = site
    instance = "host:2:poller"
    seed.heartbeat(engine, instance, "poller", age_seconds=3)
    beats = table_of(Heartbeat)
    with engine.begin() as connection:
        connection.execute(
            update(beats)
            .where(beats.c.instance == instance)
            .values(detail={"doing": "waiting", "next_pass_at": "2026-12-07T15:00:00+00:00"})
        )
    log_in(page, url + "/", TOKEN)
    classes, age, text = _card(page, url)
    assert age.endswith(" s ago") and "exited" not in text
    assert "muted" not in classes.split() and "bad" not in classes.split()
    assert _state(page, url)[0] == "running"

    _age_beats(engine, SILENCE + 60)
    classes, age, _ = _card(page, url)
    page.screenshot(path=str(artifacts_dir / "overview-poller-silent.png"), full_page=True)
    assert age.endswith(" s ago") and "bad" in classes.split()
    assert _state(page, url)[0] == "silent"
