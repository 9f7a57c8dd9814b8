"""Who may look: MFX_ADMIN_TOKEN as a bearer token (API) or a login that sets a signed session
cookie (browser), a CSRF token on every cookie-session POST, and 404 without a token.

Under the embedded defaults a token is generated once, kept in MFX_WORK_DIR (mode 600) and
reused on restart; `login_banner` is what `serve` prints to the terminal (never a log line).
"""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets
from pathlib import Path

from flask import Flask, current_app, request, session
from flask.sessions import SecureCookieSessionInterface
from itsdangerous import URLSafeTimedSerializer

from service.config import Settings
from service.runtime import runtime

TOKEN_FILE = "admin-token"
EXTENSION = "meterfix.web.token"
CSRF_FIELD = "csrf_token"
CSRF_HEADER = "X-CSRF-Token"


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
    if not token:
        raise ValueError(f"{path} is empty: delete it to have a new admin token made")
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
    return hmac.compare_digest(given.strip().encode(), token.encode())


def session_ok(token: str) -> bool:
    """A login of this token (a new token ends every session made with the old one)."""
    mark = session.get("auth")
    return isinstance(mark, str) and hmac.compare_digest(mark, _fingerprint(token))


def start_session(token: str) -> None:
    session.clear()
    session["auth"] = _fingerprint(token)
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


def _fingerprint(token: str) -> str:
    return hmac.new(token.encode(), b"meterfix-dashboard-session", hashlib.sha256).hexdigest()


class TokenSessionInterface(SecureCookieSessionInterface):
    """Flask's signed cookie session, keyed by a secret derived from the admin token (so no
    second secret to configure, and rotating the token signs everyone out)."""

    def get_signing_serializer(self, app: Flask) -> URLSafeTimedSerializer | None:
        token = current_token()
        if not token:
            return None
        key = hmac.new(token.encode(), b"meterfix-session-key", hashlib.sha256).hexdigest()
        return URLSafeTimedSerializer(
            key,
            salt=self.salt,
            serializer=self.serializer,
            signer_kwargs={
                "key_derivation": self.key_derivation,
                "digest_method": self.digest_method,
            },
        )


def configure_sessions(app: Flask, settings: Settings) -> None:
    app.session_interface = TokenSessionInterface()
    app.config.update(
        SESSION_COOKIE_NAME="meterfix_session",
        SESSION_COOKIE_HTTPONLY=True,
        SESSION_COOKIE_SAMESITE="Lax",
        SESSION_COOKIE_SECURE=settings.mfx_public_url.startswith("https://"),
    )
