"""Rows of the object version being imported that another version sent before (or a run over
the object corrected), left out so that Stripe never bills them twice. Apart from the store
(service.poller.progress): this decides which of the sends it reads count."""

from __future__ import annotations

from bisect import bisect_right
from collections.abc import Collection, Iterable
from datetime import datetime
from functools import partial

import numpy as np

from remediation.core.columns import Batch
from remediation.ports import ObjectInfo
from remediation.rowdigest import record_digests
from service.errors import HeldBy, HorizonPassed, ServiceError
from service.jobs.store.lineage import refused_among
from service.jobs.store.taken_again import held_anywhere, mark_taken_again
from service.jobs.store.usage_stamps import usage_second
from service.models._types import utcnow
from service.notify.runs import RunAlertsToSettle
from service.poller.copy_runs import CopyRuns
from service.poller.object_progress import RESEND_HORIZON, SentBatch, SentRow
from service.poller.progress import ProgressStore
from service.poller.store import recordable


class OtherVersions:
    """Which identifiers of the object version being imported the poller sent from another version
    (another key, or this key before it was overwritten). Stripe dedupes an identifier for 24
    hours only, so a file rewritten with the rows of the day so far, or copied under another
    name, would bill them again a day later: such rows are left out, unless Stripe may not have
    them and would still dedupe them (their batch was never acknowledged and was first sent
    within the re-send horizon: sending them again is harmless then, and the only way to deliver
    them if their own version is gone). Never acknowledged and first sent past the horizon,
    nobody knows whether they were billed: the import stops there (HorizonPassed) until the
    operator decides (`poll --retry KEY --yes` counts such batches of KEY's versions as never
    sent). A row recorded as sent whose batch is not recorded was
    never sent (a batch is recorded before it goes out; its record goes when the pass stops
    before it went out, or Stripe refused it: `ProgressStore.forget_unsent`). A row Stripe
    refused after it was sent (an error report) that meterfix holds in quarantine was never
    billed: a version holding it changed (fixed by hand) sends it; one holding it as it was sent
    leaves it out, its entry waiting for a fix (Stripe would refuse it again: the day's file
    rewritten in place with it unchanged sent it again, its entry was marked taken again, and
    the report of its second refusal, sampling other rows, did not name it: neither billed nor
    waiting; `_unchanged`). A row a run over the object, or a
    quarantine re-run of its rows, corrected or re-sent unchanged is left out too, in any
    version (the customer fixed by hand a row meterfix had sent as `<id>-mfx1`: another
    identifier, which nothing dedupes), and so is one a run over another object holding it
    corrected (a copy, `day-fixed.csv`, whose run sent it as `<id>-mfx1`; `CopyRuns`). Each
    other version's batches are read once per import."""

    def __init__(self, progress: ProgressStore, obj: ObjectInfo, now: datetime) -> None:
        self.progress, self.obj = progress, obj
        self.horizon = now - RESEND_HORIZON
        self._batches: dict[int, tuple[list[int], list[SentBatch]]] = {}
        self._runs = CopyRuns(progress.engine, obj.key)
        # the keys of the other versions that sent rows of this one (their runs: `_runs`): a row
        # Stripe refused from `day.csv` and a run over it quarantined, fixed by hand in
        # `day-fixed.csv`, was left out as sent (never billed, nothing said) and its entry
        # left for a re-run: the refusal is looked up under the key that sent it too
        self._senders: dict[int, str] = {}  # object id -> key
        self._alerts = RunAlertsToSettle()  # the runs whose rows `taken_again` marked
        # rows this version sends again that another version sent in a batch Stripe never
        # acknowledged, first sent within the horizon as `sent` judged them: each of this
        # version's batches holding one is held to that batch's horizon before every request
        # (`sent_again_in`; judged once, a pass backing off through 429s sent them past it).
        # identifier -> (its rows not yet cut into batches, the earliest such batch)
        self._resending: dict[str, tuple[int, tuple[int, SentBatch]]] = {}
        # (object id, batch number) -> (object id, batch): those batches found past the
        # horizon on this pass, as rows were read (`sent`) or before a request
        # (`check_horizon`); the importer raises them once the batches in flight settle, with
        # what Stripe failed one of those with (`horizon_passed`)
        self._past_horizon: dict[tuple[int, int], tuple[int, SentBatch]] = {}

    def sent(self, identifiers: list[str], rows: Batch | None = None) -> set[str]:
        """Which of these rows of this version another version sent (or a run over the
        object corrected), so this one leaves them out. Raises HorizonPassed when one was
        sent in a batch Stripe never acknowledged, more than 23 h ago: billed or not, nobody
        knows, and Stripe may no longer dedupe it (taken for delivered, such rows of a
        version overwritten during an incident were never billed, the retry saying "sent").
        `rows`: the batch `identifiers` name, in order (without it a row Stripe refused
        counts as changed)."""
        sent: dict[str, datetime] = {}  # identifier -> when its batch was first sent
        stale: dict[str, tuple[int, SentBatch]] = {}  # identifier -> (object, its batch)
        senders: set[int] = set()  # the versions that sent them
        unacked: dict[str, tuple[int, SentBatch]] = {}  # identifier -> its batch sent earliest
        sent_as: dict[str, set[int]] = {}  # identifier -> the digests of what they sent
        for row in self.progress.sent_elsewhere(self.obj, identifiers):
            batch = self._batch(row)
            if batch is None:
                continue
            senders.add(row.object_id)
            if row.content is not None:
                sent_as.setdefault(row.identifier, set()).add(row.content)
            if batch.acked_at is None and batch.first_sent_at <= self.horizon:
                stale[row.identifier] = (row.object_id, batch)
            elif batch.acked_at is not None:
                known = sent.get(row.identifier)
                sent[row.identifier] = max(known or batch.first_sent_at, batch.first_sent_at)
            else:
                unacked[row.identifier] = _earliest(
                    unacked.get(row.identifier), row.object_id, batch
                )
        # a version the poller indexed for Stripe's connector (`MFX_POLLER=index` before
        # `on`): the connector took it whole when it was uploaded, its rows billed then
        for identifier, uploaded in self.progress.indexed_elsewhere(self.obj, identifiers):
            sent[identifier] = max(sent.get(identifier) or uploaded, uploaded)
        for identifier in [i for i in stale if i in sent]:  # delivered by another version
            del stale[identifier]
        if sent or stale:  # quarantined after it was sent: Stripe refused it (never billed)
            refused = self._refused(senders, sent, stale)
            unchanged = _unchanged(refused, sent_as, identifiers, rows)
            for identifier in refused:
                was_stale = stale.pop(identifier, None)
                if identifier not in unchanged:
                    sent.pop(identifier, None)
                elif was_stale is not None:  # refused again if sent: left out, waiting
                    sent[identifier] = was_stale[1].first_sent_at
        if stale:  # noted: the importer ends its stream of batches there (`horizon_passed`)
            raise self._held(stale.values())
        # a row a run over this object, or over another holding it, corrected (it failed in
        # an earlier version, or in a copy): its correction went out under a derived
        # identifier, so the row itself must not (another object's run: the same usage only)
        rest = [i for i in identifiers if i not in sent and recordable(i)]
        seconds = partial(_usage_seconds, identifiers, rows)
        left_out = set(sent) | (self._runs.written(rest, seconds) if rest else set())
        self._note_resending(identifiers, unacked, left_out)
        return left_out

    def _note_resending(
        self,
        identifiers: list[str],
        unacked: dict[str, tuple[int, SentBatch]],
        left_out: set[str],
    ) -> None:
        """Note the rows of `identifiers` this version sends again from `unacked` batches
        (one count per row: an identifier repeated in the version is cut into batches twice)."""
        for identifier in identifiers:
            sender = unacked.get(identifier)
            if sender is None or identifier in left_out:
                continue
            rows, earliest = self._resending.get(identifier, (0, sender))
            self._resending[identifier] = (rows + 1, _earliest(earliest, *sender))

    def sent_again_in(self, identifiers: Iterable[str]) -> list[tuple[int, SentBatch]]:
        """The batches Stripe never acknowledged in which other versions sent these rows of
        this version, one of its batches about to go out: (object id, batch) each."""
        found: dict[tuple[int, int], tuple[int, SentBatch]] = {}
        for identifier in identifiers:
            if (noted := self._resending.get(identifier)) is not None:
                object_id, batch = noted[1]
                found[object_id, batch.number] = noted[1]
        return list(found.values())

    def cut(self, identifiers: Iterable[str]) -> None:
        """These rows of this version were cut into batches (`sent_again_in` asked): forgotten."""
        for identifier in identifiers:
            noted = self._resending.pop(identifier, None)
            if noted is not None and noted[0] > 1:
                self._resending[identifier] = (noted[0] - 1, noted[1])

    def check_horizon(
        self, senders: Iterable[tuple[int, SentBatch]], now: datetime
    ) -> HorizonPassed | None:
        """HorizonPassed when one of these batches (`sent_again_in`) was first sent more than
        23 h before `now`, noted for `horizon_passed`: the rows another version sent in it,
        billed or not, may no longer be deduplicated (judged once as the import began, they
        were sent again minutes past it, after a batch's 429s, or hours into a long pass).
        Returned, not raised: raised as a batch was taken, it ended the sink's stream and
        lost the failure of a batch in flight (a lasting outage) from the alert."""
        stale = [sender for sender in senders if sender[1].first_sent_at <= now - RESEND_HORIZON]
        return self._held(stale) if stale else None

    def horizon_passed(self, failure: ServiceError | None = None) -> HorizonPassed | None:
        """The batches of other versions found past the horizon on this pass (`sent`,
        `check_horizon`), with what Stripe failed another batch with beside them; None when
        none was."""
        return self._passed(failure) if self._past_horizon else None

    def _refused(
        self,
        senders: Collection[int],
        sent: dict[str, datetime],
        stale: dict[str, tuple[int, SentBatch]],
    ) -> set[str]:
        """Which of the rows `sent` or `stale` name Stripe refused after they were sent: a
        run over this object, or over a version that sent them, quarantined them since (from
        an error report or a re-run) and holds them."""
        runs = self._refusing(senders)
        held = refused_among(self.progress.engine, runs, sorted({*sent, *stale}))
        return {
            identifier
            for identifier, quarantined in held.items()
            if (identifier in sent and quarantined > sent[identifier])
            or (identifier in stale and quarantined > stale[identifier][1].first_sent_at)
        }

    def held(self, identifiers: list[str]) -> set[str]:
        """Which of these rows of this version, about to be sent, a run holds in quarantine:
        a run over the object, or over another (the quarantine file fixed by hand and
        uploaded under a new name): one query by the quarantined rows' identifier index."""
        recorded = [i for i in identifiers if recordable(i)]
        return held_anywhere(self.progress.engine, recorded) if recorded else set()

    def taken_again(self, sent: list[tuple[str, int | None]]) -> None:
        """Rows of this version Stripe acknowledged that a run holds in quarantine (over
        this object or any other: an entry of `day.csv` sent fixed from `day-fixed.csv` was
        listed as waiting for a fix until a re-run's pick found it sent): marked taken again
        (a quarantine re-run leaves them, and an error report about them is a new refusal):
        each is now billed, or refused again (the acknowledgement is no acceptance: Stripe
        validates later; a report of the refusal that does not sample the row takes it when
        Stripe never had its customer, `service.jobs.report_rows.SentAgain`, so its usage
        waits anew). `sent`: (identifier, timestamp sent at) of each
        row: an entry of the same identifier at another timestamp is other usage (Stripe
        dedupes an identifier for about 24 hours only, a customer may use it again days
        later) and stays waiting (`sent_as_held`). Their runs' alerts are told once the
        import is done (`settle_alerts`), not a batch at a time."""
        now = utcnow()
        when = f"sent by the poller {now:%Y-%m-%d %H:%M} UTC"
        label = f"{self.obj.key} (ETag {self.obj.etag}), {when}"
        seconds: dict[str, set[int | None]] = {}
        for identifier, second in sent:
            seconds.setdefault(identifier, set()).add(second)
        engine, note = self.progress.engine, self._alerts.note
        mark_taken_again(engine, None, sorted(seconds), label, now, note, seconds)

    def settle_alerts(self) -> None:
        """The alerts of the runs whose rows `taken_again` marked, told (never raises)."""
        self._alerts.settle(self.progress.engine)

    def _refusing(self, senders: Collection[int] = ()) -> list[int]:
        """The runs that may hold rows of this version in quarantine as Stripe refused them:
        the runs over this key, and over the keys of the other versions that sent its rows
        (each key's read once per import)."""
        for object_id in set(senders) - self._senders.keys():
            self._senders[object_id] = self.progress.object_label(object_id)[0]
        return self._runs.of(self._senders.values())

    def _batch(self, row: SentRow) -> SentBatch | None:
        """The batch of its version that sent `row` (None: it never went out)."""
        if row.object_id not in self._batches:
            batches = self.progress.batches_of(row.object_id)
            self._batches[row.object_id] = ([b.first_row for b in batches], batches)
        starts, batches = self._batches[row.object_id]
        at = bisect_right(starts, row.row_number) - 1
        if at < 0 or row.row_number >= batches[at].first_row + batches[at].rows:
            return None
        return batches[at]

    def _held(self, stale: Iterable[tuple[int, SentBatch]]) -> HorizonPassed:
        """Note these batches past the horizon; HorizonPassed naming all noted so far."""
        for object_id, batch in stale:
            self._past_horizon[object_id, batch.number] = (object_id, batch)
        return self._passed()

    def _passed(self, failure: ServiceError | None = None) -> HorizonPassed:
        """HorizonPassed naming each version whose batches hold the rows, with its own
        batches: named by the first alone, rows another key sent were counted as its."""
        # one step (a copy): pool threads may note more
        held = sorted(self._past_horizon.values(), key=lambda h: (h[0], h[1].number))
        by_version: dict[int, list[SentBatch]] = {}
        for object_id, batch in held:
            by_version.setdefault(object_id, []).append(batch)
        senders = [self._held_by(object_id, batches) for object_id, batches in by_version.items()]
        return HorizonPassed([batch for _, batch in held], senders, failure=failure)

    def _held_by(self, object_id: int, batches: list[SentBatch]) -> HeldBy:
        key, etag = self.progress.object_label(object_id)
        label = "an earlier version of it" if key == self.obj.key else key
        return HeldBy(f"{label} (ETag {etag})", key, batches)


