"""The dashboard: server-rendered pages (overview, lineage, quarantine, events, alerts), the
login form, and the buttons' POST routes (CSRF token required, then back to the page)."""

from __future__ import annotations

import secrets
from collections.abc import Mapping
from datetime import timedelta
from typing import Any
from urllib.parse import urlencode, urlsplit

from flask import (
    Blueprint,
    abort,
    flash,
    g,
    make_response,
    redirect,
    render_template,
    request,
    session,
    url_for,
)
from werkzeug.wrappers import Response as BaseResponse

from remediation import jsonnumbers
from remediation.outcomes import OTHER_CODES
from service.errors import BadParameter, Conflict, NotFound
from service.models import AdminActionName
from service.models.alerts import AlertStatus
from service.models.inbox import InboxStatus
from service.web import actions, charts, corrections, lineage, params, quarantine, store
from service.web.access import (
    LOGIN_COOKIE,
    csrf_ok,
    csrf_token,
    current_token,
    login_form_ok,
    new_login_form,
    session_ok,
    start_session,
    token_ok,
)
from service.web.context import actor, engine, settings
from service.web.heartbeat_check import notice_silence
from service.web.overview import Bucket, overview

bp = Blueprint(
    "dashboard",
    __name__,
    template_folder="templates",
    static_folder="static",
    static_url_path="/assets",
)
OPEN_PATHS = ("dashboard.login", "dashboard.login_post", "dashboard.static")
# The lineage page's views, with the filters each takes besides `view` and paging.
RUN_VIEWS: dict[str, tuple[str, ...]] = {
    "runs": (),
    "import_sets": (),
    "reports": params.REPORT_FILTERS,
}


@bp.before_request
def _guard() -> BaseResponse | None:
    token = current_token()
    if not token:
        abort(404)
    g.via = "dashboard"
    if request.endpoint in OPEN_PATHS:
        return None
    if not session_ok():
        return redirect(url_for("dashboard.login", next=request.full_path.rstrip("?")))
    if request.method == "POST" and not csrf_ok():
        abort(403, "missing or wrong CSRF token")
    return None


bp.add_app_template_global(csrf_token, "csrf_token")


@bp.app_template_filter("row_json")
def row_json(record: Any) -> str:
    """A stored row as the JSON it is (quotes and non-ASCII kept as typed; the page's
    autoescaping makes it safe), not `tojson`'s script-safe `\\u0027` escapes."""
    return jsonnumbers.dumps_as(record, (", ", ": "), sort_keys=True)


@bp.app_template_global("page_url")
def page_url(endpoint: str, path: Mapping[str, Any] | None = None, /, **values: Any) -> str:
    """A link keeping only the given non-empty query values (`path`: the values the
    endpoint's path takes, a run's id)."""
    query = {key: value for key, value in values.items() if value not in (None, "")}
    return url_for(endpoint, **(path or {})) + ("?" + urlencode(query) if query else "")


@bp.errorhandler(BadParameter)
def _bad_parameter(exc: BadParameter) -> tuple[str, int]:
    return render_template("error.html", status=400, reason=str(exc)), 400


@bp.errorhandler(NotFound)
def _not_found(exc: NotFound) -> tuple[str, int]:
    return render_template("error.html", status=404, reason=str(exc)), 404


# --- login ---------------------------------------------------------------------------------


@bp.get("/login")
def login() -> BaseResponse:
    return _login_form(_next_path(request.args.get("next")))


@bp.post("/login")
def login_post() -> BaseResponse:
    target = _next_path(request.form.get("next"))
    if not login_form_ok():
        return _login_form(target, "Form expired: try again", 403)
    if not token_ok(request.form.get("token", ""), current_token()):
        return _login_form(target, "Wrong token", 401)
    start_session()
    response = redirect(target)
    response.delete_cookie(LOGIN_COOKIE, path=url_for("dashboard.login"))
    return response


def _login_form(target: str, error: str | None = None, status: int = 200) -> BaseResponse:
    """The login page, with a new CSRF token in its form and in the login cookie."""
    value = secrets.token_urlsafe(32)
    page = render_template("login.html", next=target, error=error, login_csrf=value)
    response = make_response(page, status)
    new_login_form(response, value)
    return response


@bp.post("/logout")
def logout() -> BaseResponse:
    session.clear()
    return redirect(url_for("dashboard.login"))


def _next_path(value: str | None) -> str:
    """Only a path on this site (no open redirect)."""
    return on_this_site(value) or url_for("dashboard.overview_page")


def on_this_site(value: str | None) -> str | None:
    """`value` when it is a path on this site, else None. Browsers and werkzeug drop tabs and
    line breaks from a URL (`/<tab>/evil.example` is `//evil.example`, another site), and a
    line break is no header value (a 500): a path holding a control character is none, and
    neither is one naming a scheme or a host, or starting `//` or a backslash after `/`."""
    if not value or not value.startswith("/") or value.startswith(("//", "/\\")):
        return None
    if any(c < " " or c == "\x7f" for c in value):
        return None
    parts = urlsplit(value)
    return None if parts.scheme or parts.netloc else value


# --- pages ---------------------------------------------------------------------------------


def _query(*names: str, several: tuple[str, ...] = ()) -> dict[str, str]:
    """The page's query values, checked as the API's lists check theirs (`params.known`): a
    parameter the page does not take, or one given twice with different values, is a 400
    page naming it (`/quarantine?cod=no_meter` showed every row, its re-run button all of
    them)."""
    return params.known(request.args, *names, several=several, taker="this page")


