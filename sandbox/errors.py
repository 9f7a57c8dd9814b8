"""Stripe-shaped error responses, so the real SDK raises its own exception classes."""

from __future__ import annotations

from flask import Response, has_request_context, jsonify, request

# v1 answers a rate limit as `invalid_request_error` + code `rate_limit`; v2 APIs use the type
# `rate_limit` (stripe-python maps both to RateLimitError).
_TYPE_BY_STATUS = {401: "authentication_error", 402: "card_error", 429: "invalid_request_error"}
_V2_TYPE_BY_STATUS = {429: "rate_limit"}


class StripeApiError(Exception):
    """Raised inside a route; the app turns it into the Stripe error body and status."""

    def __init__(
        self, status: int, message: str, code: str | None = None, param: str | None = None
    ):
        super().__init__(message)
        self.status = status
        self.message = message
        self.code = code
        self.param = param


def error_type(status: int) -> str:
    if status >= 500:
        return "api_error"
    if has_request_context() and request.path.startswith("/v2/") and status in _V2_TYPE_BY_STATUS:
        return _V2_TYPE_BY_STATUS[status]
    return _TYPE_BY_STATUS.get(status, "invalid_request_error")


def stripe_error(
    status: int,
    message: str,
    *,
    code: str | None = None,
    param: str | None = None,
    type_: str | None = None,
    headers: dict[str, str] | None = None,
) -> Response:
    body: dict[str, object] = {"type": type_ or error_type(status), "message": message}
    if code is None and status == 429:
        code = "rate_limit"
    if code is not None:
        body["code"] = code
    if param is not None:
        body["param"] = param
    response = jsonify({"error": body})
    response.status_code = status
    response.headers.update(headers or {})
    return response


def not_found(kind: str, object_id: str) -> StripeApiError:
    return StripeApiError(404, f"No such {kind}: '{object_id}'", code="resource_missing")


def missing_param(name: str) -> StripeApiError:
    return StripeApiError(400, f"Missing required param: {name}.", "parameter_missing", name)