def _earliest(
    known: tuple[int, SentBatch] | None, object_id: int, batch: SentBatch
) -> tuple[int, SentBatch]:
    """`known` or (`object_id`, `batch`), whichever batch was first sent earlier."""
    if known is not None and known[1].first_sent_at <= batch.first_sent_at:
        return known
    return object_id, batch


def _unchanged(
    refused: set[str], sent_as: dict[str, set[int]], identifiers: list[str], rows: Batch | None
) -> set[str]:
    """Which of the `refused` rows this version holds as a version that sent them held them
    (`sent_as`: identifier -> the digests of what they sent, `remediation.rowdigest`): sent
    again, Stripe would refuse them again. Every row of the identifier in `rows` (the batch
    `identifiers` name, in order) must be; without the batch or a digest (a row recorded
    before migration 0007) a row counts as changed, and is sent."""
    known = {identifier for identifier in refused if sent_as.get(identifier)}
    if rows is None or not known:
        return set()
    at = [n for n, identifier in enumerate(identifiers) if identifier in known]
    digests = record_digests(rows.take(np.asarray(at, np.int64)).records())
    changed = {
        identifiers[n]
        for n, digest in zip(at, digests, strict=True)
        if digest not in sent_as[identifiers[n]]
    }
    return known - changed


def _usage_seconds(
    identifiers: list[str], rows: Batch | None, wanted: Collection[str]
) -> dict[str, set[int | None]]:
    """identifier -> the usage seconds (`usage_second`) of the rows of `rows` (the batch
    `identifiers` name, in order) under the `wanted` identifiers; {} without the batch (each
    row then counts as one without a readable timestamp: the same usage by its identifier)."""
    at = [n for n, identifier in enumerate(identifiers) if identifier in wanted]
    if rows is None or not at:
        return {}
    stamps = rows.take(np.asarray(at, np.int64)).timestamp.values()  # as they came
    seconds: dict[str, set[int | None]] = {}
    for n, stamp in zip(at, stamps, strict=True):
        seconds.setdefault(identifiers[n], set()).add(usage_second(stamp))
    return seconds
