"""What handlers raise when an event cannot be used (handlers may not import service/)."""

from __future__ import annotations


class UnusableEvent(ValueError):
    """A well-formed, well-signed event whose data the handler cannot use (a snapshot whose
    `data` is not an object, an import set without an id, ...). Retrying cannot help: the
    worker dead-letters it at once with `reason`, visible and replayable."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason
