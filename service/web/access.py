"""Who may look: MFX_ADMIN_TOKEN as a bearer token (API) or a login that sets a signed session
cookie (browser), a CSRF token on every cookie-session POST, and 404 without a token.

Only a login gets a signed cookie, its key drawn from the token by scrypt: a cookie checked
against guessed tokens costs each guess that key (an anonymous visitor is given none to check).

Under the embedded defaults a token is generated once, kept in MFX_WORK_DIR (mode 600) and
reused on restart; `login_banner` is what `serve` prints to the terminal (never a log line).
"""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets
import threading
import time
from datetime import timedelta
from pathlib import Path

from flask import Flask, Request, current_app, request, session, url_for
from flask.sessions import SecureCookieSession, SecureCookieSessionInterface, SessionMixin
from itsdangerous import URLSafeTimedSerializer
from werkzeug.wrappers import Response as BaseResponse

from service.config import Settings
from service.runtime import runtime

TOKEN_FILE = "admin-token"
EXTENSION = "meterfix.web.token"
CSRF_FIELD = "csrf_token"
CSRF_HEADER = "X-CSRF-Token"
LOGIN_COOKIE = "meterfix_login"  # the login form's CSRF token (double submit, not signed)
# How long a login lasts, whatever is done with its cookie (logout only clears the browser's)
SESSION_LIFETIME = timedelta(hours=12)
MIN_TOKEN_LENGTH = 16
# scrypt's cost: 32 MiB and ~0.2 s a key, paid once a process and token (`session_key`)
SCRYPT_N, SCRYPT_R, SCRYPT_P = 2**15, 8, 1


def admin_token(settings: Settings) -> str:
    """The configured token; under the embedded defaults the generated one; else ""."""
    if settings.mfx_admin_token:
        return settings.mfx_admin_token
    if not settings.embedded_sandbox:
        return ""
    return _stored_token(Path(settings.mfx_work_dir) / TOKEN_FILE)


