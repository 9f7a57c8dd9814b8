"""Messages from digests and alerts: plain text and HTML from the Jinja2 templates next to
this module, and Slack Block Kit (split at Slack's limits: 50 blocks per message, 3000
characters per text, 150 per header, 10 fields per section). The blocks themselves are built
in `service.notify.slack_blocks`."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import cache
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from jinja2 import Environment, FileSystemLoader, select_autoescape

from service.adapters.channels import Message
from service.notify.digest_lines import Digest, GroupLine, ReportLine, Totals
from service.notify.shown import counted, shown_as_text, shown_on_one_line
from service.notify.slack_blocks import (
    MAX_CODE,
    MAX_TEXT,
    MIN_CODE,
    button,
    code,
    context,
    data_link,
    escape,
    header,
    link,
    mrkdwn,
    sections,
    split_blocks,
)


@cache
def _templates(plain_text: bool) -> Environment:
    """Values from rows are written as the dashboard writes them; in plain text, where a
    line break in one would write a line of its own, their line breaks too."""
    env = Environment(
        loader=FileSystemLoader(Path(__file__).parent / "templates"),
        autoescape=select_autoescape(["html"]),
        keep_trailing_newline=True,
        finalize=shown_on_one_line if plain_text else shown_as_text,
    )
    env.globals["signed"] = lambda n: f"{n:+d}"
    env.globals["rows"] = rows
    env.globals |= {"counted": counted, "report_line": report_line, "report_codes": report_codes}
    env.globals |= {"REPORTS_TITLE": REPORTS_TITLE, "REPORT_STATUSES": REPORT_STATUSES}
    env.globals |= {"RERUNS_TITLE": RERUNS_TITLE, "rerun_line": rerun_line}
    env.globals |= {"WAITING_TITLE": WAITING_TITLE, "WAITING_NOTE": WAITING_NOTE}
    return env


def rows(count: int) -> str:
    return counted(count, "row")


def _render(name: str, **values: Any) -> str:
    return _templates(name.endswith(".txt")).get_template(name).render(**values)


# --- digests -------------------------------------------------------------------------------

RERUNS_TITLE = "Re-runs of quarantined rows"
WAITING_TITLE = "Waiting in quarantine now"
WAITING_NOTE = "neither re-run nor sent again since"


def rerun_line(r: Totals) -> str:
    """What follows `RERUNS_TITLE`: the window's quarantine re-runs, apart from new input."""
    return (
        f"({counted(r.runs, 'run')}, not counted above): {rows(r.received)} tried again: "
        f"{r.valid} valid, {r.corrected} corrected, {r.quarantined} quarantined again"
    )


def window_label(digest: Digest) -> str:
    tz = ZoneInfo(digest.tz)
    start, end = digest.window.start.astimezone(tz), digest.window.end.astimezone(tz)
    same_day = start.date() == end.date()
    until = f"{end:%H:%M}" if same_day else f"{end:%Y-%m-%d %H:%M}"
    return f"{start:%Y-%m-%d %H:%M} to {until} {digest.tz}"


def render_digest(digest: Digest, now: datetime | None = None) -> Message:
    t = digest.totals
    title = f"meterfix digest, {window_label(digest)}"
    subject = f"{title}: {t.corrected} corrected, {t.quarantined} quarantined"
    if digest.reports_total.reports:
        left = counted(digest.reports_total.reports, "Stripe error report")
        subject += f", {left} not remediated"
    if digest.reruns.runs:
        subject += f", {counted(digest.reruns.runs, 're-run')}"
    values: dict[str, Any] = {
        "title": title,
        "d": digest,
        "t": t,
        "p": digest.previous,
    }
    oldest = values["oldest"] = _age(digest.oldest_pending, now)
    return Message(
        subject=subject,
        text=_render("digest.txt", **values),
        html=_render("digest.html", **values),
        slack=split_blocks(_digest_blocks(digest, title, oldest), title),
    )


