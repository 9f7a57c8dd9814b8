"""How a remediation task's file is run: the run of a file of rejected rows (its lineage
looked up first), read with the whole-file repairs applied, without the rows it leaves out
(sent since from another version; those taken again by Stripe's connector: `later_rows`).
Apart from `remediation.py`, which says which file each task runs and which rows it leaves out.
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable, Iterator, Sequence
from itertools import islice
from pathlib import Path

import numpy as np
import numpy.typing as npt
import pyarrow as pa
from sqlalchemy import Engine

from remediation.codes import ErrorCode
from remediation.core.sameids import TakenElsewhere
from remediation.errors import UnreadableFile
from remediation.filetypes import FileFormat
from remediation.limits import shown
from remediation.lineage import HeldLookup, ObjectLineage, may_hold
from remediation.ports import Bucket, LeavesOut
from remediation.readers import CsvRecords
from remediation.records import UsageRecord
from remediation.repair import plan_input, read_repaired
from remediation.rowdigest import text_digests
from remediation.rules import Rules
from service.errors import TaskInputMissing
from service.jobs.input_lineage import run_lineage
from service.jobs.inputs import JobDeps, candidate_keys, identifiers_in, local_name
from service.jobs.run_context import RunContext, RunRequest
from service.jobs.runs import execute_run
from service.jobs.stages import Stage, Stages
from service.jobs.store.lineage import refused_among, runs_correcting
from service.jobs.store.reports import import_set
from service.models import RunTrigger
from service.poller.store import (
    lookup_batches,
    recordable,
    row_numbers,
    sending_keys,
    sent_by_version,
    sent_moments,
    source_row_numbers,
)


def rejected_rows(
    deps: JobDeps,
    stages: Stages,
    path: Path,
    *,
    run_key: str,
    trigger: RunTrigger,
    source: str,
    tag: str,
    now: int,
    origin: ObjectLineage,
    generation: int | None = None,
) -> RunRequest:
    """The run of a CSV file holding rejected rows only (each row goes to a corrected output
    or to quarantine), with its lineage looked up (timed as the lineage stage). `origin`:
    what the source object's metadata says (`source_lineage`); the run's generation is the
    object's + 1 (or `generation`, a crashed try's), raised above any that lineage says wrote
    one of the file's identifiers (`run_lineage`). A failed-records file holds only the rows
    of its object that were refused: a derived identifier must not equal the identifier of
    one of the object's other rows either (`_source_rows`)."""
    elsewhere = _source_rows(deps, trigger, source, tag)
    with stages.timing(Stage.LINEAGE):
        generation, lineage, traced_from = run_lineage(
            deps.run.engine,
            path,
            deps.run.rules,
            source,
            generation or origin.generation + 1,
            origin.derived,
            elsewhere,
        )
    return RunRequest(
        run_key=run_key,
        trigger=trigger,
        source=source,
        tag=tag,
        fmt=FileFormat.CSV,
        now=now,
        generation=generation,
        lineage=lineage,
        input_generation=traced_from,
        rejected=True,
        stages=stages,
    )


def _source_rows(deps: JobDeps, trigger: RunTrigger, source: str, tag: str) -> HeldLookup | None:
    """Where the identifiers of the other rows of a failed-records file's object are found:
    the poller's (its object `source`) in what it recorded, and Stripe's (of the import set
    `tag`) in the object the import set names (`ObjectIdentifiers`). None: the input is
    the whole object (a file that failed whole)."""
    if trigger is RunTrigger.POLLER:
        return recorded_of(deps.run.engine, source)
    if trigger is RunTrigger.IMPORT_SET_SUCCEEDED:
        named = import_set(deps.run.engine, tag)
        key = named.source_object if named is not None else None
        return ObjectIdentifiers(deps.run.bucket, key, deps.run.rules) if key else None
    return None


