"""The marks on quarantined rows their object sent again since (`taken_again`): a later
version of the object took them (the poller's index and import modes), or Stripe refused them
again from it (`mark_refused_again`); and the look-ups of which identifiers runs still hold,
or hold marked, and when they were quarantined. Apart from the quarantined rows' lists
(`quarantine.py`): the poller, the runs over an object and the re-runs mark and read these."""

from __future__ import annotations

from collections.abc import Callable, Collection, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from itertools import islice
from typing import Any

from sqlalchemy import ColumnElement, Connection, Engine, Row, select, update

from service.db.statements import in_listed
from service.jobs.store.quarantine import ID_BATCH, QUARANTINE
from service.jobs.store.usage_stamps import sent_as_held
from service.models._types import as_utc


def held_anywhere(engine: Engine, identifiers: Sequence[str]) -> set[str]:
    """Which of `identifiers` any run holds in quarantine: not taken by a re-run, not marked
    taken again (`mark_taken_again`); one query by the quarantined rows' identifier index."""
    if not identifiers:
        return set()
    query = select(QUARANTINE.c.identifier).where(*_held(engine, None, identifiers)).distinct()
    with engine.connect() as connection:
        return {str(row.identifier) for row in connection.execute(query)}


def marked_among(engine: Engine, run_ids: Sequence[int], identifiers: Sequence[str]) -> set[str]:
    """Which of `identifiers` these runs quarantined and a later object version sent again
    since (marked `taken_again`)."""
    return _identifiers_where(engine, run_ids, identifiers, _marked)


def marked_anywhere(engine: Engine, identifiers: Sequence[str]) -> set[str]:
    """Which of `identifiers` any run quarantined and a later object version (of its object
    or another) sent again since (marked `taken_again`); by the identifier index."""
    if not identifiers:
        return set()
    query = (
        select(QUARANTINE.c.identifier)
        .where(
            QUARANTINE.c.taken_again.is_not(None),
            in_listed(QUARANTINE.c.identifier, identifiers, engine),
        )
        .distinct()
    )
    with engine.connect() as connection:
        return {str(row.identifier) for row in connection.execute(query)}


def quarantine_times(
    engine: Engine, run_ids: Sequence[int], identifiers: Sequence[str]
) -> list[tuple[str, int, datetime]]:
    """(identifier, run id, when quarantined) of the rows these runs quarantined under one of
    `identifiers` (held, taken by a re-run, or marked taken again since)."""
    if not run_ids or not identifiers:
        return []
    query = select(QUARANTINE.c.identifier, QUARANTINE.c.run_id, QUARANTINE.c.created_at).where(
        QUARANTINE.c.run_id.in_(list(run_ids)),
        in_listed(QUARANTINE.c.identifier, identifiers, engine),
    )
    with engine.connect() as connection:
        rows = connection.execute(query).all()
    return [
        (str(row.identifier), int(row.run_id), as_utc(row.created_at) or datetime.now(UTC))
        for row in rows
    ]


def _identifiers_where(
    engine: Engine,
    run_ids: Sequence[int],
    identifiers: Sequence[str],
    conditions: Callable[[Engine, Sequence[int], Sequence[str]], list[ColumnElement[bool]]],
) -> set[str]:
    if not run_ids or not identifiers:
        return set()
    where = conditions(engine, run_ids, identifiers)
    query = select(QUARANTINE.c.identifier).where(*where).distinct()
    with engine.connect() as connection:
        return {str(row.identifier) for row in connection.execute(query)}


def _marked(
    engine: Engine, run_ids: Sequence[int], identifiers: Sequence[str]
) -> list[ColumnElement[bool]]:
    """Rows these runs quarantined under one of `identifiers`, marked taken again."""
    return [
        QUARANTINE.c.run_id.in_(list(run_ids)),
        QUARANTINE.c.taken_again.is_not(None),
        in_listed(QUARANTINE.c.identifier, identifiers, engine),
    ]


def _held(
    engine: Engine, run_ids: Sequence[int] | None, identifiers: Sequence[str]
) -> list[ColumnElement[bool]]:
    """Rows these runs (None: any run) hold in quarantine under one of `identifiers`: not
    taken by a re-run, not marked taken again (by run id and identifier: indexed)."""
    held = [
        QUARANTINE.c.rerun_id.is_(None),
        QUARANTINE.c.taken_again.is_(None),
        in_listed(QUARANTINE.c.identifier, identifiers, engine),
    ]
    return held if run_ids is None else [QUARANTINE.c.run_id.in_(list(run_ids)), *held]


