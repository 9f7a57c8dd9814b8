"""Every event-type module is registered, and every registered handler is its module's."""

from __future__ import annotations

import importlib
import pkgutil

import handlers
from handlers import REGISTRY

SUPPORT_MODULES = {"_fields", "context", "errors", "records", "meter_error_reports", "import_sets"}


def _event_modules() -> list[str]:
    names = [m.name for m in pkgutil.iter_modules(handlers.__path__)]
    return sorted(name for name in names if name not in SUPPORT_MODULES)


def test_every_event_module_is_registered() -> None:
    modules = _event_modules()
    assert len(modules) == 4
    for name in modules:
        module = importlib.import_module(f"handlers.{name}")
        assert module.EVENT_TYPE.replace(".", "_") == name
        assert REGISTRY[module.EVENT_TYPE] is module.handle
        assert module.__doc__ and "Stripe sends it" in module.__doc__
    assert len(REGISTRY) == len(modules)
