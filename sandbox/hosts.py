"""Stripe's three hosts on one sandbox port, told apart by a path prefix.

Stripe serves file uploads and contents on files.stripe.com, the v2 meter event stream on
meter-events.stripe.com and everything else on api.stripe.com, and answers 404 for a path
called on a host it does not belong to. The sandbox serves each host under
`/_host/<host>` (`sandbox_bases()`) with the same 404; its root URL serves all three, for
users who configure one URL."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from typing import Any

from flask import request

from sandbox.defaults import HOST_PREFIX, HOSTS

HOST_KEY = "sandbox.host"  # WSGI environ: the host a request was sent to (absent: the root)

_FILES_UPLOAD = "/v1/files"
_FILE_CONTENTS = re.compile(r"^/v1/files/[^/]+/contents$")
_METER_EVENT_STREAM = "/v2/billing/meter_event_stream"


def host_of(method: str, path: str) -> str:
    """The Stripe host that serves `method path` (stripe-python 16.1.0's base addresses)."""
    if path == _METER_EVENT_STREAM:
        return "meter_events"
    if _FILE_CONTENTS.match(path) or (method == "POST" and path == _FILES_UPLOAD):
        return "files"
    return "api"


def requested_host() -> str | None:
    """The host the current request was sent to; None on the root URL (every host)."""
    host = request.environ.get(HOST_KEY)
    return str(host) if host else None


def root_url() -> str:
    """The sandbox's root URL, without the host prefix of the current request."""
    root = request.root_url.rstrip("/")
    host = requested_host()
    return root.removesuffix(f"{HOST_PREFIX}{host}") if host else root


def host_url(host: str) -> str:
    """The base URL of `host` as the current request reached the sandbox: its own prefix,
    or the root URL when the request came through the root (one URL for every host)."""
    return f"{root_url()}{HOST_PREFIX}{host}" if requested_host() else root_url()


WsgiApp = Callable[[dict[str, Any], Callable[..., Any]], Iterable[bytes]]


class HostPrefixes:
    """WSGI middleware: moves `/_host/<host>` from PATH_INFO to SCRIPT_NAME, so the routes
    see Stripe's paths, and records the host under `HOST_KEY`."""

    def __init__(self, app: WsgiApp) -> None:
        self.app = app

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Any:
        path = str(environ.get("PATH_INFO", ""))
        for host in HOSTS:
            prefix = f"{HOST_PREFIX}{host}"
            if path == prefix or path.startswith(f"{prefix}/"):
                environ["SCRIPT_NAME"] = f"{environ.get('SCRIPT_NAME', '')}{prefix}"
                environ["PATH_INFO"] = path[len(prefix) :] or "/"
                environ[HOST_KEY] = host
                break
        return self.app(environ, start_response)
