"""When importing one object fails: back off exponentially, or give up and say what to do.

Transient failures were already retried inside the pass (service.adapters.meter_events). A
pass that still fails leaves the object `seen` with `next_attempt_at` pushed out (30 s,
doubling, at most 30 min, with jitter), and never before the `Retry-After` Stripe last sent
(up to an hour: `RETRY_AFTER_CAP`); `failing_since` marks the start of the failing run. The
poller gives up (status `failed`, one critical alert) only when:
- Stripe refused a request built from the file (HTTP 400): sending it again cannot help;
- the file cannot be read past a point after rows before it were sent (not a whole-file
  failure: a whole-file repair would send those rows again);
- the failures have lasted `MFX_POLLER_GIVE_UP_AFTER` (under 23 h by validation);
- resuming would send again a batch first sent more than 23 h ago (Stripe may no longer
  dedupe its identifiers): only an operator may decide that (`poll --retry KEY --yes`).
A pass can stop on two of these at once (one batch through a lasting outage, another held at
the horizon): the alert names the batches of each, with what to do for each.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta

from sqlalchemy import Engine

from remediation.ports import ObjectInfo
from service.errors import HorizonPassed, PartlyUnreadable
from service.logs import log_event
from service.notify.alerts import raise_alert, resolve_alert
from service.poller.object_progress import (
    RESEND_HORIZON,
    ObjectProgress,
    SentBatch,
    describe_batches,
)
from service.poller.progress import ProgressStore

BACKOFF_BASE = timedelta(seconds=30)
BACKOFF_CAP = timedelta(minutes=30)
# Stripe's Retry-After is honoured up to this: a longer one (a misconfigured proxy's) must not
# keep the file from being tried, and given up on with an alert, for a day
RETRY_AFTER_CAP = timedelta(hours=1)
# the verdicts whose advice names batches past the horizon beside their own cause
_BESIDE_HORIZON = ("lasting", "permanent")


@dataclass(frozen=True, slots=True)
class Verdict:
    give_up: bool
    why: str  # "permanent" | "unreadable" | "lasting" | "horizon" | "" (back off)
    next_attempt_at: datetime | None
    failing_since: datetime
    # "horizon" of other keys' batches (or a lasting failure or refusal beside them): the
    # keys a retry --yes takes, each (`HorizonPassed.retry_keys`)
    retry_keys: tuple[str, ...] = ()
    attempts: int | None = None  # the passes the failing run has taken, when it started again


@dataclass(frozen=True, slots=True)
class PastHorizon:
    """Unacknowledged batches past the 23 h horizon beside a lasting failure or a refusal:
    this version's, earlier versions' of the key ((object id, ETag, batch): their rows this
    version holds count as sent by them), and `others`, the other keys whose batches holding
    rows of this version the pass held (`HorizonPassed.retry_keys`)."""

    own: tuple[SentBatch, ...] = ()
    before: tuple[tuple[int, str, SentBatch], ...] = ()
    others: tuple[str, ...] = ()

    def __bool__(self) -> bool:
        return bool(self.own or self.before or self.others)

    def detail(self) -> dict[str, object]:
        """The alert's detail of them (none: nothing past the horizon)."""
        counts = {
            "past_horizon_batches": len(self.own),
            "earlier_versions_past_horizon_batches": len(self.before),
        }
        found: dict[str, object] = {name: n for name, n in counts.items() if n}
        return found | ({"past_horizon_keys": list(self.others)} if self.others else {})


def judge(
    exc: BaseException, progress: ObjectProgress, now: datetime, give_up_after: int
) -> Verdict:
    """Give up, or when to try again. A pass that moved the file on (Stripe acknowledged the
    batches its next pass resumes after, through a rate-limit storm answering some requests
    429) starts the failing time again there, and the backoff from its first step. Counted
    from the first failure, a 50,000-row file importing steadily under 12 % of 429s was given
    up after `MFX_POLLER_GIVE_UP_AFTER` ("failing for 6.0 h"), its last rows unbilled until
    an operator retried it. Batches taken past one that keeps failing move nothing: the pass
    resumes at that one. The 23 h horizon is its own check (`horizon`); when another batch
    failed beside those it held (`HorizonPassed.failure`), that failure is judged as if alone
    and names the verdict when it gives up by itself (a lasting outage, a refusal: the
    advice names the batches past the horizon too, `_gave_up_advice`, and the other keys
    whose batches were held: `retry_keys`)."""
    beside = exc.failure if isinstance(exc, HorizonPassed) else None
    if beside is not None and (verdict := judge(beside, progress, now, give_up_after)).give_up:
        return replace(verdict, retry_keys=getattr(exc, "retry_keys", ()))
    since = progress.failing_since or now
    grown = progress.prefix_grown_at
    moved = grown is not None and grown > since
    if moved:
        assert grown is not None
        since = grown
    attempts = 1 if moved else progress.attempts
    if isinstance(exc, HorizonPassed):
        why = "horizon"
    elif isinstance(exc, PartlyUnreadable):
        why = "unreadable"
    elif getattr(exc, "permanent", False):  # MeterEventSendError: Stripe answered 400
        why = "permanent"
    elif now - since >= timedelta(seconds=give_up_after):
        why = "lasting"
    else:
        return Verdict(False, "", now + _wait(exc, attempts), since, attempts=1 if moved else None)
    return Verdict(True, why, None, since, getattr(exc, "retry_keys", ()))