def _age(moment: datetime | None, now: datetime | None) -> str:
    if moment is None:
        return ""
    seconds = int(((now or datetime.now(UTC)) - moment).total_seconds())
    if seconds < 120:
        return f"{max(seconds, 0)} s ago"
    return f"{seconds // 60} min ago" if seconds < 7200 else f"{seconds // 3600} h ago"


def _digest_blocks(d: Digest, title: str, oldest: str) -> list[dict[str, Any]]:
    t, p = d.totals, d.previous
    blocks: list[dict[str, Any]] = [header(title), _totals_section(t, p)]
    blocks += sections("", [*_rerun_lines(d), _waiting_line(d)])
    blocks += sections("*By error code*", _code_lines(d))
    blocks += _report_sections(d)
    blocks += sections(
        "*Quarantined by code × meter" + (" × customer*" if d.examples else "*"), _group_lines(d)
    )
    blocks += sections("*Top quarantine reasons*", [_reason_line(r) for r in d.reasons])
    blocks += sections("*Runs*", _run_lines(d))
    blocks += sections("*Needs attention*", _attention_lines(d, oldest))
    runs = counted(t.runs, "run") + " of new input"
    runs += f", {counted(d.reruns.runs, 're-run')}" if d.reruns.runs else ""
    blocks.append(context(f"{runs} · meterfix digest"))
    blocks.append(button("Open the dashboard", d.links["dashboard"]))
    return blocks


def _totals_section(t: Totals, p: Totals) -> dict[str, Any]:
    """The window's new input, each count with its change against the previous window's."""
    return {
        "type": "section",
        "text": mrkdwn(
            f"*New input* ({counted(t.runs, 'run')}; re-runs of quarantined rows apart)"
        ),
        "fields": [
            mrkdwn(f"*Received*\n{t.received} ({t.received - p.received:+d})"),
            mrkdwn(f"*Valid*\n{t.valid} ({t.valid - p.valid:+d})"),
            mrkdwn(f"*Corrected*\n{t.corrected} ({t.corrected - p.corrected:+d})"),
            mrkdwn(f"*Quarantined*\n{t.quarantined} ({t.quarantined - p.quarantined:+d})"),
        ],
    }


def _rerun_lines(d: Digest) -> list[str]:
    if not d.reruns.runs:
        return []
    return [f"*{_linked(d.reruns_url, RERUNS_TITLE)}* {escape(rerun_line(d.reruns))}"]


def _waiting_line(d: Digest) -> str:
    return f"• {_linked(d.waiting_url, WAITING_TITLE)}: {rows(d.waiting)} ({WAITING_NOTE})"


def _linked(url: str, label: str) -> str:
    return link(url, label) if url else escape(label)


def _code_lines(d: Digest) -> list[str]:
    return [
        f"• {data_link(c.url, c.code, 'rows') if c.url else code(c.code)}: "
        f"{c.corrected} corrected, "
        f"{c.quarantined} quarantined "
        f"({c.change:+d})"
        for c in d.codes
    ]


def _group_lines(d: Digest) -> list[str]:
    lines = [_group_line(g, d.examples) for g in d.groups]
    more, more_rows = d.groups_more
    if more:
        lines.append(f"• and {counted(more, 'more group')}: {rows(more_rows)}")
    return lines


def _group_line(g: GroupLine, examples: bool) -> str:
    """`• `code / meter / customer`: 9 rows (<url|list>)`: the count before the link, and the
    link left out when the line cannot hold it (its URL repeats the meter and customer,
    percent-encoded: some 2,900 characters for long ones, and the line's cut dropped the link
    and the count after it)."""
    text = f"• {code(' / '.join(_parts(g.code, g.meter, g.customer, examples)))}: {rows(g.rows)}"
    linked = f"{text} ({link(g.url, 'list')})"
    return linked if len(linked) <= MAX_TEXT else text


