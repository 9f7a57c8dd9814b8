"""Where a remediation task's input comes from: Stripe's files (streamed to disk) and the
source object in the bucket (by key, else by file name). Its lineage and the generation its
corrected rows get are `input_lineage.py`'s.

A task whose input cannot be had raises `TaskInputMissing` (not retried: a person must look);
a copy of a Stripe file of another size than its file object says, or a file object unread
now (no answer, a 5xx, a 429, a deadline, the API key refused: 401, 403), `StripeFileError`
(retried, dead-lettered with its reason after MFX_MAX_ATTEMPTS); only a file object Stripe
answers it has not (404, 410: `_gone`) is done without.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

from remediation.errors import UnreadableFile
from remediation.ports import Bucket, StripeFiles
from remediation.readers import CsvRecords
from remediation.repair import plan_input, read_repaired
from remediation.rules import Rules
from service.adapters.bucket_base import file_digests
from service.errors import StripeFileError, TaskInputMissing
from service.jobs.run_context import RunContext
from service.jobs.store.runs import finished_run
from service.logs import log_event
from service.models import ImportSet
from service.models._types import as_utc, utcnow
from service.notify.alerts import raise_alert
from service.poller.store import objects_named

# A local file's name: the longest most filesystems take is 255 bytes; a key's last part
# may be longer (S3 keys run to 1,024 bytes).
LOCAL_NAME_BYTES = 200


def local_name(key: str) -> str:
    """The name of the local copy of the object `key`: its last part, or, past
    `LOCAL_NAME_BYTES`, its start and a digest of the whole with its suffix (the format is
    told by it). A longer name failed the download (`File name too long`), and the task was
    retried until dead, its rows never remediated."""
    name = Path(key).name or "object"
    if len(name.encode("utf-8", "surrogatepass")) <= LOCAL_NAME_BYTES:
        return name
    suffix = Path(name).suffix
    suffix = suffix if len(suffix) <= 16 and suffix.isascii() else ""
    digest = hashlib.sha256(name.encode("utf-8", "surrogatepass")).hexdigest()[:16]
    return f"{name[:64]}-{digest}{suffix}"


@dataclass
class JobDeps:
    """What every remediation job needs: the run context and Stripe's Files API."""

    run: RunContext
    files: StripeFiles


def event_time(import_set: ImportSet) -> int:
    created = import_set.detail.get("event_created")
    if isinstance(created, int):
        return created
    return int((as_utc(import_set.created_at) or utcnow()).timestamp())


def download(
    files: StripeFiles, file_id: str, folder: Path, metadata: Mapping[str, Any] | None = None
) -> Path:
    """Stream the file to disk, named after Stripe's filename so its format is known, and
    whole: as many bytes as the file object's `size` (`_require_whole`). `metadata`: the
    file object, when the caller read it (else read here, and done without on a failure)."""
    if metadata is None:
        metadata = _file_metadata(files, file_id)
    filename = str(metadata.get("filename") or "")
    name = "failed-records.csv"
    if filename.lower().endswith((".csv", ".json", ".jsonl")):
        name = local_name(filename)
    path = folder / name
    files.download_file(file_id, path)
    _require_whole(file_id, path, metadata.get("size"))
    return path


def _file_metadata(files: StripeFiles, file_id: str) -> Mapping[str, Any]:
    """The file object, or none when Stripe has it not for us (`_gone`): the contents are
    then read without a size to hold them against, named as a CSV. Unread for another
    reason (no answer, a 5xx, a 429, its deadline, a refused key), the try fails: read
    without it, contents cut short on the way were taken for the whole file, and a JSON
    Lines file read as a CSV."""
    try:
        return files.file_metadata(file_id)
    except StripeFileError as exc:
        if not _gone(exc):
            raise
        log_event("remediation.file_metadata_failed", level=logging.WARNING, error=str(exc))
        return {}


def _require_whole(file_id: str, path: Path, size: object) -> None:
    """StripeFileError (retried) when the copy at `path` (then removed) holds other than
    `size` bytes, the file object's. A body sent without a Content-Length ends where the
    connection closes: one cut short read as the whole file, its last rows neither corrected
    nor quarantined, nothing said."""
    if not isinstance(size, int) or isinstance(size, bool) or size < 0:
        return  # no size to hold it against (the metadata could not be had)
    got = path.stat().st_size
    if got != size:
        path.unlink(missing_ok=True)
        raise StripeFileError(
            f"file {file_id}: downloaded {got} bytes where its file object says {size} "
            "(the contents cut short on the way?): not read, retried"
        )


