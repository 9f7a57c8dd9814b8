"""Headers on every answer: no framing (clickjacking), no type sniffing, no referrer sent
off the site, nothing kept by a cache but the stylesheet, and a CSP allowing no script."""

from __future__ import annotations

from flask import Response, request

# The pages run no script (pygal's config script is cut from the charts, `charts._svg`); the
# charts' SVG carries its own <style>, hence 'unsafe-inline' for styles alone.
CONTENT_SECURITY_POLICY = "; ".join(
    (
        "default-src 'none'",
        "style-src 'self' 'unsafe-inline'",
        "img-src 'self' data:",
        "form-action 'self'",
        "frame-ancestors 'none'",
        "base-uri 'none'",
    )
)
SECURITY_HEADERS = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
}
_ITEMS = tuple(SECURITY_HEADERS.items())
_NAMES = frozenset(name.lower() for name in SECURITY_HEADERS)


def add_security_headers(response: Response) -> Response:
    """Every page, API answer and CSV download (customer ids, usage rows) is no-store: a
    shared cache or the browser's disk keeps none of it after logout.

    A header a view set itself is kept. The names present are read once: `setdefault` per
    header (a failed lookup raising and catching an exception each) cost a webhook about
    20 us, a tenth of its time in the app."""
    headers = response.headers
    present = {name.lower() for name, _ in headers}
    if present.isdisjoint(_NAMES):
        headers.extend(_ITEMS)
    else:
        headers.extend([item for item in _ITEMS if item[0].lower() not in present])
    if request.endpoint != "dashboard.static":
        headers["Cache-Control"] = "no-store"
    return response
