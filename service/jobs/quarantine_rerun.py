"""The quarantine re-run task: rows an operator picked (by the filter kept on the admin
action, up to the newest row when it was queued) run again through the current rules. Rows
that now pass go to a corrected object, the rest to the re-run's own quarantine rows; the
rows taken get `rerun_id`.

Quarantined rows were never sent, so re-running them is always safe (the run is `rejected`:
a row that passes goes out), and a re-run is the operator's decision after fixing the rules:
loop protection, which keeps a row that failed again with the code it was corrected for from
being corrected again by itself, does not stop it here.

Rows keep the generation of the run that quarantined them, and the generation that run traced
its input from (`input_generation`: its object's, below the run's when lineage raised it): a
re-run makes one run per pair among its rows (`quarantine_rerun:<action>` for rows of
first-generation runs, `quarantine_rerun:<action>:g<n>` for the others, `:g<n>:i<m>` when
the input was traced from `m`, not `n - 1`), so every row's lineage goes on one generation at
a time, as if its own run had corrected it. (One run at the newest generation for all of them
took a first run's `inv-mfx1`, the customer's own identifier, for our `inv` re-sent, and
wrote `inv` and `inv-mfx1` both as `inv-mfx2`; traced from a raised run's generation less
one, the customer's own `c1-mfx1` went out as `c1-mfx2`.) A run written before the input's
generation was kept is taken as traced from its generation less one, under the key it had,
so a task queued before and retried after the upgrade finds its runs. Like every run, a
group's run writes above every generation the audit says wrote one of its rows
(`run_generation`: a run from before that rule may have quarantined our `a1-mfx1` in
generation 1). Each group's run is idempotent per run key and its rows are marked taken
after it, so a task retried after a crash runs what is left and never its own new rows.
"""

from __future__ import annotations

import tempfile
import time
from collections.abc import Iterator, Sequence
from contextlib import ExitStack, contextmanager
from datetime import UTC, datetime
from itertools import islice
from pathlib import Path
from typing import Any, NamedTuple

from sqlalchemy import Connection, Engine

from remediation.codes import KNOWN_CODES, ErrorCode
from remediation.filetypes import FileFormat
from remediation.identifiers import (
    Identifiers,
    Lineage,
    reserved_originals,
    row_identifier,
    run_generation,
    trace_ancestors,
)
from remediation.jsonrecords import record_from_obj
from remediation.ports import ObjectInfo
from remediation.records import MFX_PREFIX, UsageRecord
from service.config import PollerMode
from service.db.locks import advisory_lock
from service.errors import BadParameter, RerunInputMissing
from service.jobs.inputs import (
    LOOKUP_BATCH,
    RunLineage,
    candidate_keys,
    identifiers_in,
    local_name,
    parents,
)
from service.jobs.runs import RunContext, RunRequest, execute_run
from service.jobs.store.quarantine_filter import QuarantineFilter
from service.jobs.store.reports import import_set
from service.jobs.store.reruns import (
    QuarantinedFrom,
    RerunRow,
    RunOf,
    mark_rerun,
    quarantined_at,
    quarantined_entries,
    quarantined_from,
    rerun_detail,
    rerun_origins,
    rerun_queued_at,
    rows_to_rerun,
)
from service.jobs.store.runs import import_set_of
from service.jobs.store.taken_again import mark_rows_taken_again
from service.models import RemediationRun, RunTrigger
from service.models._types import as_utc
from service.poller.store import sent_moments

# Codes our own validation decides (from the row and the meters): such a row goes through
# validation again, so a row that now passes (its meter exists now, its time is no longer in
# the future) goes out. Other codes only Stripe can judge: a customer Stripe did not find,
# unknown codes, and a value Stripe refused that our checks pass (the meter's precision, or
# what made a plain `5` invalid, is Stripe's to know): the row keeps its code, and only its
# rule's correction sends it out (README: never sent again unchanged, only to be refused).
CHECKED_BY_VALIDATION = KNOWN_CODES - {
    ErrorCode.CUSTOMER_NOT_FOUND,
    ErrorCode.UNCLASSIFIED,
    ErrorCode.INVALID_VALUE,
    ErrorCode.VALUE_TOO_MANY_DIGITS,
}


