"""CustomerDirectory over Stripe: does a customer exist, who carries metadata[key] == value."""

from __future__ import annotations

import threading
from collections import OrderedDict

import stripe

from remediation.errors import LookupRefused
from service.logs import log_event

SEARCH_LIMIT = 10
# Answers a directory keeps (the most recently asked): a file naming a million distinct
# customer texts would otherwise keep a million answers (~150 MB).
ANSWERS_KEPT = 100_000


class StripeCustomerDirectory:
    """`GET /v1/customers/{id}` and `GET /v1/customers/search`, the last `kept` answers of
    `exists` remembered. One directory serves one run (`Runtime.customer_directory`): a
    customer made in Stripe after a run is found by the next (a re-run of its rows).

    A deleted customer (`deleted: true`) does not exist for billing purposes. Only a 404
    means "no such customer"; a 400 (a query Stripe will not run, for this text whenever it
    is asked) is `LookupRefused`, that text's rows quarantined and the file's others
    corrected; any other error propagates so the caller retries later instead of
    quarantining a row on a transient failure."""

    def __init__(self, client: stripe.StripeClient, kept: int = ANSWERS_KEPT) -> None:
        self._client = client
        self._lock = threading.Lock()
        self._kept = kept
        self._exists: OrderedDict[str, bool] = OrderedDict()

    def exists(self, customer_id: str) -> bool:
        with self._lock:
            known = self._exists.get(customer_id)
            if known is not None:
                self._exists.move_to_end(customer_id)
                return known
        found = self._lookup(customer_id)
        with self._lock:
            self._exists[customer_id] = found
            while len(self._exists) > self._kept:
                self._exists.popitem(last=False)
        return found

    def _lookup(self, customer_id: str) -> bool:
        if not customer_id.strip():
            return False
        try:
            customer = self._client.v1.customers.retrieve(customer_id)
        except stripe.InvalidRequestError as exc:
            if exc.http_status == 404:
                return False
            if exc.http_status == 400:
                raise _refused("retrieve", exc) from exc
            raise
        return not bool(customer.to_dict().get("deleted"))

    def never_existed(self, customer_id: str) -> bool:
        """Stripe answers 404 for it (`CustomerRecords`): never made, not deleted. Not
        remembered, nor a refused look-up (400) taken for one: asked for a few rows only."""
        if not customer_id.strip():
            return False
        try:
            self._client.v1.customers.retrieve(customer_id)
        except stripe.InvalidRequestError as exc:
            if exc.http_status in (400, 404):
                return exc.http_status == 404
            raise
        return False

    def search_by_metadata(self, key: str, value: str) -> list[str]:
        query = f"metadata[{_quoted(key)}]:{_quoted(value)}"
        try:
            result = self._client.v1.customers.search({"query": query, "limit": SEARCH_LIMIT})
        except stripe.InvalidRequestError as exc:
            if exc.http_status == 400:
                raise _refused("search", exc) from exc
            raise
        ids = [str(item["id"]) for item in result.to_dict().get("data", [])]
        log_event("stripe.customer_search", key=key, hits=len(ids))
        return ids


def _refused(call: str, exc: stripe.InvalidRequestError) -> LookupRefused:
    """A 400 is for good: that text's rows are quarantined, the run goes on. Logged with
    Stripe's code, never the text (customer data)."""
    log_event("stripe.customer_lookup_refused", call=call, code=exc.code, status=400)
    return LookupRefused(f"Stripe refused the customer {call}: {exc.code or 'invalid_request'}")


def _quoted(text: str) -> str:
    """A Stripe search query string literal (double quotes, backslash escapes)."""
    escaped = text.replace("\\", "\\\\").replace('"', '\\"')
    return f'"{escaped}"'
