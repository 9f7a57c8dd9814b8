"""How the rows of a batch are decided: classify, correct (a few rounds), or quarantine.

Billing safety: a row is re-sent only if it was rejected (it carries an error code, or the
whole input holds rejected rows only: `rejected`) or if our validation proves Stripe rejects
it and we corrected it. Any other row is `valid` and goes to no output, and a row that shares
its identifier with such a row is quarantined, not corrected (`sameids`).
Each round hands the rows failing with one code to that code's rule (`rules.RULES`), then
validates what it returned; a code met twice by a row, or a fifth round, stops the row.
The rounds: `rounds`; what is recorded of each row (`Decided`): `decided`.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from remediation.changes import Context
from remediation.codes import CHANGED_SINCE_SENT, NEVER_RESENT, ErrorCode
from remediation.core.checks import (
    CODE_IDS,
    CODES,
    CodeIds,
    Codes,
    code_objects,
    meter_of_rows,
    problem_ids,
)
from remediation.core.column import Mask
from remediation.core.columns import Batch, Indexes
from remediation.core.decided import QUARANTINED, VALID, VALID_KEPT, Decided
from remediation.core.filerepairs import record_file_repairs
from remediation.core.folding import fold
from remediation.core.reportedcodes import reported_codes
from remediation.core.rounds import Rounds
from remediation.core.rules import RULES
from remediation.core.sameids import SameIdentifiers
from remediation.core.textmeasures import field_suspects, mask
from remediation.identifiers import Lineage
from remediation.limits import shown

_RULED: Mask = np.asarray([code in RULES for code in CODES] + [False], bool)


class BatchDecider:
    """Decides batches of one input (`lineage` is the input's: which identifiers we wrote)."""

    def __init__(
        self, ctx: Context, lineage: Lineage, rejected: bool, loop_protection: bool = True
    ) -> None:
        self.ctx, self.lineage, self.rejected = ctx, lineage, rejected
        self.loop_protection = loop_protection
        # Not rejected-only: rows to be corrected under a valid row's identifier are held
        self.same = None if rejected else SameIdentifiers()

    def decide(self, batch: Batch) -> Decided:
        batch = fold(batch, self.ctx)  # rows naming keys of their own: their pairs as one value
        n = len(batch)
        # Once: the rows taken later carry it; rows it does not suspect are within the limits.
        suspects = field_suspects(batch, self.ctx.index.limits)
        arrived, arrived_ids, valid, to_fix, ruled = self._classify(batch)
        fate = np.full(n, QUARANTINED, np.int8)
        mfx: Codes = np.full(n, None, dtype=object)
        reason: Codes = np.full(n, None, dtype=object)
        told = mask(pc.is_valid(batch.error_code)) | mask(pc.is_valid(batch.error_message))
        # Stripe's reason for refusing the row is a message no code stands for: re-sent blind
        # as it came, under a new identifier, a row refused as a duplicate ("an event with
        # this identifier already exists") would be billed twice. Unclassified, as an unknown
        # code is.
        unread = valid & told & mask(pc.is_null(batch.error_code))
        unread &= ~mask(pc.equal(batch.error_message, CHANGED_SINCE_SENT))
        if unread.any():
            valid &= ~unread
            arrived[unread] = ErrorCode.UNCLASSIFIED.value  # the code it came with: none read
            arrived_ids[unread] = CODE_IDS[ErrorCode.UNCLASSIFIED]
        fate[valid] = VALID if self.rejected else VALID_KEPT
        fate[valid & told] = VALID  # rejected: changed since Stripe refused it, sent as it is
        stopped = self._repeats(batch, arrived, valid, mfx, reason)
        held = _maybe_billed(batch, valid, mfx, reason)
        stopped |= held
        fate[held] = QUARANTINED
        made_since = self._meter_made_since(batch, to_fix, ruled) & ~stopped
        valid |= made_since
        fate[made_since] = VALID
        unknown = ~valid & (to_fix == 0) & ~stopped
        messages = batch.error_message
        for i in np.flatnonzero(unknown).tolist():
            mfx[i] = ErrorCode.UNCLASSIFIED
            what = (
                f"unknown error message {shown(messages[i].as_py())}"
                if unread[i]
                else f"unknown code {shown(arrived[i])}"
            )
            reason[i] = f"{what} and the row passes our validation (unclassified)"
        work = np.flatnonzero(~valid & ~stopped & ~unknown)
        decided = Decided(
            batch, batch.take(np.zeros(0, np.int64)), work[:0], fate, arrived, mfx, reason
        )
        decided.corrections = np.zeros(n, np.int64)
        decided.arrived_ids = arrived_ids
        if len(work):
            checked = ~ruled[work] | ~suspects[work]
            Rounds(self.ctx, batch, work, to_fix[work], decided, checked).run()
        record_file_repairs(decided, self.ctx.file_repairs)
        if self.same is not None:
            self.same.hold(decided)
        return decided

    def holds_back(self) -> bool:
        """Whether the batches decided from now on wait for the end (`amend`): a row went
        out (corrected or re-sent) whose identifier a valid row of a later batch may have."""
        return self.same is not None and bool(self.same.out)

    def amend(self, decided: Decided) -> Decided:
        """A batch held back, its rows going out under the identifier of a valid row of a
        later batch quarantined (`sameids`)."""
        if self.same is not None:
            self.same.amend(decided)
        return decided

    def _classify(self, batch: Batch) -> tuple[Codes, CodeIds, Mask, CodeIds, Mask]:
        """(code each row arrived with or was classified with, the same as ids, rows with none
        of either: valid, code to correct as ids, rows whose reported code has a rule: those
        were not validated)."""
        arrived, reported = reported_codes(batch)
        ruled = _RULED[reported]
        arrived_ids, to_fix = reported.copy(), reported.copy()
        check = np.flatnonzero(~ruled)
        if len(check):
            to_fix[check] = problem_ids(batch.take(check), self.ctx.index, self.ctx.now)
            untold = check[reported[check] == 0]
            _read_without_aliases(batch, self.ctx, to_fix, untold)
            arrived_ids[untold] = to_fix[untold]
            arrived[untold] = code_objects(to_fix[untold])
        return arrived, arrived_ids, arrived_ids == 0, to_fix, ruled

    def _meter_made_since(self, batch: Batch, to_fix: CodeIds, ruled: Mask) -> Mask:
        """Rows reported `no_meter` whose event name is an active meter's, exactly (the meter
        was made after the row was sent), validated as they are (`to_fix`, `ruled` updated):
        those found valid, to be sent again as they came (README "deliberate exceptions"; a
        `match_event_name` of `api_requests` to `api_requests` counted them corrected)."""
        rows = np.flatnonzero(ruled & (to_fix == CODE_IDS[ErrorCode.NO_METER]))
        if not len(rows):
            return np.zeros(len(batch), bool)
        meters, positions = meter_of_rows(batch.take(rows), self.ctx.index)
        active = np.asarray([m is not None and m.active for m in meters] + [False], bool)
        rows = rows[active[positions]]  # -1 (no name): the last, False
        to_fix[rows] = problem_ids(batch.take(rows), self.ctx.index, self.ctx.now)
        ruled[rows] = False
        valid: Mask = np.zeros(len(batch), bool)
        valid[rows[to_fix[rows] == 0]] = True
        return valid

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


def _maybe_billed(batch: Batch, valid: Mask, mfx: Codes, reason: Codes) -> Mask:
    """Rows the bundled poller handed over as sent once without Stripe's answer
    (`sent_without_answer`), or a re-run's rows quarantined because Stripe took their
    identifier from another row (`identifier_taken`; `codes.NEVER_RESENT`): quarantined
    whatever our checks say of them now, never corrected under a new identifier (Stripe may
    have billed them under theirs)."""
    held = mask(pc.is_in(batch.error_code, pa.array(sorted(NEVER_RESENT), pa.string())))
    rows = np.flatnonzero(held)
    if len(rows):
        valid[rows] = False
        messages, codes = batch.error_message, batch.error_code
        for i in rows.tolist():
            code = ErrorCode(codes[i].as_py())
            mfx[i] = code
            reason[i] = messages[i].as_py() or _NEVER_RESENT_REASONS[code]
    return held


_NEVER_RESENT_REASONS = {
    ErrorCode.SENT_WITHOUT_ANSWER: "sent once without Stripe's answer",
    ErrorCode.IDENTIFIER_TAKEN: (
        "Stripe took an event under its identifier from another row: a second would be billed twice"
    ),
}


def _read_without_aliases(batch: Batch, ctx: Context, to_fix: CodeIds, rows: Indexes) -> None:
    """Of `rows` (no code reported), those found valid that Stripe read without their customer
    or amount: a CSV column under an alias (`customer_id`, `amount`) that the repaired header
    renamed to their meter's key never reached Stripe under it, so Stripe refused the row
    (counted valid, a usage file's such rows were never re-sent: their usage lost). Coded as
    Stripe coded them; the key rules record the rename (`rules.keys`)."""
    aliases = ctx.header_aliases
    rows = rows[to_fix[rows] == 0] if aliases else rows[:0]
    if not len(rows):
        return
    meters, positions = meter_of_rows(batch.take(rows), ctx.index)
    for at, meter in enumerate(meters):
        if meter is None:
            continue
        if meter.customer_key in aliases:
            to_fix[rows[positions == at]] = CODE_IDS[ErrorCode.NO_CUSTOMER_DEFINED]
        elif meter.value_key in aliases:
            to_fix[rows[positions == at]] = CODE_IDS[ErrorCode.VALUE_NOT_FOUND]
