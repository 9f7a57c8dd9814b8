"""The dashboard's login and its cookies against a security tester's findings, over real HTTP
(werkzeug on a loopback port) on SQLite and PostgreSQL: no cookie to test guessed tokens
against offline, the configured token stripped and at least 16 characters, `Secure` for an
`HTTPS://` URL, a login's lifetime, and the security headers. Each test of a finding failed
on the code before its fix (its docstring says what happened); the login form's cookie and
several processes sharing only the token are what the fixes must keep."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import re
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import requests
from flask import Flask
from flask.sessions import SecureCookieSessionInterface
from itsdangerous import BadSignature, URLSafeTimedSerializer
from pydantic import ValidationError
from sqlalchemy import Engine

from service.config import Settings
from service.config.diagnostics import settings_problems
from service.web.access import SESSION_LIFETIME
from tests.integration import web_seed as seed
from tests.integration.test_settings_edges import _run
from tests.servers import serve_wsgi

TOKEN = "sessions-token-0123456789"
CSRF = re.compile(r'name="csrf_token" value="([^"]+)"')
COOKIE = "meterfix_session"


@dataclass
class Browser:
    url: str
    client: requests.Session
    engine: Engine | None = None

    def get(self, path: str) -> requests.Response:
        return self.client.get(self.url + path, timeout=10, allow_redirects=False)

    def login(self, token: str = TOKEN) -> requests.Response:
        found = CSRF.search(self.get("/login").text)
        assert found is not None
        form = {"token": token, "csrf_token": found.group(1), "next": "/alerts"}
        return self.client.post(self.url + "/login", data=form, allow_redirects=False)


@pytest.fixture
def browser(
    db_url: str, make_settings: Callable[..., Settings], make_app: Callable[[Settings], Flask]
) -> Iterator[Browser]:
    with seed.served(db_url, make_settings, make_app, TOKEN) as (url, engine, client):
        yield Browser(url, client, engine)


def _served(
    make_settings: Callable[..., Settings],
    make_app: Callable[[Settings], Flask],
    db_url: str,
    **values: Any,
) -> Flask:
    return make_app(
        make_settings(
            database_url=db_url,
            stripe_api_key="sk_test_x",
            stripe_webhook_secrets="whsec_x",
            **values,
        )
    )


def _signed_with(key: str | bytes, cookie: str) -> bool:
    """Whether `cookie` verifies under `key` as Flask's cookie session would check it."""
    interface = SecureCookieSessionInterface()
    serializer = URLSafeTimedSerializer(
        key,
        salt=interface.salt,
        serializer=interface.serializer,
        signer_kwargs={"key_derivation": "hmac", "digest_method": hashlib.sha1},
    )
    try:
        serializer.loads(cookie)
    except BadSignature:
        return False
    return True


def _payload(cookie: str) -> dict[str, Any]:
    body = cookie.split(".")[0]
    data: dict[str, Any] = json.loads(base64.urlsafe_b64decode(body + "=" * (-len(body) % 4)))
    return data


def test_no_cookie_tests_a_guessed_token_cheaply(browser: Browser) -> None:
    """An anonymous GET /login handed out a cookie signed with HMAC(token, a constant): an
    attacker checked 200,001 guessed tokens against it in 1.57 s. A login's cookie held
    HMAC(token, another constant) in its readable payload, a second such check."""
    login_page = browser.get("/login")
    assert login_page.status_code == 200
    assert COOKIE not in login_page.cookies  # an anonymous visitor is given no signed cookie
    response = browser.login()
    assert response.status_code == 302 and response.headers["Location"] == "/alerts"
    cookie = response.cookies[COOKIE]
    fast_key = hmac.new(TOKEN.encode(), b"meterfix-session-key", hashlib.sha256).hexdigest()
    assert not _signed_with(fast_key, cookie)
    slow_key = hashlib.scrypt(
        TOKEN.encode(), salt=b"meterfix-session-key", n=2**15, r=8, p=1, maxmem=2**26, dklen=32
    )
    assert _signed_with(slow_key, cookie)  # the documented derivation, the same everywhere
    fingerprint = hmac.new(TOKEN.encode(), b"meterfix-dashboard-session", hashlib.sha256)
    payload = _payload(cookie)
    assert fingerprint.hexdigest() not in json.dumps(payload)
    assert set(payload) == {"_permanent", "auth", "at", "csrf"}
    assert browser.get("/alerts").status_code == 200
    logout_form = CSRF.search(browser.get("/alerts").text)
    assert logout_form is not None
    logout = browser.client.post(
        browser.url + "/logout", data={"csrf_token": logout_form.group(1)}, allow_redirects=False
    )
    assert logout.status_code == 302
    assert browser.get("/alerts").status_code == 302  # this browser is signed out


