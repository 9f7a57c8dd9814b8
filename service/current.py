"""The Runtime of the app at hand, for blueprints and commands.

It imports none of them, so they never import the app factory (which imports them)."""

from __future__ import annotations

from flask import current_app
from flask.sansio.app import App

from service.runtime import Runtime

EXTENSION = "meterfix"


def install(app: App, runtime: Runtime) -> None:
    app.extensions[EXTENSION] = runtime


def runtime_of(app: App) -> Runtime:
    value: Runtime = app.extensions[EXTENSION]
    return value


def runtime() -> Runtime:
    """The Runtime of the app handling the current request or command."""
    return runtime_of(current_app)
