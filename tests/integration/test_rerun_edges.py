"""Quarantine re-runs at their edges: what a re-run leaves behind for the runs after it.
The sandbox through the real stripe SDK (Files API, meters, webhooks), a file:// bucket,
SQLite and PostgreSQL."""

# ruff: noqa: F811  (fixtures imported from the modules that define them)
from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from pathlib import Path

from sqlmodel import Session, col, select

from service.config import Settings
from service.db import make_engine
from service.db.locks import advisory_lock
from service.jobs import quarantine_rerun
from service.jobs.store.quarantine_filter import QuarantineFilter
from service.models import CorrectionAudit, QuarantinedRow, RemediationRun
from service.runtime import Runtime
from service.web.actions import Actor, queue_rerun
from service.worker.liveness import ITEM_THREAD_PREFIX
from service.worker.loop import InboxWorker
from service.worker.task_runner import TaskRunner
from tests.conftest import SandboxServer
from tests.integration.test_generation_from_audit import (
    COLUMNS,
    _bucket,
    _corrected,
    _failed_records,
)
from tests.integration.test_remediation_tasks import Service, service  # noqa: F401
from tests.integration.test_web_rerun import _remediate, _settings

HEADER = "identifier,timestamp,event_name,payload_stripe_customer_id,payload_value,error_code\n"


def test_a_row_a_rerun_sends_unchanged_is_traced_when_stripe_refuses_it_later(
    service: Service,
) -> None:
    """README and docs/architecture.md: a row re-sent goes out in the next generation of its
    own identifier (the row a first-generation run wrote as `a1-mfx1`, refused again, goes out
    as `a1-mfx2`); the correction audit is what says which identifiers we wrote when the
    input's object names no generation.

    Instead: `x` (its meter not made yet) is quarantined; the operator makes the meter and
    re-runs it: it passes and goes out unchanged as `x-mfx1`, with no audit row. Stripe
    later refuses `x-mfx1` for its customer, from an import set that names no object of
    ours: nothing says we wrote `x-mfx1`, so it is taken for the customer's own identifier
    and re-sent as `x-mfx1-mfx1` (generation 1 again), not `x-mfx2`."""
    now = int(time.time()) - 60
    row = dict(zip(COLUMNS, ["x", str(now), "tokens", "acme-42", "5"], strict=True))
    _failed_records(service, "impset_q", [{**row, "error_code": "no_meter"}])
    service.sandbox.admin.create_meter("tokens")  # the operator makes the missing meter
    queued = queue_rerun(service.engine, QuarantineFilter(), Actor("api", "127.0.0.1"))
    assert queued["rows"] == 1
    service.drain()
    [output] = (_bucket(service) / "corrected").glob("rerun-*/*.corrected.*.jsonl")
    [sent] = map(json.loads, output.read_text().splitlines())
    assert (sent["identifier"], sent["payload"]["stripe_customer_id"]) == ("x-mfx1", "acme-42")

    # Stripe takes the re-run's object and refuses x-mfx1 for its customer (an external id
    # the rules map); its import set names no object of ours
    refused = {**row, "identifier": "x-mfx1", "error_code": "meter_event_customer_not_found"}
    _failed_records(service, "impset_later", [refused])
    [again], _ = _corrected(service, "impset_later")
    with Session(service.engine) as session:
        runs = session.exec(select(RemediationRun).order_by(col(RemediationRun.id))).all()
        audit = session.exec(select(CorrectionAudit).order_by(col(CorrectionAudit.id))).all()
    wrote = [(a.identifier, a.new_identifier) for a in audit]
    assert again["payload_stripe_customer_id"] == "cus_acme"  # mapped by the rules
    assert again["identifier"] == "x-mfx2", (
        f"re-sent as {again['identifier']}; runs (key, generation): "
        f"{[(r.run_key, r.generation) for r in runs]}; audit: {wrote}"
    )


def test_a_rerun_waiting_for_another_reruns_lock_is_not_timed_out_for_the_wait(
    sandbox_server: SandboxServer,
    pg_url: str,
    tmp_path: Path,
    make_settings: Callable[..., Settings],
) -> None:
    """README: "Each item may run `MFX_TASK_TIME_LIMIT` seconds"; re-runs run one at a time
    (`quarantine_rerun._one_at_a_time`: on PostgreSQL an advisory lock, waited for).

    Instead (before `liveness.restart_time_limit`): the wait for the lock counted against the
    re-run's own limit. Another re-run
    holds the lock for 4 s; this one, limited to 2 s and needing well under a second once it
    has the lock, is failed "exceeded the 2 s time limit" having done nothing (and its
    worker process restarts)."""
    sandbox_server.admin.create_meter("api_requests")
    settings = _settings(make_settings, sandbox_server, pg_url, mfx_task_time_limit="2")
    engine = make_engine(pg_url)
    now = int(time.time())
    first = _remediate(settings, engine, tmp_path, HEADER + f"w1,{now},tokens,cus_1,1,no_meter\n")
    assert first.quarantined == 1
    sandbox_server.admin.create_meter("tokens")
    queued = queue_rerun(engine, QuarantineFilter(), Actor("api", "127.0.0.1"))
    holding, release = threading.Event(), threading.Event()

    def longer_rerun() -> None:  # another re-run holding the lock for 4 s
        with advisory_lock(engine, quarantine_rerun.RERUN_LOCK_KEY, wait=True):
            holding.set()
            release.wait(4)

    holder = threading.Thread(target=longer_rerun)
    holder.start()
    assert holding.wait(10)
    worker = InboxWorker(engine, settings, task_runner=TaskRunner(Runtime(settings, engine=engine)))
    try:
        report = worker.drain()
    finally:
        release.set()
        holder.join(30)
        for item in [t for t in threading.enumerate() if t.name.startswith(ITEM_THREAD_PREFIX)]:
            item.join(30)  # the abandoned item thread: let it end before the schema goes
        engine.dispose()
    assert report.done == [queued["task"]], report.retrying