def test_the_login_form_posts_back_its_own_cookie(browser: Browser) -> None:
    """The login form's CSRF token now lives in a cookie of its own (not signed, so not
    checkable against a token): another browser's form value is refused."""
    found = CSRF.search(browser.get("/login").text)
    assert found is not None
    with requests.Session() as other:
        other.get(browser.url + "/login", timeout=10)
        form = {"token": TOKEN, "csrf_token": found.group(1)}
        refused = other.post(browser.url + "/login", data=form, allow_redirects=False)
        assert refused.status_code == 403 and "Form expired" in refused.text
        no_cookie = requests.post(browser.url + "/login", data=form, allow_redirects=False)
        assert no_cookie.status_code == 403
    assert browser.login().status_code == 302


def test_several_processes_agree_and_a_new_token_signs_everyone_out(
    db_url: str, make_settings: Callable[..., Settings], make_app: Callable[[Settings], Flask]
) -> None:
    """Two web processes with one token (gunicorn workers, hosts) take each other's cookies,
    nothing shared but the token; a process with a new token takes none of them."""
    first = _served(make_settings, make_app, db_url, mfx_admin_token=TOKEN)
    second = _served(make_settings, make_app, db_url, mfx_admin_token=TOKEN)
    rotated = _served(make_settings, make_app, db_url, mfx_admin_token=TOKEN + "-rotated")
    with (
        serve_wsgi(first) as one,
        serve_wsgi(second) as two,
        serve_wsgi(rotated) as three,
        requests.Session() as client,
    ):
        assert Browser(one.url, client).login().status_code == 302
        cookie = {COOKIE: client.cookies[COOKIE]}
        seen = requests.get(two.url + "/alerts", cookies=cookie, allow_redirects=False)
        assert seen.status_code == 200
        stale = requests.get(three.url + "/alerts", cookies=cookie, allow_redirects=False)
        assert stale.status_code == 302 and stale.headers["Location"].startswith("/login")


def test_a_configured_token_is_stripped(
    db_url: str, make_settings: Callable[..., Settings], make_app: Callable[[Settings], Flask]
) -> None:
    """`MFX_ADMIN_TOKEN=$'…\\n'` (a Kubernetes or Docker secret file's newline): the login and
    the bearer token were stripped, the configured token was not, so nothing ever matched."""
    app = _served(make_settings, make_app, db_url, mfx_admin_token=f"  {TOKEN}\n")
    assert app.extensions["meterfix"].settings.mfx_admin_token == TOKEN
    with serve_wsgi(app) as server, requests.Session() as client:
        assert Browser(server.url, client).login().status_code == 302
        bearer = requests.get(
            server.url + "/api/alerts", headers={"Authorization": f"Bearer {TOKEN}"}, timeout=10
        )
        assert bearer.status_code == 200


def test_a_token_shorter_than_16_characters_is_refused(tmp_path: Path) -> None:
    """A short token was taken; with the cookies signed from it, it is what guessing tries.
    The length is the stripped token's; the value is never quoted."""
    result = _run(["serve"], tmp_path, MFX_ADMIN_TOKEN="short-token-123")
    assert result.returncode == 1 and result.stdout == ""
    assert result.stderr.strip().splitlines() == [
        "Error: bad configuration: MFX_ADMIN_TOKEN: must be at least 16 "
        "characters (a random one: 32 bytes or more)"
    ]
    for value in ("abcdefghijklmno\n", " " * 20, "\t" + "x" * 15 + "\n"):
        with pytest.raises(ValidationError) as refused:
            Settings(_env_file=None, mfx_admin_token=value)  # type: ignore[call-arg]
        assert settings_problems(refused.value).startswith("MFX_ADMIN_TOKEN: ")
        assert value.strip() not in str(refused.value) or not value.strip()
    assert Settings(_env_file=None, mfx_admin_token="x" * 16).mfx_admin_token == "x" * 16  # type: ignore[call-arg]
    assert Settings(_env_file=None).mfx_admin_token == ""  # type: ignore[call-arg]  (unset)


def test_an_https_public_url_in_capitals_gives_a_secure_cookie(
    db_url: str, make_settings: Callable[..., Settings], make_app: Callable[[Settings], Flask]
) -> None:
    """`HTTPS://billing.example.com` is https (a scheme is case-insensitive): the cookie
    went out without `Secure`."""
    for url in ("HTTPS://billing.example.com", "https://billing.example.com/meterfix"):
        app = _served(make_settings, make_app, db_url, mfx_admin_token=TOKEN, mfx_public_url=url)
        client = app.test_client()
        page = client.get("/login")
        assert "Secure" in page.headers["Set-Cookie"]  # the login form's cookie
        found = CSRF.search(page.get_data(as_text=True))
        assert found is not None
        login = client.post("/login", data={"token": TOKEN, "csrf_token": found.group(1)})
        assert login.status_code == 302
        [session_cookie] = [c for c in login.headers.getlist("Set-Cookie") if c.startswith(COOKIE)]
        assert "; Secure" in session_cookie
    plain = _served(make_settings, make_app, db_url, mfx_admin_token=TOKEN)
    assert "Secure" not in plain.test_client().get("/login").headers["Set-Cookie"]