def _run_lines(d: Digest) -> list[str]:
    return [
        f"• {link(r.url, f'#{r.run_id}')} {escape(r.trigger)} {code(r.source)}: "
        f"{r.received} received, {r.valid} valid, {r.corrected} corrected, "
        f"{r.quarantined} quarantined"
        for r in d.runs
    ]


def _attention_lines(d: Digest, oldest: str) -> list[str]:
    """What waits on a person: open critical alerts, the window's warnings, dead letters, the
    backlog. An alert's subject (it may name an object key) is a code span, as in an alert's
    own message: Slack would make a link of a key such as `https://…`."""
    return [
        f"• {link(d.links['alerts'], 'Open critical alerts')}: {d.alerts_total}",
        *(f"    [{a.status}] {code(a.subject)} (×{a.count})" for a in d.alerts),
        *([f"    and {d.alerts_more} more"] if d.alerts_more else []),
        f"• {link(d.links['warnings'], 'Warning alerts raised in this window')}: "
        f"{d.warnings_total}",
        *(f"    [{a.status}] {escape(a.kind)}: {code(a.subject)} (×{a.count})" for a in d.warnings),
        *([f"    and {d.warnings_more} more"] if d.warnings_more else []),
        f"• {link(d.links['dead_letters'], 'Dead letters')}: {d.dead_total}",
        f"• Backlog: {d.backlog_events} events pending"
        + (f" (oldest {oldest})" if oldest else "")
        + f", {d.backlog_objects} bucket objects waiting",
    ]


REPORTS_TITLE = "Stripe error reports not remediated"
REPORT_STATUSES = (
    "unmatched: Stripe refused usage meterfix cannot trace to a row it imported, and nobody "
    "will fix it; partial: fewer rows found than Stripe reported, the rest not remediated"
)


def report_line(r: ReportLine, times: str = "x") -> str:
    """What follows `status / meter: ` on a line of error reports (`times` before a count:
    the plain text's x, or Slack's multiplication sign)."""
    text = f"{counted(r.reports, 'report')}, {counted(r.failed, 'failed record')}"
    codes = report_codes(r, times)
    return f"{text}: {codes}" if codes else text


def report_codes(r: ReportLine, times: str = "x") -> str:
    codes = [f"{name} {times}{count}" for name, count in r.codes]
    codes += [counted(r.more_codes, "more code")] if r.more_codes else []
    return ", ".join(codes)


def _report_sections(d: Digest) -> list[dict[str, Any]]:
    total, more = d.reports_total, d.reports_more
    if not total.reports:
        return []
    title = f"*{link(d.links['reports'], REPORTS_TITLE)}*: {counted(total.reports, 'report')}, "
    title += counted(total.failed, "failed record")
    lines = [_report_line(r) for r in d.reports]
    if more.lines:
        failed = counted(more.failed, "failed record")
        lines.append(f"• and {more.lines} more: {counted(more.reports, 'report')}, {failed}")
    return [*sections(title, lines), context(f"_{REPORT_STATUSES}_")]


