"""How the rows of a batch are decided: classify, correct (a few rounds), or quarantine.

Billing safety: a row is re-sent only if it was rejected (it carries an error code, or the
whole input holds rejected rows only: `rejected`) or if our validation proves Stripe rejects
it and we corrected it. Any other row is `valid` and goes to no output.
Each round hands the rows failing with one code to that code's rule (`rules.RULES`), then
validates what it returned; a code met twice by a row, or a fifth round, stops the row.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt
import pyarrow as pa
import pyarrow.compute as pc

from remediation.changes import Context
from remediation.codes import KNOWN_CODES, ErrorCode, code_from_message
from remediation.core.batchjoin import interleaved
from remediation.core.checks import (
    CODE_IDS,
    CODES,
    CodeIds,
    Codes,
    code_objects,
    first_field_problems,
    problem_ids,
)
from remediation.core.column import Mask, concat_columns
from remediation.core.columns import Batch, Indexes
from remediation.core.rules import RULES, Changes
from remediation.core.rules.base import replace_rows
from remediation.core.textmeasures import field_suspects, mask
from remediation.identifiers import Lineage

MAX_ROUNDS = 4
CODE_BITS = {code: 1 << at for at, code in enumerate(RULES)}
OTHER_ID = len(CODES)  # a reported code we do not know: no rule, not valid
_RULED: Mask = np.asarray([code in RULES for code in CODES] + [False], bool)
_KNOWN: Mask = np.asarray([code in KNOWN_CODES for code in CODES] + [False], bool)
VALID_KEPT, VALID, CORRECTED, QUARANTINED = 0, 1, 2, 3


@dataclass(slots=True)
class Decided:
    """Where each row of a batch goes (`fate`), and what is recorded about it."""

    batch: Batch  # the input rows
    fixed: Batch  # the corrected rows, in input order (`corrected` indexes into `batch`)
    corrected: Indexes
    fate: npt.NDArray[np.int8]
    arrived: Codes
    mfx_code: Codes
    reason: Codes
    changes: list[Changes] = field(default_factory=list)  # `at` indexes into `batch`
    corrections: npt.NDArray[np.int64] = field(default_factory=lambda: np.zeros(0, np.int64))
    # `arrived` as code ids (`checks.CODES`; `OTHER_ID` where it is a code we do not know)
    arrived_ids: CodeIds = field(default_factory=lambda: np.zeros(0, np.int16))

    def written(self) -> tuple[Indexes, Batch]:
        """The rows that go to the corrected output (valid and corrected: their places in
        `batch`, ascending) and those rows as written (corrected ones as corrected)."""
        written = np.flatnonzero((self.fate == VALID) | (self.fate == CORRECTED))
        valid = np.flatnonzero(self.fate == VALID)
        if not len(self.corrected):
            return written, self.batch.take(valid)
        if not len(valid):
            return written, self.fixed
        return written, interleaved(self.batch, valid, self.fixed, self.corrected)

    def unclassified(self) -> Mask:
        """Quarantined rows that arrived with a code we do not know (or none), or that we could
        not classify."""
        flags: Mask = np.zeros(len(self.fate), bool)
        rows = np.flatnonzero(self.fate == QUARANTINED)
        flags[rows] = ~_KNOWN[self.arrived_ids[rows]]
        flags[rows] |= np.asarray(self.mfx_code[rows] == ErrorCode.UNCLASSIFIED, bool)
        return flags


def _reported(batch: Batch) -> tuple[Codes, CodeIds]:
    """The code each row arrived with (explicit, else from a known message text, else None),
    and the same as ids (`checks.CODES`; `OTHER_ID` for a code we do not know). A file holds
    few distinct codes: each is made a Python string and looked up once, not once a row."""
    encoded = pc.dictionary_encode(batch.error_code)
    distinct = [*encoded.dictionary.to_pylist(), None]
    at = encoded.indices.fill_null(len(distinct) - 1).to_numpy(zero_copy_only=False)
    codes: Codes = np.asarray(distinct, dtype=object)[at]
    ids: CodeIds = np.asarray([CODE_IDS.get(c, OTHER_ID) for c in distinct], np.int16)[at]
    missing = pc.is_null(batch.error_code)
    if not pc.any(pc.and_(missing, pc.is_valid(batch.error_message))).as_py():
        return codes, ids
    encoded = pc.dictionary_encode(batch.error_message)
    known = [code_from_message(m) for m in encoded.dictionary.to_pylist()]
    index = encoded.indices.to_numpy(zero_copy_only=False)
    for i in np.flatnonzero(np.asarray(missing)).tolist():
        position = index[i]
        if position == position:  # not NaN: the row has a message
            found = known[int(position)]
            codes[i] = found.value if found else None
            ids[i] = CODE_IDS[found]
    return codes, ids


class BatchDecider:
    """Decides batches of one input (`lineage` is the input's: which identifiers we wrote)."""

    def __init__(
        self, ctx: Context, lineage: Lineage, rejected: bool, loop_protection: bool = True
    ) -> None:
        self.ctx, self.lineage, self.rejected = ctx, lineage, rejected
        self.loop_protection = loop_protection

    def decide(self, batch: Batch) -> Decided:
        n = len(batch)
        # Once: the rows taken later carry it; rows it does not suspect are within the limits.
        suspects = field_suspects(batch, self.ctx.index.limits)
        arrived, arrived_ids, valid, to_fix, ruled = self._classify(batch)
        fate = np.full(n, QUARANTINED, np.int8)
        mfx: Codes = np.full(n, None, dtype=object)
        reason: Codes = np.full(n, None, dtype=object)
        told = mask(pc.is_valid(batch.error_code)) | mask(pc.is_valid(batch.error_message))
        fate[valid] = VALID if self.rejected else VALID_KEPT
        fate[valid & told] = VALID
        stopped = self._repeats(batch, arrived, valid, mfx, reason)
        unknown = ~valid & (to_fix == 0) & ~stopped
        for i in np.flatnonzero(unknown).tolist():
            mfx[i] = ErrorCode.UNCLASSIFIED
            reason[i] = (
                f"unknown code {arrived[i]!r} and the row passes our validation (unclassified)"
            )
        work = np.flatnonzero(~valid & ~stopped & ~unknown)
        decided = Decided(
            batch, batch.take(np.zeros(0, np.int64)), work[:0], fate, arrived, mfx, reason
        )
        decided.corrections = np.zeros(n, np.int64)
        decided.arrived_ids = arrived_ids
        if len(work):
            checked = ~ruled[work] | ~suspects[work]
            _Rounds(self.ctx, batch, work, to_fix[work], decided, checked).run()
        return decided

    def _classify(self, batch: Batch) -> tuple[Codes, CodeIds, Mask, CodeIds, Mask]:
        """(code each row arrived with or was classified with, the same as ids, rows with none
        of either: valid, code to correct as ids, rows whose reported code has a rule: those
        were not validated)."""
        arrived, reported = _reported(batch)
        ruled = _RULED[reported]
        arrived_ids, to_fix = reported.copy(), reported.copy()
        check = np.flatnonzero(~ruled)
        if len(check):
            to_fix[check] = problem_ids(batch.take(check), self.ctx.index, self.ctx.now)
            untold = check[reported[check] == 0]
            arrived_ids[untold] = to_fix[untold]
            arrived[untold] = code_objects(to_fix[untold])
        return arrived, arrived_ids, arrived_ids == 0, to_fix, ruled

    def _repeats(
        self, batch: Batch, arrived: Codes, valid: Mask, mfx: Codes, reason: Codes
    ) -> Mask:
        """A row we corrected (per lineage) that fails again with the same code stays out
        (the rows stopped so)."""
        stopped: Mask = np.zeros(len(batch), bool)
        ancestors = self.lineage.ancestors
        if not ancestors or not self.loop_protection:
            return stopped
        ours = mask(pc.is_in(batch.identifier.text, pa.array(list(ancestors), pa.string())))
        identifiers = batch.identifier.text
        for i in np.flatnonzero(ours & ~valid).tolist():
            ancestor = ancestors[identifiers[i].as_py()]
            if ancestor.code == arrived[i]:
                stopped[i] = True
                mfx[i] = arrived[i]
                reason[i] = (
                    f"failed again with {arrived[i]} after correction in generation "
                    f"{ancestor.generation}"
                )
        return stopped


class _Rounds:
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