def test_a_rerun_drops_the_dimensions_stripe_refused_as_a_fresh_run_does(
    service: Service,
) -> None:
    """A row Stripe refused for too many dimensions, quarantined while `drop_unused_keys` was
    turned off; the operator turns it on and re-runs the row: the re-run threw its code away
    and only validated it (our checks cannot judge a meter's dimensions when it names none),
    so it went out as Stripe refused it, `region` and all, to be refused again. It keeps its
    code, so its rule drops the key, as a fresh run of the row does."""
    rules = Path(service.settings.mfx_rules)
    rules.write_text('[policy]\ndisabled_rules = ["drop_unused_keys"]\n')
    now = int(time.time()) - 60
    row = dict(zip(COLUMNS, ["d1", str(now), "api_requests", "cus_1", "5"], strict=True))
    code = "meter_event_dimension_count_too_high"
    _failed_records(
        service,
        "impset_dims",
        [{**row, "payload_region": "eu", "error_code": code}],
        ["payload_region"],
    )
    rules.write_text("")  # the rule turned on again
    queued = queue_rerun(service.engine, QuarantineFilter(), Actor("api", "127.0.0.1"))
    assert queued["rows"] == 1
    service.drain()
    [output] = (_bucket(service) / "corrected").glob("rerun-*/*.corrected.*.jsonl")
    [sent] = map(json.loads, output.read_text().splitlines())
    assert (sent["identifier"], sent["payload"]) == (
        "d1-mfx1",
        {"stripe_customer_id": "cus_1", "value": "5"},
    )
    with Session(service.engine) as session:
        rerun_run = session.exec(
            select(RemediationRun).where(RemediationRun.trigger == "quarantine_rerun")
        ).one()
        audit = session.exec(
            select(CorrectionAudit).where(CorrectionAudit.run_id == rerun_run.id)
        ).all()
    assert [(a.rule, a.field, a.before) for a in audit] == [
        ("drop_unused_keys", "payload.region", "eu")
    ]
    assert rerun_run.by_code == {
        "meter_event_dimension_count_too_high": {"corrected": 1, "quarantined": 0}
    }


def test_a_rerun_keeps_a_row_naming_two_customers_quarantined_as_a_fresh_run_does(
    service: Service,
) -> None:
    """A row Stripe refused for no customer, holding `cus_1` under the meter's key and
    `customer_id: cus_2` beside it: quarantined, both named. Re-run with the rules unchanged,
    it threw its code away and only validated the row (the key is there): it went out as
    `d2-mfx1` billing cus_1, `customer_id: cus_2` beside it. It keeps its code, so its rule
    names both again; a row whose alias agrees goes out."""
    now = int(time.time()) - 60
    row = dict(zip(COLUMNS, ["d2", str(now), "api_requests", "cus_1", "5"], strict=True))
    code = "meter_event_no_customer_defined"
    _failed_records(
        service,
        "impset_two",
        [{**row, "customer_id": "cus_2", "error_code": code}],
        ["customer_id"],
    )
    reason = (
        "payload key 'stripe_customer_id' holds 'cus_1' and a top-level alias holds 'cus_2': "
        "which one is meant is not guessed"
    )
    with Session(service.engine) as session:
        [first] = session.exec(select(QuarantinedRow)).all()
    assert (first.identifier, first.reason) == ("d2", reason)
    queued = queue_rerun(service.engine, QuarantineFilter(), Actor("api", "127.0.0.1"))
    assert queued["rows"] == 1
    service.drain()
    assert list((_bucket(service) / "corrected").glob("rerun-*/*.corrected.*")) == []
    with Session(service.engine) as session:
        rows = session.exec(select(QuarantinedRow).order_by(col(QuarantinedRow.id))).all()
    assert [(q.identifier, q.reason, q.rerun_id is None) for q in rows] == [
        ("d2", reason, False),  # taken by the re-run
        ("d2", reason, True),  # and quarantined again by it, for the same reason
    ]
