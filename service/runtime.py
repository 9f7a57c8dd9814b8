"""The per-process runtime: settings plus lazily built engine and adapters.

Nothing is built at import time; `create_app` makes one Runtime and stores it on the app.
"""

from __future__ import annotations

from functools import cached_property

from sqlalchemy import Engine

from service.config import Settings
from service.db import make_engine


class Runtime:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings

    @cached_property
    def engine(self) -> Engine:
        return make_engine(
            self.settings.database_url, synchronous=self.settings.mfx_sqlite_synchronous
        )

    def close(self) -> None:
        if "engine" in self.__dict__:
            self.engine.dispose()
