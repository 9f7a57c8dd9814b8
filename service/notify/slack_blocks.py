"""Slack Block Kit blocks built from rows' text (escaped, cut to Slack's limits: 3000
characters per text, 150 per header) and split into messages of 50 blocks. Apart from
`service.notify.render` because both digests and alerts build their Slack messages from it."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from service.notify.shown import shown_on_one_line

MAX_BLOCKS = 50
MAX_TEXT = 3000
MAX_HEADER = 150
# A code span's most: one fits a field (2000) with its label, and an S3 key (1024 bytes)
# fits one. Two on a line (a reason and its example) share what the line's other parts
# leave (`render._reason_line`). A text cut past its span's end shows the rest.
MAX_CODE = 1400
MIN_CODE = 40


def escape(text: str) -> str:
    """Text from a row as mrkdwn shows it: as text, on its line (`shown_on_one_line`)."""
    text = text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
    return str(shown_on_one_line(text))


def code(text: str, limit: int = MAX_CODE) -> str:
    """A value from a row (an object key, a customer id), or a text naming one (an alert's
    message), as a code span of at most `limit` characters, where Slack formats nothing.
    Its backticks are drawn by a look-alike (U+02CB): one of them ended the span and the
    rest of the value was read as mrkdwn (`*bold*`, `_italic_`, `~struck~`). Cut inside the
    span, so that a long one still ends it."""
    return "`" + _cut(escape(text).replace("`", "\u02cb"), max(limit - 2, 1)) + "`"


def link(url: str, label: str) -> str:
    """A link under a label of our own words: Slack reads mrkdwn inside a label (`*x*` bold,
    `_x_` italic, `~x~` struck) and a label cannot hold a code span, so a value from a row
    is never one (`data_link`)."""
    return f"<{url}|{escape(label).replace('|', '¦')}>"


def data_link(url: str, value: str, label: str, limit: int = MAX_CODE) -> str:
    """A value from a row (a code, a meter, a customer) and a link about it: the value as a
    code span, where Slack formats nothing, beside a link labelled with our own `label`.
    `<url|*bold*_x_~y~.csv>` showed the meter's name bold, italic and struck through."""
    return f"{code(value, limit)} ({link(url, label)})"


def mrkdwn(text: str) -> dict[str, Any]:
    """A mrkdwn text object. `verbatim`: Slack makes no link of a URL or a channel name
    written as text in it (`usage/https://evil.example/reset.csv`, an object key, was one);
    our links are written `<url|label>`, which it still reads."""
    return {"type": "mrkdwn", "text": _cut(text, 2000), "verbatim": True}


def header(text: str) -> dict[str, Any]:
    shown = str(shown_on_one_line(text))
    return {"type": "header", "text": {"type": "plain_text", "text": _cut(shown, MAX_HEADER)}}


def context(text: str) -> dict[str, Any]:
    return {"type": "context", "elements": [mrkdwn(text)]}


def button(label: str, url: str) -> dict[str, Any]:
    return {
        "type": "actions",
        "elements": [{"type": "button", "text": {"type": "plain_text", "text": label}, "url": url}],
    }


def sections(title: str, lines: Sequence[str]) -> list[dict[str, Any]]:
    """Lines under a title as section blocks of at most MAX_TEXT characters each."""
    if not lines:
        return []
    blocks: list[dict[str, Any]] = []
    chunk = title
    for line in lines:
        line = _cut_line(line)
        if chunk and len(chunk) + 1 + len(line) > MAX_TEXT:
            blocks.append(_section(chunk))
            chunk = ""
        chunk = f"{chunk}\n{line}" if chunk else line
    blocks.append(_section(chunk))
    return blocks


def _section(text: str) -> dict[str, Any]:
    return {"type": "section", "text": {"type": "mrkdwn", "text": text, "verbatim": True}}


def split_blocks(blocks: Sequence[dict[str, Any]], text: str) -> list[dict[str, Any]]:
    """Slack messages of at most MAX_BLOCKS blocks each; `text` is the notification text.

    Slack reads that text as mrkdwn: it is escaped like every other text taken from a row
    (an alert's headline names an object key, and `<!channel>` in one paged the channel)."""
    messages = []
    for start in range(0, len(blocks), MAX_BLOCKS):
        part = list(blocks[start : start + MAX_BLOCKS])
        messages.append({"text": _cut(escape(text), MAX_TEXT), "blocks": part})
    return messages


def _cut_line(line: str) -> str:
    """A line of mrkdwn cut to MAX_TEXT: not inside a link (`<url|label>`, dropped whole) and
    with a code span it cuts still closed (left open, the text after it on the next line
    read as code, or the span's end as its start)."""
    if len(line) <= MAX_TEXT:
        return line
    kept = line[: MAX_TEXT - 2]
    opened = kept.rfind("<")
    if opened > kept.rfind(">"):
        kept = kept[:opened]
    return kept + ("…`" if kept.count("`") % 2 else "…")


def _cut(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"