def _report_line(r: ReportLine) -> str:
    """A status / meter line of error reports, Stripe's codes as code spans sharing what the
    line leaves them (written as mrkdwn, `*bold*_it_~s~` was posted bold, italic, struck)."""
    head = f"• {link(r.url, r.status)} / {code(r.meter) if r.meter else '(no meter)'}: "
    head += f"{counted(r.reports, 'report')}, {counted(r.failed, 'failed record')}"
    named = [f" ×{count}" for _, count in r.codes]
    more = [counted(r.more_codes, "more code")] if r.more_codes else []
    room = MAX_TEXT - len(head) - len(": ") - sum(len(n) + 2 for n in named + more)
    limit = min(MAX_CODE, max(room // max(len(named), 1), MIN_CODE))
    codes = [code(name, limit) + times for (name, _), times in zip(r.codes, named, strict=True)]
    return head + (f": {', '.join(codes + more)}" if codes or more else "")


def _parts(code: str, meter: str | None, customer: str | None, examples: bool) -> list[str]:
    parts = [code, meter or "-"]
    return [*parts, customer or "-"] if examples else parts


def _reason_line(r: Any) -> str:
    """A code's line: its link, its reason and example as code spans sharing what the line
    (MAX_TEXT) leaves them past the rest (a dashboard link is some 230 characters: two spans
    of MAX_CODE with it passed 3,000, and the line cut left its example's span open)."""
    head, tail = f"• {data_link(r.url, r.code, 'rows')}", f" ({rows(r.rows)})"
    spans = [text for text in (r.reason, r.example) if text]
    room = MAX_TEXT - len(head) - len(tail) - len(": ") - len("\n    example: ")
    limit = min(MAX_CODE, max(room // max(len(spans), 1), MIN_CODE))
    text = head + (f": {code(r.reason, limit)}" if r.reason else "") + tail
    return text + (f"\n    example: {code(r.example, limit)}" if r.example else "")


# --- alerts --------------------------------------------------------------------------------


@dataclass(frozen=True)
class AlertView:
    """An alert as a message shows it; customer and free text only with examples on."""

    subject: str
    severity: str
    kind: str
    status: str
    count: int
    meter: str | None
    code: str | None
    customer: str | None
    rows: int
    message: str | None
    # (name, text, whether it is a URL we made: only the run's dashboard page is; an object
    # key or an import set id is data, whatever it starts with)
    links: Sequence[tuple[str, str, bool]]

    @classmethod
    def of(cls, row: Mapping[str, Any], *, examples: bool, run_url: Any) -> AlertView:
        return cls(
            subject=str(row["subject"]),
            severity=str(row["severity"]),
            kind=str(row["kind"]),
            status=str(row["status"]),
            count=int(row["count"]),
            meter=row["meter"],
            code=row["code"],
            customer=row["customer"] if examples else None,
            rows=int(row["rows"] or 0),
            message=str(row["message"]) if examples and row["message"] else None,
            links=list(_alert_links(row["links"] or {}, run_url)),
        )


def _alert_links(links: Mapping[str, Any], run_url: Any) -> Iterable[tuple[str, str, bool]]:
    for name, value in sorted(links.items()):
        if name == "run" and isinstance(value, int):
            yield "run", run_url(value), True
        elif isinstance(value, list):
            yield name, ", ".join(str(v) for v in value), False
        elif value not in (None, ""):
            yield name, str(value), False


def render_alert(alert: AlertView, *, resolved: bool, alerts_url: str) -> Message:
    severity = alert.severity.upper()
    headline = f"Resolved: {alert.subject}" if resolved else f"{severity}: {alert.subject}"
    values = {
        "headline": f"meterfix {headline}",
        "a": alert,
        "alerts_url": alerts_url,
        "colour": "#2b8a3e" if resolved else "#c92a2a",
    }
    fields = [f"*Kind*\n{escape(alert.kind)}", f"*Seen*\n{alert.count}×"]
    fields += [f"*{k.title()}*\n{code(v)}" for k, v in _facts(alert) if v]
    fields += [f"*Rows*\n{alert.rows}"] if alert.rows else []
    blocks = [header(headline), {"type": "section", "fields": [mrkdwn(f) for f in fields[:10]]}]
    if alert.message:  # it may name an object key: shown as text, as the links below
        blocks += sections("", [code(alert.message)])
    blocks += sections("", [f"• {escape(name)}: {_value(v, url)}" for name, v, url in alert.links])
    blocks.append(button("Open the alerts", alerts_url))
    return Message(
        subject=f"[meterfix] {shown_on_one_line(headline)}"[:250],  # mail clients draw it too
        text=_render("alert.txt", **values),
        html=_render("alert.html", **values),
        slack=split_blocks(blocks, headline),
    )


def _facts(alert: AlertView) -> list[tuple[str, str | None]]:
    return [("meter", alert.meter), ("code", alert.code), ("customer", alert.customer)]


def _value(value: str, url: bool) -> str:
    return link(value, value) if url else code(value)