class ObjectIdentifiers:
    """Which of some derived identifiers (each ending in the run's `-mfx<generation>`) the
    object `key` holds: read from the bucket once, when first asked, and only when its bytes
    hold that suffix (`may_hold`: an object without it costs a download and a scan). The
    object as it is now: a version uploaded since the one Stripe took goes out whole by its
    connector too (`later_rows.TakenAgain`)."""

    def __init__(self, bucket: Bucket, key: str, rules: Rules) -> None:
        self.bucket, self.key, self.rules = bucket, key, rules
        self.held: set[str] | None = None

    def __call__(self, identifiers: list[str]) -> set[str]:
        if not identifiers:
            return set()
        if self.held is None:
            first = identifiers[0]
            self.held = self._read(first[first.rindex("-mfx") :])
        return self.held.intersection(identifiers)

    def _read(self, suffix: str) -> set[str]:
        key = next((k for k in candidate_keys(self.bucket, self.key) if self.bucket.head(k)), None)
        if key is None:
            return set()  # gone: nothing of it is held against the run
        with tempfile.TemporaryDirectory(prefix="meterfix-src-") as tmp:
            path = Path(tmp) / local_name(key)
            self.bucket.download(key, path)
            if not may_hold(path, suffix.encode()):
                return set()
            return {i for i in identifiers_in(path, self.rules) if i.endswith(suffix)}


def stripe_took(ctx: RunContext, tag: str, path: Path) -> TakenElsewhere | None:
    """The identifiers of the failed-records file `path` that Stripe took an event under from
    another row of the object the import set `tag` names: more rows of the object hold one
    than of the file, so a row of the object under it was not refused (the object's `k1` in
    milliseconds refused, its `k1` valid billed: corrected to `k1-mfx1`, the refused row was
    billed a second time). As 64-bit digests (a collision only quarantines a row): 8 bytes a
    row of the file, the object read a block at a time. None: none, or the object is gone."""
    named = import_set(ctx.engine, tag)
    key = named.source_object if named is not None else None
    found = next((k for k in candidate_keys(ctx.bucket, key) if ctx.bucket.head(k)), None)
    if found is None:
        return None
    in_file = np.concatenate([np.zeros(0, np.uint64), *_identifier_digests(path, ctx.rules)])
    if not len(in_file):
        return None
    digests, refused = np.unique(in_file, return_counts=True)
    del in_file
    held = np.zeros(len(digests), np.int64)
    with tempfile.TemporaryDirectory(prefix="meterfix-src-") as tmp:
        copy = Path(tmp) / local_name(found)
        ctx.bucket.download(found, copy)
        for chunk in _identifier_digests(copy, ctx.rules):
            at = np.minimum(np.searchsorted(digests, chunk), len(digests) - 1)
            np.add.at(held, at[digests[at] == chunk], 1)
    took = digests[held > refused]
    return TakenElsewhere(took, found) if len(took) else None


def _identifier_digests(path: Path, rules: Rules) -> Iterator[npt.NDArray[np.uint64]]:
    """The digests of the identifiers of the rows of a usage file that have one, a block of
    rows at a time (none when it cannot be read, as `inputs.identifiers_in`)."""
    try:
        plan = plan_input(path, rules)
        with path.open("rb") as stream:
            records = read_repaired(stream, plan, rules)
            if isinstance(records, CsvRecords):
                blocks: Iterator[list[str]] = (cells for _, cells in records.identifier_blocks())
            else:
                blocks = (
                    [r.identifier or "" for r in chunk]
                    for chunk in iter(lambda: list(islice(records, _DIGEST_ROWS)), [])
                )
            for cells in blocks:
                named = [cell for cell in cells if cell]
                if named:
                    yield text_digests(pa.array(named, pa.string()))
    except UnreadableFile:
        return


_DIGEST_ROWS = 65_536


