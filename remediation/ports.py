"""The small interfaces remediation needs from the outside world; service/adapters implements them.

Nothing here imports an SDK. Adapters are built in `service` (app factory, worker, CLI) and
passed down to handlers and remediation.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO, Protocol, runtime_checkable

from remediation.meters import Meter

if TYPE_CHECKING:
    from remediation.core.columns import Batch, Indexes


@dataclass(frozen=True, slots=True)
class ObjectInfo:
    key: str  # full key inside the bucket (includes the configured prefix)
    etag: str
    size: int
    last_modified: datetime
    metadata: Mapping[str, str] = field(default_factory=dict)


class Bucket(Protocol):
    """A usage bucket (`s3://bucket/prefix` or `file://dir`); keys are relative to its root."""

    @property
    def prefix(self) -> str: ...

    def list_objects(self, prefix: str = "") -> Iterator[ObjectInfo]: ...

    def head(self, key: str) -> ObjectInfo | None: ...

    def open_read(self, key: str, etag: str | None = None) -> BinaryIO:
        """The object's bytes; with `etag`, that version's or ObjectChanged (raised on open,
        or by the stream's last read when it changed while read)."""
        ...

    def download(self, key: str, dest: Path) -> None: ...

    def upload(self, src: Path, key: str, metadata: Mapping[str, str]) -> bool:
        """Upload `src` to `key` with lineage metadata; False when an identical object exists."""
        ...


class MeterSource(Protocol):
    def meters(self) -> Sequence[Meter]:
        """Every meter (active and inactive), cached by the adapter."""
        ...


class StripeFiles(Protocol):
    def download_file(self, file_id: str, dest: Path) -> None:
        """Stream `/v1/files/{id}/contents` from the configured files host to `dest`."""
        ...

    def file_metadata(self, file_id: str) -> Mapping[str, Any]: ...


class CustomerDirectory(Protocol):
    """Both raise `LookupRefused` when Stripe refuses the look-up of that text for good."""

    def exists(self, customer_id: str) -> bool: ...

    def search_by_metadata(self, key: str, value: str) -> list[str]:
        """Customer ids whose metadata[key] == value (used only when configured)."""
        ...


class CustomerRecords(Protocol):
    """Whether Stripe ever made a customer: a deleted one is kept as a stub (its meter events
    may have been billed before), so only a customer it never had proves a row naming it was
    refused whenever it was sent."""

    def never_existed(self, customer_id: str) -> bool: ...


class LeavesOut(Protocol):
    """Rows a caller leaves out of a run by their identifier (rows billed from another
    version, handled by another run): asked a chunk of distinct identifiers at a time, told
    how many rows it left out. The run reads its input in columns all the same (a filter
    over records made the service's import-set runs read every row as a record: 8x slower)."""

    def excluded(self, identifiers: set[str]) -> set[str]: ...

    def count_left(self, rows: int) -> None: ...


@runtime_checkable
class SelectsRows(LeavesOut, Protocol):
    """A caller's selection of the rows of a run that is more than identifiers left out (an
    error report's run: identifiers for the rows without one, the rows the report is about,
    each with its code): handed each batch as it is read, in order, every row of the input
    (rows left out included), it gives the batch the run takes. `excluded` and `count_left`
    are not asked of it."""

    def selected(self, batch: Batch) -> Batch: ...

    def passed_over(self) -> tuple[Batch, Indexes]:
        """The batch last given to `selected`, as the run names its rows, and the rows of it
        not taken: Stripe took them (billed), so no row going out may share an identifier
        with one (`core.sameids`); asked once after each `selected`."""
        ...


class MeterEventSink(Protocol):
    def send(self, events: Sequence[Mapping[str, Any]]) -> None:
        """Send up to 100 meter events (v2 meter event stream shape)."""
        ...
