"""The dashboard's forms carry values exactly as they were given (SQLite and PostgreSQL,
Flask's test client): the pages write text for people with its invisible characters as code
points (`cus_1[U+200B]`), and that rewrite reached the forms' values too. The quarantine
page's re-run form posted the customer `علی‌رضا` (Persian, with its zero-width non-joiner) as
`علی[U+200C]رضا` and queued nothing ("No quarantined rows match this filter"); pressing Filter
searched for the code point's spelling. Each page is read, its form parsed and submitted as a
browser would."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from html.parser import HTMLParser
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import Engine, insert
from sqlmodel import Session, col, select
from werkzeug.datastructures import MultiDict

from service.config import Settings
from service.db import make_engine
from service.models import AdminAction, CorrectionAudit, InboxEvent
from tests.integration import web_seed as seed

TOKEN = "form-values-token-0123456789"
CSRF = re.compile(r'name="csrf_token" value="([^"]+)"')
PERSIAN = "\u0639\u0644\u06cc\u200c\u0631\u0636\u0627"  # علی‌رضا: its ZWNJ is part of the name
VALUES = [
    pytest.param(PERSIAN, id="zwnj"),
    pytest.param("cus_1\u200b", id="zwsp"),
    pytest.param("cus_1\u200f", id="bidi-mark"),
    pytest.param("cus_1\x1b[31m", id="control"),
]


@dataclass
class Form:
    action: str
    method: str
    fields: list[tuple[str, str]] = field(default_factory=list)
    testid: str | None = None


class Forms(HTMLParser):
    """The forms of a page and the values a browser submits with them: inputs with a name,
    each select's selected option (else its first)."""

    def __init__(self, page: str) -> None:
        super().__init__(convert_charrefs=True)
        self.forms: list[Form] = []
        self._select: tuple[str, list[tuple[str, bool]]] | None = None
        self.feed(page)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        given = {name: value or "" for name, value in attrs}
        if tag == "form":
            method = given.get("method", "get").lower()
            self.forms.append(Form(given["action"], method, testid=given.get("data-testid")))
        elif tag == "input" and "name" in given and self.forms:
            self.forms[-1].fields.append((given["name"], given.get("value", "")))
        elif tag == "select" and self.forms:
            self._select = (given["name"], [])
        elif tag == "option" and self._select is not None:
            self._select[1].append((given.get("value", ""), "selected" in given))

    def handle_endtag(self, tag: str) -> None:
        if tag == "select" and self._select is not None and self.forms:
            name, options = self._select
            chosen = [value for value, selected in options if selected] or [options[0][0]]
            self.forms[-1].fields.append((name, chosen[0]))
            self._select = None

    def one(self, testid: str | None = None, action: str | None = None) -> Form:
        found = [f for f in self.forms if (f.action == action if action else f.testid == testid)]
        assert len(found) == 1, self.forms
        return found[0]


@dataclass
class Site:
    client: FlaskClient
    engine: Engine
    run_id: int

    def page(self, path: str, **query: str) -> tuple[str, Forms]:
        response = self.client.get(path, query_string=query)
        assert response.status_code == 200, response.get_data(as_text=True)
        text = response.get_data(as_text=True)
        return text, Forms(text)

    def submit(self, form: Form) -> Any:
        if form.method == "get":
            return self.client.get(form.action, query_string=form.fields)
        return self.client.post(form.action, data=MultiDict(form.fields))

    def queued(self) -> list[tuple[str | None, int]]:
        with Session(self.engine) as session:
            actions = session.exec(select(AdminAction).order_by(col(AdminAction.id))).all()
            tasks = session.exec(select(InboxEvent).where(InboxEvent.style == "task")).all()
            assert len(tasks) == len(actions)
            return [(a.target_id, a.detail["rows"]) for a in actions]


