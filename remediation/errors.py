"""Every error remediation raises, in one place.

Hierarchy (each carries a human-readable ``reason``, printed as one line by the CLI):

- ``MeterfixError``      base class; ``str(err) == err.reason``
  - ``UnreadableFile``   the whole input cannot be read (bad encoding, broken JSON array, no header)
  - ``BadRules``         the rules TOML is malformed or has a wrong type or unknown policy key
  - ``BadMeters``        the meters document cannot be used
  - ``Uncorrectable``    a rule cannot fix one record; the record is quarantined with
                         ``reason`` (``code`` says under which error code)
  - ``LookupRefused``    Stripe refused a customer look-up for one text (400: a query it
                         will not run): that text has no pick; the file goes on
  - ``ConservationError`` an invariant check failed (rows in != valid + corrected + quarantined);
                         a bug, never expected in production
"""

from __future__ import annotations

import codecs

from remediation.filetypes import compressed


class MeterfixError(Exception):
    """Base class: every meterfix error has a one-line reason."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason

    def __str__(self) -> str:
        return self.reason


class UnreadableFile(MeterfixError):
    """The input file as a whole cannot be read. `source`: the object it is, set by a task
    that reads several (an error report's), so that its alert names the one it could not."""

    source: str | None = None


class EmptyFile(UnreadableFile):
    """The input file holds nothing at all (no byte but a BOM or white space): nothing to
    import, so a whole-file failure of it is dropped, not repaired."""


class BadRules(MeterfixError):
    """The rules document is malformed."""


class BadMeters(MeterfixError):
    """The meters document is malformed."""


class Uncorrectable(MeterfixError):
    """One record cannot be corrected; it goes to quarantine with this reason."""

    def __init__(self, reason: str, code: str | None = None) -> None:
        super().__init__(reason)
        self.code = code


class LookupRefused(MeterfixError):
    """The customer directory was refused a look-up of one text for good (Stripe answered 400
    to its search or retrieval): no transient failure, so not a reason to fail the file."""


class ConservationError(MeterfixError):
    """Rows in != valid + corrected + quarantined (or a row was written twice)."""


def not_utf8(stream: object = None) -> UnreadableFile:
    """The file is not UTF-8: the error names the offset in the file of its first undecodable
    byte. A decode error's own offset (`exc.start`) counts from the chunk being decoded (a byte
    at 1,900,015 of a JSON Lines file was reported at 65,007), so the offset is found again
    from the file's start when `stream` (the binary stream read) can seek back; otherwise the
    message names none."""
    at = _first_undecodable(stream)
    if at is not None and (kind := _compressed(stream)) is not None:
        return UnreadableFile(kind)
    if at is None:
        return UnreadableFile("not UTF-8 text: a byte sequence is not UTF-8")
    return UnreadableFile(f"not UTF-8 text: undecodable byte at offset {at}")


_SCAN_BYTES = 1 << 20


def _compressed(stream: object) -> str | None:
    """`filetypes.compressed` of the stream's first bytes, read again from its start."""
    seek, read = getattr(stream, "seek", None), getattr(stream, "read", None)
    if not callable(seek) or not callable(read):
        return None
    try:
        seek(0)
        head = read(8)
    except (OSError, ValueError):
        return None
    return compressed(head) if isinstance(head, bytes) else None


def _first_undecodable(stream: object) -> int | None:
    """The offset of the first byte of `stream` that is not UTF-8, read again from its start
    (None: it cannot seek, or every byte decodes)."""
    seek, read = getattr(stream, "seek", None), getattr(stream, "read", None)
    if seek is None or read is None:
        return None
    try:
        seek(0)
    except (OSError, ValueError):  # not seekable, or closed
        return None
    decoder = codecs.getincrementaldecoder("utf-8")()
    done = 0
    while True:
        block = read(_SCAN_BYTES)
        held = len(decoder.getstate()[0])  # bytes of a character cut by the last block
        try:
            decoder.decode(block, final=not block)
        except UnicodeDecodeError as exc:
            return done - held + exc.start
        if not block:
            return None
        done += len(block)
