"""Data the CLI prints (bucket keys, paths, error codes, event ids, the reasons that name
them): text on one line, its control characters written as their code point (`[U+001B]`),
as the dashboard, the digests and the alerts write them (`service.notify.shown`). A key
`a\\x1b[31m.csv` coloured the terminal, `\\x1b]8;;…` opened a hyperlink and `a\\nfailed: b.csv`
printed a `failed:` line of its own."""

from __future__ import annotations

from service.notify.shown import shown_on_one_line


def shown(value: object) -> str:
    """`value` as text on one line: C0 and C1 controls (ESC included), DEL, line and
    paragraph separators, bidi controls and other invisible characters as `[U+XXXX]`; the
    rest as it is, joiners and variation selectors in what is drawn too (a path
    `می‌خواهم/usage-❤️.csv` is printed as it is, to be copied)."""
    return str(shown_on_one_line(str(value)))


def shown_in_markup(value: object) -> str:
    """`shown(value)` where rich reads markup (a progress bar's description): `[/link]` is
    text, not a tag (a key `r [/link].csv` raised MarkupError and ended `poll` with a
    traceback)."""
    from rich.markup import escape

    return escape(shown(value))
