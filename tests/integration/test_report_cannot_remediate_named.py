# ruff: noqa: F811  (the fixture imported from the module that defines it)
"""The critical "cannot remediate" alert of an error report's task names what it could not
read. A report about a1 of a.csv counted 2 rows, so the objects seen around its window were
searched too; b.json among them, a JSON array cut short (its start reads, its second item
does not), ended the whole task with the alert 'error_report evt_…: cannot remediate' and the
message "invalid JSON in item 2: Expecting ',' delimiter": no object named, no links, while every
other task kind names its file (bd6cd0c). Now its subject ends with the object's key, its
message starts with it, and its links name the report's event and the object. Real sandbox
(events, Files API), a file:// bucket, SQLite and PostgreSQL. Failed before: no key."""

from __future__ import annotations

import time
from collections.abc import Callable

from flask import Flask
from sqlmodel import Session

from service.config import Settings
from service.models import Alert, BucketObject, ImportedRow
from tests.integration import web_seed as seed
from tests.integration.test_remediation_tasks import Service, _etag, service  # noqa: F401
from tests.integration.test_report_edges import HEADER, _bucket, _report
from tests.integration.test_web_pages import TOKEN, Dashboard

CUT_SHORT = '[{"identifier": "b1", "timestamp": %d, "event_name": "api_requests", '
CUT_SHORT += '"payload": {"stripe_customer_id": "acme-42", "value": "7"}},\n'


def _imported(svc: Service, key: str, identifiers: list[str]) -> None:
    """What the poller records of `key` as the bucket holds it now, its rows' event name too
    (the objects around a report's window are found by it)."""
    etag = _etag(svc, key)
    with Session(svc.engine) as session:
        session.add(BucketObject(key=key, etag=etag, size=10, status="imported"))
        for n, identifier in enumerate(identifiers, start=1):
            session.add(
                ImportedRow(
                    identifier=identifier,
                    object_key=key,
                    etag=etag,
                    row_number=n,
                    event_name="api_requests",
                )
            )
        session.commit()


def test_an_object_it_cannot_read_is_named_in_the_alert(
    service: Service,
    make_settings: Callable[..., Settings],
    make_app: Callable[[Settings], Flask],
) -> None:
    now = int(time.time()) - 60
    bucket = _bucket(service)
    (bucket / "a.csv").write_text(HEADER + f"a1,{now},api_requests,acme-42,5\n")
    (bucket / "b.json").write_text(CUT_SHORT % now + '{"identifier": "b2"')
    _imported(service, "a.csv", ["a1"])
    _imported(service, "b.json", ["b1", "b2"])

    event_id = service.deliver(_report(service, ["a1", "x9"]))
    service.drain()

    [alert] = [a for a in service.rows(Alert) if a.kind == "remediation_input"]
    assert alert.severity == "critical"
    assert alert.subject == f"error_report {event_id}: cannot remediate b.json"
    assert alert.message == "b.json: invalid JSON in item 2: Expecting ',' delimiter"
    assert alert.links == {"event": event_id, "unreadable": ["b.json"]}

    # the dashboard's alerts page names the event and the object (not as a corrected one)
    db_url = service.settings.database_url
    with seed.served(db_url, make_settings, make_app, TOKEN) as (url, engine, browser):
        dashboard = Dashboard(url, engine, browser)
        assert dashboard.login().status_code == 302
        html = dashboard.page("/alerts")
    assert f'event <span class="key">{event_id}</span>' in html
    assert (
        'object it cannot read <span class="key" data-testid="alert-unreadable">b.json</span>'
        in html
    )