def mark_taken_again(
    engine: Engine,
    run_ids: Sequence[int] | None,
    identifiers: Sequence[str],
    version: str,
    uploaded: datetime,
    then: Marked | None = None,
    seconds: Mapping[str, Collection[int | None]] | None = None,
    own_runs: Collection[int] = (),
    first_held: Collection[str] = (),
) -> int:
    """The rows these runs (None: any run, by the identifier index) hold in quarantine
    (`_held`) under one of `identifiers`, quarantined before `uploaded`, were sent again from
    the object version `version` at that moment (index mode: uploaded then, Stripe's
    connector takes it whole; import mode: the poller's batch of them acknowledged then):
    marked with it. With `seconds` (identifier -> the timestamps its rows were sent at), only
    the rows of the same usage (`sent_as_held`: the same second; an identifier may be used
    again days later for other usage, which leaves the older row waiting). Rows quarantined
    after it are that version's own failures (`then`: as `mark_rows_taken_again`). `own_runs`,
    `first_held`: the runs over the version's own object (not re-runs: they read no version)
    and the identifiers this version is the first of its object to hold: such a row counts
    only when quarantined before the second the version was uploaded in (one quarantined
    within that second may be the version's own failure, Stripe's connector and meterfix
    being quick: marked, it was never billed; a later version of the object, one that
    changed the row, keeps the second's grace). How many."""
    if (run_ids is not None and not run_ids) or not identifiers:
        return 0
    query = select(
        QUARANTINE.c.id,
        QUARANTINE.c.run_id,
        QUARANTINE.c.created_at,
        QUARANTINE.c.identifier,
        QUARANTINE.c.code,
        QUARANTINE.c.record,
    ).where(*_held(engine, run_ids, identifiers))
    # S3 keeps whole seconds (rounded down): a row quarantined within the second the version
    # was uploaded in was quarantined before it (a version's own failures come far later)
    bound = uploaded + timedelta(seconds=1)
    own, first = set(own_runs), set(first_held)
    with engine.begin() as connection:
        rows = connection.execute(query).all()
        ids = [
            int(row.id)
            for row in rows
            if (as_utc(row.created_at) or bound)
            < (uploaded if row.run_id in own and row.identifier in first else bound)
            and (
                seconds is None
                or any(
                    sent_as_held(row.code, row.record, second)
                    for second in seconds.get(str(row.identifier), ())
                )
            )
        ]
    mark_rows_taken_again(engine, ids, version, then)
    return len(ids)


def mark_refused_again(
    engine: Engine,
    run_ids: Sequence[int],
    identifiers: Sequence[str],
    version: str,
    before: datetime,
    earlier: Collection[int] = frozenset(),
    then: Marked | None = None,
) -> int:
    """Stripe refused again, from a later version of their object (`version`, refused at
    `before`), rows these runs (an object's runs and the re-runs that took their rows,
    `runs_correcting`) quarantined before then: the connector takes every version whole, so
    each is a new refusal, which the later version's run remediates. `earlier`: runs among
    them that took Stripe's refusals of an earlier version (an import set whose event, a
    report whose window, came before `before`): their rows count whenever they were
    quarantined (a worker's backlog may have run them after it). Marked taken again: the
    rows held (`_held`), and the entries of them a re-run took and quarantined again, down
    the chain to a held one (so no run over the object counts them as handled). A row a
    re-run corrected or sent is not marked: it was billed (`then`: as `mark_rows_taken_again`).
    How many rows were held."""
    if not run_ids or not identifiers:
        return 0
    rows = _entries_refused_again(engine, run_ids, identifiers, before, earlier)
    held = {(int(row.run_id), str(row.identifier)) for row in rows if row.rerun_id is None}
    marked = _up_the_chain(held, [row for row in rows if row.rerun_id is not None])
    ids = [int(row.id) for row in rows if (int(row.run_id), str(row.identifier)) in marked]
    mark_rows_taken_again(engine, ids, version, then)
    return len(held)


def _entries_refused_again(
    engine: Engine,
    run_ids: Sequence[int],
    identifiers: Sequence[str],
    before: datetime,
    earlier: Collection[int],
) -> list[Row[Any]]:
    """The entries these runs quarantined under one of `identifiers`, not marked taken again,
    that a refusal at `before` counts (`mark_refused_again`): quarantined before it, or by
    one of the `earlier` runs."""
    query = select(
        QUARANTINE.c.id,
        QUARANTINE.c.run_id,
        QUARANTINE.c.rerun_id,
        QUARANTINE.c.identifier,
        QUARANTINE.c.created_at,
    ).where(
        QUARANTINE.c.run_id.in_(list(run_ids)),
        QUARANTINE.c.taken_again.is_(None),
        in_listed(QUARANTINE.c.identifier, identifiers, engine),
    )
    with engine.connect() as connection:
        return [
            row
            for row in connection.execute(query).all()
            if int(row.run_id) in earlier or (as_utc(row.created_at) or before) < before
        ]


def _up_the_chain(held: set[tuple[int, str]], taken: list[Row[Any]]) -> set[tuple[int, str]]:
    """(run id, identifier) of the `held` entries and of the entries a re-run took (`taken`)
    and quarantined again, down the chain to a held one."""
    marked = set(held)
    while True:  # up the chain: an entry whose re-run quarantined it again, and so on
        more = {
            (int(row.run_id), str(row.identifier))
            for row in taken
            if (int(row.rerun_id), str(row.identifier)) in marked
        }
        if more <= marked:
            break
        marked |= more
    return marked


# What a caller does with the rows just marked, in the transaction that marks them (the
# alerts of their runs: `service.notify.runs.settle_alerts_of_rows`, or, marking batch after
# batch, `RunAlertsToSettle.note`, which notes their runs to settle once at the end).
Marked = Callable[[Connection, Sequence[int]], None]


def mark_rows_taken_again(
    engine: Engine, ids: Sequence[int], version: str, then: Marked | None = None
) -> None:
    """These rows were taken again from the object version `version` (Stripe's connector
    took a version written after they were quarantined that holds them): marked with it,
    and `then` given them in the same transaction."""
    with engine.begin() as connection:
        chunks = iter(ids)
        while chunk := list(islice(chunks, ID_BATCH)):
            connection.execute(
                update(QUARANTINE).where(QUARANTINE.c.id.in_(chunk)).values(taken_again=version)
            )
        if then is not None and ids:
            then(connection, ids)