def recorded_of(engine: Engine, key: str) -> Callable[[list[str]], set[str]]:
    """Which of some identifiers the poller recorded a row of the object `key` with (any
    version of it: each row's identifier is recorded, sent or refused)."""

    def held(identifiers: list[str]) -> set[str]:
        asked = {identifier for identifier in identifiers if recordable(identifier)}
        return set(row_numbers(engine, key, asked)) if asked else set()

    return held


RecordsTransform = Callable[[Iterator[UsageRecord]], Iterator[UsageRecord]]


def run_file(
    ctx: RunContext,
    request: RunRequest,
    path: Path,
    transform: RecordsTransform | None = None,
    allow_none: Callable[[], bool] = lambda: False,
    leave_out: Sequence[LeavesOut] = (),
) -> None:
    """Read `path` with the whole-file repairs applied and run it. A file with no rows at
    all is a failure a person must look at (Stripe said rows failed), unless `transform` or
    `leave_out` (rows left out by identifier, on the run's columns) left them all out for a
    reason of its own (`allow_none()`, asked after the run)."""
    plan = plan_input(path, ctx.rules)
    run = RunRequest(
        **{
            **request.__dict__,
            "fmt": plan.fmt,
            "columns": plan.columns or None,
            "plan": plan,
        }
    )
    if request.trigger is RunTrigger.IMPORT_SET_SUCCEEDED:  # a failed-records file
        took = stripe_took(ctx, request.tag, path)
        leave_out = [*leave_out, took] if took is not None else leave_out
    with path.open("rb") as stream:
        records = read_repaired(stream, plan, ctx.rules)
        done = execute_run(ctx, run, transform(records) if transform else records, leave_out)
    if done.input_rows == 0 and not allow_none():
        raise TaskInputMissing(f"{request.source} has no usage rows to remediate")


class SourceRows:
    """The rows the poller refused, each with its row number in the source object (the
    poller recorded every row's identifier, so the audit points at the object's own rows),
    without the rows a version of some object sent since (`sent`: how many): the customer
    fixed the row and uploaded the file again while this task waited. Such a row was billed
    as it is; corrected, it would go out a second time under a derived identifier. Unless
    a run over an object that sent it, or one of the runs `refused_by` (an error report's, a
    re-run's), quarantined it after that send: Stripe refused it, never billed (as the
    poller's `OtherVersions` tells, `_refusing`). A row
    whose identifier the version it came from sent from another of its rows (`etag`: `k1`
    valid beside `k1` in milliseconds) was not sent since: Stripe took `k1` from that row,
    so this one is handed on under `identifier_taken` (`_taken_here`), quarantined, where it
    was left out as sent and seen by nobody. One its version sent in a batch never
    acknowledged is handed on whoever else sent it (`_sent_elsewhere`)."""

    def __init__(
        self,
        engine: Engine,
        key: str | None,
        etag: str | None = None,
        failed: Path | None = None,
    ) -> None:
        """`key`: the object whose row numbers the records take (None: they keep theirs,
        read from the object itself); `etag`: the version of it the rows came from;
        `failed`: the poller's failed-records file they are read from, whose rows' numbers
        in the object the poller wrote beside it (`poller.store.source_row_numbers`)."""
        self.engine, self.key, self.sent = engine, key, 0
        self.etag, self.failed = etag, failed
        self.refused_by: list[int] = []
        self._sender_runs: dict[str, list[int]] = {}  # key -> runs_correcting(key)

    def _sent(self, identifiers: set[str]) -> set[str]:
        sent = sent_moments(self.engine, identifiers)
        if not sent:
            return set()
        held = refused_among(self.engine, self._refusing(set(sent)), sorted(sent))
        return {i for i, at in sent.items() if i not in held or held[i] <= at}

    def _refusing(self, sent: set[str]) -> list[int]:
        """The runs that may hold rows `sent` in quarantine as Stripe refused them: `refused_by`
        and the runs over the objects that sent them (each key's read once). Without these, a
        row Stripe refused from `day.csv`, fixed by hand (in `day.csv` rewritten in place, or
        in a copy) but failing our checks (a timestamp in milliseconds), was left out of the
        poller's failed-records run as sent since: neither billed nor held."""
        for key in sending_keys(self.engine, sent) - self._sender_runs.keys():
            self._sender_runs[key] = runs_correcting(self.engine, key)
        runs = set(self.refused_by)
        for found in self._sender_runs.values():
            runs.update(found)
        return sorted(runs)

    # `remediation.ports.LeavesOut`, for rows that keep their own numbers (`key` None)
    excluded = _sent

    def count_left(self, rows: int) -> None:
        self.sent += rows

    def __call__(self, records: Iterator[UsageRecord]) -> Iterator[UsageRecord]:
        own = None
        if self.key is not None and self.failed is not None:
            own = source_row_numbers(self.failed)
        for batch, identifiers in lookup_batches(records):
            numbers = self._recorded_numbers(identifiers) if own is None else {}
            sent = self._sent(identifiers)
            here = self._sent_here(sent)
            for record in batch:
                if _sent_elsewhere(record, sent, here):
                    self.sent += 1
                    continue
                record.row_number = _in_object(record, own, numbers)
                yield _taken_here(record, str(self.key), here) if here else record

    def _recorded_numbers(self, identifiers: set[str]) -> dict[str, int]:
        """identifier -> the row number the poller recorded it at in the object (one row an
        identifier), for a failed-records file written without its rows' numbers."""
        return {} if self.key is None else row_numbers(self.engine, self.key, identifiers)

    def _sent_here(self, sent: set[str]) -> dict[str, int]:
        """Of the identifiers `sent`, those the rows' own version sent: identifier -> row."""
        if self.key is None or self.etag is None or not sent:
            return {}
        return sent_by_version(self.engine, self.key, self.etag, sent)


