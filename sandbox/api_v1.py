"""Stripe v1 routes: meters, customers, files, meter events."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

from flask import Blueprint, Response, jsonify, request, stream_with_context

from sandbox.clock import now
from sandbox.errors import StripeApiError, missing_param, not_found
from sandbox.hosts import host_url
from sandbox.intake import submit
from sandbox.objects import JSON, deleted_customer, is_deleted, list_object, search_result
from sandbox.params import list_limit, meter_event_payload, meter_status
from sandbox.runtime import current_sandbox
from sandbox.search import UnsupportedQuery, parse_query
from sandbox.state import StoredFile
from sandbox.validation import MeterEventInput, check_lengths, v1_timestamp

bp = Blueprint("sandbox_v1", __name__)

CHUNK_BYTES = 64 * 1024
_CONTENT_TYPES = {"csv": "text/csv", "json": "application/json", "jsonl": "application/x-ndjson"}


@bp.get("/v1/billing/meters")
def list_meters() -> Response:
    state = current_sandbox().state
    with state.lock:
        meters = list(reversed(state.meters.values()))  # newest first, as Stripe lists
    if status := meter_status(request.args):
        meters = [m for m in meters if m["status"] == status]
    page, has_more = _page(meters)
    return jsonify(list_object("/v1/billing/meters", page, has_more))


def _page(items: list[JSON]) -> tuple[list[JSON], bool]:
    limit = list_limit(request.args)
    start = 0
    if after := request.args.get("starting_after"):
        ids = [item["id"] for item in items]
        if after not in ids:
            raise StripeApiError(400, f"No such object: '{after}'", "resource_missing")
        start = ids.index(after) + 1
    page = items[start : start + limit]
    return page, start + limit < len(items)


@bp.get("/v1/billing/meters/<meter_id>")
def retrieve_meter(meter_id: str) -> Response:
    return jsonify(current_sandbox().state.require("meters", meter_id, "billing.meter"))


@bp.get("/v1/customers/search")
def search_customers() -> Response:
    query = request.args.get("query")
    if not query:
        raise missing_param("query")
    try:
        clauses = parse_query(query)
    except UnsupportedQuery as exc:
        message = f"Unsupported search query: {query}"
        raise StripeApiError(400, message, "parameter_invalid", "query") from exc
    state = current_sandbox().state
    with state.lock:
        customers = list(state.customers.values())
    live = [c for c in customers if not is_deleted(c)]
    hits = [c for c in live if all(clause.matches(c) for clause in clauses)]
    return jsonify(search_result("/v1/customers/search", hits))


@bp.get("/v1/customers/<customer_id>")
def retrieve_customer(customer_id: str) -> Response:
    """A live customer, or the stub of a deleted one (200 `deleted: true`, as Stripe answers)."""
    return jsonify(current_sandbox().state.require("customers", customer_id, "customer"))


@bp.delete("/v1/customers/<customer_id>")
def delete_customer(customer_id: str) -> Response:
    """Stripe deletes a customer for good: it is kept as a `deleted: true` stub (retrieved as
    such, never searched), meter events naming it are refused from then on
    (`meter_event_customer_not_found`), and deleting it again answers 404."""
    state = current_sandbox().state
    with state.lock:
        customer = state.customers.get(customer_id)
        if customer is None or is_deleted(customer):
            raise not_found("customer", customer_id)
        stub = deleted_customer(customer_id)
        state.customers[customer_id] = stub
    return jsonify(stub)


@bp.get("/v1/files/<file_id>")
def retrieve_file(file_id: str) -> Response:
    return jsonify(file_with_url(_stored_file(file_id).obj))


@bp.get("/v1/files/<file_id>/contents")
def file_contents(file_id: str) -> Response:
    stored = _stored_file(file_id)

    def chunks() -> Iterator[bytes]:
        for start in range(0, len(stored.content), CHUNK_BYTES):
            yield stored.content[start : start + CHUNK_BYTES]

    mimetype = _CONTENT_TYPES.get(str(stored.obj.get("type")), "application/octet-stream")
    response = Response(stream_with_context(chunks()), mimetype=mimetype)
    response.headers["Content-Length"] = str(len(stored.content))
    return response


@bp.post("/v1/files")
def create_file() -> Response:
    upload = request.files.get("file")
    if upload is None:
        raise missing_param("file")
    purpose = request.form.get("purpose")
    if not purpose:
        raise missing_param("purpose")
    obj = store_file(upload.read(), upload.filename or "upload", purpose)
    return jsonify(file_with_url(obj))


def store_file(content: bytes, filename: str, purpose: str) -> JSON:
    return current_sandbox().state.add_file(content, filename, purpose)


def file_with_url(obj: JSON) -> JSON:
    """The file object as served: `url` points at the contents route of this sandbox's files
    host (its root URL when the request came through the root)."""
    return {**obj, "url": f"{host_url('files')}/v1/files/{obj['id']}/contents"}


def _stored_file(file_id: str) -> StoredFile:
    state = current_sandbox().state
    with state.lock:
        stored = state.files.get(file_id)
    if stored is None:
        raise not_found("file", file_id)
    return stored


@bp.post("/v1/billing/meter_events")
def create_meter_event() -> Response:
    form = request.form
    payload = meter_event_payload(form.items(multi=True))  # unknown parameters first
    event_name = form.get("event_name")
    if not event_name:
        raise missing_param("event_name")
    if not payload:
        raise missing_param("payload")
    identifier = form.get("identifier") or str(uuid.uuid4())
    check_lengths(event_name, identifier)
    event = MeterEventInput(event_name, payload, identifier, v1_timestamp(form.get("timestamp")))
    submit(current_sandbox().state, event, source="v1.meter_events")
    return jsonify(_meter_event_object(event))


def _meter_event_object(event: MeterEventInput) -> JSON:
    created = int(now())
    return {
        "object": "billing.meter_event",
        "created": created,
        "event_name": event.event_name,
        "identifier": event.identifier,
        "livemode": False,
        "payload": event.payload,
        "timestamp": created if event.timestamp is None else event.timestamp,
    }