def _wait(exc: BaseException, attempts: int) -> timedelta:
    """The backoff, or longer when Stripe asked for longer (`MeterEventSendError.retry_after`):
    trying before it only adds to the load of an incident."""
    asked = getattr(exc, "retry_after", None)
    if not isinstance(asked, int | float) or asked != asked:  # none, or NaN
        return backoff(attempts)
    # capped before it is a timedelta: `Retry-After: 1e15` (or `inf`) overflowed one, and the
    # OverflowError escaped the pass: every pass failed on the file, never backed off, given
    # up on or alerted, and the files after it in the pass were never reached
    seconds = min(float(asked), RETRY_AFTER_CAP.total_seconds())
    return max(backoff(attempts), timedelta(seconds=seconds))


def backoff(attempts: int) -> timedelta:
    """Exponential in the passes that took the object, with jitter over [d/2, d]."""
    exponent = min(max(attempts - 1, 0), 16)
    cap: timedelta = min(BACKOFF_BASE * 2**exponent, BACKOFF_CAP)
    return cap * random.uniform(0.5, 1.0)


def gave_up_key(obj: ObjectInfo) -> str:
    return f"poller.gave_up:{obj.key}:{obj.etag}"


def raise_gave_up(
    engine: Engine,
    obj: ObjectInfo,
    verdict: Verdict,
    reason: str,
    progress: ObjectProgress,
    give_up_after: int,
    now: datetime,
) -> None:
    store, horizon = ProgressStore(engine), now - RESEND_HORIZON
    # the deadline counts from batches still within the horizon: past it, a retry asks for
    # --yes at once (counted from an earlier version's, it named a time already past)
    earlier = store.oldest_unacked_in_other_versions(obj, horizon)
    stale = PastHorizon()
    if verdict.why in _BESIDE_HORIZON:  # as `poll --retry` finds them (`retry.find_retry`)
        others = tuple(key for key in verdict.retry_keys if key != obj.key)
        before = tuple(store.stale_in_other_versions(obj, horizon))
        stale = PastHorizon(progress.past_horizon(now), before, others)
    subject, todo = _gave_up_advice(obj, verdict, progress, give_up_after, earlier, stale)
    beside = stale.detail()
    raise_alert(
        engine,
        key=gave_up_key(obj),
        severity="critical",
        kind="poller.gave_up",
        subject=subject,
        message=f"{reason[:1000]}. {acknowledged_text(progress)} {todo}",
        detail={"key": obj.key, "etag": obj.etag, "why": verdict.why, **beside},
        links={"objects": [obj.key]},
    )
    log_event("poller.gave_up", level=logging.ERROR, key=obj.key, why=verdict.why)


def acknowledged_text(progress: ObjectProgress) -> str:
    """How many batches Stripe acknowledged (as `poll --retry` counts them: the unbroken run
    from the first batch and those past a batch that was not) and what a retry sends. The
    run alone said "3 batches were acknowledged; a retry resumes after them" of a file whose
    9 batches but one were: 600 billed rows read as at risk of going out again."""
    prefix, beyond = progress.acked_batches, len(progress.acked_beyond)
    done = _plural(prefix + beyond, "batch", "batches")
    if beyond:
        done += f" ({prefix} from the first, {beyond} past one that was not)"
    start = f"row {progress.resume_row}" if progress.resume_row else "its first row"
    again = _plural(len(progress.unacked), "batch", "batches")
    return (
        f"{done} {'was' if prefix + beyond == 1 else 'were'} acknowledged: a retry never sends "
        f"them again; it resumes at {start} and sends again only the {again} never "
        "acknowledged (and any rows not sent yet)."
    )