RERUN_PREFIX = "quarantine_rerun:"
QUARANTINE_CODE = f"{MFX_PREFIX}code"  # a stored row's note of the code it was quarantined with


def rerun_key(action_ref: str, generation: int, traced_from: int | None = None) -> str:
    """The run key of a re-run's run for rows that runs of `generation` quarantined, whose
    input was traced from `traced_from` (`:i<n>` only when that is not `generation - 1`,
    so the keys of re-runs queued before it was kept stay the same)."""
    base = f"{RERUN_PREFIX}{action_ref}"
    key = base if generation <= 1 else f"{base}:g{generation}"
    if traced_from is None or traced_from == generation - 1:
        return key
    return f"{base}:g{generation}:i{traced_from}"


def rerun_tag(run_key: str) -> str:
    """The folder of a re-run run's outputs: `rerun-<action>`, and the group's part of its
    run key (`-g2`, `-g2-i1`) for a group past the first generation. Two groups may write one
    generation (a generation-1 row of ours goes out above it, in 2, as the generation-2 rows
    do): in one folder their corrected objects had one key, the second replacing the first
    before it was imported."""
    return "rerun-" + run_key.removeprefix(RERUN_PREFIX).replace(":", "-")


def rerun_quarantine(ctx: RunContext, action_ref: str) -> str:
    with ExitStack() as held:
        with ctx.waiting_turn():  # the wait for the re-run before is not this one's time
            held.enter_context(_one_at_a_time(ctx.engine))
        return _rerun_quarantine(ctx, action_ref)


RERUN_LOCK_KEY = 0x6D66785F72657275  # "mfx_reru": the seed of the re-runs' advisory-lock id


@contextmanager
def _one_at_a_time(engine: Engine) -> Iterator[None]:
    """One re-run at a time: a re-run picks its rows, runs them and only then marks them
    taken (a task run again after a crash runs what is left), so two re-runs at once (two
    clicks, two workers) picked the same rows and wrote both to corrected objects, each run
    counting them. On PostgreSQL an advisory lock held for the task, waited for; SQLite has
    one worker process, which runs one task at a time."""
    with advisory_lock(engine, RERUN_LOCK_KEY, wait=True):
        yield


def _rerun_quarantine(ctx: RunContext, action_ref: str) -> str:
    picked, billed = _pick(ctx, action_ref)
    with ctx.engine.connect() as connection:
        queued = rerun_queued_at(connection, int(action_ref)) if action_ref.isdigit() else None
    # the reference time: the operator's decision, the same when the task is run again after
    # a crash (the clock made a redo judge rows, and write its outputs, otherwise)
    now = int(queued.timestamp()) if queued is not None else int(time.time())
    left = (
        f"; {billed} left quarantined: billed as they are since, from a later version of "
        "their file or a copy (the poller sent their identifiers, or Stripe's connector took "
        "them again)"
        if billed
        else ""
    )
    if not picked:
        return f"no quarantined rows to re-run: none match, or this re-run took them{left}"
    groups: dict[tuple[int, int], list[int]] = {}
    for row in picked:
        groups.setdefault((row.generation, row.traced_from), []).append(row.id)
    runs: list[RemediationRun] = []
    for (generation, traced_from), ids in sorted(groups.items()):
        runs.append(_rerun(ctx, action_ref, generation, traced_from, ids, now))
    passed = sum(run.valid + run.corrected for run in runs)
    stayed = sum(run.quarantined for run in runs)
    named = ", ".join(str(run.id) for run in runs)
    return (
        f"re-ran {len(picked)} quarantined rows as run{'s' if len(runs) > 1 else ''} "
        f"{named}: {passed} now pass, {stayed} stay quarantined{left}"
    )


