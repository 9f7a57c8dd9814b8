"""Scheduled notification jobs run by `meterfix worker` (digests, critical messages,
heartbeat-silence checks, retention). Placeholder until the notify work lands."""

from __future__ import annotations

import threading

from service.config import Settings


def start_notify_jobs(settings: Settings, stop: threading.Event) -> list[threading.Thread]:
    """Start the notification jobs as threads that stop when `stop` is set."""
    return []
