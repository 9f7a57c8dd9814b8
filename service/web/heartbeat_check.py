"""A dead worker cannot report itself: /api/health and the overview ask the worker room to
raise (or resolve) the heartbeat-silence alert, so it comes even when only the web runs."""

from __future__ import annotations

import logging

from sqlalchemy import Engine

from service.config import Settings
from service.logs import log_event
from service.worker.silence import check_heartbeats


def notice_silence(engine: Engine, settings: Settings) -> None:
    try:
        check_heartbeats(engine, settings)
    except Exception as exc:  # the page shows what it can read, whatever the check hit
        log_event("web.heartbeat_check_failed", level=logging.WARNING, error=type(exc).__name__)
