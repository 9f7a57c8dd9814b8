"""What Stripe answered about a customer is remembered for one run, not for the worker's life.
The sandbox through the real stripe SDK, one worker draining several tasks, a file:// bucket,
SQLite and PostgreSQL."""

# ruff: noqa: F811  (fixtures imported from the modules that define them)
from __future__ import annotations

import json
import time
from pathlib import Path

from sqlmodel import Session, col, select

from service.adapters.customers import StripeCustomerDirectory
from service.jobs.store.quarantine_filter import QuarantineFilter
from service.models import QuarantinedRow
from service.web.actions import Actor, queue_rerun
from service.worker.loop import InboxWorker
from tests.conftest import SandboxServer
from tests.integration.test_generation_from_audit import COLUMNS, _bucket, _failed_records
from tests.integration.test_remediation_tasks import Service, service  # noqa: F401

RULES = '[customers]\n"acme-42" = "cus_acme"\n[policy]\ncustomer_metadata_key = "external_id"\n'


def test_a_customer_made_after_a_run_is_found_by_the_same_workers_rerun(
    service: Service, tmp_path: Path
) -> None:
    """README (re-runs): once the operator has fixed what a row lacked, re-running it sends
    it. A row naming `CUS_late` (the case fix `trim_customer` makes, checked with Stripe when
    a customer directory is configured) is quarantined while Stripe has no `cus_late`; the
    operator makes the customer and re-runs the row.

    Instead (before): the worker's one `StripeCustomerDirectory` kept Stripe's "no such
    customer" for the worker's whole life, so the re-run, drained by the same worker,
    quarantined the row again without asking Stripe; only a restart let it through."""
    (tmp_path / "rules.toml").write_text(RULES)  # the service's rules: a directory is used
    worker = InboxWorker(service.engine, service.settings)  # one worker for every task
    service.drain = worker.drain  # type: ignore[method-assign]
    now = int(time.time()) - 60
    row = dict(zip(COLUMNS, ["c1", str(now), "api_requests", "CUS_late", "5"], strict=True))
    _failed_records(
        service, "impset_late", [{**row, "error_code": "meter_event_customer_not_found"}]
    )
    with Session(service.engine) as session:
        [held] = session.exec(select(QuarantinedRow).order_by(col(QuarantinedRow.id))).all()
    assert (held.customer, held.code) == ("CUS_late", "meter_event_customer_not_found")

    service.sandbox.admin.create_customer("cus_late")  # the operator makes the customer
    queued = queue_rerun(service.engine, QuarantineFilter(), Actor("api", "127.0.0.1"))
    assert queued["rows"] == 1
    service.drain()
    outputs = sorted((_bucket(service) / "corrected").glob("rerun-*/*.corrected.*.jsonl"))
    sent = [json.loads(line) for f in outputs for line in f.read_text().splitlines()]
    assert [(r["identifier"], r["payload"]["stripe_customer_id"]) for r in sent] == [
        ("c1-mfx1", "cus_late")
    ]


def test_a_directory_remembers_at_most_its_bound_of_answers(
    sandbox_server: SandboxServer,
) -> None:
    """A file of a million distinct customer texts is a million answers: a run's directory
    remembers the last `ANSWERS_KEPT` of them (and asks Stripe again for one it forgot),
    so its memory is bounded whatever the file names."""
    sandbox_server.admin.create_customer("cus_a")
    directory = StripeCustomerDirectory(sandbox_server.stripe_client(), kept=3)
    asked = ["cus_a", "cus_b", "cus_a", "cus_c", "cus_d", "cus_e", "cus_a", "cus_e"]
    assert [directory.exists(c) for c in asked] == [True, False, True] + [False] * 3 + [True, False]
    lookups = [r["path"] for r in sandbox_server.admin.requests() if "/v1/customers/" in r["path"]]
    # cus_a asked twice (forgotten after cus_c, cus_d and cus_e), cus_e once
    assert sorted(p.rsplit("/", 1)[1] for p in lookups) == [
        "cus_a",
        "cus_a",
        "cus_b",
        "cus_c",
        "cus_d",
        "cus_e",
    ]
