"""A remediation task's input's lineage: the generation its corrected rows get, which of
its identifiers we wrote, from which original, corrected for which code. Apart from
`inputs.py` (where the input comes from): this asks the correction audit and the object's
metadata.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from functools import partial
from itertools import chain
from pathlib import Path
from typing import NamedTuple, TypeVar

from sqlalchemy import Engine

from remediation.errors import UnreadableFile
from remediation.filetypes import FileFormat
from remediation.identifiers import Lineage, row_identifier
from remediation.lineage import (
    HeldLookup,
    ObjectLineage,
    Parent,
    input_lineage,
    object_lineage,
    run_generation,
    trace_ancestors,
)
from remediation.ports import Bucket
from remediation.readers import CsvRecords
from remediation.records import UsageRecord
from remediation.repair import InputPlan, plan_input, read_repaired
from remediation.rules import Rules
from service.jobs.inputs import candidate_keys
from service.jobs.store.lineage import corrections_writing

NEW_IDENTIFIER_WIDTH = 512  # correction_audit.new_identifier
# Identifiers per look-up query (one array parameter on PostgreSQL, a list under SQLite's
# 32,766 parameters): 1,000,000 identifiers took 2,000 queries of 500, 11 s on PostgreSQL.
LOOKUP_BATCH = 10_000

T = TypeVar("T")
RecordsTo = Callable[[Iterator[UsageRecord]], Iterator[T]]


def source_lineage(bucket: Bucket, key: str | None) -> ObjectLineage:
    """What the source object's metadata says of its rows (generation 0: not ours)."""
    for candidate in candidate_keys(bucket, key):
        info = bucket.head(candidate)
        if info is not None:
            return object_lineage(info.metadata)
    return ObjectLineage(0, False)


class RunLineage(NamedTuple):
    """The generation a run writes and its input's lineage, decided before it writes, and
    the generation that lineage traced the input from (the object's: `traced_from`)."""

    generation: int
    lineage: Lineage
    traced_from: int


def run_lineage(
    engine: Engine,
    path: Path,
    rules: Rules,
    source: str,
    generation: int,
    derived: bool = True,
    elsewhere: HeldLookup | None = None,
) -> RunLineage:
    """The lineage of the input at `path`, rows of `source` (`generation`: the source
    object's generation + 1, `source_lineage`): the identifiers of ours in it (from the
    correction audit, and from the object's metadata), the generation the run writes (above
    every generation that wrote one of them: `run_generation`), and the originals a derived
    identifier of that generation must not equal. `derived`: whether the object's rows carry
    identifiers its run derived (`ObjectLineage.derived`; without, only the audit traces
    one back). `elsewhere`: which identifiers the other rows of `source` hold, for an input
    holding some of its rows only (`input_lineage`)."""

    try:
        plan = plan_input(path, rules)
    except UnreadableFile:
        # the run itself reads the file again and says what is wrong with it
        return RunLineage(generation, Lineage(), generation - 1)
    identifiers = _input_identifiers(path, plan, rules)
    # traced from the object's own generation (the suffix it appended), not the run's
    traced_from = generation - 1 if derived else 0
    ancestors = trace_ancestors(
        identifiers, traced_from, lambda batch: parents(engine, batch), LOOKUP_BATCH
    )
    generation = run_generation(generation, ancestors)
    escapes = plan.fmt is not FileFormat.CSV
    rows = partial(_input_rows, path, plan, rules)
    lineage = input_lineage(path, rows, source, generation, ancestors, escapes, elsewhere)
    return RunLineage(generation, lineage, traced_from)


def _input_rows(path: Path, plan: InputPlan, rules: Rules) -> Iterator[tuple[str | None, int]]:
    """(identifier, row number) of every row of the input (`run_lineage`'s)."""
    return _read_input(
        path,
        plan,
        rules,
        CsvRecords.identifiers,
        lambda rs: ((r.identifier, r.row_number) for r in rs),
    )


def _input_identifiers(path: Path, plan: InputPlan, rules: Rules) -> Iterator[str]:
    """The input's identifiers (none for a row without one); of a CSV, a block's cells at a
    time (1M rows: a pair made and unpacked per row was most of the stage)."""
    return _read_input(
        path,
        plan,
        rules,
        lambda r: chain.from_iterable(filter(None, cells) for _, cells in r.identifier_blocks()),
        lambda rs: (r.identifier for r in rs if r.identifier),
    )


def _read_input(
    path: Path,
    plan: InputPlan,
    rules: Rules,
    of_csv: Callable[[CsvRecords], Iterator[T]],
    of_records: RecordsTo[T],
) -> Iterator[T]:
    """What `of_csv` takes out of a CSV (its identifier column alone, as columns), or
    `of_records` out of any other input's records."""
    try:
        with path.open("rb") as stream:
            records = read_repaired(stream, plan, rules)
            if isinstance(records, CsvRecords):
                yield from of_csv(records)
            else:
                yield from of_records(records)
    except UnreadableFile:
        return  # as above (`run_lineage`)


def _storable_ones(identifiers: list[str]) -> list[str]:
    """The identifiers a correction of ours could have written (`_storable`): all of them
    when, joined, they are ASCII without NUL and none is too wide (tested at once, not one by
    one: 1M identifiers a run)."""
    joined = "".join(identifiers)
    plain = joined.isascii() and "\x00" not in joined
    if plain and max(map(len, identifiers), default=0) <= NEW_IDENTIFIER_WIDTH:
        return identifiers
    return [identifier for identifier in identifiers if _storable(identifier)]


def _storable(identifier: str) -> bool:
    """Whether a correction of ours could have written `identifier`. Not one wider than the
    column, holding NUL (PostgreSQL refuses it in a query parameter) or a lone surrogate (a
    JSON input may spell one; neither database stores it): such rows are not ours, and asking
    would fail the task."""
    if len(identifier) > NEW_IDENTIFIER_WIDTH or "\x00" in identifier:
        return False
    if identifier.isascii():
        return True
    try:
        identifier.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def parents(engine: Engine, identifiers: list[str]) -> dict[str, Parent]:
    """identifier -> the correction of ours that wrote it (the first one recorded)."""
    identifiers = _storable_ones(identifiers)
    if not identifiers:
        return {}
    found: dict[str, Parent] = {}
    for audit, generation in corrections_writing(engine, identifiers):
        new = audit.new_identifier
        if new and new not in found:
            original = audit.identifier or row_identifier(audit.source, audit.row_number)
            found[new] = Parent(original, audit.code, generation)
    return found
