"""Admin API under /_sandbox/ (no auth: the sandbox binds loopback only). JSON in and out."""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

import requests
from flask import Blueprint, Response, jsonify, request

from sandbox.api_v1 import file_with_url, store_file
from sandbox.clock import now
from sandbox.errors import StripeApiError, missing_param
from sandbox.objects import JSON, build_customer, build_meter
from sandbox.runtime import current_sandbox
from sandbox.state import Fault

bp = Blueprint("sandbox_admin", __name__, url_prefix="/_sandbox")


def _body() -> JSON:
    body = request.get_json(silent=True)
    if body is None:
        return {}
    if not isinstance(body, dict):
        raise StripeApiError(400, "Expected a JSON object.")
    return body


@bp.post("/reset")
def reset() -> Response:
    current_sandbox().state.reset()
    return jsonify({"reset": True})


@bp.post("/config")
def configure() -> Response:
    """Change options at run time: `strict_customers`, `rate_limit_per_second`,
    `meter_event_session_seconds`."""
    options = current_sandbox().state.options
    body = _body()
    if "strict_customers" in body:
        options.strict_customers = bool(body["strict_customers"])
    if "rate_limit_per_second" in body:
        options.rate_limit_per_second = int(body["rate_limit_per_second"])
    if "meter_event_session_seconds" in body:
        options.meter_event_session_seconds = float(body["meter_event_session_seconds"])
    return jsonify(asdict(options))


@bp.post("/meters")
def create_meter() -> Response:
    spec = _body()
    if not spec.get("event_name"):
        raise missing_param("event_name")
    state = current_sandbox().state
    with state.lock:
        taken = state.meter_for_event_name(spec["event_name"])
        if taken is not None and taken["status"] == "active" and spec.get("status") != "inactive":
            message = f"An active meter already uses event_name {spec['event_name']}."
            raise StripeApiError(400, message, "parameter_invalid", "event_name")
        meter = build_meter(spec)
        state.meters[meter["id"]] = meter
    return jsonify(meter)


@bp.get("/meters")
def list_meters() -> Response:
    return jsonify(current_sandbox().state.snapshot("meters"))


@bp.post("/meters/<meter_id>/deactivate")
def deactivate_meter(meter_id: str) -> Response:
    state = current_sandbox().state
    meter = state.require("meters", meter_id, "billing.meter")
    with state.lock:
        moment = int(now())
        meter.update(status="inactive", updated=moment)
        meter["status_transitions"] = {"deactivated_at": moment}
    return jsonify(meter)


@bp.post("/customers")
def create_customer() -> Response:
    customer = build_customer(_body())
    state = current_sandbox().state
    with state.lock:
        state.customers[customer["id"]] = customer
    return jsonify(customer)


@bp.post("/files")
def upload_file() -> Response:
    filename = request.args.get("filename") or "upload.csv"
    purpose = request.args.get("purpose") or "data_management_manual_upload"
    return jsonify(file_with_url(store_file(request.get_data(), filename, purpose)))


@bp.post("/events")
def add_event() -> Response:
    body = _body()
    if not body.get("type"):
        raise missing_param("type")
    return jsonify(current_sandbox().add_event(body))


@bp.get("/events")
def list_events() -> Response:
    return jsonify(current_sandbox().state.snapshot("events"))


@bp.post("/deliver")
def deliver() -> Response:
    body = _body()
    if not body.get("event_id") or not body.get("url"):
        raise StripeApiError(400, "event_id and url are required.", "parameter_missing")
    secrets = body.get("secrets") or ([body["secret"]] if body.get("secret") else None)
    try:
        result = current_sandbox().deliver(str(body["event_id"]), str(body["url"]), secrets)
    except requests.RequestException as exc:
        error = f"delivery to {body['url']} failed: {type(exc).__name__}"
        return _json({"status": 0, "body": "", "error": error}, 502)
    return jsonify(result)


@bp.post("/faults")
def inject_fault() -> Response:
    """Fields: method, path_prefix, status (0: drop the connection), count (negative: no
    limit), rate (share of matching requests hit), retry_after, delay, after (see Fault)."""
    body = _body()
    retry_after = body.get("retry_after")
    fault = Fault(
        method=str(body.get("method", "*")),
        path_prefix=str(body.get("path_prefix", "/")),
        status=int(body.get("status", 500)),
        remaining=int(body.get("count", 1)),
        rate=float(body.get("rate", 1.0)),
        retry_after=None if retry_after is None else int(retry_after),
        delay=float(body.get("delay", 0.0)),
        after=bool(body.get("after", False)),
    )
    state = current_sandbox().state
    with state.lock:
        state.faults.append(fault)
    return jsonify(asdict(fault))


@bp.delete("/faults")
def clear_faults() -> Response:
    state = current_sandbox().state
    with state.lock:
        state.faults.clear()
    return jsonify({"cleared": True})


@bp.get("/requests")
def list_requests() -> Response:
    return jsonify(current_sandbox().state.snapshot("requests"))


@bp.get("/meter_events")
def list_meter_events() -> Response:
    return jsonify(current_sandbox().state.snapshot("meter_events"))


@bp.get("/duplicates")
def list_duplicates() -> Response:
    return jsonify(current_sandbox().state.snapshot("duplicates"))


@bp.get("/pending_errors")
def list_pending_errors() -> Response:
    return jsonify([asdict(item) for item in current_sandbox().state.snapshot("pending_errors")])


@bp.get("/deliveries")
def list_deliveries() -> Response:
    return jsonify(current_sandbox().state.snapshot("deliveries"))


@bp.post("/flush")
def flush() -> Response:
    events = current_sandbox().flush_reports()
    return jsonify({"events": events})


@bp.post("/connector/poll")
def poll_connector() -> Response:
    events = current_sandbox().poll_connector()
    return jsonify({"events": events})


@bp.get("/import_sets")
def list_import_sets() -> Response:
    return jsonify(current_sandbox().state.snapshot("import_sets"))


def _json(body: Any, status: int) -> Response:
    response = jsonify(body)
    response.status_code = status
    return response
