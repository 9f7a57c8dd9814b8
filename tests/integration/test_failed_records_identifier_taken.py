"""A row of a failed-records file whose identifier Stripe took from another row of the same
object (Stripe's S3 connector refused the first `k1`, a timestamp in milliseconds, and billed
the second, valid): Stripe billed `k1`, so the refused row corrected to `k1-mfx1` was billed a
second time. It is quarantined under `identifier_taken`, never corrected, never sent again.
"""

from __future__ import annotations

import time
from typing import Any

import pytest
from sqlmodel import select

from service.models import QuarantinedRow
from tests.integration.test_e2e import Loop, _put, render
from tests.integration.test_poller_same_input_identifiers import (  # noqa: F401
    connector_loop,
)


def rows(*identifiers: str) -> list[dict[str, Any]]:
    """One row in milliseconds (Stripe refuses it) under each of `identifiers`, then one
    valid row under the first."""
    now = int(time.time()) - 300
    base = {"event_name": "api_requests", "customer": "cus_alice"}
    refused = [
        {**base, "identifier": i, "timestamp": now * 1000, "value": str(n)}
        for n, i in enumerate(identifiers, 5)
    ]
    return [*refused, {**base, "identifier": identifiers[0], "timestamp": now - 1, "value": "5"}]


def events(loop: Loop) -> list[tuple[str, str]]:
    return sorted(
        (str(e["identifier"]), str(e["payload"]["value"])) for e in loop.sandbox.meter_events()
    )


@pytest.mark.parametrize("fmt", ["csv", "jsonl"])
def test_a_refused_row_under_an_identifier_stripe_took_from_another_row_is_quarantined(
    connector_loop: Loop,  # noqa: F811
    fmt: str,
) -> None:
    loop = connector_loop
    _put(loop, f"day.{fmt}", render(rows("k1", "k2"), fmt))
    loop.sandbox.connector_poll()  # k1 (valid) billed; k1 and k2 in milliseconds refused
    loop.drain()
    loop.sandbox.connector_poll()  # the corrected file: k2-mfx1 alone
    assert events(loop) == [("k1", "5"), ("k2-mfx1", "6")]
    with loop.session() as session:
        held = session.exec(select(QuarantinedRow)).all()
    # the code it arrived with (Stripe's, the failed-records file's), and ours in its record
    assert [(row.identifier, row.code) for row in held] == [("k1", "timestamp_in_future")]
    assert held[0].record["mfx_code"] == "identifier_taken"
    assert held[0].reason == (
        f"identifier 'k1' is also a row of 'usage/day.{fmt}' that Stripe took (not refused): "
        "Stripe took one event under it, a second would be billed twice; not corrected"
    )
