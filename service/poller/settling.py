"""Whether a version that ends mid-line is settled (safe to read), by the poller's own clock.

A version whose last byte is not a line end may be a file a writer has not finished (its last
row cut short: `125` read as `12`, billed so, and the whole row then left out of the finished
version as sent). Comparing its mtime or LastModified with the host's clock took a writer
whose clock is behind for one done long ago, and one whose clock is ahead for one still being
written for as long. Instead such a version is read once two listings at least SETTLE apart,
measured by the poller's clock from the end of the first to the start of the second, found it
unchanged: the same (key, ETag), size and LastModified. A version ending with a line end is
read at once; one that changes is another version, and the one listed before is marked gone
when no listing has it any more (`PollerStore.mark_unlisted`).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from remediation.ports import ObjectInfo
from service.errors import ObjectNotSettled
from service.poller.versions import PollerStore

SETTLE = timedelta(seconds=30)


@dataclass(frozen=True, slots=True)
class Listing:
    """When a pass's listing started and ended, by the poller's clock."""

    started: datetime
    ended: datetime


def check_settled(store: PollerStore, obj: ObjectInfo, listing: Listing) -> None:
    """For a version that ends mid-line: return when an earlier listing at least SETTLE
    before this one found it as it is; otherwise raise ObjectNotSettled (this listing, or the
    earlier one still under SETTLE ago, starts the wait)."""
    since = store.settling_since(obj)
    if since is None:
        since = listing.ended
        store.start_settling(obj, since)
    elif listing.started - since >= SETTLE:
        return
    ready = since + SETTLE
    raise ObjectNotSettled(
        f"{obj.key} ends mid-line: still being written? read once two listings "
        f"{SETTLE.seconds} s apart by the poller's clock find it unchanged (size, "
        "LastModified, ETag)",
        ready_at=ready.timestamp(),
    )
