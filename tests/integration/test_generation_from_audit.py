"""A run's generation is above every generation lineage says wrote one of its input's
identifiers. An import set that names no object (or a failed file read from Stripe's copy)
gives no `mfx-generation` to read, yet the correction audit knows which of its rows a run of
ours wrote, and in which generation: re-sent in that generation, a corrected row went out
under the very identifier that had just failed (Stripe drops it as a duplicate within a day).
Real sandbox (Files API, meters), a file:// bucket, both databases."""

# ruff: noqa: F811  (fixtures imported from the modules that define them)
from __future__ import annotations

import csv
import io
import json
import time
from collections.abc import Sequence
from pathlib import Path

from sqlmodel import Session, select

from sandbox.events import build_import_set_event
from service.jobs.store.quarantine_filter import QuarantineFilter
from service.models import CorrectionAudit, QuarantinedRow, RemediationRun
from service.web.actions import Actor, queue_rerun
from tests.integration.test_remediation_tasks import Service, service  # noqa: F401

COLUMNS = ["identifier", "timestamp", "event_name", "payload_stripe_customer_id", "payload_value"]


def _csv(rows: list[dict[str, str]], columns: list[str], delimiter: str = ",") -> str:
    out = io.StringIO()
    writer = csv.DictWriter(out, columns, delimiter=delimiter, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return out.getvalue()


def _failed_records(
    svc: Service, impset: str, rows: list[dict[str, str]], more: Sequence[str] = ()
) -> None:
    """Stripe's failed-records file of an import set that names no object, remediated
    (`more`: columns after the usual ones)."""
    content = _csv(rows, [*COLUMNS, *more, "error_code"])
    file = svc.sandbox.admin.upload_file(content, "failed_records.csv", "data_management")
    body = {
        "id": impset,
        "object": "data_management.import_set",
        "status": "succeeded_with_errors",
        "result": {"errors": {"file": file["id"], "row_count": len(rows)}},
    }
    svc.deliver(build_import_set_event("data_management.import_set.succeeded", body))
    svc.drain()


def _bucket(svc: Service) -> Path:
    return Path(svc.settings.bucket_url.removeprefix("file://"))


def _corrected(svc: Service, impset: str) -> tuple[list[dict[str, str]], list[str]]:
    """The rows of the import set's corrected objects and the generations their lineage
    metadata (a file:// bucket's sidecar) names."""
    files = sorted((_bucket(svc) / "corrected" / impset).glob("*.corrected.*.csv"))
    rows = [row for f in files for row in csv.DictReader(io.StringIO(f.read_text()))]
    sidecars = [json.loads(Path(f"{f}.meta.json").read_text()) for f in files]
    return rows, [meta["mfx-generation"] for meta in sidecars]


def _generations(svc: Service) -> dict[str, int]:
    """import set -> the generation its run recorded."""
    with Session(svc.engine) as session:
        runs = session.exec(select(RemediationRun)).all()
    return {r.run_key.split(":")[1]: r.generation for r in runs}


def _first_generation(svc: Service, now: int) -> dict[str, str]:
    """a1 fails for its millisecond timestamp; meterfix writes it as `a1-mfx1` (generation
    1, in an object that Stripe's next import set does not name). The row as written."""
    row = dict(zip(COLUMNS, ["a1", str(now * 1000), "api_requests", "acme-42", "5"], strict=True))
    _failed_records(svc, "impset_g1", [{**row, "error_code": "timestamp_in_future"}])
    [written], generations = _corrected(svc, "impset_g1")
    assert (written["identifier"], written["timestamp"]) == ("a1-mfx1", str(now))
    assert generations == ["1"]
    return written


def test_a_row_of_ours_failing_with_another_code_goes_out_in_the_next_generation(
    service: Service,
) -> None:
    now = int(time.time()) - 60
    written = _first_generation(service, now)
    # Stripe takes the corrected object and refuses a1-mfx1 for its customer (acme-42 is an
    # external id): a code it was not corrected for, so loop protection lets it through
    _failed_records(
        service, "impset_g2", [{**written, "error_code": "meter_event_customer_not_found"}]
    )
    [again], generations = _corrected(service, "impset_g2")
    assert again["payload_stripe_customer_id"] == "cus_acme"  # mapped by the rules
    assert again["identifier"] == "a1-mfx2"  # not a1-mfx1, the identifier that just failed
    assert generations == ["2"]
    assert _generations(service) == {"impset_g1": 1, "impset_g2": 2}
    with Session(service.engine) as session:
        corrections = session.exec(select(CorrectionAudit)).all()
    audit = {(a.identifier, a.new_identifier, a.code) for a in corrections}
    assert audit == {
        ("a1", "a1-mfx1", "timestamp_in_future"),
        ("a1-mfx1", "a1-mfx2", "meter_event_customer_not_found"),
    }

    # it fails again for its customer: loop protection knows it was corrected for that code
    # (the audit no longer names two corrections that wrote one identifier) and stops it
    _failed_records(
        service, "impset_g3", [{**again, "error_code": "meter_event_customer_not_found"}]
    )
    with Session(service.engine) as session:
        [stopped] = session.exec(select(QuarantinedRow)).all()
    assert stopped.identifier == "a1-mfx2"
    assert "failed again" in (stopped.reason or "") and "generation 2" in (stopped.reason or "")


def test_a_failed_file_read_from_stripes_copy_resends_rows_of_ours_in_the_next_generation(
    service: Service,
) -> None:
    """Stripe's connector failed a whole file holding a row meterfix wrote (`a1-mfx1`) and one
    of the customer's (`c1`), and kept a copy; the import set names no object of ours, so the
    copy is the input and no `mfx-generation` is read. Every row goes out, unchanged: the
    audit says generation 1 wrote a1-mfx1, so the run is generation 2."""
    now = int(time.time()) - 60
    written = _first_generation(service, now)
    mine = dict(zip(COLUMNS, ["c1", str(now), "api_requests", "cus_1", "3"], strict=True))
    copy = _csv([written, mine], COLUMNS, delimiter=";")  # `;`: the whole file failed
    stripe_copy = service.sandbox.admin.upload_file(copy, "usage-g2.csv")
    body = {"id": "impset_whole", "status": "failed", "file": stripe_copy["id"]}
    service.deliver(build_import_set_event("data_management.import_set.failed", body))
    service.drain()

    rows, generations = _corrected(service, "impset_whole")
    assert [(r["identifier"], r["timestamp"]) for r in rows] == [
        ("a1-mfx2", str(now)),
        ("c1-mfx2", str(now)),
    ]
    assert generations == ["2"]
    assert _generations(service) == {"impset_g1": 1, "impset_whole": 2}


def test_a_rerun_traces_a_raised_runs_rows_from_its_inputs_generation(
    service: Service,
) -> None:
    """An import set naming no object held our `a1-mfx1` (so its run went up to generation
    2) and the customer's own `c1-mfx1` (a meter not made yet: quarantined). The quarantine
    re-run traced that row from generation 1 (the run's, less one), not from its input's (0:
    no object, no generation), so it took `c1-mfx1` for our `c1` re-sent and wrote `c1-mfx2`
    (another original's derived identifier: Stripe keeps one of the two). Now the run keeps
    its input's generation, and the re-run traces the row from it: `c1-mfx1-mfx2`, as the
    run itself would have written it."""
    now = int(time.time()) - 60
    written = _first_generation(service, now)
    theirs = dict(zip(COLUMNS, ["c1-mfx1", str(now), "tokens", "cus_1", "3"], strict=True))
    _failed_records(
        service,
        "impset_mix",
        [
            {**written, "error_code": "meter_event_customer_not_found"},
            {**theirs, "error_code": "no_meter"},
        ],
    )
    [again], _ = _corrected(service, "impset_mix")
    assert again["identifier"] == "a1-mfx2"
    with Session(service.engine) as session:
        [held] = session.exec(select(QuarantinedRow)).all()
        run = session.get(RemediationRun, held.run_id)
    assert held.identifier == "c1-mfx1"
    assert run is not None and (run.generation, run.input_generation) == (2, 0)

    service.sandbox.admin.create_meter("tokens")  # the operator makes the missing meter
    queued = queue_rerun(service.engine, QuarantineFilter(), Actor("api", "127.0.0.1"))
    assert queued["rows"] == 1
    service.drain()
    with Session(service.engine) as session:
        [rerun] = session.exec(
            select(RemediationRun).where(RemediationRun.trigger == "quarantine_rerun")
        ).all()
    assert (rerun.run_key, rerun.generation, rerun.input_generation, rerun.valid) == (
        f"quarantine_rerun:{queued['action_id']}:g2:i0",
        2,
        0,
        1,
    )
    [output] = (_bucket(service) / "corrected").glob("rerun-*/*.corrected.*.jsonl")
    [sent] = map(json.loads, output.read_text().splitlines())
    assert (sent["identifier"], sent["event_name"]) == ("c1-mfx1-mfx2", "tokens")
