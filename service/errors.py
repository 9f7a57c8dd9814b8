"""Every exception the service raises, in one place, each with a `reason` safe to log.

ServiceError                    reason: one line, no secrets
├── WebhookRejected             a delivery we refuse (status: 400 or 413)
├── InboxUnavailable            the database could not store an event (503)
├── LeaseLost                   another worker took the item over
├── SchemaNotCurrent            `meterfix db upgrade` is due
├── SchemaNewer                 a newer release upgraded the database
├── TimeLimitExceeded           an item ran past MFX_TASK_TIME_LIMIT
├── ItemInterrupted             the worker was asked to stop mid-item
├── TaskInputMissing            a task's input cannot be had (dead-lettered at once)
│   └── OutputKeyTaken          a run's output key holds an earlier try's other object
├── RerunInputMissing           the admin action naming the rows is gone
├── HorizonPassed               resuming would re-send batches past the 23 h horizon
├── StripeFileError             a Stripe file could not be fetched (status)
├── MeterEventSendError         a batch of meter events was not accepted (status, permanent)
├── BucketError                 a bucket operation failed
│   └── ObjectNotFound          the key does not exist (also a FileNotFoundError)
├── DeliveryFailed              a Slack or email message was not delivered (permanent)
│   └── MaybeDelivered          a try went out without an answer: it may have arrived
├── BadParameter                a query parameter that cannot be used (400; a ValueError)
├── NotFound                    the item does not exist (404; a LookupError)
└── Conflict                    the item is not in a state the action applies to (409)
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from typing import NamedTuple, Protocol


class ServiceError(Exception):
    """Base of the service's exceptions: `reason` says why in one line."""

    def __init__(self, reason: str = "") -> None:
        super().__init__(reason)
        self.reason = reason


class WebhookRejected(ServiceError):
    """A delivery we refuse; `reason` goes back to the sender as `{"error": reason}`."""

    def __init__(self, reason: str, status: int = 400) -> None:
        super().__init__(reason)
        self.status = status


class InboxUnavailable(ServiceError, RuntimeError):
    """The database could not store the event (the webhook answers 503; Stripe retries)."""


class LeaseLost(ServiceError, RuntimeError):
    """Another worker took the row over (our lease expired): our writes are rolled back."""


class SchemaNotCurrent(ServiceError, RuntimeError):
    """The database has no schema yet, or an older one: `meterfix db upgrade` is due."""


class SchemaNewer(ServiceError, RuntimeError):
    """The database is at a revision this release does not ship: a newer one upgraded it."""


class TimeLimitExceeded(ServiceError):
    """The item ran past its time limit; its thread is abandoned (still running)."""

    def __init__(self, limit_seconds: float, granted: float = 0.0) -> None:
        more = f" and the {granted:g} s more its transfers were given" if granted else ""
        super().__init__(f"exceeded the {limit_seconds:g} s time limit (MFX_TASK_TIME_LIMIT){more}")


class ItemInterrupted(ServiceError):
    """The worker was asked to stop while the item ran; its thread is abandoned."""


class TaskInputMissing(ServiceError):
    """The task's input cannot be had (not retried: a person must look)."""


class OutputKeyTaken(TaskInputMissing):
    """A run's output key holds other bytes than the run's try makes, or a corrected object of
    the run's names that the try does not make: an earlier try's object that may have been
    imported, never replaced (not retried: a person must look; the reason says whether
    removing it has the try's output sent in its place, or only undoes nothing)."""


class EventUnreadable(ServiceError):
    """The full event Stripe answered for a stored notification is one the SDK cannot read
    (`data: null`, a field of the wrong shape): retrying gets the same answer, so the worker
    dead-letters it at once with the reason (visible, alerted, replayable)."""


class RerunInputMissing(ServiceError):
    """The admin action naming the rows is gone or unreadable (not retried)."""


class SentBatch(Protocol):
    """What HorizonPassed reads of a batch (`service.poller.object_progress.SentBatch`)."""

    @property
    def first_sent_at(self) -> datetime: ...
    @property
    def rows(self) -> int: ...


class HeldBy(NamedTuple):
    """Another version whose unacknowledged batches past the horizon hold rows of the version
    HorizonPassed stops: how it is named (`label`: its key, or "an earlier version of it", and
    its ETag), its `key` (`meterfix poll --retry KEY --yes` decides on them), the batches."""

    label: str
    key: str
    batches: Sequence[SentBatch]


