"""Shared fixtures: databases (SQLite always, PostgreSQL when MFX_TEST_DATABASE_URL is set),
settings, and real local servers (moto S3)."""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import stripe
from flask import Flask
from hypothesis import settings as hypothesis_settings
from sqlalchemy import Engine, create_engine, text

from sandbox.app import create_sandbox_app
from sandbox.client import SandboxAdmin
from sandbox.defaults import SANDBOX_API_KEY, SANDBOX_WEBHOOK_SECRET, sandbox_bases
from sandbox.runtime import Sandbox
from service.config import Settings
from service.db import make_engine
from service.db.migrate import upgrade
from tests.servers import serve_wsgi

PG_URL = os.environ.get("MFX_TEST_DATABASE_URL", "")

# No per-example time limit: a property test checks outcomes, and on a loaded 2-core machine a
# correct example can take longer than hypothesis' default 200 ms (speed is bench/'s business).
hypothesis_settings.register_profile("meterfix", deadline=None)
hypothesis_settings.load_profile("meterfix")

DB_PARAMS = ["sqlite"] + (["postgresql"] if PG_URL else [])


def _pg_schema_url(schema: str) -> str:
    joiner = "&" if "?" in PG_URL else "?"
    return f"{PG_URL}{joiner}options=-csearch_path%3D{schema}"


@pytest.fixture(params=DB_PARAMS)
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A migrated, empty database: a SQLite file, or a fresh PostgreSQL schema."""
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'meterfix.db'}"
        upgrade(url)
        yield url
        return
    with _pg_schema() as url:
        yield url


@pytest.fixture
def db_engine(db_url: str) -> Iterator[Engine]:
    """An engine on `db_url` (SQLite and PostgreSQL), disposed after the test."""
    engine = make_engine(db_url)
    yield engine
    engine.dispose()


@pytest.fixture
def pg_url() -> Iterator[str]:
    """A migrated, empty PostgreSQL schema, for what only PostgreSQL has."""
    if not PG_URL:
        pytest.skip("PostgreSQL only: set MFX_TEST_DATABASE_URL")
    with _pg_schema() as url:
        yield url


@contextmanager
def _pg_schema() -> Iterator[str]:
    schema = f"t_{uuid.uuid4().hex[:12]}"
    admin = create_engine(PG_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        connection.execute(text(f'CREATE SCHEMA "{schema}"'))
    url = _pg_schema_url(schema)
    try:
        upgrade(url)
        yield url
    finally:
        with admin.connect() as connection:
            connection.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
        admin.dispose()


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    url = f"sqlite:///{tmp_path / 'meterfix.db'}"
    upgrade(url)
    return url


@pytest.fixture
def make_settings(tmp_path: Path) -> object:
    """Build Settings without reading the developer's environment or .env."""

    def build(**overrides: object) -> Settings:
        # the bucket folder exists, as `make run` makes it: a file:// bucket's folder that
        # does not is refused (BucketError), never made by an upload
        (tmp_path / "bucket").mkdir(exist_ok=True)
        values: dict[str, object] = {
            "database_url": f"sqlite:///{tmp_path / 'meterfix.db'}",
            "bucket_url": f"file://{tmp_path / 'bucket'}",
            # the test's own: under the default (.meterfix/work in the checkout) two tests at
            # once shared the poller's copies of same-named objects (one deleted the other's)
            "mfx_work_dir": str(tmp_path / "work"),
        }
        values.update(overrides)
        return Settings(_env_file=None, **values)  # type: ignore[call-arg]

    return build


@pytest.fixture
def admin_settings(db_url: str, make_settings: Callable[..., Settings]) -> Callable[..., Settings]:
    """Settings of a web on `db_url` whose admin token is the one given (the API's bearer
    token, the dashboard's login), with test Stripe keys."""

    def build(token: str, **overrides: object) -> Settings:
        values: dict[str, object] = {
            "database_url": db_url,
            "mfx_admin_token": token,
            "stripe_api_key": "sk_test_x",
            "stripe_webhook_secrets": "whsec_x",
        }
        return make_settings(**{**values, **overrides})

    return build


@pytest.fixture
def make_app() -> Iterator[object]:
    """Build service apps; their engines are disposed at teardown (no leaked connections)."""
    from service.app import create_app

    built = []

    def build(settings: Settings) -> object:
        app = create_app(settings)
        built.append(app)
        return app

    yield build
    for app in built:
        app.extensions["meterfix"].close()


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """Tests never pick up the developer's Stripe or database settings."""
    for name in list(os.environ):
        if name.startswith(("STRIPE_", "MFX_")) and name != "MFX_TEST_DATABASE_URL":
            monkeypatch.delenv(name, raising=False)
    for name in ("DATABASE_URL", "BUCKET_URL", "S3_ENDPOINT_URL", "SLACK_WEBHOOK_URL", "SMTP_URL"):
        monkeypatch.delenv(name, raising=False)


@pytest.fixture(scope="session")
def moto_server() -> Iterator[str]:
    """A real S3 endpoint (moto) on a loopback port; reset between tests by `s3_endpoint`."""
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    try:
        yield f"http://{host}:{port}"
    finally:
        server.stop()


@pytest.fixture
def s3_endpoint(moto_server: str, monkeypatch: pytest.MonkeyPatch) -> str:
    import requests

    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    requests.post(f"{moto_server}/moto-api/reset", timeout=10).raise_for_status()
    return moto_server


@dataclass
class SandboxServer:
    """A running sandbox (real loopback HTTP). `sandbox` is its runtime: set `webhook_url`,
    `bucket_url`, `s3_endpoint_url` on it, call `flush_reports()` / `poll_connector()`."""

    url: str
    admin: SandboxAdmin
    app: Flask
    api_key: str
    webhook_secret: str
    sandbox: Sandbox

    @property
    def bases(self) -> dict[str, str]:
        """Stripe's hosts on this sandbox (`api`, `files`, `meter_events`), each on its own URL
        that answers 404 for the others' paths; `url` itself serves all three."""
        return sandbox_bases(self.url)

    def stripe_client(self, api_key: str | None = None, **kwargs: Any) -> stripe.StripeClient:
        """A real StripeClient with each base address pointed at its host on this sandbox."""
        stripe.enable_telemetry = False
        bases: Any = self.bases
        return stripe.StripeClient(api_key or self.api_key, base_addresses=bases, **kwargs)


@pytest.fixture
def sandbox_server() -> Iterator[SandboxServer]:
    """A fresh sandbox per test (Stripe API + /_sandbox/ admin API) on a loopback port."""
    app = create_sandbox_app()
    with serve_wsgi(app) as running:
        yield SandboxServer(
            url=running.url,
            admin=SandboxAdmin(running.url),
            app=app,
            api_key=SANDBOX_API_KEY,
            webhook_secret=SANDBOX_WEBHOOK_SECRET,
            sandbox=app.extensions["sandbox"],
        )