def _plural(count: int, one: str, many: str) -> str:
    return f"{count} {one if count == 1 else many}"


def _gave_up_advice(
    obj: ObjectInfo,
    verdict: Verdict,
    progress: ObjectProgress,
    give_up_after: int,
    earlier: datetime | None = None,
    stale: PastHorizon | None = None,
) -> tuple[str, str]:
    """The gave-up alert's subject, and what the operator should do, by why it gave up.
    `earlier`: the first send of the oldest batch an earlier version of the key sent and
    Stripe never acknowledged (rows of it this version holds count from then: the deadline
    counted from this version's own first send, and a retry within it found them past the
    horizon). `stale`: unacknowledged batches past the horizon beside a lasting failure or
    a refusal (`judge`), this version's and other versions' (their rows this version holds
    again): named apart, with their own advice; the deadline counts from the others (it
    named a time already past, for a retry that sends nothing without --yes)."""
    retry = f"meterfix poll --retry {obj.key}"
    oldest = min((t for t in (progress.oldest_resend(), earlier) if t is not None), default=None)
    if verdict.why == "horizon":
        return _advice_past_horizon(obj, retry, verdict.retry_keys)
    if verdict.why == "unreadable":
        return _advice_unreadable(obj, progress)
    if stale:
        return _advice_beside_horizon(obj, verdict, progress, earlier, stale, give_up_after)
    if verdict.why == "permanent":
        return _advice_refused(obj, retry)
    return _advice_lasting(obj, verdict, oldest, give_up_after, retry)


def _advice_past_horizon(obj: ObjectInfo, retry: str, keys: tuple[str, ...]) -> tuple[str, str]:
    """`keys`: the keys whose batches hold rows of this file (`HorizonPassed.retry_keys`),
    each named with its own retry; none, this file's own batches."""
    others = [key for key in keys if key != obj.key]
    if not others:
        subject = f"{obj.key}: not re-sent: its unacknowledged batches are over 23 h old"
        todo = (
            "Check in Stripe which of its rows were accepted, then run "
            f"`{retry} --yes` to send the unacknowledged batches again (rows Stripe already "
            "accepted would be billed twice), or upload only the missing rows under a new key."
        )
        return subject, todo
    own = f"`{retry} --yes`" if obj.key in keys else f"`{retry}`"
    subject = (
        f"{obj.key}: not sent: {' and '.join(others)} sent rows of it in batches over 23 h old"
    )
    todo = (
        f"Check in Stripe which of those rows were accepted, then run {_retries(others)} and "
        f"{own}, or upload only the missing rows under a new key."
    )
    return subject, todo


def _retries(keys: Sequence[str]) -> str:
    """The `poll --retry KEY --yes` of each other key whose batches hold rows of a file."""
    runs = " and ".join(f"`meterfix poll --retry {key} --yes`" for key in keys)
    its = "its" if len(keys) == 1 else "their"
    return f"{runs} ({its} unacknowledged batches count as never sent)"


def _advice_unreadable(obj: ObjectInfo, progress: ObjectProgress) -> tuple[str, str]:
    subject = f"{obj.key}: cannot be read past a point; rows before it were sent"
    todo = (
        f"Rows before row {progress.resume_row} are billed; nothing after the unreadable "
        "part was sent. Upload the rows after it, fixed, under a new key (rows that carry "
        "identifiers and were sent are left out of a fixed copy of the whole file; rows "
        "without would be billed again)."
    )
    return subject, todo


def _advice_refused(obj: ObjectInfo, retry: str) -> tuple[str, str]:
    subject = f"{obj.key}: Stripe refused a request built from this file; the poller gave up"
    todo = (
        "Fix the rows Stripe names and upload the fixed file under the same key (rows it "
        "accepted are left out of it; a row without an identifier is named after its key, "
        "so under a new key one it accepted would be billed again, and one without a "
        "timestamp too is named after the version: leave those out), or fix the cause and "
        f"run `{retry}`."
    )
    return subject, todo


def _advice_lasting(
    obj: ObjectInfo, verdict: Verdict, oldest: datetime | None, give_up_after: int, retry: str
) -> tuple[str, str]:
    subject = f"{obj.key}: import failing for {_span(give_up_after)}; the poller gave up"
    deadline = (
        f"before {_utc(oldest + RESEND_HORIZON)} UTC (later, it asks for --yes: "
        "Stripe may no longer dedupe the rows it re-sends)"
        if oldest
        else "(no unacknowledged batch is waiting: nothing would be sent twice)"
    )
    todo = (
        f"Failing since {_utc(verdict.failing_since)} UTC. Fix the cause (Stripe's "
        f"status, the API key, the network), then run `{retry}` {deadline}."
    )
    return subject, todo


