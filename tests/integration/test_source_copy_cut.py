"""Stripe's copy of the file it took, read to tell a later version of the object from the one
Stripe took, arrives cut short: the try fails and is retried, and the copy is never read as
missing (which judged the object by its time alone). Real parts: the sandbox through a files
proxy that cuts one file's contents (`CuttingProxy`), the web and the worker, a file://
bucket, SQLite and PostgreSQL."""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any, cast

import pytest
import stripe
from flask import Flask
from sqlmodel import Session

from service.adapters.stripe_files import StripeFileStore
from service.config import Settings
from service.errors import StripeFileError
from service.jobs.inputs import JobDeps, download, objects_like
from service.models import (
    CorrectionAudit,
    ImportSet,
    InboxEvent,
    QuarantinedRow,
    RemediationRun,
)
from tests.conftest import SandboxServer
from tests.integration.test_download_integrity import CuttingProxy
from tests.integration.test_remediation_tasks import Service, _import_set_with_errors
from tests.servers import free_port, serve_wsgi

HEADER = "identifier,timestamp,event_name,payload_stripe_customer_id,payload_value\n"


class CuttingOneProxy(CuttingProxy):
    """Cuts (`cut_at`) only the contents of the file whose id is `only`."""

    only = ""

    def forward(self, handler: BaseHTTPRequestHandler) -> None:
        cut_at = self.cut_at
        self.cut_at = cut_at if self.only and f"/{self.only}/" in handler.path else None
        try:
            super().forward(handler)
        finally:
            self.cut_at = cut_at


@pytest.fixture
def proxy(sandbox_server: SandboxServer) -> Iterator[CuttingOneProxy]:
    with CuttingOneProxy(sandbox_server.bases["files"]) as running:
        yield running


@pytest.fixture
def service(
    sandbox_server: SandboxServer,
    proxy: CuttingOneProxy,
    db_url: str,
    tmp_path: Path,
    make_settings: Callable[..., Settings],
    make_app: Callable[[Settings], Flask],
) -> Iterator[Service]:
    sandbox_server.admin.create_meter("api_requests")
    settings = make_settings(
        database_url=db_url,
        stripe_api_key=sandbox_server.api_key,
        stripe_webhook_secrets=sandbox_server.webhook_secret,
        stripe_api_base=sandbox_server.bases["api"],
        stripe_files_base=proxy.url,
        stripe_meter_events_base=sandbox_server.bases["meter_events"],
    )
    with serve_wsgi(make_app(settings)) as running:
        svc = Service(settings, sandbox_server, running.url)
        yield svc
        svc.engine.dispose()


def _task(service: Service) -> InboxEvent:
    [task] = [
        e
        for e in service.rows(InboxEvent)
        if isinstance(e, InboxEvent) and e.event_type.endswith("import_set_errors")
    ]
    return task


def test_a_copy_of_the_source_cut_short_is_retried_not_read_as_missing(
    service: Service, proxy: CuttingOneProxy
) -> None:
    """The object the import set names was uploaded again after its event with the very bytes
    Stripe took (a folder synced again). Stripe's copy of it came cut short: `download` failed
    its size check, `_stripe_copy` took that as "no copy to be had", and the object was judged
    by its time alone: a later version, so the failed records a1 and a2, which it holds, were
    left to Stripe's connector ("a version of the file uploaded since holds them"), never
    corrected, though the connector had nothing new to take. Now the try fails with the reason
    and is retried; the next, the copy whole, finds the same bytes and corrects them."""
    now = int(time.time()) - 60
    bucket = Path(service.settings.bucket_url.removeprefix("file://"))
    bucket.mkdir(parents=True, exist_ok=True)
    taken = HEADER + f"a1,{now * 1000},api_requests,cus_1,5\na2,{now},api_requests,cus_1,x\n"
    (bucket / "daily.csv").write_text(taken)
    later = time.time() + 5  # written again after Stripe's event
    os.utime(bucket / "daily.csv", (later, later))
    source = service.sandbox.admin.upload_file(taken, "daily.csv")["id"]
    event = _import_set_with_errors(service, "impset_copy_cut")
    event["data"]["object"].update({"source_object": "daily.csv", "file": source})  # type: ignore[index]
    proxy.only, proxy.cut_at = source, 40
    service.deliver(event)
    service.drain()

    assert len(proxy.cut) == 1 and source in proxy.cut[0]  # the copy alone was cut
    task = _task(service)
    assert (task.status, task.attempts) == ("pending", 1)
    assert task.last_error is not None
    assert f"file {source}: downloaded 40 bytes where its file object says" in task.last_error
    assert service.rows(CorrectionAudit) == []
    proxy.cut_at = None  # the files host answers whole again
    with Session(service.engine) as session:
        stored = session.get(InboxEvent, task.id)
        assert stored is not None
        stored.next_attempt_at = None
        session.add(stored)
        session.commit()
    service.drain()

    task = _task(service)
    assert task.status == "done"
    assert "left to Stripe's connector" not in str(task.outcome)
    runs = [r for r in service.rows(RemediationRun) if isinstance(r, RemediationRun)]
    assert [(r.status, r.input_rows, r.quarantined) for r in runs] == [("done", 3, 1)]
    audit = [a for a in service.rows(CorrectionAudit) if isinstance(a, CorrectionAudit)]
    assert sorted({a.new_identifier for a in audit}) == ["a1-mfx1", "a2-mfx1"]
    quarantined = [q for q in service.rows(QuarantinedRow) if isinstance(q, QuarantinedRow)]
    assert [q.identifier for q in quarantined] == ["a3"]


