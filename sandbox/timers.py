"""Background loops for a long-running sandbox: the validation-window flush and the connector."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

from sandbox.runtime import Sandbox

log = logging.getLogger("sandbox")


def start_timers(
    sandbox: Sandbox, *, report_interval: float = 0, connector_interval: float = 0
) -> threading.Event:
    """Start daemon threads (an interval of 0 disables one); set the returned event to stop."""
    stop = threading.Event()
    jobs: list[tuple[str, float, Callable[[], object]]] = [
        ("flush_reports", report_interval, sandbox.flush_reports),
        ("poll_connector", connector_interval, sandbox.poll_connector),
    ]
    for name, interval, job in jobs:
        if interval > 0:
            thread = threading.Thread(
                target=_loop, args=(name, interval, job, stop), name=f"sandbox-{name}", daemon=True
            )
            thread.start()
    return stop


def _loop(name: str, interval: float, job: Callable[[], object], stop: threading.Event) -> None:
    while not stop.wait(interval):
        try:
            job()
        except Exception as exc:  # a timer must survive one bad pass (bucket down, bad file)
            log.warning("sandbox.%s_failed reason=%s: %s", name, type(exc).__name__, exc)