def _stored_token(path: Path) -> str:
    """The token kept in `path`, made first if there is none (mode 600). The new file is
    written whole under a temporary name and linked into place, so two processes starting
    together (gunicorn workers) never see half a file and agree on one token."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if not path.exists():
        tmp = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as stream:
            stream.write(secrets.token_urlsafe(32) + "\n")
        try:
            os.link(tmp, path)
        except FileExistsError:  # another process was first: use its token
            pass
        finally:
            tmp.unlink()
    os.chmod(path, 0o600)
    token = path.read_text(encoding="utf-8").strip()
    if len(token) < MIN_TOKEN_LENGTH:
        raise ValueError(
            f"{path} holds no token of {MIN_TOKEN_LENGTH} characters or more: "
            "delete it to have a new admin token made"
        )
    return token


def login_banner(
    settings: Settings, served_at: str | None = None, *, show_token: bool = True
) -> str | None:
    """The lines `serve` prints at start-up under the embedded defaults (None otherwise):
    the login URL on MFX_PUBLIC_URL, or where `serve` listens when that is left unset. The
    token itself only with `show_token` (a terminal): output redirected to a file is a log
    in all but name, so it then says where the token is kept instead."""
    if not settings.embedded_sandbox or settings.mfx_admin_token:
        return None
    token = admin_token(settings)
    path = Path(settings.mfx_work_dir) / TOKEN_FILE
    unset = settings.mfx_public_url == Settings.model_fields["mfx_public_url"].default
    base = (served_at if unset and served_at else settings.mfx_public_url).rstrip("/")
    if not show_token:
        return f"Dashboard: {base}/login\nAdmin token: in {path} (mode 600)"
    return f"Dashboard: {base}/login\nAdmin token: {token}  (kept in {path}, mode 600)"


def current_token() -> str:
    """The token of the running app, resolved on first use (no file is made at import)."""
    token: str | None = current_app.extensions.get(EXTENSION)
    if token is None:
        token = admin_token(runtime().settings)
        current_app.extensions[EXTENSION] = token
    return token


def bearer_ok(token: str) -> bool:
    header = request.headers.get("Authorization", "")
    scheme, _, given = header.partition(" ")
    if scheme.lower() != "bearer" or not given:
        return False
    return token_ok(given, token)


def session_ok() -> bool:
    """A login signed with this token's key (a new token ends every session made with the old
    one), at most SESSION_LIFETIME ago (a cookie re-signed later keeps its login's time)."""
    at = session.get("at")
    if not isinstance(session.get("auth"), str) or not isinstance(at, int):
        return False
    return time.time() - at < SESSION_LIFETIME.total_seconds()


def start_session() -> None:
    """A login: a nonce of its own (two logins never share a cookie) and its time."""
    session.clear()
    session.permanent = True  # the browser drops the cookie after SESSION_LIFETIME
    session["auth"] = secrets.token_urlsafe(16)
    session["at"] = int(time.time())
    session["csrf"] = secrets.token_urlsafe(32)


def csrf_token() -> str:
    """This session's CSRF token (made on first use, e.g. by the login form)."""
    value = session.get("csrf")
    if not isinstance(value, str):
        value = secrets.token_urlsafe(32)
        session["csrf"] = value
    return value


def csrf_ok() -> bool:
    given = request.headers.get(CSRF_HEADER) or request.form.get(CSRF_FIELD, "")
    expected = session.get("csrf")
    if not isinstance(expected, str) or not given:
        return False
    # bytes: compare_digest refuses text holding anything but ASCII (a 500 for `é`)
    return hmac.compare_digest(given.encode("utf-8", "replace"), expected.encode("utf-8"))


def new_login_form(response: BaseResponse, value: str) -> None:
    """Sets the cookie holding `value`, the CSRF token the login form posts back (an unsigned
    double submit: another site can neither read nor set it, and signing it would give every
    visitor a cookie to test guessed tokens against)."""
    response.set_cookie(
        LOGIN_COOKIE,
        value,
        path=url_for("dashboard.login"),
        secure=bool(current_app.config["SESSION_COOKIE_SECURE"]),
        httponly=True,
        samesite="Strict",
    )


def login_form_ok() -> bool:
    given = request.form.get(CSRF_FIELD, "")
    expected = request.cookies.get(LOGIN_COOKIE, "")
    if not given or not expected:
        return False
    return hmac.compare_digest(given.encode("utf-8", "replace"), expected.encode("utf-8"))


def token_ok(given: str, token: str) -> bool:
    # bytes: compare_digest refuses text holding anything but ASCII (a 500 for `é`)
    return hmac.compare_digest(given.strip().encode("utf-8", "replace"), token.encode())


_KEYS: dict[str, bytes] = {}
_KEYS_LOCK = threading.Lock()


def session_key(token: str) -> bytes:
    """The cookies' signing key, the same in every process given the token (gunicorn workers,
    several hosts) and a new one with a new token; scrypt, so a guess costs what it costs us.
    Drawn once a process and token, under a lock: a cache alone let each of a new gthread
    worker's 16 threads draw it at once (32 MiB and ~0.2 s of CPU each: 500 MiB, 3-4 s a
    request)."""
    with _KEYS_LOCK:
        key = _KEYS.get(token)
        if key is None:
            key = hashlib.scrypt(
                token.encode(),
                salt=b"meterfix-session-key",
                n=SCRYPT_N,
                r=SCRYPT_R,
                p=SCRYPT_P,
                maxmem=2 * 128 * SCRYPT_R * SCRYPT_N,
                dklen=32,
            )
            if len(_KEYS) >= 4:  # tokens rotated in one process (tests): the oldest goes
                _KEYS.pop(next(iter(_KEYS)))
            _KEYS[token] = key
        return key


class TokenSessionInterface(SecureCookieSessionInterface):
    """Flask's signed cookie session, keyed by `session_key` (so no second secret to configure,
    and rotating the token signs everyone out). Only a login's session is written: an
    anonymous visitor's never reaches a cookie."""

    def get_signing_serializer(self, app: Flask) -> URLSafeTimedSerializer | None:
        token = current_token()
        if not token:
            return None
        return URLSafeTimedSerializer(
            session_key(token),
            salt=self.salt,
            serializer=self.serializer,
            signer_kwargs={
                "key_derivation": self.key_derivation,
                "digest_method": self.digest_method,
            },
        )

    def open_session(self, app: Flask, request: Request) -> SecureCookieSession | None:
        """No key is drawn for a request without a session cookie (webhooks, probes, the
        API's bearer clients, an anonymous visitor): Flask's draws it before looking."""
        if not current_token():
            return None
        if not request.cookies.get(self.get_cookie_name(app)):
            return self.session_class()
        return super().open_session(app, request)

    def should_set_cookie(self, app: Flask, session: SessionMixin) -> bool:
        return "auth" in session and super().should_set_cookie(app, session)


def configure_sessions(app: Flask, settings: Settings) -> None:
    app.session_interface = TokenSessionInterface()
    app.config.update(
        SESSION_COOKIE_NAME="meterfix_session",
        SESSION_COOKIE_HTTPONLY=True,
        SESSION_COOKIE_SAMESITE="Lax",
        # `HTTPS://` too: a scheme is case-insensitive
        SESSION_COOKIE_SECURE=settings.mfx_public_url.lower().startswith("https://"),
        PERMANENT_SESSION_LIFETIME=SESSION_LIFETIME,  # Flask refuses an older signature
        SESSION_REFRESH_EACH_REQUEST=False,  # no new cookie each page: a login's time stays
    )