def _rerun(
    ctx: RunContext, action_ref: str, generation: int, traced_from: int, ids: list[int], now: int
) -> RemediationRun:
    """One run of the rows (by id) that runs of `generation` quarantined, whose input they
    traced from `traced_from`; their corrected rows are of that generation too (or above:
    `_lineage`), and their lineage is traced as their runs traced it."""
    source = f"quarantine re-run {action_ref}"
    written, lineage, _ = _lineage(ctx.engine, ids, traced_from, generation, source)
    # keyed by the quarantining runs' generations: one run per group, whatever it writes
    run_key = rerun_key(action_ref, generation, traced_from)
    request = RunRequest(
        run_key=run_key,
        trigger=RunTrigger.QUARANTINE_RERUN,
        source=source,
        tag=rerun_tag(run_key),
        fmt=FileFormat.JSONL,
        now=now,
        generation=written,
        lineage=lineage,
        input_generation=traced_from,
        rejected=True,  # quarantined rows were never sent: every row may go out corrected
        # the operator's decision after fixing the rules: a row loop protection stopped (it
        # failed again with the code it was corrected for) is corrected again by them; if it
        # fails again still, the next run stops it again
        loop_protection=False,
    )
    run = execute_run(ctx, request, _records(ctx.engine, ids))
    assert run.id is not None
    mark_rerun(ctx.engine, ids, run.id)
    return run


def _pick(ctx: RunContext, action_ref: str) -> tuple[list[RerunRow], int]:
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
        billed |= _in_later_versions(ctx, connection, [i for i in ids if i not in billed])
    kept = [row for row in picked if row.id not in billed]
    return kept, len(listed) - len(kept)


def _sent_since(engine: Engine, connection: Connection, ids: list[int]) -> set[int]:
    """The ids among `ids` of rows whose identifier the bundled poller sent after the row
    was quarantined: from a later version of its file (the customer fixed the row by hand)
    or a copy. Such a row was billed as it is; re-run, it would go out a second time under
    a derived identifier, which nothing dedupes. A row Stripe refused after the poller sent
    it (an error report) was sent before it was quarantined: it is re-run."""
    found: set[int] = set()
    rows = iter(quarantined_at(connection, ids))
    while chunk := list(islice(rows, LOOKUP_BATCH)):
        sent = sent_moments(engine, {identifier for _, identifier, _ in chunk})
        found.update(i for i, identifier, held in chunk if sent.get(identifier, held) > held)
    return found