def _sent_elsewhere(record: UsageRecord, sent: set[str], here: dict[str, int]) -> bool:
    """Whether a refused row is left out as sent by a version other than its own. Not one its
    own version sent in a batch Stripe never acknowledged (`sent_without_answer`, that send
    no longer recorded): the poller sent it only as the other sends did not count (never
    acknowledged, or refused: `OtherVersions`), and its quarantine sends nothing. Left out,
    the rows of the day's file rewritten in place that a failed batch of the earlier version
    held, sent again and failing our checks after, were neither billed for sure nor held."""
    if record.identifier not in sent or record.identifier in here:
        return False
    return record.error_code != ErrorCode.SENT_WITHOUT_ANSWER.value


def _in_object(
    record: UsageRecord, own: npt.NDArray[np.int64] | None, recorded: dict[str, int]
) -> int:
    """The row number in the object of a row of the poller's failed-records file (its own
    number there: its place in that file): the one written beside the file, else the one
    recorded for its identifier, else its own."""
    if own is not None and 0 < record.row_number <= len(own):
        return int(own[record.row_number - 1])
    return recorded.get(record.identifier or "", record.row_number)


def _taken_here(record: UsageRecord, key: str, here: dict[str, int]) -> UsageRecord:
    """A refused row, as remediation gets it: when its version sent its identifier from
    another row (`here`: identifier -> that row), under `identifier_taken`
    (`codes.NEVER_RESENT`: quarantined, never corrected nor sent by a re-run; it may be a
    duplicate of the billed row), its own problem kept in the reason, its own row number
    (`_in_object`) beside the sent row's."""
    row = here.get(record.identifier or "")
    if row is None:
        return record
    problem = f"{record.error_code}: {record.error_message}" if record.error_code else "refused"
    record.error_message = (
        f"identifier {shown(record.identifier)} is also row {row} of {shown(key)}, which the "
        "poller sent: Stripe took one event under it, a second would be billed twice; not "
        f"sent (this row failed our checks: {problem})"
    )
    record.error_code = ErrorCode.IDENTIFIER_TAKEN.value
    return record
