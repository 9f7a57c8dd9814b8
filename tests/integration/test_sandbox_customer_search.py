"""The sandbox's customer search parses Stripe's query strings: quoted values with backslash
escapes, clauses joined by ` AND ` outside quotes (real SDK and meterfix's directory, over
loopback HTTP)."""

from __future__ import annotations

import pytest
import requests
import stripe

from service.adapters.customers import StripeCustomerDirectory
from tests.conftest import SandboxServer

AWKWARD = 'o\'brien "1" AND x\\y'


def test_meterfix_finds_a_customer_whose_metadata_value_needs_escaping(
    sandbox_server: SandboxServer,
) -> None:
    """Before: a value with a quote, `"` escaped or ` AND ` inside quotes was refused (400)."""
    admin = sandbox_server.admin
    admin.create_customer("cus_awkward", metadata={"external_id": AWKWARD})
    admin.create_customer("cus_plain", metadata={"external_id": "x\\y"})
    directory = StripeCustomerDirectory(sandbox_server.stripe_client())
    assert directory.search_by_metadata("external_id", AWKWARD) == ["cus_awkward"]
    assert directory.search_by_metadata("external_id", "x\\y") == ["cus_plain"]
    assert directory.search_by_metadata("external_id", 'o\'brien "1"') == []


def test_raw_queries_unescape_keys_and_values(sandbox_server: SandboxServer) -> None:
    admin = sandbox_server.admin
    admin.create_customer("cus_a", metadata={'we"ird': "it's"}, name="A AND B")
    admin.create_customer("cus_b", metadata={'we"ird': "its"}, name="A AND B")
    client = sandbox_server.stripe_client()

    def ids(query: str) -> list[str]:
        return [c.id for c in client.v1.customers.search({"query": query}).data]

    assert ids(r'metadata["we\"ird"]:"it\'s"') == ["cus_a"]
    assert ids(r"metadata['we\"ird']:'it\'s'") == ["cus_a"]
    assert ids(r'name:"A AND B" AND metadata["we\"ird"]:"its"') == ["cus_b"]
    assert ids('name:"A AND B"') == ["cus_a", "cus_b"]


@pytest.mark.parametrize(
    "query",
    [
        'metadata["k"]:"unterminated',
        'metadata["k"]:"a"b"',  # a quote inside not escaped
        r'metadata["k"]:"a\nb"',  # only quotes and backslashes are escaped
        'metadata["k"]:bare',
        'metadata[""]:"v"',
        'metadata["k"]:"v" OR name:"x"',
        'metadata["k"]:"v" AND',
        'metadata["k"]:"v"name:"x"',
    ],
)
def test_malformed_queries_are_refused(sandbox_server: SandboxServer, query: str) -> None:
    with pytest.raises(stripe.InvalidRequestError) as refused:
        sandbox_server.stripe_client().v1.customers.search({"query": query})
    assert (refused.value.http_status, refused.value.code) == (400, "parameter_invalid")


def test_quoted_and_is_not_a_separator_over_plain_http(sandbox_server: SandboxServer) -> None:
    sandbox_server.admin.create_customer("cus_x", metadata={"note": "a AND b"})
    response = requests.get(
        f"{sandbox_server.bases['api']}/v1/customers/search",
        params={"query": 'metadata["note"]:"a AND b"'},
        headers={"Authorization": f"Bearer {sandbox_server.api_key}"},
        timeout=5,
    )
    assert response.status_code == 200
    assert [c["id"] for c in response.json()["data"]] == ["cus_x"]