def _in_later_versions(ctx: RunContext, connection: Connection, ids: list[int]) -> set[int]:
    """With Stripe's connector importing the bucket (not the bundled poller): the ids among
    `ids` of rows whose object is now a version written after the row was quarantined that
    holds its identifier, marked `taken_again` with that version. The connector takes every
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
    for key, rows in by_key.items():
        later = _later_version(ctx, key, min(row.at for row in rows))
        if later is None:
            continue
        info, held = later
        uploaded = as_utc(info.last_modified) or datetime.now(UTC)
        found_ids = [r.id for r in rows if r.identifier in held and uploaded > r.at]
        label = f"{info.key} (ETag {info.etag}, uploaded {uploaded:%Y-%m-%d %H:%M} UTC)"
        mark_rows_taken_again(ctx.engine, found_ids, label)
        taken.update(found_ids)
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
    ctx: RunContext, key: str, since: datetime
) -> tuple[ObjectInfo, set[str]] | None:
    """The object at `key` (or under the bucket's prefix) and the identifiers it holds, when
    it was written after `since`; else None."""
    for candidate in candidate_keys(ctx.bucket, key):
        info = ctx.bucket.head(candidate)
        if info is None:
            continue
        if (as_utc(info.last_modified) or since) <= since:
            return None
        with tempfile.TemporaryDirectory(prefix="meterfix-rerun-") as tmp:
            path = Path(tmp) / local_name(candidate)
            ctx.bucket.download(candidate, path)
            return info, identifiers_in(path, ctx.rules)
    return None


class _Entry(NamedTuple):
    identifier: str
    code: str
    record: dict[str, Any]
    reason: str


def _identified_rows(engine: Engine, ids: Sequence[int]) -> Iterator[_Entry]:
    """Each row, by id; a row that had no identifier gets the one its first run gave it
    (from its source and row number), as its original."""
    for row in quarantined_entries(engine, ids):
        record = row.record if isinstance(row.record, dict) else {}
        identifier = _text(record.get("identifier")) or _text(row.identifier)
        yield _Entry(
            identifier or row_identifier(str(row.source or ""), int(row.row_number or 0)),
            _text(row.code) or "",
            record,
            _text(row.reason) or "",
        )


def _lineage(
    engine: Engine, ids: Sequence[int], traced_from: int, generation: int, source: str
) -> RunLineage:
    """The generation the re-run writes and which of the rows' identifiers we wrote (a
    quarantined row of a corrected file), with the originals a derived identifier must not
    equal, as the other jobs find them: the rows are those runs of `generation` quarantined
    from an input they traced from `traced_from` (`generation - 1` but for a run raised by
    lineage, whose object's generation was lower: traced from the run's less one, the
    customer's own `c1-mfx1` was taken for our `c1` re-sent). The re-run writes above every
    generation the audit says wrote one of them (`run_generation`): a run from before that
    rule (an import set naming no object ran in generation 1) may have quarantined our own
    `a1-mfx1` in generation 1, which re-sent in it went out as `a1-mfx1`, the identifier just
    refused."""
    identifiers = [entry.identifier for entry in _identified_rows(engine, ids)]
    ancestors = trace_ancestors(
        identifiers, traced_from, lambda batch: parents(engine, batch), LOOKUP_BATCH
    )
    written = run_generation(generation, ancestors)
    lineage = Lineage(ancestors)
    numbered = ((identifier, n) for n, identifier in enumerate(identifiers, start=1))
    reserved = reserved_originals(numbered, Identifiers(source, written, lineage, keep=False))
    return RunLineage(written, Lineage(ancestors, reserved), traced_from)


def _records(engine: Engine, ids: Sequence[int]) -> Iterator[UsageRecord]:
    for number, entry in enumerate(_identified_rows(engine, ids), start=1):
        yield _usage_record(number, entry)


def _usage_record(number: int, entry: _Entry) -> UsageRecord:
    """The row as it arrived (without the `mfx_*` notes), read as the JSON readers read an
    object (a payload that is no object, an identifier or event name that is one: a malformed
    row again, its values as they came), with the code it arrived with unless our validation
    decides that code (see CHECKED_BY_VALIDATION). A row quarantined malformed (its record's
    `mfx_code`, whatever code it arrived with) stays so, for the reason it was: what is stored
    of it is what could be read, not the row (a CSV row of 7 fields for 6 columns, its value
    cut at an unquoted comma, was validated from its first 6 and sent with the part before
    the comma; a JSON Lines line that is not JSON came back as a row with no meter, under an
    identifier made up for it)."""
    row = entry.record
    record = record_from_obj(
        number, {key: value for key, value in row.items() if not key.startswith(MFX_PREFIX)}
    )
    record.error_message = None
    if ErrorCode.MALFORMED_ROW in (entry.code, row.get(QUARANTINE_CODE)):
        record.malformed = entry.reason or "malformed row"
        record.error_code = None if entry.code == ErrorCode.MALFORMED_ROW else entry.code or None
        return record
    if "identifier" not in record.extra:  # not an object or list kept as it came
        record.identifier = entry.identifier
    record.error_code = None if entry.code in CHECKED_BY_VALIDATION else entry.code or None
    return record


def _text(value: object) -> str | None:
    return None if value is None else str(value)
