"""The correction rounds of a batch's rows that fail (`Rounds`): each round hands the rows
failing with one code to that code's rule, then validates what it returned; the changes made,
merged per rule and field. Apart from `decide`, which classifies the rows and starts the rounds.
"""

from __future__ import annotations

import numpy as np

from remediation.changes import Context
from remediation.codes import ErrorCode
from remediation.core.checks import CODES, CodeIds, Codes, first_field_problems, problem_ids
from remediation.core.column import Mask, concat_columns
from remediation.core.columns import Batch, Indexes
from remediation.core.decided import CORRECTED, VALID, Decided
from remediation.core.rules import RULES, Changes
from remediation.core.rules.base import replace_rows

MAX_ROUNDS = 4
CODE_BITS = {code: 1 << at for at, code in enumerate(RULES)}


class Rounds:
    """The correction rounds of the rows `work` of a batch."""

    def __init__(
        self,
        ctx: Context,
        batch: Batch,
        work: Indexes,
        codes: CodeIds,
        decided: Decided,
        validated: Mask,
    ) -> None:
        self.ctx, self.rows, self.decided = ctx, work, decided
        # validated rows (and rows no field limit suspects) are within the field limits, or
        # their code says they are not
        self.validated = validated.copy()
        self.work = batch if len(work) == len(batch) else batch.take(work)
        self.current = codes  # code ids (`checks.CODES`) each row fails with
        self.seen = np.zeros(len(work), np.int64)  # bit `CODE_BITS[code]`: tried for `code`
        self.changes: list[Changes] = []
        self.failed = np.zeros(len(work), bool)

    def run(self) -> None:
        active = np.arange(len(self.rows), dtype=np.int64)
        for _ in range(MAX_ROUNDS):
            if not len(active):
                break
            tried = self._round(active)
            active = self._validate(tried)
        for i in active.tolist():
            self._fail(i, str(CODES[self.current[i]]), "too many problems in one row")
        self._finish()

    def _round(self, active: Indexes) -> Indexes:
        """Each code's rule over its rows; the rows that went through a rule unharmed."""
        tried = []
        current = self.current[active]
        for code_id in sorted(np.unique(current).tolist(), key=lambda at: str(CODES[at])):
            code = str(CODES[code_id])
            rows = active[current == code_id]
            bit = CODE_BITS.get(code, 0)
            fresh = (self.seen[rows] & bit) == 0 if bit else np.zeros(len(rows), bool)
            for i in rows[~fresh].tolist():
                self._fail(i, code, f"{code}: still failing after correction")
            rows = rows[fresh]
            self.seen[rows] |= bit
            tried.append(self._apply(code, rows))
        return np.concatenate(tried) if tried else np.zeros(0, np.int64)

    def _apply(self, code: str, rows: Indexes) -> Indexes:
        if not len(rows):
            return rows
        rows = self._bounded(code, rows)
        if not len(rows):
            return rows
        sub = self.work.take(rows)
        fix = RULES[code](sub, self.ctx)
        failed = np.fromiter(fix.failed, np.int64, len(fix.failed))
        if len(failed):  # a rule may refuse most of its rows: one assignment, not one a row
            self._fail_all(rows[failed], code, list(fix.failed.values()))
        self.work = replace_rows(self.work, rows, fix.batch, sub)
        for change in fix.changes:
            self.changes.append(_moved(change, rows))
        ok = np.ones(len(rows), bool)
        ok[failed] = False
        return rows[ok]

    def _bounded(self, code: str, rows: Indexes) -> Indexes:
        """`rows` without those past a field limit (they fail with its reason): no rule sees
        such a row (a fuzzy match over a 10 MB event name would never end)."""
        unchecked = rows[~self.validated[rows]]
        if not len(unchecked):
            return rows
        past = np.zeros(len(self.rows), bool)
        limits = self.ctx.index.limits
        for i, problem_code, message in first_field_problems(self.work.take(unchecked), limits):
            # a malformed row fails as one, whatever its code's rule would have said of it
            malformed = problem_code == ErrorCode.MALFORMED_ROW
            self._fail(int(unchecked[i]), problem_code if malformed else code, message)
            past[unchecked[i]] = True
        bounded: Indexes = rows[~past[rows]]
        return bounded

    def _validate(self, tried: Indexes) -> Indexes:
        if not len(tried):
            return tried
        tried = np.sort(tried)
        self.validated[tried] = True
        codes = problem_ids(self.work.take(tried), self.ctx.index, self.ctx.now)
        self.current[tried] = codes
        failing: Indexes = tried[codes != 0]
        return failing

    def _fail(self, i: int, code: str, reason: str) -> None:
        row = int(self.rows[i])
        self.failed[i] = True
        self.decided.mfx_code[row] = code
        self.decided.reason[row] = reason

    def _fail_all(self, at: Indexes, code: str, reasons: list[str]) -> None:
        """`_fail` for each work row `at[i]`, with `reasons[i]` (each row once)."""
        rows = self.rows[at]
        self.failed[at] = True
        self.decided.mfx_code[rows] = code
        texts: Codes = np.empty(len(reasons), dtype=object)
        texts[:] = reasons
        self.decided.reason[rows] = texts

    def _finish(self) -> None:
        decided, rows = self.decided, self.rows
        counts = np.zeros(len(rows), np.int64)
        kept = _merged([c for c in self.changes if len(c)])
        for change in kept:
            np.add.at(counts, change.at, 1)
        counts[self.failed] = 0
        idle = ~self.failed & (counts == 0)
        for i in np.flatnonzero(idle).tolist():
            row = int(rows[i])
            code = decided.arrived[row]
            if code == ErrorCode.TIMESTAMP_IN_FUTURE:
                # The clock moved, not the row: Stripe's window takes it now (passed here), as
                # it will when it goes out later still. Sent as it came (`valid`, a `resend`
                # line), as a row naming a meter made since is; quarantined for "nothing to
                # correct", a row the CLI's clock read a few minutes after Stripe refused it
                # (one second ahead, or an hour behind) stayed unbilled.
                decided.fate[row] = VALID
                continue
            decided.mfx_code[row] = code
            decided.reason[row] = f"reported as {code} but there is nothing to correct"
        good = np.flatnonzero(~self.failed & (counts > 0))
        decided.fate[rows[good]] = CORRECTED
        decided.corrections[rows[good]] = counts[good]
        decided.corrected = rows[good]
        decided.fixed = self.work if len(good) == len(rows) else self.work.take(good)
        keep = np.zeros(len(rows), bool)
        keep[good] = True
        decided.changes = [_only(c, keep, rows) for c in kept]


