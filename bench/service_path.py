"""The service path end to end: a failed-records file from the sandbox to a moto S3 bucket.

    .venv/bin/python bench/service_path.py [--rows 1000000] [--mix basic]
        [--database-url postgresql+psycopg://postgres@127.0.0.1:5432/test]

A `data_management.import_set.succeeded` event whose failed-records file holds `--rows` rows
(bench/remediate.py's generator) is delivered, signed, to a running meterfix app; one worker
drains the inbox: the handler records the import set and queues the task, the task downloads
the file through the Files API of the bundled sandbox (in-process, real HTTP), remediates it,
uploads the outputs to a moto S3 bucket (ThreadedMotoServer, real HTTP) and records the run,
its audit and its quarantined rows. Prints the time of each stage as the run recorded it
(`remediation.run_done`'s `stages`: download, remediate, upload, database) and the database
rows written. SQLite (a file in a temp dir) unless `--database-url` names a PostgreSQL
database, where a fresh schema is made and dropped.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import remediate as remediate_bench  # bench/remediate.py: the same rows

NOW = remediate_bench.NOW


class RunDone(logging.Handler):
    """Keeps the fields of the `remediation.run_done` log event."""

    def __init__(self) -> None:
        super().__init__()
        self.fields: dict[str, Any] = {}

    def emit(self, record: logging.LogRecord) -> None:
        message = record.msg
        if getattr(message, "event", None) == "remediation.run_done":
            self.fields = dict(message.fields)


@contextmanager
def database(url: str | None, work: Path) -> Iterator[str]:
    from sqlalchemy import create_engine, text

    from service.db.migrate import upgrade

    if not url:
        sqlite = f"sqlite:///{work / 'meterfix.db'}"
        upgrade(sqlite)
        yield sqlite
        return
    schema = f"bench_{uuid.uuid4().hex[:10]}"
    admin = create_engine(url, isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        connection.execute(text(f'CREATE SCHEMA "{schema}"'))
    joiner = "&" if "?" in url else "?"
    scoped = f"{url}{joiner}options=-csearch_path%3D{schema}"
    try:
        upgrade(scoped)
        yield scoped
    finally:
        with admin.connect() as connection:
            connection.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
        admin.dispose()


@contextmanager
def served(app: Any) -> Iterator[str]:
    import threading

    from werkzeug.serving import make_server

    server = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}"
    finally:
        server.shutdown()


def quiet() -> None:
    from service.logs import LOGGER

    for handler in [*LOGGER.handlers, *logging.getLogger().handlers]:
        if not isinstance(handler, RunDone):
            handler.setLevel(logging.ERROR)
    logging.getLogger("werkzeug").setLevel(logging.ERROR)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--mix", choices=sorted(remediate_bench.MIXES), default="basic")
    parser.add_argument("--database-url", default=os.environ.get("MFX_BENCH_DATABASE_URL"))
    args = parser.parse_args()

    import boto3
    from moto.server import ThreadedMotoServer
    from sqlalchemy import func
    from sqlmodel import Session, select

    from sandbox.app import create_sandbox_app
    from sandbox.client import SandboxAdmin
    from sandbox.defaults import SANDBOX_API_KEY, SANDBOX_WEBHOOK_SECRET
    from sandbox.events import build_import_set_event
    from service.app import create_app
    from service.config import Settings
    from service.db import make_engine
    from service.logs import LOGGER
    from service.models import CorrectionAudit, QuarantinedRow, RemediationRun
    from service.worker.loop import InboxWorker

    for name, value in (
        ("AWS_ACCESS_KEY_ID", "testing"),
        ("AWS_SECRET_ACCESS_KEY", "testing"),
        ("AWS_DEFAULT_REGION", "us-east-1"),
    ):
        os.environ.setdefault(name, value)
    done = RunDone()
    LOGGER.addHandler(done)
    LOGGER.setLevel(logging.INFO)
    quiet()
    moto = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    moto.start()
    host, port = moto.get_host_and_port()
    s3_url = f"http://{host}:{port}"
    boto3.client("s3", endpoint_url=s3_url).create_bucket(Bucket="bench")
    with tempfile.TemporaryDirectory() as tmp, database(args.database_url, Path(tmp)) as db:
        work = Path(tmp)
        source = work / "failed.csv"
        remediate_bench.generate(source, args.rows, args.mix)
        size_mb = source.stat().st_size / 1e6
        sandbox_app = create_sandbox_app()
        with served(sandbox_app) as sandbox_url:
            admin = SandboxAdmin(sandbox_url)
            for name in remediate_bench.EVENT_NAMES:
                admin.create_meter(name)
            file = admin.upload_file(source.read_text(), "failed_records.csv", "data_management")
            settings = Settings(
                database_url=db,
                bucket_url="s3://bench/usage/",
                s3_endpoint_url=s3_url,
                stripe_api_key=SANDBOX_API_KEY,
                stripe_webhook_secrets=[SANDBOX_WEBHOOK_SECRET],
                stripe_api_base=sandbox_url,
                stripe_files_base=sandbox_url,
                stripe_meter_events_base=sandbox_url,
                mfx_work_dir=str(work / "work"),
                mfx_poller="off",
            )
            app = create_app(settings)
            quiet()  # the app configured logging: only the figures below on the terminal
            with served(app) as app_url:
                body = {
                    "id": "impset_bench",
                    "object": "data_management.import_set",
                    "status": "succeeded_with_errors",
                    "created": NOW,
                    "result": {"errors": {"file": file["id"], "row_count": args.rows}},
                }
                event = build_import_set_event(
                    "data_management.import_set.succeeded", body, created=NOW
                )
                stored = admin.add_event(event)
                assert admin.deliver(stored["id"], f"{app_url}/webhooks")["status"] == 200
                engine = make_engine(db)
                worker = InboxWorker(engine, settings)
                quiet()
                started = time.perf_counter()
                worker.drain()
                total = time.perf_counter() - started
        with Session(engine) as session:
            run = session.exec(select(RemediationRun)).one()
            audit = session.scalar(select(func.count()).select_from(CorrectionAudit)) or 0
            held = session.scalar(select(func.count()).select_from(QuarantinedRow)) or 0
        engine.dispose()
    moto.stop()
    dialect = "PostgreSQL" if args.database_url else "SQLite"
    print(
        f"service path, {args.rows:,} rows ({args.mix} mix, {size_mb:.0f} MB CSV), {dialect}; "
        f"load average {os.getloadavg()[0]:.2f}"
    )
    print(
        f"run {run.status}: {run.input_rows:,} in, {run.corrected:,} corrected, "
        f"{run.quarantined:,} quarantined; {audit:,} audit rows, {held:,} quarantined rows stored"
    )
    stages = done.fields.get("stages") or {}
    for name in ("download", "lineage", "remediate", "upload", "database"):
        if name in stages:
            print(f"  {name:10s} {float(stages[name]):7.2f} s")
    for name, seconds in (done.fields.get("database_parts") or {}).items():
        print(f"    {name:18s} {float(seconds):7.2f} s")
    print(f"  {'total':10s} {total:7.2f} s (worker drain: handler, task, every stage)")
    if "remediate" in stages and "database" in stages:
        ratio = float(stages["database"]) / float(stages["remediate"])
        met = "met" if ratio <= 1 else "NOT met"
        print(f"database / remediate = {ratio:.2f} (target <= 1.0) {met}")


if __name__ == "__main__":
    main()
