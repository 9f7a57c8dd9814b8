"""The JSON admin API under /api/ (the README lists it): bearer token or a dashboard session
(with a CSRF token on POST); lists as {"data": [...], "next_cursor": ...}; every error is
JSON with a reason: 400 bad parameter, 401 bad token, 403 no CSRF token, 404, 409."""

from __future__ import annotations

import json
from datetime import timedelta
from typing import Any

from flask import Blueprint, Response, g, jsonify, request, stream_with_context
from werkzeug.datastructures import MultiDict

from service.errors import BadParameter, Conflict, NotFound
from service.models.alerts import AlertStatus
from service.web import actions, corrections, lineage, params, quarantine, store
from service.web.access import bearer_ok, csrf_ok, current_token, session_ok
from service.web.context import actor, engine, settings
from service.web.heartbeat_check import notice_silence
from service.web.overview import with_states
from service.worker.heartbeats import health_snapshot

bp = Blueprint("api", __name__, url_prefix="/api")
PAGING = params.PAGING
QUARANTINE = (*params.QUARANTINE_FILTERS, *PAGING)


def json_error(status: int, reason: str) -> tuple[Response, int]:
    return jsonify(error=reason), status


@bp.before_request
def _guard() -> tuple[Response, int] | None:
    token = current_token()
    if not token:
        return json_error(404, "not found")
    if bearer_ok(token):
        g.via = "api"
        return None
    if request.headers.get("Authorization") or not session_ok():
        response, status = json_error(401, "missing or wrong bearer token")
        response.headers["WWW-Authenticate"] = "Bearer"
        return response, status
    if request.method == "POST" and not csrf_ok():
        return json_error(403, "missing or wrong CSRF token (X-CSRF-Token header)")
    g.via = "dashboard"
    return None


@bp.errorhandler(BadParameter)
def _bad_parameter(exc: BadParameter) -> tuple[Response, int]:
    return json_error(400, str(exc))


@bp.errorhandler(NotFound)
def _not_found(exc: NotFound) -> tuple[Response, int]:
    return json_error(404, str(exc))


@bp.errorhandler(Conflict)
def _conflict(exc: Conflict) -> tuple[Response, int]:
    return json_error(409, str(exc))


@bp.get("/alerts")
def alerts() -> Response:
    args = params.known(request.args, "status", "severity", *PAGING)
    listing = store.list_alerts(
        engine(), params.page(args), params.alert_status(args), params.alert_severity(args)
    )
    return jsonify(listing.as_json())


@bp.post("/alerts/<int:alert_id>/acknowledge")
def acknowledge(alert_id: int) -> Response:
    alert_id = params.row_id(alert_id, "alert")
    return jsonify(actions.change_alert(engine(), alert_id, AlertStatus.ACKNOWLEDGED, actor()))


@bp.post("/alerts/<int:alert_id>/resolve")
def resolve(alert_id: int) -> Response:
    alert_id = params.row_id(alert_id, "alert")
    return jsonify(actions.change_alert(engine(), alert_id, AlertStatus.RESOLVED, actor()))


@bp.get("/runs")
def runs() -> Response:
    args = params.known(request.args, *PAGING)
    return jsonify(lineage.list_runs(engine(), params.page(args)).as_json())


@bp.get("/reports")
def error_reports() -> Response:
    """Meter error reports, newest first, with the dashboard's filters (`status`, `meter`,
    `no_meter`, `since`, `until`): the ones left unmatched or partial are usage nobody fixes."""
    names = (*params.REPORT_FILTERS, *PAGING)
    args = params.known(request.args, *names, several=params.REPORT_SEVERAL)
    found = params.report_filter(args)
    return jsonify(lineage.list_reports(engine(), params.page(args), found).as_json())


@bp.get("/runs/<int:run_id>")
def run(run_id: int) -> Response:
    found = lineage.get_run(engine(), params.row_id(run_id, "run"))
    if found is None:
        raise NotFound(f"no run with id {run_id}")
    return jsonify(found)


@bp.get("/runs/<int:run_id>/corrections")
def run_corrections(run_id: int) -> Response:
    """A run's corrections (its audit), in the order of its index, with the dashboard's
    filters (`code`, `rule`, `field`, `identifier`)."""
    args = params.known(request.args, *params.CORRECTION_FILTERS, *PAGING)
    listing = corrections.list_corrections(
        engine(), params.row_id(run_id, "run"), params.correction_filter(args), params.page(args)
    )
    return jsonify(listing.as_json())


@bp.get("/quarantine")
def quarantined() -> Response:
    args = params.known(request.args, *QUARANTINE, several=params.QUARANTINE_SEVERAL)
    listing = quarantine.list_quarantine(
        engine(), params.quarantine_filter(args), params.page(args)
    )
    return jsonify(listing.as_json())


@bp.get("/quarantine.csv")
def quarantined_csv() -> Response:
    names = params.QUARANTINE_FILTERS
    args = params.known(request.args, *names, several=params.QUARANTINE_SEVERAL)
    found = params.quarantine_filter(args)
    lines = quarantine.csv_lines(engine(), found)
    response = Response(stream_with_context(lines), mimetype="text/csv")
    response.headers["Content-Disposition"] = "attachment; filename=quarantine.csv"
    return response


