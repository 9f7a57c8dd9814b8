"""Structured logs: one event name plus fields, one JSON object per line, never secrets."""

from __future__ import annotations

import json
import logging
import sys
from typing import Any

LOGGER = logging.getLogger("meterfix")


def configure_logging(level: int = logging.INFO) -> None:
    if LOGGER.handlers:
        return
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(message)s"))
    LOGGER.addHandler(handler)
    LOGGER.setLevel(level)
    LOGGER.propagate = True


def log_event(event: str, level: int = logging.INFO, **fields: Any) -> None:
    LOGGER.log(level, json.dumps({"event": event, **fields}, default=str, sort_keys=True))