class HorizonPassed(ServiceError):
    """Resuming would re-send batches first sent more than 23 h ago. `elsewhere`: the other
    versions whose batches those are (they hold rows of this one), each named with its own
    batches, rows, first send and retry: named by the first alone, one file's rows sent by
    two others were all counted as the first's, the other never named."""

    def __init__(
        self,
        stale: Sequence[SentBatch],
        elsewhere: Sequence[HeldBy] = (),
        *,
        failure: ServiceError | None = None,
    ) -> None:
        # the keys `meterfix poll --retry KEY --yes` decides on them with
        self.elsewhere = tuple(elsewhere)
        self.retry_keys = tuple(dict.fromkeys(held.key for held in self.elsewhere))
        # `failure`: what another batch of the same pass failed with (a lasting outage): the
        # object is judged on both (`service.poller.failures.judge`)
        self.failure = failure
        beside = (
            f"; another batch failed beside them: {type(failure).__name__}: {failure}"
            if failure is not None
            else ""
        )
        if len(self.elsewhere) > 1:
            super().__init__(f"{_held_by_several(self.elsewhere)}{beside}")
            return
        by = f" of {self.elsewhere[0].label}, which hold rows of this file," if elsewhere else ""
        super().__init__(
            f"{_sent_text(stale, by)}, more than 23 h ago; sending them again could bill "
            f"twice{beside}"
        )


def _sent_text(batches: Sequence[SentBatch], by: str = "") -> str:
    """`2 unacknowledged batches{by} (40 rows) were first sent at <time> UTC`."""
    first = min(b.first_sent_at for b in batches)
    # in UTC whatever zone it was read in (PostgreSQL: the session's; SQLite: naive UTC)
    first = first.replace(tzinfo=UTC) if first.tzinfo is None else first.astimezone(UTC)
    rows = sum(b.rows for b in batches)
    return (
        f"{len(batches)} unacknowledged batches{by} ({rows} rows) were first sent at "
        f"{first:%Y-%m-%d %H:%M} UTC"
    )


def _held_by_several(elsewhere: Sequence[HeldBy]) -> str:
    """Each version's batches, with its own retry."""
    each = "; ".join(
        f"{_sent_text(held.batches, f' of {held.label}')} "
        f"(`meterfix poll --retry {held.key} --yes` decides on them)"
        for held in elsewhere
    )
    return (
        f"batches of {len(elsewhere)} other versions hold rows of this file, unacknowledged and "
        f"first sent more than 23 h ago; sending them again could bill twice: {each}"
    )


class StripeFileError(ServiceError):
    """A file could not be fetched."""

    def __init__(self, reason: str, *, status: int | None = None) -> None:
        super().__init__(reason)
        self.status = status


class MeterEventSendError(ServiceError):
    """A batch of meter events was not accepted.

    `permanent`: Stripe refused the request itself (HTTP 400), so sending it again cannot
    succeed; otherwise the failure outlasted the retries and a later attempt may.
    `retry_after`: the seconds Stripe's last answer asked us to wait (`Retry-After`), if any:
    the poller tries the object again no sooner."""

    def __init__(
        self,
        reason: str,
        *,
        status: int | None = None,
        permanent: bool = False,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(reason)
        self.status = status
        self.permanent = permanent
        self.retry_after = retry_after


class PartlyUnreadable(ServiceError):
    """An object could not be read past some point after rows before it were sent: not a
    whole-file failure (a whole-file repair would send those rows again), so the poller gives
    up on it at once and says what was sent."""

    permanent = True


class BucketError(ServiceError):
    """A bucket operation failed."""


class ObjectNotFound(BucketError, FileNotFoundError):
    """The key does not exist in the bucket."""


class ObjectChanged(BucketError):
    """The object under a key is no longer the version asked for (its ETag): it was
    overwritten or deleted after it was listed, or changed while it was read."""


class ObjectNotSettled(BucketError):
    """An object version that may still be being written (it ends mid-line): read once two
    listings SETTLE apart by the poller's clock find it unchanged (`service.poller.settling`).
    `ready_at` is when it may be taken again."""

    def __init__(self, reason: str, *, ready_at: float) -> None:
        super().__init__(reason)
        self.ready_at = ready_at


class DeliveryFailed(ServiceError):
    """A channel could not deliver a message; `reason` is safe to log and store."""

    def __init__(self, reason: str, *, permanent: bool = False, delivered: bool = False) -> None:
        super().__init__(reason)
        self.permanent = permanent
        self.delivered = delivered  # some recipients have it (sending again repeats it)


class MaybeDelivered(DeliveryFailed):
    """A try went out whole and no answer came (the connection dropped or timed out after
    the request went, a gateway's 502 or 504, the deadline while waiting for the answer):
    the message may have arrived. The send stops there, trying it no more (the next try
    could deliver it twice, and a server that takes every try and never answers had it on
    every try); what follows is the caller's (the critical alerts count it as possibly
    arrived, the digest tries its window again after a backoff)."""


class BadParameter(ServiceError, ValueError):
    """A query parameter that cannot be used; the reason is given to the caller."""


class NotFound(ServiceError, LookupError):
    """The item does not exist (404)."""


class Conflict(ServiceError, ValueError):
    """The item is not in a state the action applies to (409)."""