@bp.get("/")
def overview_page() -> str:
    bucket = params.choice(_query("by"), "by", Bucket) or Bucket.DAY
    notice_silence(engine(), settings())
    data = overview(engine(), bucket, settings().mfx_heartbeat_silence)
    return render_template(
        "overview.html",
        data=data,
        rows_svg=charts.rows_chart(data.labels, data.valid, data.corrected, data.quarantined),
        codes_svg=charts.codes_chart(data.by_code),
        silence=settings().mfx_heartbeat_silence,
        poller_mode=settings().mfx_poller.value,
    )


@bp.get("/runs")
def runs_page() -> str:
    view = request.args.get("view") or "runs"
    if view not in RUN_VIEWS:
        raise BadParameter(f"view must be one of {'|'.join(RUN_VIEWS)}")
    args = _query("view", *RUN_VIEWS[view], *params.PAGING, several=params.REPORT_SEVERAL)
    page = params.page(args)
    if view == "reports":
        found = params.report_filter(args)
        listing = lineage.list_reports(engine(), page, found)
        return render_template(
            "runs.html", view=view, listing=listing, limit=page.limit, filters=found.as_query()
        )
    listing = {"runs": lineage.list_runs, "import_sets": lineage.list_import_sets}[view](
        engine(), page
    )
    return render_template("runs.html", view=view, listing=listing, limit=page.limit, filters={})


@bp.get("/runs/<int:run_id>")
def run_page(run_id: int) -> str:
    found = lineage.get_run(engine(), params.row_id(run_id, "run"))
    if found is None:
        raise NotFound(f"no run with id {run_id}")
    return render_template("run.html", run=found, other_codes=OTHER_CODES)


@bp.get("/runs/<int:run_id>/corrections")
def corrections_page(run_id: int) -> str:
    """A run's corrections (its audit), filtered and in pages as the API lists them."""
    args = _query(*params.CORRECTION_FILTERS, *params.PAGING)
    found, page = params.correction_filter(args), params.page(args)
    run = lineage.get_run_facts(engine(), params.row_id(run_id, "run"))
    if run is None:
        raise NotFound(f"no run with id {run_id}")
    listing = corrections.list_corrections(engine(), run_id, found, page)
    return render_template(
        "corrections.html",
        run=run,
        listing=listing,
        filters=found.as_query(),
        limit=page.limit,
        scan_rows=f"{corrections.SCAN_ROWS:,}",
    )


@bp.get("/quarantine")
def quarantine_page() -> str:
    names = (*params.QUARANTINE_FILTERS, *params.PAGING)
    args = _query(*names, several=params.QUARANTINE_SEVERAL)
    found = params.quarantine_filter(args)
    page = params.page(args)
    listing = quarantine.list_quarantine(engine(), found, page)
    with engine().connect() as connection:
        reruns = store.recent_actions(connection, AdminActionName.RERUN, 5)
    return render_template(
        "quarantine.html",
        listing=listing,
        filters=found.as_query(),
        raw=args,
        limit=page.limit,
        reruns=reruns,
    )


@bp.post("/quarantine/rerun")
def rerun_post() -> BaseResponse:
    found = params.rerun_filter(request.form)
    result = actions.queue_rerun(engine(), found, actor())
    if result["queued"]:
        flash(f"Re-run of {result['rows']} rows queued (task {result['task']}).")
    else:
        flash("No quarantined rows match this filter: nothing queued.")
    return redirect(page_url("dashboard.quarantine_page", **found.as_query()))


@bp.get("/events")
def events_page() -> str:
    args = _query("status", *params.PAGING)
    status = params.event_status(args)
    page = params.page(args)
    listing = store.list_events(engine(), page, status)
    return render_template(
        "events.html",
        listing=listing,
        status=status.value if status else "",
        statuses=[s.value for s in InboxStatus],
        limit=page.limit,
    )


@bp.post("/events/<path:ref>/replay")
def replay_post(ref: str) -> BaseResponse:
    lease = timedelta(seconds=settings().mfx_worker_lease)
    try:
        event = actions.replay_event(engine(), ref, actor(), lease)
        flash(f"Event {event['event_id']} re-queued.")
    except Conflict as exc:
        flash(str(exc))
    return redirect(_back("dashboard.events_page"))


@bp.get("/alerts")
def alerts_page() -> str:
    args = _query("status", "severity", *params.PAGING)
    status = params.alert_status(args)
    severity = params.alert_severity(args)
    page = params.page(args)
    listing = store.list_alerts(engine(), page, status, severity)
    return render_template(
        "alerts.html",
        listing=listing,
        status=status.value if status else "",
        severity=severity.value if severity else "",
        statuses=[s.value for s in AlertStatus],
        limit=page.limit,
    )


@bp.post("/alerts/<int:alert_id>/<any(acknowledge, resolve):action>")
def alert_post(alert_id: int, action: str) -> BaseResponse:
    to = AlertStatus.ACKNOWLEDGED if action == AdminActionName.ACKNOWLEDGE else AlertStatus.RESOLVED
    alert_id = params.row_id(alert_id, "alert")
    try:
        actions.change_alert(engine(), alert_id, to, actor())
        flash(f"Alert {alert_id} {to.value}.")
    except Conflict as exc:
        flash(str(exc))
    return redirect(_back("dashboard.alerts_page"))


def _back(endpoint: str) -> str:
    """Back to the page the button was on (a path on this site), else to `endpoint`."""
    return on_this_site(request.form.get("back")) or url_for(endpoint)