def _merged(changes: list[Changes]) -> list[Changes]:
    """Consecutive changes of one rule to one field as one (a rule's lanes: one per meter or
    per event name). Their rows stay in the order the changes were made, which is all the
    audit keeps of that order (its lines are sorted by row, stably)."""
    merged: list[Changes] = []
    run: list[Changes] = []
    for change in [*changes, None]:
        if run and (
            change is None
            or not isinstance(change.rule, str)
            or not isinstance(change.field, str)
            or (change.rule, change.field) != (run[0].rule, run[0].field)
        ):
            merged.append(_joined(run))
            run = []
        if change is None:
            break
        if isinstance(change.rule, str) and isinstance(change.field, str):
            run.append(change)
        else:
            merged.append(change)
    return merged


def _joined(run: list[Changes]) -> Changes:
    if len(run) == 1:
        return run[0]
    first = run[0]
    return Changes(
        np.concatenate([c.at for c in run]),
        first.rule,
        first.field,
        concat_columns([c.before for c in run]),
        concat_columns([c.after for c in run]),
    )


def _moved(change: Changes, rows: Indexes) -> Changes:
    """A change of a sub-batch, with `at` pointing into the work rows."""
    return Changes(rows[change.at], change.rule, change.field, change.before, change.after)


def _only(change: Changes, keep: Mask, rows: Indexes) -> Changes:
    """The entries of corrected rows, `at` pointing into the batch."""
    picked = np.flatnonzero(keep[change.at])
    chosen = picked.tolist()
    rule = change.rule if isinstance(change.rule, str) else [change.rule[i] for i in chosen]
    name = change.field if isinstance(change.field, str) else [change.field[i] for i in chosen]
    return Changes(
        rows[change.at[picked]],
        rule,
        name,
        change.before.take(picked),
        change.after.take(picked),
    )
