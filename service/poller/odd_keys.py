"""Bucket files the poller cannot take by their name, each named in the pass's errors and a
warning alert until it is moved, renamed or gone (then the alert is resolved): a `file://`
path longer than a record holds, and (`file://`) a name that is not UTF-8."""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from typing import Protocol, runtime_checkable

from sqlalchemy import Engine

from remediation.ports import ObjectInfo
from service.logs import log_event
from service.models.poller import OBJECT_KEY_CHARS
from service.notify.alerts import raise_alert, resolve_alert, stored_key
from service.notify.store import unresolved_keys_of_kind
from service.poller.planning import is_usage_key

TOO_LONG = "poller.key_too_long"
NOT_UTF8 = "poller.key_not_utf8"


def recordable(
    engine: Engine, objects: Iterable[ObjectInfo], errors: list[str]
) -> list[ObjectInfo]:
    """The objects whose key a record can hold: a `file://` path past OBJECT_KEY_CHARS (S3
    keys never are) failed the pass on PostgreSQL at its record, every pass, and no object
    after it was ever imported. It is left alone, named in `errors` and a warning alert,
    resolved once the file is moved to a shorter path or gone."""
    found, alerted = [], set()
    for obj in objects:
        if len(obj.key) <= OBJECT_KEY_CHARS:
            found.append(obj)
            continue
        reason = f"key longer than {OBJECT_KEY_CHARS} characters ({len(obj.key)}): not read"
        errors.append(f"{obj.key[:200]}…: {reason}")
        log_event(TOO_LONG, level=logging.WARNING, key=obj.key[:200], reason=reason)
        key = f"{TOO_LONG}:{obj.key}"
        alerted.add(stored_key(key))
        raise_alert(
            engine,
            key=key,
            severity="warning",
            kind=TOO_LONG,
            subject=f"{obj.key[:80]}…: key too long to import",
            message=f"{obj.key[:1000]}: {reason}. Move it to a shorter path to have it imported.",
            detail={"key": obj.key[:OBJECT_KEY_CHARS], "length": len(obj.key)},
        )
    _resolve_gone(engine, TOO_LONG, alerted)
    return found


@runtime_checkable
class HoldsNamesNotUtf8(Protocol):
    """A bucket whose files can be named in another encoding than UTF-8 (`file://`: S3 keys
    are UTF-8): its listing leaves them out, and names them apart."""

    def names_not_utf8(self, prefix: str = "") -> list[str]: ...


def name_files_not_utf8(
    engine: Engine, bucket: object, excluded: Sequence[str], done: str, errors: list[str]
) -> None:
    """A usage file whose name is not UTF-8 is in no listing (no record holds its key): its
    usage was never billed, and only a log line said so. Each is named in `errors` and a
    warning alert (its bytes escaped), resolved once it is renamed or gone. `done`: what the
    poller does with files ("imported", "indexed")."""
    names = bucket.names_not_utf8() if isinstance(bucket, HoldsNamesNotUtf8) else []
    usage = [name for name in names if is_usage_key(name, excluded)]
    for name in usage:
        errors.append(f"{name}: file name is not UTF-8: not {done}; rename it (UTF-8)")
        raise_alert(
            engine,
            key=f"{NOT_UTF8}:{name}",
            severity="warning",
            kind=NOT_UTF8,
            subject=f"{name[:80]}: file name not UTF-8, not {done}",
            message=f"{name[:1000]}: file name is not UTF-8 (another encoding, such as "
            f"Latin-1): not {done}. Rename it (UTF-8) to have it {done}.",
            detail={"key": name[:OBJECT_KEY_CHARS]},
        )
    _resolve_gone(engine, NOT_UTF8, {stored_key(f"{NOT_UTF8}:{name}") for name in usage})


def _resolve_gone(engine: Engine, kind: str, current: set[str]) -> None:
    """Resolve the alerts of `kind` this pass did not raise again (their file moved, renamed
    or gone)."""
    with engine.connect() as connection:
        open_keys = unresolved_keys_of_kind(connection, kind)
    for key in sorted(open_keys - current):
        resolve_alert(engine, key)
