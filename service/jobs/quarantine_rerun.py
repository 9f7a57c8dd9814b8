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

The rows it takes are picked in `rerun_pick.py` and read back in `rerun_records.py`; its run
keys are made in `rerun_keys.py`.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from functools import partial

from sqlalchemy import Connection, Engine

from remediation.filetypes import FileFormat
from service.db.locks import HeldLock, session_lock
from service.jobs.rerun_keys import rerun_key, rerun_source, rerun_tag
from service.jobs.rerun_pick import pick_rows
from service.jobs.rerun_records import rerun_lineage, stored_records
from service.jobs.run_context import RunContext, RunRequest
from service.jobs.runs import execute_run
from service.jobs.store.rerun_queue import rerun_queued_at
from service.jobs.store.rerun_takes import mark_rerun_in
from service.jobs.store.runs import unfinished_run
from service.models import RemediationRun, RunTrigger
from service.notify.runs import settle_alerts_of_rows


def rerun_quarantine(ctx: RunContext, action_ref: str) -> str:
    with ExitStack() as held:
        with ctx.waiting_turn():  # the wait for the re-run before is not this one's time
            lock = held.enter_context(_one_at_a_time(ctx.engine))
        # its runs upload and commit nothing, nor mark rows taken, once the lock is lost
        return _rerun_quarantine(ctx.holding(lock), action_ref)


RERUN_LOCK_KEY = 0x6D66785F72657275  # "mfx_reru": the seed of the re-runs' advisory-lock id


@contextmanager
def _one_at_a_time(engine: Engine) -> Iterator[HeldLock]:
    """One re-run at a time: a re-run picks its rows, runs them and only then marks them
    taken (a task run again after a crash runs what is left), so two re-runs at once (two
    clicks, two workers) picked the same rows and wrote both to corrected objects, each run
    counting them. On PostgreSQL an advisory lock held for the task, waited for; SQLite has
    one worker process, which runs one task at a time. Lost (its connection dropped: another
    re-run may take it), the re-run stops before its next upload or commit (`LockLost`), and
    its runs mark their rows taken in the transaction that records them done: a next re-run
    never picks rows a done run took."""
    with session_lock(engine, RERUN_LOCK_KEY, wait=True) as lock:
        yield lock


def _rerun_quarantine(ctx: RunContext, action_ref: str) -> str:
    picked, billed = pick_rows(ctx, action_ref)
    with ctx.engine.connect() as connection:
        queued = rerun_queued_at(connection, int(action_ref)) if action_ref.isdigit() else None
    # the reference time: the operator's decision, the same when the task is run again after
    # a crash (the clock made a redo judge rows, and write its outputs, otherwise)
    now = int(queued.timestamp()) if queued is not None else int(time.time())
    left = (
        f"; {billed} left quarantined: billed as they are since, from a later version of "
        "their file or a copy (the poller sent their identifiers, Stripe's connector took "
        "them again, or another run sent them under a derived identifier or quarantined them "
        "again: that entry is the one to re-run)"
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
    `rerun_lineage`), and their lineage is traced as their runs traced it."""
    # keyed by the quarantining runs' generations: one run per group, whatever it writes
    run_key = rerun_key(action_ref, generation, traced_from)
    crashed = unfinished_run(ctx.engine, run_key)  # its outputs' keys stay those it had
    source = rerun_source(action_ref, crashed.source if crashed is not None else None)
    written, lineage, _ = rerun_lineage(ctx.engine, ids, traced_from, generation, source)
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
    records = stored_records(ctx.engine, ids, ctx.rules, ctx.meters)
    run = execute_run(ctx, request, records, finishing=partial(_mark_taken, ids))
    assert run.id is not None
    with ctx.engine.begin() as connection:  # a run done by a try before, unmarked
        ctx.fence(connection)  # the re-run's lock held still
        _mark_taken(ids, connection, run.id)
    return run


def _mark_taken(ids: list[int], connection: Connection, run_id: int) -> None:
    """The rows taken by the run being recorded done (in its transaction), and the alerts of
    the runs that quarantined them told (resolved once none of their rows waits)."""
    mark_rerun_in(connection, ids, run_id)
    settle_alerts_of_rows(connection, ids)
