"""Admin API: an ISO-8601 date near the edge of the calendar, with a zone, must be a 400."""

# ruff: noqa: F811  (fixtures imported from the modules that define them)
from __future__ import annotations

import pytest

from tests.integration.test_web_api import Api, api  # noqa: F401


@pytest.mark.parametrize(
    "query",
    [
        "since=0001-01-01T00:00:00%2B01:00",
        "until=9999-12-31T23:59:59-01:00",
    ],
)
@pytest.mark.parametrize("path", ["/api/quarantine", "/api/quarantine.csv"])
def test_an_edge_date_with_a_zone_is_400_not_500(api: Api, path: str, query: str) -> None:
    from tests.integration.test_web_api import BEARER

    response = api.client.get(f"{path}?{query}", headers=BEARER)
    assert response.status_code == 400, (
        response.status_code,
        response.get_data(as_text=True)[:300],
    )


def test_rerun_with_an_edge_date_is_400_not_500(api: Api) -> None:
    from tests.integration.test_web_api import BEARER

    response = api.client.post(
        "/api/quarantine/rerun", headers=BEARER, json={"since": "0001-01-01T00:00:00+01:00"}
    )
    assert response.status_code == 400, (
        response.status_code,
        response.get_data(as_text=True)[:300],
    )