def warn_rows_short(deps: JobDeps, import_set: ImportSet, run_key: str, left_out: int) -> None:
    """A warning alert when the run `run_key` over the import set's failed-records file read
    fewer rows (remediated, or `left_out`) than Stripe counted failed (`errors.row_count`):
    the rows the file lacks were neither corrected nor quarantined, and the run alone read as
    the whole. The run stands: the rows it read are Stripe's failed records all the same."""
    counted = import_set.errors_row_count
    run = finished_run(deps.run.engine, run_key)
    if counted is None or run is None or run.input_rows + left_out >= counted:
        return
    read = run.input_rows + left_out
    raise_alert(
        deps.run.engine,
        key=f"remediation:rows_short:{import_set.import_set_id}",
        severity="warning",
        kind="remediation_input",
        subject=(
            f"import set {import_set.import_set_id}: its failed-records file held {read} of "
            f"the {counted} rows Stripe counted"
        ),
        message=(
            f"{counted - read} failed row(s) of {import_set.source_object or 'the import'} "
            f"were not in file {import_set.errors_file_id} as read: neither corrected nor "
            "quarantined; compare the file with the import in Stripe's dashboard"
        ),
        rows=counted - read,
        links={"run": run.id, "import_set": import_set.import_set_id},
    )


class FailedSource(NamedTuple):
    path: Path  # the failed file, downloaded
    name: str  # the source its outputs name (a bucket key or Stripe's file id)
    copied: bool  # read from Stripe's copy: the object the import set names holds other bytes


def fetch_source(
    deps: JobDeps, import_set: ImportSet, folder: Path, named_before: str | None = None
) -> FailedSource:
    """The failed file, and the source its outputs name: the bucket object the import set
    names, else the object of ours with the same file name, seen last before the event, as
    long as it holds the very bytes of the copy Stripe kept (its `file`); else that copy
    itself. Every row of a failed file is re-sent, so an object that holds other bytes (the
    named one overwritten since, another folder's file of the same name) never stands in for
    it. Only configured hosts are called. `named_before`: the source a crashed try named,
    named again when the copy is read (the object overwritten since): named after the copy,
    the redo wrote a second corrected file beside the first try's, the rows without an
    identifier under other identifiers (billed twice)."""
    bucket = deps.run.bucket
    named = next(
        (k for k in candidate_keys(bucket, import_set.source_object) if bucket.head(k)), None
    )
    if import_set.source_file_id:
        (folder / "stripe").mkdir(parents=True, exist_ok=True)
        metadata = _file_metadata(deps.files, import_set.source_file_id)
        copy = download(deps.files, import_set.source_file_id, folder / "stripe", metadata)
        keys = [named] if named is not None else objects_like(deps, import_set, metadata)
        for key in keys:
            if _holds(bucket, key, copy, folder / "bucket"):
                return FailedSource(folder / "bucket" / local_name(key), key, copied=False)
        if named is not None:
            log_event("remediation.source_changed", key=named, file=import_set.source_file_id)
        return FailedSource(copy, named_before or import_set.source_file_id, copied=True)
    if named is not None:
        # no copy of Stripe's to hold it against: the object, unless it changed after the event
        info = bucket.head(named)
        if info is not None and info.last_modified.timestamp() > event_time(import_set) + 300:
            raise TaskInputMissing(
                f"object {named} of import set {import_set.import_set_id} changed after the "
                "import failed, and Stripe kept no copy: the failed file is gone"
            )
        path = folder / local_name(named)
        bucket.download(named, path)
        return FailedSource(path, named, copied=False)
    raise TaskInputMissing(
        f"source of import set {import_set.import_set_id} not found "
        f"(object {import_set.source_object!r}, file {import_set.source_file_id!r})"
    )


