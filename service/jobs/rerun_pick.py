"""Which quarantined rows a quarantine re-run takes: those the admin action's filter picks,
less the rows billed as they are since (sent by the poller from a later version or a copy, or
held by an object version Stripe's connector took whole since: one the poller indexed, of
any name, or a later version of their object). Apart from the
task because finding those rows reads the bucket and the poller's store, not the run.
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from itertools import islice
from pathlib import Path

from sqlalchemy import Connection, Engine

from remediation.errors import UnreadableFile
from remediation.identifiers import hashed_identifier, plain_suffix
from remediation.ports import ObjectInfo
from remediation.repair import plan_input, read_repaired
from remediation.rules import Rules
from service.config import PollerMode
from service.errors import BadParameter, RerunInputMissing
from service.jobs.input_lineage import LOOKUP_BATCH
from service.jobs.inputs import candidate_keys, identifiers_in, local_name
from service.jobs.rerun_keys import RERUN_PREFIX
from service.jobs.run_context import RunContext
from service.jobs.store.indexed_rows import IndexedRow, indexed_rows
from service.jobs.store.other_takes import (
    HeldEntry,
    OtherTake,
    held_entries,
    other_takes,
    quarantined_again_label,
)
from service.jobs.store.quarantine_filter import QuarantineFilter
from service.jobs.store.reports import import_set
from service.jobs.store.rerun_queue import rerun_detail
from service.jobs.store.rerun_rows import (
    QuarantinedFrom,
    RerunRow,
    RunOf,
    newest_generation,
    quarantined_at,
    quarantined_from,
    rerun_origins,
    rows_to_rerun,
    sent_seconds,
)
from service.jobs.store.runs import import_set_of
from service.jobs.store.taken_again import mark_rows_taken_again
from service.jobs.store.usage_stamps import sent_as_held, usage_second
from service.models._types import as_utc
from service.notify.runs import RunAlertsToSettle
from service.poller.store import sent_moments


def pick_rows(ctx: RunContext, action_ref: str) -> tuple[list[RerunRow], int]:
    """The rows to re-run, and how many rows the filter picked that are left: billed as they
    are since (`_sent_since`, `_in_later_versions`, and rows their object sent again:
    `mark_taken_again`)."""
    with ctx.engine.connect() as connection:
        detail = rerun_detail(connection, int(action_ref)) if action_ref.isdigit() else None
        filters = None if detail is None else detail.get("filters")
        if not isinstance(filters, dict):
            raise RerunInputMissing(f"admin action {action_ref} with the re-run's filter is gone")
        through = detail.get("through") if detail is not None else None
        try:
            found = QuarantineFilter.from_query({str(k): str(v) for k, v in filters.items()})
        except BadParameter as exc:
            raise RerunInputMissing(f"admin action {action_ref}: {exc}") from exc
        listed = rows_to_rerun(
            connection,
            found,
            f"quarantine_rerun:{action_ref}",
            through if isinstance(through, int) else None,
        )
        picked = [row for row in listed if not row.again]
        ids = [row.id for row in picked]
        billed = _sent_since(ctx.engine, connection, ids)
        billed |= _indexed_since(ctx, connection, [i for i in ids if i not in billed])
        rest = [i for i in ids if i not in billed]
        billed |= _taken_since(ctx.engine, connection, rest, f"quarantine_rerun:{action_ref}")
        billed |= _in_later_versions(ctx, connection, [i for i in ids if i not in billed])
    kept = [row for row in picked if row.id not in billed]
    return kept, len(listed) - len(kept)


def _sent_since(engine: Engine, connection: Connection, ids: list[int]) -> set[int]:
    """The ids among `ids` of rows the bundled poller sent after the row was quarantined (its
    identifier at its timestamp, `sent_as_held`: an identifier may be used again days later
    for other usage, which leaves the row waiting): from a later version of its file (the
    customer fixed the row by hand) or a copy. Such a row was billed as it is; re-run, it
    would go out a second time under a derived identifier, which nothing dedupes. A row
    Stripe refused after the poller sent it (an error report) was sent before it was
    quarantined: it is re-run."""
    found: dict[int, str] = {}
    rows = iter(quarantined_at(connection, ids))
    while chunk := list(islice(rows, LOOKUP_BATCH)):
        sent = sent_moments(engine, {entry.identifier for entry in chunk})
        later = [entry for entry in chunk if sent.get(entry.identifier, entry.at) > entry.at]
        seconds = sent_seconds(connection, engine, sorted({e.identifier for e in later}))
        for i, identifier, _held, code, record in later:
            # the same usage only: an identifier may be used again days later for other usage
            stamps = seconds.get(identifier) or {None}
            if any(sent_as_held(code, record, stamp) for stamp in stamps):
                at = sent[identifier]
                # marked, as a row Stripe refused is when a copy sends it: it was listed as
                # waiting for a fix for good ("taken_again=no"), every re-run leaving it
                found[i] = f"another file or version, sent as it is by the poller at {_at(at)}"
    _mark(engine, found)
    return set(found)


def _indexed_since(ctx: RunContext, connection: Connection, ids: list[int]) -> set[int]:
    """The ids among `ids` of rows the bundled poller indexed (index mode) in an object
    version uploaded after the row was quarantined, or, of another object, after the version
    the row was refused from (`_since_source`), the same usage (`sent_as_held`): any object,
    the quarantine file fixed by hand and uploaded under another name included. Stripe's
    connector takes every version whole, so it billed the row from there (or refused it
    again: quarantined anew under its own entry); re-run, it would go out a second time
    under a derived identifier. The poller marks such rows when it indexes the version
    (`service.poller.again`); this finds those it indexed before it did, and those it
    indexed before the row was quarantined (a worker's backlog: the fixed copy billed
    before meterfix heard of the refusal)."""
    found: dict[int, str] = {}
    objects = _Objects(ctx.engine, connection)
    rows = iter(quarantined_from(connection, ids))
    while chunk := list(islice(rows, LOOKUP_BATCH)):
        indexed = indexed_rows(connection, ctx.engine, sorted({e.identifier for e in chunk}))
        for entry in chunk:
            held = indexed.get(entry.identifier, [])
            own = _own_names(ctx, objects, entry)
            since = _since_source(own, held)
            # S3 keeps whole seconds (rounded down), as `mark_taken_again` reads them; the
            # row's own object is never later: the index holds the first version of it that
            # held the identifier, the one the row was refused from or an earlier one (within
            # the second of its upload it read as later: the row never billed)
            later = [
                row
                for row in held
                if (
                    (row.key not in own and entry.at < row.uploaded + timedelta(seconds=1))
                    or since(row)
                )
                and sent_as_held(entry.code, entry.record, usage_second(row.timestamp))
            ]
            if later:
                row = max(later, key=lambda r: r.uploaded)
                found[entry.id] = (
                    f"{row.key} (ETag {row.etag}, uploaded {row.uploaded:%Y-%m-%d %H:%M} UTC)"
                )
    _mark(ctx.engine, found)
    return set(found)


def _own_names(ctx: RunContext, objects: _Objects, entry: QuarantinedFrom) -> set[str]:
    """The names the object the entry's row was refused from is indexed under (none when it
    is not known)."""
    key = objects.key(RunOf(entry.run_id, entry.source, entry.run_key), entry.identifier)
    return {key, ctx.bucket.prefix + key} if key else set()


def _since_source(names: set[str], held: list[IndexedRow]) -> Callable[[IndexedRow], bool]:
    """Whether an indexed row is of another object, in a version uploaded after the one the
    entry's row was refused from (its run's object, the first version the poller indexed
    holding the identifier there; whole seconds, so one of the same second is not after):
    the connector took it after that version, before or after meterfix quarantined the row.
    A copy it refused too is quarantined under its own entry, which a re-run takes (its
    version is not after its own). Never true when that version is not known."""
    own = [row.uploaded for row in held if row.key in names]
    if not own:
        return lambda row: False
    source = min(own)
    return lambda row: row.key not in names and row.uploaded > source


def _taken_since(engine: Engine, connection: Connection, ids: list[int], own_key: str) -> set[int]:
    """The ids among `ids` of rows taken elsewhere since, marked with what took them: a row
    of the same identifier and timestamp (the same usage: an identifier may be used again a
    day later for other usage) that a finished run quarantined after it (a copy, or the
    quarantine file fed back while the cause was still there, perhaps fixed in part: the
    newer entry is the one to re-run), or that the poller sent under a derived identifier
    (a fed-back quarantine file's `<id>-mfx2`). Re-run, such a row went out a second time
    under another derived identifier, which nothing dedupes, and of two entries of one row
    the older one's contents could go out first under the same identifier (the operator's
    fix dropped as a duplicate). Never a run of this re-run (`own_key`): a crashed try of
    it. (With Stripe's connector importing, what it took from a fed-back file is not known
    here: such a row is re-run.)"""
    found: dict[int, str] = {}
    entries = iter(held_entries(connection, ids))
    generations = range(1, newest_generation(connection) + 1)
    while chunk := list(islice(entries, LOOKUP_BATCH)):
        identifiers = sorted({entry.identifier for entry in chunk})
        derived = {
            form: identifier
            for identifier in identifiers
            for generation in generations
            for form in (
                identifier + plain_suffix(generation),
                hashed_identifier(identifier, generation),
            )
        }
        takes: dict[tuple[str, str], list[OtherTake]] = {}
        for take in other_takes(connection, engine, identifiers, derived, own_key):
            takes.setdefault((take.identifier, take.stamp), []).append(take)
        for entry in chunk:
            later = [
                take
                for take in takes.get((entry.identifier, entry.stamp), ())
                if take.run_id is None or (take.run_id != entry.run_id and _after(take, entry))
            ]
            if entry.stamp.startswith("\0"):  # no timestamp: what we sent derived says none
                later += [t for t in takes.get((entry.identifier, ""), ()) if t.run_id is None]
            if later:
                found[entry.id] = _took(later[-1])
    _mark(engine, found)
    return set(found)


def _after(take: OtherTake, entry: HeldEntry) -> bool:
    return take.at is not None and take.at > entry.at


def _took(take: OtherTake) -> str:
    """What the quarantine entry says took its row (shown after "taken again by Stripe
    from")."""
    if take.as_identifier is None:
        return quarantined_again_label(take.source, take.run_id, take.at or datetime.now(UTC))
    return f"{take.source}, sent as {take.as_identifier} by the poller"


def _at(moment: datetime) -> str:
    return f"{as_utc(moment) or moment:%Y-%m-%d %H:%M:%S} UTC"


def _mark(engine: Engine, labels: dict[int, str]) -> None:
    by_label: dict[str, list[int]] = {}
    for row_id, label in labels.items():
        by_label.setdefault(label, []).append(row_id)
    settling = RunAlertsToSettle()  # once all are marked: a label may be a row's own
    for label, row_ids in by_label.items():
        mark_rows_taken_again(engine, row_ids, label, settling.note)
    settling.settle(engine)


def _in_later_versions(ctx: RunContext, connection: Connection, ids: list[int]) -> set[int]:
    """With Stripe's connector importing the bucket (not the bundled poller): the ids among
    `ids` of rows whose object is now a version written after the row was quarantined that
    holds the row (its identifier, the same usage: `sent_as_held`), marked `taken_again`
    with that version. The connector takes every
    version whole, so it took the row again (billed as the customer fixed it by hand, or
    refused again and quarantined anew); re-run, it would go out a second time under a
    derived identifier. The object: the one the row's import set names, else the bucket key
    its run read. (Index mode marks such rows when the poller indexes the version; this
    finds them before it does, and in the default mode, which indexes nothing.)"""
    if ctx.settings.mfx_poller == PollerMode.ON or not ids:
        return set()
    by_key: dict[str, list[QuarantinedFrom]] = {}
    objects = _Objects(ctx.engine, connection)
    for row in quarantined_from(connection, ids):
        key = objects.key(RunOf(row.run_id, row.source, row.run_key), row.identifier)
        if key and _object_key(key):  # not a local path (`remediate --upload`'s source)
            by_key.setdefault(key, []).append(row)
    taken: set[int] = set()
    settling = RunAlertsToSettle()  # once all are marked, not once an object
    for key, rows in by_key.items():
        wanted = {row.identifier for row in rows}
        later = _later_version(ctx, key, min(row.at for row in rows), wanted)
        if later is None:
            continue
        info, held = later
        uploaded = as_utc(info.last_modified) or datetime.now(UTC)
        # the same usage only (`sent_as_held`): an identifier used again for other usage
        # in a later version (a file rewritten day after day) leaves the row waiting
        found_ids = [
            r.id
            for r in rows
            if uploaded > r.at
            and any(sent_as_held(r.code, r.record, second) for second in held.get(r.identifier, ()))
        ]
        label = f"{info.key} (ETag {info.etag}, uploaded {uploaded:%Y-%m-%d %H:%M} UTC)"
        mark_rows_taken_again(ctx.engine, found_ids, label, settling.note)
        taken.update(found_ids)
    settling.settle(ctx.engine)
    return taken


class _Objects:
    """The object a quarantined row came from: the one its import set names, else the
    bucket key its run read; for a row a re-run quarantined again, that of the row the
    re-run took, back to the first run (looked up once a re-run, once an import set)."""

    def __init__(self, engine: Engine, connection: Connection) -> None:
        self.engine, self.connection = engine, connection
        self.named: dict[str, str | None] = {}
        self.origins: dict[int, dict[str, RunOf]] = {}

    def key(self, run: RunOf | None, identifier: str) -> str | None:
        seen: set[int] = set()
        while run is not None and run.run_key.startswith(RERUN_PREFIX) and run.id not in seen:
            seen.add(run.id)
            if run.id not in self.origins:
                self.origins[run.id] = rerun_origins(self.connection, run.id)
            run = self.origins[run.id].get(identifier)
        if run is None or run.run_key.startswith(RERUN_PREFIX):
            return None
        impset = import_set_of(run.run_key)
        if impset is None:
            return run.source
        if impset not in self.named:
            found = import_set(self.engine, impset)
            self.named[impset] = found.source_object if found is not None else None
        return self.named[impset]


def _object_key(text: str) -> bool:
    """Whether `text` can name an object (the file bucket refuses anything else)."""
    parts = text.split("/")
    return not text.startswith("/") and all(p not in ("", ".", "..") for p in parts)


def _later_version(
    ctx: RunContext, key: str, since: datetime, wanted: set[str]
) -> tuple[ObjectInfo, dict[str, set[int | None]]] | None:
    """The object at `key` (or under the bucket's prefix) and the seconds its rows of
    `wanted` are at (`_seconds_in`), when it was written after `since`; else None."""
    for candidate in candidate_keys(ctx.bucket, key):
        info = ctx.bucket.head(candidate)
        if info is None:
            continue
        if (as_utc(info.last_modified) or since) <= since:
            return None
        with tempfile.TemporaryDirectory(prefix="meterfix-rerun-") as tmp:
            path = Path(tmp) / local_name(candidate)
            ctx.bucket.download(candidate, path)
            return info, _seconds_in(path, ctx.rules, wanted)
    return None


def _seconds_in(path: Path, rules: Rules, wanted: set[str]) -> dict[str, set[int | None]]:
    """identifier -> the seconds (`usage_second`; None: no timestamp) the usage file's rows of
    `wanted` are at; none when it holds none of them (its identifier column read alone, as
    `identifiers_in` reads it) or cannot be read (Stripe fails it as a whole)."""
    if not wanted & identifiers_in(path, rules):
        return {}
    found: dict[str, set[int | None]] = {}
    try:
        plan = plan_input(path, rules)
        with path.open("rb") as stream:
            for record in read_repaired(stream, plan, rules):
                if record.identifier in wanted:
                    second = usage_second(record.timestamp)
                    found.setdefault(record.identifier, set()).add(second)
    except UnreadableFile:
        return {}
    return found