def test_a_login_lasts_12_hours_and_has_a_nonce_of_its_own(
    db_url: str, make_settings: Callable[..., Settings], make_app: Callable[[Settings], Flask]
) -> None:
    """A copied cookie worked for Flask's default 31 days, after logout too. Now a login
    lasts SESSION_LIFETIME from when it was made (a cookie re-signed since keeps that time),
    each login's cookie is its own, and the browser is told to drop it then."""
    app = _served(make_settings, make_app, db_url, mfx_admin_token=TOKEN)
    with serve_wsgi(app) as server, requests.Session() as one, requests.Session() as two:
        first, second = Browser(server.url, one).login(), Browser(server.url, two).login()
        assert _payload(first.cookies[COOKIE])["auth"] != _payload(second.cookies[COOKIE])["auth"]
        expires = next(c.expires for c in one.cookies if c.name == COOKIE)
        assert expires is not None
        assert abs(expires - (time.time() + 12 * 3600)) < 120
    assert SESSION_LIFETIME.total_seconds() == 12 * 3600
    assert app.permanent_session_lifetime == SESSION_LIFETIME  # Flask refuses older signatures
    client = app.test_client()
    with app.test_request_context():
        serializer = app.session_interface.get_signing_serializer(app)  # type: ignore[attr-defined]
        made_at = int(time.time()) - int(SESSION_LIFETIME.total_seconds())
        fresh = serializer.dumps({"auth": "n", "at": int(time.time()), "csrf": "c"})
        expired = serializer.dumps({"auth": "n", "at": made_at - 5, "csrf": "c"})
    client.set_cookie(COOKIE, fresh)
    assert client.get("/api/alerts").status_code == 200
    client.set_cookie(COOKIE, expired)
    assert client.get("/api/alerts").status_code == 401
    assert client.get("/alerts").status_code == 302


HEADERS = {
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
}


def test_security_headers_on_pages_api_and_csv(browser: Browser) -> None:
    """No page, API answer or CSV download said anything on framing, sniffing, referrers or
    caching: the quarantine CSV (customer ids, usage rows) could stay in a shared cache."""
    assert browser.engine is not None
    run_id = seed.run(browser.engine, "run_headers")
    seed.quarantined(browser.engine, run_id, [{"identifier": "q1", "code": "x", "customer": "c"}])
    anonymous = [browser.get(path) for path in ("/login", "/alerts", "/api/alerts")]
    browser.login()
    bearer = {"Authorization": f"Bearer {TOKEN}"}
    signed_in = [browser.get(path) for path in ("/", "/quarantine", "/runs", "/api/alerts")]
    csv_download = requests.get(browser.url + "/api/quarantine.csv", headers=bearer, timeout=10)
    assert csv_download.status_code == 200 and csv_download.text.count("\n") >= 2
    for response in [*anonymous, *signed_in, csv_download]:
        for name, value in HEADERS.items():
            assert response.headers.get(name) == value, (response.url, name)
        assert "frame-ancestors 'none'" in response.headers["Content-Security-Policy"]
        assert response.headers["Cache-Control"] == "no-store", response.url
    stylesheet = browser.get("/assets/style.css")
    assert stylesheet.status_code == 200 and stylesheet.headers["X-Frame-Options"] == "DENY"
    assert "no-store" not in stylesheet.headers.get("Cache-Control", "")
    overview = signed_in[0].text
    assert "<svg" in overview and "<script" not in overview  # pygal's config script is cut


def test_the_key_is_drawn_once_and_never_for_a_request_without_a_session_cookie(
    db_url: str,
    make_settings: Callable[..., Settings],
    make_app: Callable[[Settings], Flask],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A new gthread worker's 16 threads each drew the scrypt key at once (32 MiB and ~0.2 s
    each: 500 MiB a worker, 3-4 s a request), and every request drew it, webhooks and
    probes included, though only a session cookie needs it."""
    drawn: list[int] = []
    scrypt = hashlib.scrypt

    def counted(*args: Any, **kwargs: Any) -> bytes:
        drawn.append(1)
        return scrypt(*args, **kwargs)

    monkeypatch.setattr(hashlib, "scrypt", counted)
    token = f"threads-token-{time.time_ns()}"  # a key no other test drew in this process
    with seed.served(db_url, make_settings, make_app, token) as (url, _engine, _client):

        def at_once(call: Callable[[], requests.Response]) -> list[int]:
            gate = threading.Barrier(16)
            answers: list[int] = []

            def one() -> None:
                gate.wait()
                answers.append(call().status_code)

            threads = [threading.Thread(target=one) for _ in range(16)]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join(30)
            return answers

        probes = at_once(lambda: requests.get(f"{url}/healthz", timeout=20))
        api = at_once(
            lambda: requests.get(
                f"{url}/api/alerts", headers={"Authorization": f"Bearer {token}"}, timeout=20
            )
        )
        assert (probes, api, drawn) == ([200] * 16, [200] * 16, [])
        browser = Browser(url, requests.Session())
        assert browser.login(token).status_code == 302
        cookie = browser.client.cookies[COOKIE]
        pages = at_once(lambda: requests.get(f"{url}/alerts", cookies={COOKIE: cookie}, timeout=20))
        assert pages == [200] * 16 and drawn == [1]