def test_a_file_whose_file_object_cannot_be_read_now_is_not_read_unchecked(
    sandbox_server: SandboxServer, proxy: CuttingOneProxy, tmp_path: Path
) -> None:
    """A failed-records file's file object unread (here the API host refuses connections; a
    5xx, a 429 or its deadline alike): `download` went on without it, so its contents, cut
    short on the way (no Content-Length, closed after the first row), were taken whole, with
    no size to hold them against, and named as a CSV whatever their format. That try now
    fails (retried); a file object Stripe answers it has not (404) is still done without."""
    content = HEADER + "".join(f"r{n},1764000000,api_requests,cus_1,1\n" for n in range(3))
    file_id = sandbox_server.admin.upload_file(content, "failed.jsonl")["id"]
    refused = f"http://127.0.0.1:{free_port()}/_host/api"
    client = stripe.StripeClient(
        sandbox_server.api_key,
        base_addresses={"api": refused, "files": proxy.url},
        max_network_retries=0,
    )
    files = StripeFileStore(client, proxy.url, sandbox_server.api_key)
    proxy.only, proxy.cut_at = file_id, len(HEADER) + 10
    with pytest.raises(StripeFileError, match=f"file {file_id}: metadata: no answer") as info:
        download(files, file_id, tmp_path / "a")
    assert info.value.status is None
    assert not (tmp_path / "a").exists() or list((tmp_path / "a").iterdir()) == []
    proxy.cut_at = None
    gone = "file_" + "0" * 24  # no such file: its file object answers 404, its contents too
    key = sandbox_server.api_key
    with pytest.raises(StripeFileError, match="contents answered HTTP 404"):
        download(StripeFileStore(sandbox_server.stripe_client(), proxy.url, key), gone, tmp_path)


def test_the_objects_named_as_a_copy_are_not_taken_for_none_when_its_file_object_is_unread(
    sandbox_server: SandboxServer,
) -> None:
    """`objects_like` (which object of ours a whole-file failure's copy is) took a file object
    it could not read now for none: the copy became the input and the source its outputs
    name, where a try a moment later names the object of ours (rows without an identifier
    then derive theirs from another source). It fails the try now; 404 is still none."""
    refused = f"http://127.0.0.1:{free_port()}/_host/api"
    client = stripe.StripeClient(
        sandbox_server.api_key, base_addresses={"api": refused}, max_network_retries=0
    )
    files = StripeFileStore(client, refused, sandbox_server.api_key)
    import_set = ImportSet(import_set_id="impset_x", source_file_id="file_" + "1" * 24)
    deps = JobDeps(run=cast(Any, None), files=files)
    with pytest.raises(StripeFileError, match="metadata: no answer"):
        objects_like(deps, import_set)
    deps = JobDeps(
        run=cast(Any, None), files=StripeFileStore(sandbox_server.stripe_client(), "", "")
    )
    assert objects_like(deps, import_set) == []  # no such file: no name, no match
