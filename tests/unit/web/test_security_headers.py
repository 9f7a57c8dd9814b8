"""The security headers every answer gets (`service.web.headers`)."""

from __future__ import annotations

from flask import Flask, Response

from service.web.headers import CONTENT_SECURITY_POLICY, add_security_headers


def _answer(app: Flask, **own: str) -> Response:
    with app.test_request_context("/runs"):
        response = Response("{}", 200, content_type="application/json", headers=own)
        return add_security_headers(response)


def test_an_answer_gets_every_header_once() -> None:
    headers = _answer(Flask(__name__)).headers
    assert headers.getlist("Content-Security-Policy") == [CONTENT_SECURITY_POLICY]
    assert headers.getlist("X-Frame-Options") == ["DENY"]
    assert headers.getlist("X-Content-Type-Options") == ["nosniff"]
    assert headers.getlist("Referrer-Policy") == ["same-origin"]
    assert headers.getlist("Cache-Control") == ["no-store"]
    assert headers.getlist("Content-Type") == ["application/json"]


def test_a_header_a_view_set_itself_is_kept_and_the_others_added() -> None:
    headers = _answer(Flask(__name__), **{"x-frame-options": "SAMEORIGIN"}).headers
    assert headers.getlist("X-Frame-Options") == ["SAMEORIGIN"]
    assert headers.getlist("Content-Security-Policy") == [CONTENT_SECURITY_POLICY]
    assert headers.getlist("Referrer-Policy") == ["same-origin"]