@pytest.fixture
def site(
    db_url: str, admin_settings: Callable[..., Settings], make_app: Callable[[Settings], Flask]
) -> Iterator[Site]:
    engine = make_engine(db_url)
    run_id = seed.run(engine, "import_set:impset_a:file_a")
    customers = ["cus_1", *(p.values[0] for p in VALUES)]
    rows = [
        {"identifier": f"r{n}", "code": "no_meter", "customer": c} for n, c in enumerate(customers)
    ]
    seed.quarantined(engine, run_id, rows)
    audit = [
        {
            "run_id": run_id,
            "source": "file_a",
            "row_number": n,
            "identifier": c,
            "code": "timestamp_in_milliseconds",
            "rule": "fix_millisecond_timestamp",
            "field": "timestamp",
            "before": "1764500000000",
            "after": "1764500000",
        }
        for n, c in enumerate(customers, start=1)
    ]
    with engine.begin() as connection:
        connection.execute(insert(CorrectionAudit), audit)
    client = make_app(admin_settings(TOKEN)).test_client()
    found = CSRF.search(client.get("/login").get_data(as_text=True))
    assert found is not None
    login = client.post("/login", data={"token": TOKEN, "csrf_token": found.group(1)})
    assert login.status_code == 302
    yield Site(client, engine, run_id)
    engine.dispose()


def _customers_listed(page: str) -> int:
    return page.count('data-testid="quarantine-row"')


@pytest.mark.parametrize("customer", VALUES)
def test_the_quarantine_filter_and_rerun_forms_carry_the_customer_exactly(
    site: Site, customer: str
) -> None:
    page, forms = site.page("/quarantine", customer=customer)
    assert _customers_listed(page) == 1
    box = dict(forms.one("quarantine-filter").fields)
    assert box["customer"] == customer
    again = site.submit(forms.one("quarantine-filter"))  # pressing Filter
    assert again.status_code == 200
    page = again.get_data(as_text=True)
    assert _customers_listed(page) == 1, page
    rerun = Forms(page).one(action="/quarantine/rerun")
    assert ("customer", customer) in rerun.fields
    posted = site.submit(rerun)
    assert posted.status_code == 302
    after = site.client.get(posted.headers["Location"]).get_data(as_text=True)
    assert "nothing queued" not in after
    assert site.queued() == [(f"customer={customer}", 1)]
    assert parse_qs(urlsplit(posted.headers["Location"]).query)["customer"] == [customer]


@pytest.mark.parametrize("identifier", VALUES)
def test_the_corrections_filter_carries_the_identifier_exactly(site: Site, identifier: str) -> None:
    path = f"/runs/{site.run_id}/corrections"
    page, forms = site.page(path, identifier=identifier)
    assert page.count('data-testid="correction-row"') == 1
    box = forms.one("corrections-filter")
    assert ("identifier", identifier) in box.fields
    again = site.submit(box)
    assert again.status_code == 200
    page = again.get_data(as_text=True)
    assert page.count('data-testid="correction-row"') == 1, page
    assert ("identifier", identifier) in Forms(page).one("corrections-filter").fields


@pytest.mark.parametrize("customer", VALUES)
def test_the_links_and_login_keep_the_value(site: Site, customer: str) -> None:
    """The CSV link of a filtered page and the page a login returns to name the value
    itself."""
    page, _ = site.page("/quarantine", customer=customer)
    link = re.search(r'href="([^"]*)" data-testid="csv-download"', page)
    assert link is not None
    href = link.group(1).replace("&amp;", "&")
    assert parse_qs(urlsplit(href).query)["customer"] == [customer]
    csv = site.client.get(href).get_data(as_text=True)
    assert csv.count("\n") == 2  # its header and the one row
    site.client.post("/logout", data={"csrf_token": CSRF.findall(page)[0]})
    gone = site.client.get("/quarantine", query_string={"customer": customer})
    assert gone.status_code == 302
    login_page = site.client.get(gone.headers["Location"]).get_data(as_text=True)
    form = Forms(login_page).one("login-form")
    fields = dict(form.fields) | {"token": TOKEN}
    back = site.client.post(form.action, data=fields)
    assert back.status_code == 302
    query = urlsplit(back.headers["Location"]).query
    assert parse_qs(query)["customer"] == [customer]
