"""Kept for the modules that import it here; the alert function lives in service.notify."""

from service.notify.alerts import raise_alert, resolve_alert

__all__ = ["raise_alert", "resolve_alert"]
