"""Every value a dashboard template writes into an attribute a form, a link or a script reads
is the value itself (`| exact`), not the text shown to people: `finalize` writes invisible
characters as code points, and a form posted `علی[U+200C]رضا` back for `علی‌رضا`. Values
that are ours (ids, statuses, our field names, CSRF tokens, URLs we build, which are
percent-encoded) are listed here; a new attribute fed from data fails until it says `exact`."""

from __future__ import annotations

import re
from pathlib import Path

from markupsafe import Markup

from service.web.setup import exact_in_html

TEMPLATES = Path(__file__).parents[3] / "service" / "web" / "templates"
ATTRIBUTE = re.compile(r'\s(value|name|href|action|data-[\w-]+)="([^"]*)"')
EXPRESSION = re.compile(r"\{\{(.*?)\}\}")
OURS = {
    "a.id",
    "e.id",
    "a.status",
    "csrf_token()",
    "login_csrf",
    "name",
    "action_url",
    "value",
    "o.kind",
}
BUILT = re.compile(r"^(url_for|page_url)\(")


def test_attributes_fed_from_data_are_written_exactly() -> None:
    loose = []
    for template in sorted(TEMPLATES.glob("*.html")):
        for attribute in ATTRIBUTE.finditer(template.read_text()):
            if attribute.group(1) == "data-testid":
                continue
            for expression in EXPRESSION.findall(attribute.group(2)):
                written = expression.strip()
                if written in OURS or BUILT.match(written) or written.endswith("| exact"):
                    continue
                loose.append(f"{template.name}: {attribute.group(1)}={written}")
    assert loose == []


def test_exact_escapes_for_html_only() -> None:
    persian = "\u0639\u0644\u06cc\u200c\u0631\u0636\u0627"
    assert exact_in_html(f'{persian}"<&') == Markup(f"{persian}&#34;&lt;&amp;")
    assert exact_in_html("cus_1\u200b\u200f\x1b\r") == Markup("cus_1\u200b\u200f\x1b&#13;")
