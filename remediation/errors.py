"""Every error remediation raises, in one place.

Hierarchy (each carries a human-readable ``reason``, printed as one line by the CLI):

- ``MeterfixError``      base class; ``str(err) == err.reason``
  - ``UnreadableFile``   the whole input cannot be read (bad encoding, broken JSON array, no header)
  - ``BadRules``         the rules TOML is malformed or has a wrong type or unknown policy key
  - ``BadMeters``        the meters document cannot be used
  - ``Uncorrectable``    a rule cannot fix one record; the record is quarantined with
                         ``reason`` (``code`` says under which error code)
  - ``ConservationError`` an invariant check failed (rows in != valid + corrected + quarantined);
                         a bug, never expected in production
"""

from __future__ import annotations


class MeterfixError(Exception):
    """Base class: every meterfix error has a one-line reason."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason

    def __str__(self) -> str:
        return self.reason


class UnreadableFile(MeterfixError):
    """The input file as a whole cannot be read."""


class BadRules(MeterfixError):
    """The rules document is malformed."""


class BadMeters(MeterfixError):
    """The meters document is malformed."""


class Uncorrectable(MeterfixError):
    """One record cannot be corrected; it goes to quarantine with this reason."""

    def __init__(self, reason: str, code: str | None = None) -> None:
        super().__init__(reason)
        self.code = code


class ConservationError(MeterfixError):
    """Rows in != valid + corrected + quarantined (or a row was written twice)."""
