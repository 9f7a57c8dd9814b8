"""Text taken from a usage file or a Stripe event (object keys, customer ids, codes, reasons)
as the dashboard and the messages show it: always as text, never as markup, a mention, a link
or a spoofed file name. Real HTTP against the app, the local Slack receiver and aiosmtpd; each
test failed on the code before its fix (the docstrings say what went wrong)."""

# ruff: noqa: F811  (the fixture imported from the module that defines it)

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from typing import Any

from sqlalchemy import Engine

from service.adapters.slack import SlackChannel
from service.notify.alerts import raise_alert
from service.notify.critical import send_critical_alerts
from tests.integration import web_seed as seed
from tests.integration.notify_helpers import NOW, SlackReceiver
from tests.integration.test_notify_slack import BASE, slack  # noqa: F401 (fixture)
from tests.integration.test_web_hostile import TOKEN, Site, _login, site  # noqa: F401 (a fixture)

# An object key as a customer's bucket may hold it: Slack's special mentions and a link.
HOSTILE_KEY = "in/<!channel> <!here> <@U123> <https://evil.example|click>.csv"


def _mrkdwn_texts(body: Any) -> Iterator[str]:
    """Every text of a Slack message that Slack reads as mrkdwn: the top-level `text` (the
    notification, mrkdwn by default) and each mrkdwn element (plain_text has no markup)."""
    if isinstance(body, dict):
        if isinstance(body.get("text"), str) and body.get("type") != "plain_text":
            yield body["text"]
        for value in body.values():
            yield from _mrkdwn_texts(value)
    elif isinstance(body, list):
        for value in body:
            yield from _mrkdwn_texts(value)


# Slack's control sequences: `<!channel>`, `<@U…>`, `<url|label>`; escaped text has no `<`.
SLACK_CONTROL = re.compile(r"<[!@#]|<https?:")


def test_a_critical_alert_naming_a_hostile_key_mentions_nobody_in_slack(
    db_engine: Engine, make_settings: Any, db_url: str, slack: tuple[SlackReceiver, str]
) -> None:
    """README, critical alerts: "an object key or an id is shown as text, whatever it starts
    with". The Slack message's notification `text` (mrkdwn) carried the alert's headline as
    is, so an object key holding `<!channel>` paged the whole channel and `<https://…|click>`
    became a link; the blocks escaped it."""
    receiver, url = slack
    settings = make_settings(database_url=db_url, slack_webhook_url=url, mfx_public_url=BASE)
    raise_alert(
        db_engine,
        key=f"poller.gave_up:{HOSTILE_KEY}",
        severity="critical",
        kind="poller.gave_up",
        subject=f"{HOSTILE_KEY}: import failing for 2.0 h; the poller gave up",
        message=f"object {HOSTILE_KEY} failed",
        customer="<!everyone>",
        code="<@U999>",
        links={"objects": [HOSTILE_KEY]},
    )
    sent = send_critical_alerts(db_engine, settings, [SlackChannel(url)], clock=lambda: NOW)
    assert sent == 1 and len(receiver.bodies) == 1
    [body] = receiver.bodies
    texts = list(_mrkdwn_texts(body))
    assert [t for t in texts if SLACK_CONTROL.search(t)] == []
    assert body["text"].startswith("CRITICAL: in/&lt;!channel&gt; &lt;!here&gt;")
    assert "&lt;https://evil.example|click&gt;.csv" in json.dumps(body)


# --- the dashboard -------------------------------------------------------------------------

# A right-to-left override: the key below is shown as `report-exe.csv` by a browser.
SPOOFED_KEY = "usage/report-\u202evsc.exe"
# Bidi controls and other characters a page would not show, as the dashboard writes them.
INVISIBLE = re.compile("[\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069\x00-\x08\x0b\x0c\x0e-\x1f]")


def _page(site: Site, path: str) -> str:
    response = site.browser.get(site.url + path, timeout=10)
    assert response.status_code == 200, response.text[:300]
    return response.text


def test_a_right_to_left_override_in_a_key_is_shown_not_obeyed(site: Site) -> None:
    """README, critical alerts: "an object key or an id is shown as text". A key holding
    U+202E (RIGHT-TO-LEFT OVERRIDE) went into the run page, the import sets, the alerts and
    the quarantine as is, so the browser drew `usage/report-\u202evsc.exe` as
    `usage/report-exe.csv`: an executable shown as a CSV file."""
    run_id = seed.run(site.engine, "import_set:impset_rtl:file_1", source=SPOOFED_KEY)
    seed.output(site.engine, run_id, "corrected", SPOOFED_KEY)
    seed.import_set(
        site.engine, "impset_rtl", "import_set:impset_rtl:file_1", source_object=SPOOFED_KEY
    )
    seed.alert(site.engine, "rtl", subject=f"{SPOOFED_KEY}: the poller gave up")
    seed.quarantined(
        site.engine,
        run_id,
        [
            {
                "identifier": "id-\u202egpj.exe",
                "code": "no_meter",
                "meter": "m\u2066",
                "customer": "cus_\u202e1",
            },
        ],
    )
    assert _login(site, "/").status_code == 302
    for path in (f"/runs/{run_id}", "/runs?view=import_sets", "/alerts", "/quarantine"):
        html = _page(site, path)
        assert INVISIBLE.findall(html) == [], path
        assert "usage/report-[U+202E]vsc.exe" in html or path == "/quarantine", path
    assert "cus_[U+202E]1" in _page(site, "/quarantine")
    # the admin API keeps the value exactly: it is data, read by programs
    api = site.get(f"/api/runs/{run_id}", headers={"Authorization": f"Bearer {TOKEN}"})
    assert api.json()["source"] == SPOOFED_KEY


def _outside_code(text: str) -> str:
    """What Slack formats of a mrkdwn text: all but its `code spans`."""
    return re.sub(r"`[^`\n]*`", "", text)


def test_a_backtick_in_a_value_does_not_end_its_code_span_in_slack(
    db_engine: Engine, make_settings: Any, db_url: str, slack: tuple[SlackReceiver, str]
) -> None:
    """README, critical alerts: "an object key or an id is shown as text". An object key or
    a customer id is shown in a `code span`, where Slack formats nothing; a backtick in the
    value ended the span, and the rest of it was read as mrkdwn (`*bold*`, `_italic_`,
    `~struck~`), so the key shown was not the key. Meter, code and customer were shown
    outside any span, formatted too."""
    receiver, url = slack
    settings = make_settings(database_url=db_url, slack_webhook_url=url, mfx_public_url=BASE)
    key = "in/a` *bold* _it_ ~gone~ `b.csv"
    raise_alert(
        db_engine,
        key="poller.gave_up:tick",
        severity="critical",
        kind="poller.gave_up",
        subject="an import failed",
        message="see the object",
        meter="*api*_calls_",
        code="~no_meter~",
        customer="cus_`*VIP*`",
        links={"objects": [key]},
    )
    assert send_critical_alerts(db_engine, settings, [SlackChannel(url)], clock=lambda: NOW) == 1
    texts = list(_mrkdwn_texts(receiver.bodies[0]))
    formatted = " ".join(_outside_code(t) for t in texts)
    for fragment in ("*bold*", "_it_", "~gone~", "*api*", "~no_meter~", "*VIP*"):
        assert fragment not in formatted, (fragment, formatted)
    # the backtick is drawn by its look-alike U+02CB, the one thing a code span cannot hold
    assert "`in/a\u02cb *bold* _it_ ~gone~ \u02cbb.csv`" in " ".join(texts)
    assert "`cus_\u02cb*VIP*\u02cb`" in " ".join(texts)
