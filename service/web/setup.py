"""Puts the web room on the app: probes, the JSON API, the dashboard, signed sessions, security
headers on every answer, and JSON errors for every path under /api/ (never an HTML page or a
bare 500 there); a database not migrated is answered 503 saying so, not as a database that is
down."""

from __future__ import annotations

import logging
from typing import Any

from flask import Flask, Response, jsonify, render_template, request
from flask.json.provider import DefaultJSONProvider
from markupsafe import Markup, escape
from sqlalchemy.exc import SQLAlchemyError
from werkzeug.exceptions import HTTPException, NotFound
from werkzeug.routing import IntegerConverter

from remediation import jsonnumbers
from service.config import Settings
from service.errors import SchemaNotCurrent
from service.logs import log_event
from service.notify.shown import shown_as_text
from service.web.access import configure_sessions, current_token
from service.web.context import upgrade_due
from service.web.headers import add_security_headers


def register_web(app: Flask, settings: Settings) -> None:
    from service.web import api, pages, probes

    app.json = ExactJSONProvider(app)
    app.url_map.converters["int"] = AsciiIntegerConverter  # before any route takes an id
    # Templates are compiled on first use, so every page writes values through it.
    app.jinja_env.finalize = shown_as_text
    app.jinja_env.filters["exact"] = exact_in_html
    configure_sessions(app, settings)
    app.register_blueprint(probes.bp)
    app.register_blueprint(api.bp)
    app.register_blueprint(pages.bp)
    app.register_error_handler(HTTPException, _http_error)
    app.register_error_handler(SQLAlchemyError, _database_error)
    app.register_error_handler(SchemaNotCurrent, _schema_not_current)
    app.after_request(add_security_headers)


def exact_in_html(value: Any) -> Markup:
    """A value a form or a link carries (`value="{{ customer|exact }}"`), not text for people:
    escaped for HTML and nothing else, so `finalize` (`shown_as_text`) leaves it. Written as
    `علی[U+200C]رضا`, a customer's name went back in the re-run form and matched no row. A
    carriage return is a character reference: a browser reads one in the page as a line feed."""
    return Markup(str(escape(value)).replace("\r", "&#13;"))


class AsciiIntegerConverter(IntegerConverter):
    """`<int:...>` of ASCII digits alone: Werkzeug's takes any Unicode digit (`/api/runs/٣`,
    Arabic-Indic three, was run 3, and `/api/alerts/٣/resolve` resolved alert 3), which the
    query parameters refuse. Another digit is no route, a 404 as `/api/runs/abc` is."""

    regex = r"[0-9]+"


class ExactJSONProvider(DefaultJSONProvider):
    """Flask's JSON, but a number a stored row kept as its file spelled it
    (`jsonnumbers.JsonNumber`: `12345678901234567.25`) written so, not as the float nearest
    it (`1.2345678901234568e+16`). Pretty-printed output (`indent`, debug only) is Flask's."""

    def dumps(self, obj: Any, **kwargs: Any) -> str:
        if set(kwargs) - {"separators"}:
            return super().dumps(obj, **kwargs)
        return jsonnumbers.dumps_as(
            obj,
            kwargs.get("separators") or (", ", ": "),
            ensure_ascii=self.ensure_ascii,
            sort_keys=self.sort_keys,
            default=self.default,
        )


def _under_api() -> bool:
    return request.path == "/api" or request.path.startswith("/api/")


def _http_error(exc: HTTPException) -> HTTPException | tuple[Response, int] | tuple[str, int]:
    if _under_api():
        return jsonify(error=exc.description or exc.name), exc.code or 500
    if isinstance(exc, NotFound) and current_token() and not _under_webhooks():
        # a path no page has (`/runs/abc`): the dashboard's own page, as `/runs/999` gets
        return render_template("error.html", status=404, reason=f"no page at {request.path}"), 404
    return exc


def _under_webhooks() -> bool:
    return request.path == "/webhooks" or request.path.startswith("/webhooks/")


def _database_error(exc: SQLAlchemyError) -> tuple[Response, int] | tuple[str, int]:
    log_event(
        "web.database_error", level=logging.ERROR, path=request.path, error=type(exc).__name__
    )
    if _under_api():
        return jsonify(error="database unavailable"), 503
    return "database unavailable", 503


def _schema_not_current(exc: SchemaNotCurrent) -> tuple[Response, int] | tuple[str, int]:
    """The pages, the API and /metrics of a database never migrated, or behind this code
    (`context.engine`): "database unavailable" sent the operator looking for an outage."""
    reason = upgrade_due(exc)
    log_event("web.schema_not_current", level=logging.ERROR, path=request.path, reason=reason)
    if _under_api():
        return jsonify(error=reason), 503
    return reason, 503