def _advice_beside_horizon(
    obj: ObjectInfo,
    verdict: Verdict,
    progress: ObjectProgress,
    earlier: datetime | None,
    stale: PastHorizon,
    give_up_after: int,
) -> tuple[str, str]:
    """A refusal or a lasting failure beside batches past the horizon: each named with its
    advice. A retry asks for --yes at once, so the deadline is when the other unacknowledged
    batches (those given up for the failure) would join them."""
    retry = f"meterfix poll --retry {obj.key}"
    if verdict.why == "permanent":
        cause = "Stripe refused a request built from this file"
        todo = _advice_refused(obj, retry)[1]
    else:
        cause = f"import failing for {_span(give_up_after)}"
        todo = _lasting_beside_horizon(verdict, progress, earlier, stale.own)
    old = "unacknowledged batches of it are over 23 h old"
    if not (stale.own or stale.before):  # other keys' batches only (`PastHorizon.others`)
        old = (
            f"{' and '.join(stale.others)} sent rows of it in unacknowledged batches over 23 h old"
        )
    subject = f"{obj.key}: {cause}, and {old}; the poller gave up"
    return subject, f"{todo} {_stale_part(stale, obj.key, retry)}"


def _lasting_beside_horizon(
    verdict: Verdict,
    progress: ObjectProgress,
    earlier: datetime | None,
    stale: tuple[SentBatch, ...],
) -> str:
    """The lasting failure's part: the other unacknowledged batches, and their deadline."""
    held = {batch.number for batch in stale}
    waiting = tuple(b for b in progress.unacked if b.number not in held)
    oldest = min((b.first_sent_at for b in waiting), default=None)
    oldest = min((t for t in (oldest, earlier) if t is not None), default=None)
    given_up = f"{describe_batches(waiting)}, never acknowledged" if waiting else "no batch"
    deadline = (
        f"before {_utc(oldest + RESEND_HORIZON)} UTC (later, their rows too may be billed twice)"
        if oldest
        else "(no other unacknowledged batch is waiting: nothing else would be sent twice)"
    )
    return (
        f"Failing since {_utc(verdict.failing_since)} UTC. Given up for it: {given_up}: fix "
        f"the cause (Stripe's status, the API key, the network), then retry {deadline}."
    )


def _stale_part(stale: PastHorizon, key: str, retry: str) -> str:
    """What to do of the batches past the horizon beside another cause: this version's and
    earlier versions' of the key (a retry --yes decides on both), then other keys'."""
    named = [describe_batches(stale.own)] if stale.own else []
    for etag in dict.fromkeys(etag for _, etag, _ in stale.before):
        batches = tuple(batch for _, e, batch in stale.before if e == etag)
        named.append(f"{describe_batches(batches)} of an earlier version of {key} (ETag {etag})")
    parts = []
    if named:
        its = "its" if len(stale.own) + len(stale.before) == 1 else "their"
        parts.append(
            f"Past the 23 h horizon: {' and '.join(named)}: Stripe may no longer dedupe "
            f"{its} rows, so `{retry}` sends nothing without --yes; check in Stripe which of "
            f"them were accepted, then run `{retry} --yes` (it sends every unacknowledged "
            "batch again: rows Stripe already accepted would be billed twice), or upload only "
            "the missing rows under a new key."
        )
    if stale.others:
        parts.append(
            f"Past the 23 h horizon: {' and '.join(stale.others)} sent rows of this file in "
            "batches Stripe never acknowledged: check in Stripe which of those rows were "
            f"accepted, then run {_retries(stale.others)} and `{retry}`, or upload only the "
            "missing rows under a new key."
        )
    return " ".join(parts)


def _utc(moment: datetime) -> str:
    """PostgreSQL gives a time back in the session's time zone: printed in UTC, as labelled."""
    return f"{moment.astimezone(UTC):%Y-%m-%d %H:%M}"


def resolve_gave_up(engine: Engine, obj: ObjectInfo) -> None:
    resolve_alert(engine, gave_up_key(obj))


def _span(seconds: int) -> str:
    """`2.0 h`, `1.5 min`, `45 s`: a give-up window of 90 s was "0.0 h"."""
    if seconds >= 3600:
        return f"{round(seconds / 3600, 1)} h"
    return f"{round(seconds / 60, 1)} min" if seconds >= 60 else f"{seconds} s"