def later_version(
    deps: JobDeps, import_set: ImportSet, folder: Path, copy: Path | None = None
) -> Path | None:
    """The object the import set names, downloaded into `folder`, when it is a later version
    than the one Stripe took: Stripe's connector takes it whole too, and the rows it holds
    with it (billed as the customer fixed them by hand, or refused again). A later version
    holds other bytes than Stripe's copy of the file it took (`copy`, else the import set's
    source file); without a copy to hold it against, one written after the import set's
    event is taken for one. None: no such object."""
    bucket = deps.run.bucket
    heads = ((k, bucket.head(k)) for k in candidate_keys(bucket, import_set.source_object))
    named, info = next(((k, i) for k, i in heads if i is not None), (None, None))
    if named is None or info is None:
        return None
    if copy is None:
        if info.last_modified.timestamp() <= event_time(import_set):
            return None  # the version Stripe took, or one before it
        if import_set.source_file_id:
            copy = _stripe_copy(deps, import_set.source_file_id, folder / "stripe")
    if copy is not None and _holds(bucket, named, copy, folder / "bucket"):
        return None  # the very bytes Stripe took, uploaded again
    path = folder / "later" / local_name(named)
    path.parent.mkdir(parents=True, exist_ok=True)
    bucket.download(named, path)
    return path


def _stripe_copy(deps: JobDeps, file_id: str, folder: Path) -> Path | None:
    """Stripe's copy of the file it took, whole (as many bytes as its file object says), or
    None when Stripe has none to give (`_gone`): the failed records are remediated all the
    same, the object judged by its time alone. A copy not had whole this time (cut short, too
    slow, a dropped connection, a 5xx, a 429, the key refused: 401, 403, its file object
    unread) fails the try, which is
    retried: taken for none, an object written again after the event with the very bytes
    Stripe took was a later version by its time, and the failed records it holds were left
    to Stripe's connector, never corrected, though the connector had nothing new to take."""
    folder.mkdir(parents=True, exist_ok=True)
    try:
        return download(deps.files, file_id, folder, deps.files.file_metadata(file_id))
    except StripeFileError as exc:
        if not _gone(exc):
            raise
        log_event("remediation.source_copy_gone", level=logging.WARNING, error=str(exc))
        return None


def _gone(exc: StripeFileError) -> bool:
    """Stripe answered that the file is not there (404, 410): no try will have it. Any other
    answer fails the try: 401 and 403 refuse our key (rolled, or restricted without Files
    read), not the file, and 400 is a request of ours Stripe did not take; taken for none,
    the object was judged by its time alone and its failed records could be left to Stripe's
    connector, nothing said."""
    return exc.status in (404, 410)


def identifiers_in(path: Path, rules: Rules) -> set[str]:
    """The identifiers a usage file holds (none when it cannot be read: Stripe fails it as a
    whole, and its rows come back in their own import set)."""
    try:
        plan = plan_input(path, rules)
        with path.open("rb") as stream:
            records = read_repaired(stream, plan, rules)
            if not isinstance(records, CsvRecords):
                return {r.identifier for r in records if r.identifier}
            # a CSV's identifier column alone, a block of cells at a time (1M rows: 0.4 s
            # against 2.5 s read as records)
            found: set[str] = set()
            for _, cells in records.identifier_blocks():
                found.update(cells)
            found.discard("")
            return found
    except UnreadableFile:
        return set()


def objects_like(
    deps: JobDeps, import_set: ImportSet, metadata: Mapping[str, Any] | None = None
) -> list[str]:
    """The objects of ours named as Stripe's copy of a failed file, seen by the event (5 min
    clock skew), newest first; none when Stripe has no file object for it (`_file_metadata`):
    no name, no match, Stripe's own copy is the input. A file object unread now fails the try
    (taken for none, the copy was the input of a try where a later try finds our object).
    `metadata`: the file object, when the caller read it (else read here)."""
    if metadata is None:
        metadata = _file_metadata(deps.files, import_set.source_file_id or "")
    filename = str(metadata.get("filename") or "")
    name, before = Path(filename).name, event_time(import_set)
    if not name:
        return []
    return [
        key
        for key, seen in objects_named(deps.run.engine, name)
        if key.rsplit("/", 1)[-1] == name and (seen is None or seen.timestamp() <= before + 300)
    ]


def _holds(bucket: Bucket, key: str, copy: Path, folder: Path) -> bool:
    """Whether the object at `key` holds the bytes of `copy` (sizes first, then SHA-256 of a
    download into `folder`, named as the key)."""
    info = bucket.head(key)
    if info is None or info.size != copy.stat().st_size:
        return False
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / local_name(key)
    bucket.download(key, path)
    return file_digests(path)[0] == file_digests(copy)[0]


def candidate_keys(bucket: Bucket, key: str | None) -> Iterator[str]:
    if not key:
        return
    yield key
    if bucket.prefix and not key.startswith(bucket.prefix):
        yield bucket.prefix + key