@bp.post("/quarantine/rerun")
def rerun() -> tuple[Response, int]:
    found = params.rerun_filter(*_filter_sources())
    result = actions.queue_rerun(engine(), found, actor())
    return jsonify(result), 202 if result["queued"] else 200


# The bodies Flask reads as a form (`request.form`).
_FORM_TYPES = ("application/x-www-form-urlencoded", "multipart/form-data")


def _filter_sources() -> list[MultiDict[str, str]]:
    """The filter's sources: the query string, a JSON object body, a form (a filter given in
    two of them with different values is refused, in `params.rerun_filter`). A re-run acts on
    every row its filter matches, so a filter that would be read as less than it says is
    refused: a body that is not a JSON object, a value that is not text or a whole number, a
    null, a JSON key given twice with different values (`{"run": 9, "run": 3}` was read as
    run 3, unsaid) and, in `params.rerun_filter`, an empty value or a name no filter has (a
    misspelt filter would re-run every row)."""
    given: list[MultiDict[str, str]] = [request.args]
    if request.mimetype in _FORM_TYPES and _looks_like_json(request.get_data(cache=True)):
        # `curl -d '{"code": "x"}'` sends a form: the object was read as one filter's name
        # ("unknown filter '{"code": "x"}'"), the Content-Type it needs unsaid
        raise BadParameter(
            "the body is a JSON object sent as a form (Content-Type: "
            f"{request.mimetype}); send it with Content-Type: application/json "
            "(curl: -H 'Content-Type: application/json', or --json)"
        )
    if request.is_json and request.get_data(cache=True):
        pairs = _json_pairs(request.get_data(cache=True))
        given.append(MultiDict([(name, _filter_value(name, value)) for name, value in pairs]))
    elif request.mimetype not in _FORM_TYPES and request.get_data(cache=True):
        # neither read nor refused, a JSON filter sent as text re-ran every row
        what = request.mimetype or "of no type"
        raise BadParameter(
            "the body must be a JSON object of filters (Content-Type: application/json) "
            f"or a form; it is {what[:60]}"
        )
    return [*given, request.form]


def _looks_like_json(data: bytes) -> bool:
    """Whether a body starts as a JSON object or array does (no filter's name does)."""
    return data.lstrip()[:1] in (b"{", b"[")


def _json_pairs(data: bytes) -> list[tuple[str, Any]]:
    """The names and values of a JSON object body, each name as often as it is given (a JSON
    reader keeps the last of a name given twice)."""
    objects: list[list[tuple[str, Any]]] = []

    def keep(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
        objects.append(pairs)  # the outermost object is read last
        return dict(pairs)

    try:
        body: Any = json.loads(data, object_pairs_hook=keep)
    except ValueError:  # not JSON, or not UTF-8 (UnicodeDecodeError)
        body = None
    if not isinstance(body, dict):
        what = "not JSON" if body is None else f"a JSON {type(body).__name__}"
        raise BadParameter(f"the body must be a JSON object of filters; it is {what}")
    for name, value in objects[-1]:  # `run` takes several runs as a list, never so
        if body[name] is not value and body[name] != value:
            raise BadParameter(f"{name[:40]} is given more than once, with different values")
    return objects[-1]


def _filter_value(name: str, value: Any) -> str:
    if value is None:  # read as "", no filter: every row was re-run
        raise BadParameter(
            f"{name[:40]} is null: a null filter is read as none (every quarantined row); "
            "leave it out"
        )
    if name == "run" and isinstance(value, list) and not any(isinstance(v, list) for v in value):
        if not value:  # read as no filter, it re-ran every run's rows
            raise BadParameter("run must name at least one run, not an empty list")
        return ",".join(_filter_value(name, item) for item in value)  # runs: `[3, 7]`
    if isinstance(value, str):
        return value
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    kind = {bool: "boolean", float: "number", list: "list", dict: "object"}[type(value)]
    raise BadParameter(f"{name[:40]} must be text or a whole number, not a JSON {kind}")


@bp.get("/events")
def events() -> Response:
    args = params.known(request.args, "status", *PAGING)
    listing = store.list_events(engine(), params.page(args), params.event_status(args))
    return jsonify(listing.as_json())


@bp.post("/events/<path:ref>/replay")
def replay(ref: str) -> Response:
    lease = timedelta(seconds=settings().mfx_worker_lease)
    return jsonify(actions.replay_event(engine(), ref, actor(), lease))


@bp.get("/health")
def health() -> Response:
    notice_silence(engine(), settings())
    silence = settings().mfx_heartbeat_silence
    snapshot = with_states(engine(), health_snapshot(engine()).as_dict(), silence)
    snapshot["poller_mode"] = settings().mfx_poller.value
    snapshot["heartbeat_silence_seconds"] = silence
    return jsonify(snapshot)
