"""A deleted customer is kept as Stripe keeps it: retrieving it answers 200 `{"id", "object":
"customer", "deleted": true}`; search never returns it; meter events naming it are refused;
the state file keeps the stub. Before, the sandbox forgot it (retrieve answered 404)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import stripe

from sandbox.app import create_sandbox_app
from sandbox.client import SandboxAdmin
from sandbox.defaults import SANDBOX_API_KEY, sandbox_bases
from sandbox.persistence import keep_state_in
from service.adapters.customers import StripeCustomerDirectory
from tests.conftest import SandboxServer
from tests.servers import serve_wsgi

STUB = {"id": "cus_gone", "object": "customer", "deleted": True}
PAYLOAD = {"stripe_customer_id": "cus_gone", "value": "1"}


def _client(url: str) -> stripe.StripeClient:
    stripe.enable_telemetry = False
    bases: Any = sandbox_bases(url)
    return stripe.StripeClient(SANDBOX_API_KEY, base_addresses=bases)


def test_a_deleted_customer_is_retrieved_as_a_stub(sandbox_server: SandboxServer) -> None:
    sandbox_server.admin.create_customer("cus_gone", metadata={"external_id": "gone-1"})
    client = sandbox_server.stripe_client()
    assert client.v1.customers.delete("cus_gone").to_dict() == STUB
    assert client.v1.customers.retrieve("cus_gone").to_dict() == STUB
    assert StripeCustomerDirectory(client).exists("cus_gone") is False
    with pytest.raises(stripe.InvalidRequestError) as again:  # deleted already: no such customer
        client.v1.customers.delete("cus_gone")
    assert (again.value.http_status, again.value.code) == (404, "resource_missing")
    with pytest.raises(stripe.InvalidRequestError) as never:
        client.v1.customers.retrieve("cus_never")
    assert never.value.http_status == 404


def test_search_never_returns_a_deleted_customer(sandbox_server: SandboxServer) -> None:
    admin = sandbox_server.admin
    admin.create_customer("cus_gone", metadata={"external_id": "shared"})
    admin.create_customer("cus_here", metadata={"external_id": "shared"})
    client = sandbox_server.stripe_client()
    client.v1.customers.delete("cus_gone")
    directory = StripeCustomerDirectory(client)
    assert directory.search_by_metadata("external_id", "shared") == ["cus_here"]
    query = {"query": 'metadata["external_id"]:"shared"'}
    assert [c.id for c in client.v1.customers.search(query).data] == ["cus_here"]


def test_meter_events_naming_a_deleted_customer_are_refused(
    sandbox_server: SandboxServer,
) -> None:
    """The deleted customer was the only one: its stub still counts as a registered customer,
    so the (non-strict) customer check stays on. Before, deleting the last customer turned it
    off and the event was accepted."""
    sandbox_server.admin.create_meter("api_requests")
    sandbox_server.admin.create_customer("cus_gone")
    client = sandbox_server.stripe_client()
    client.v1.customers.delete("cus_gone")
    client.v1.billing.meter_events.create(
        {"event_name": "api_requests", "identifier": "e1", "payload": PAYLOAD}
    )
    assert sandbox_server.admin.meter_events() == []
    (report,) = sandbox_server.admin.flush()
    (error_type,) = report["data"]["reason"]["error_types"]
    assert error_type["code"] == "meter_event_customer_not_found"


def test_the_state_file_keeps_the_stub(tmp_path: Path) -> None:
    state_file = tmp_path / "state.json"
    first = create_sandbox_app()
    keep_state_in(first, state_file)
    with serve_wsgi(first) as running:
        SandboxAdmin(running.url).create_customer("cus_gone", metadata={"k": "v"})
        _client(running.url).v1.customers.delete("cus_gone")
    again = create_sandbox_app()
    keep_state_in(again, state_file)
    with serve_wsgi(again) as running:
        client = _client(running.url)
        assert client.v1.customers.retrieve("cus_gone").to_dict() == STUB
        assert client.v1.customers.search({"query": 'metadata["k"]:"v"'}).data == []
