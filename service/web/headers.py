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


def add_security_headers(response: Response) -> Response:
    """Every page, API answer and CSV download (customer ids, usage rows) is no-store: a
    shared cache or the browser's disk keeps none of it after logout."""
    for name, value in SECURITY_HEADERS.items():
        response.headers.setdefault(name, value)
    if request.endpoint != "dashboard.static":
        response.headers["Cache-Control"] = "no-store"
    return response
