"""`create_sandbox_app`: a Flask app that answers like the parts of Stripe meterfix uses."""

from __future__ import annotations

import socket
import time

from flask import Flask, Response, g, request
from werkzeug.exceptions import HTTPException

from sandbox import admin, api_v1, api_v2
from sandbox.clock import now
from sandbox.defaults import SANDBOX_API_KEY, SANDBOX_WEBHOOK_SECRET
from sandbox.errors import StripeApiError, stripe_error
from sandbox.hosts import HostPrefixes, host_of, requested_host
from sandbox.runtime import Sandbox, current_sandbox
from sandbox.state import Fault, SandboxState

API_PREFIXES = ("/v1/", "/v2/")
STREAM_PATH = "/v2/billing/meter_event_stream"
REDACTED = "[redacted]"


def create_sandbox_app(
    *,
    api_key: str = SANDBOX_API_KEY,
    webhook_secret: str = SANDBOX_WEBHOOK_SECRET,
    state: SandboxState | None = None,
    bucket_url: str | None = None,
    s3_endpoint_url: str | None = None,
    webhook_url: str | None = None,
) -> Flask:
    app = Flask("sandbox")
    app.extensions["sandbox"] = Sandbox(
        state=state or SandboxState(),
        api_key=api_key,
        webhook_secret=webhook_secret,
        webhook_url=webhook_url,
        bucket_url=bucket_url,
        s3_endpoint_url=s3_endpoint_url,
    )
    for blueprint in (api_v1.bp, api_v2.bp, admin.bp):
        app.register_blueprint(blueprint)
    app.wsgi_app = HostPrefixes(app.wsgi_app)  # type: ignore[method-assign]
    app.before_request(_gate_api_request)
    app.after_request(_fault_after_handling)
    app.register_error_handler(StripeApiError, _api_error)
    app.register_error_handler(HTTPException, _http_error)
    return app


def _gate_api_request() -> Response | None:
    """Log, refuse the wrong host, inject faults, rate-limit and authenticate every Stripe
    API request."""
    if not request.path.startswith(API_PREFIXES):
        return None
    state = current_sandbox().state
    _log_request()
    if (wrong_host := _wrong_host_error()) is not None:
        return wrong_host
    fault = state.take_fault(request.method, request.path)
    if fault is not None and fault.after:
        g.sandbox_fault = fault  # handled first; _fault_after_handling answers the fault
    elif fault is not None:
        return _answer_fault(fault)
    if state.over_rate_limit():
        return stripe_error(429, "Too many requests hit the API too quickly.")
    return _authentication_error()


def _wrong_host_error() -> Response | None:
    """Stripe's 404 for a path sent to another of its hosts (before any key check); the
    root URL serves every host."""
    host, serving = requested_host(), host_of(request.method, request.path)
    if host is None or host == serving:
        return None
    message = (
        f"Unrecognized request URL ({request.method}: {request.path}). "
        f"It is served on the {serving} host, not the {host} host."
    )
    return stripe_error(404, message)


def _authentication_error() -> Response | None:
    """None when the request is authenticated. The stream takes meter event session tokens
    only: an expired one answers as Stripe does (401, type `temporary_session_expired`,
    code `billing_meter_event_session_expired`; the message is ours)."""
    auth = request.authorization
    presented = (auth.token if auth.type == "bearer" else auth.username) if auth else None
    sandbox = current_sandbox()
    if request.path != STREAM_PATH:
        valid = bool(presented) and presented == sandbox.api_key
    elif presented and sandbox.state.session_status(str(presented)) == "expired":
        return stripe_error(
            401,
            "The meter event session has expired; create a new one.",
            code="billing_meter_event_session_expired",
            type_="temporary_session_expired",
        )
    else:
        valid = bool(presented) and sandbox.state.session_valid(str(presented))
    return None if valid else stripe_error(401, "Invalid API Key provided.")


def _fault_after_handling(response: Response) -> Response:
    fault: Fault | None = g.pop("sandbox_fault", None)
    return response if fault is None else _answer_fault(fault)


def _answer_fault(fault: Fault) -> Response:
    if fault.delay > 0:
        time.sleep(fault.delay)
    if fault.status == 0:
        return _drop_connection()
    retry_after = {} if fault.retry_after is None else {"Retry-After": str(fault.retry_after)}
    return stripe_error(fault.status, f"Injected fault ({fault.status}).", headers=retry_after)


def _drop_connection() -> Response:
    """Close the socket without an answer (the development server exposes it); elsewhere
    a 503 stands in."""
    connection = request.environ.get("werkzeug.socket")
    if isinstance(connection, socket.socket):
        connection.shutdown(socket.SHUT_RDWR)
    return stripe_error(503, "Injected fault (dropped connection).")


def _log_request() -> None:
    headers = dict(request.headers)
    if "Authorization" in headers:
        scheme = headers["Authorization"].split(" ", 1)[0]
        headers["Authorization"] = f"{scheme} {REDACTED}"
    entry = {
        "method": request.method,
        "host": requested_host(),
        "path": request.path,
        "query": request.args.to_dict(flat=True),
        "query_string": request.query_string.decode("latin-1"),
        "headers": headers,
        "received_at": now(),
    }
    state = current_sandbox().state
    with state.lock:
        state.requests.append(entry)


def _api_error(error: StripeApiError) -> Response:
    return stripe_error(error.status, error.message, code=error.code, param=error.param)


def _http_error(error: HTTPException) -> Response:
    status = error.code or 500
    message = "Unrecognized request URL." if status == 404 else str(error.description)
    return stripe_error(status, message)
