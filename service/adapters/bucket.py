"""The usage bucket: `s3://bucket/prefix` through boto3, or `file://PATH` on local disk.

Both implement `remediation.ports.Bucket`. Keys are full keys inside the bucket: for
`s3://b/usage` they start with `usage/` (the bucket's `prefix`); a `file://` bucket has no
prefix. Lineage travels as S3 user metadata (`mfx-source`, `mfx-generation`, `mfx-sha256`, ...)
or, on disk, in a sidecar `<object>.meta.json`. An upload is skipped (returns False) when the
same key already holds the same content (equal `mfx-sha256`, or an ETag equal to its md5).
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, Protocol

from remediation.outputs import source_stem
from remediation.ports import Bucket
from service.adapters.bucket_base import (
    CHUNK,
    SHA_KEY,
    SIDECAR_SUFFIX,
    TEMP_MARK,
    dir_prefix,
    file_digests,
    is_identical,
)
from service.adapters.file_bucket import FileBucket
from service.adapters.s3_bucket import S3Bucket, S3Limits
from service.adapters.s3_transfers import MULTIPART_BYTES
from service.config import Settings
from service.errors import BucketError, ObjectNotFound
from service.logs import log_event


class OutputFile(Protocol):
    """A remediation output as `upload_outputs` needs it."""

    @property
    def kind(self) -> str: ...  # corrected | quarantine | audit

    @property
    def path(self) -> Path: ...

    @property
    def metadata(self) -> Mapping[str, Any]: ...


def open_bucket(settings: Settings) -> Bucket:
    """The bucket named by BUCKET_URL (S3_ENDPOINT_URL honoured for S3)."""
    url = settings.bucket_url
    if url.startswith("file://"):
        return FileBucket(Path(url[len("file://") :]).absolute())
    if url.startswith("s3://"):
        # split by hand, not as a web address: a prefix may hold `#` or `?` (S3 keys do),
        # and `s3://b/usage#eu` read as one listed and wrote under `usage/`
        name, _, prefix = url[len("s3://") :].partition("/")
        if not name:
            raise BucketError(f"BUCKET_URL has no bucket name: {url!r}")
        limits = S3Limits(transfer=settings.mfx_task_time_limit)  # a streamed object in all
        return S3Bucket(name, prefix, settings.s3_endpoint_url or None, limits)
    raise BucketError(f"BUCKET_URL must start with s3:// or file://, got {url!r}")


def output_key(
    settings: Settings, bucket: Bucket, kind: str, name: str, tag: str | None = None
) -> str:
    """The one place output keys are made. Corrected files under the corrected prefix (the
    poller imports them again); quarantine and audit files under the quarantine prefix (never
    read by the poller, so an audit .jsonl is never imported). A run's outputs sit in a folder
    named by its `tag`; `meterfix remediate --upload` writes none."""
    sub = settings.mfx_corrected_prefix if kind == "corrected" else settings.mfx_quarantine_prefix
    return bucket.prefix + dir_prefix(sub) + (f"{tag}/" if tag is not None else "") + name


# An object's folder (or file name) as a path under a run's tag, in bytes; a longer one (S3
# keys run to 1,024 bytes) is named by its digest, so the output key stays within S3's limit.
OBJECT_FOLDER_BYTES = 200


def object_tag(tag: str, bucket: Bucket, key: str, peers: Iterable[str] = ()) -> str:
    """`tag` and the folder of the object `key` inside the bucket prefix (`tag` alone for an
    object at its top). A run writing the outputs of several objects under one tag (an error
    report's) names them by the object's file name: `eu/2026-11.csv` and `us/2026-11.csv`
    wrote one corrected key, the second replacing the first before it was imported (its
    rows never billed). One of `peers` (the other objects of those runs) in the same folder
    with the same stem (`day.csv`, `day.CSV`, `day.jsonl`) makes the same names there: then
    the object's file name is one folder more (`<tag>/eu/day.jsonl/`); alone, it is not."""
    relative = key[len(bucket.prefix) :] if key.startswith(bucket.prefix) else key
    folder, _, name = relative.rpartition("/")
    parts = [tag] + ([_folder_part(folder, "folder")] if folder else [])
    if _shares_stem(key, peers):
        parts.append(_folder_part(name, "file"))
    return "/".join(parts)


def _folder_part(path: str, kind: str) -> str:
    """`path` as folders under a tag, or `<kind>-<digest>` for one too long or holding an
    empty, `.` or `..` folder."""
    raw = path.encode("utf-8", "surrogatepass")
    if any(part in ("", ".", "..") for part in path.split("/")) or len(raw) > OBJECT_FOLDER_BYTES:
        return f"{kind}-{hashlib.sha256(raw).hexdigest()[:16]}"
    return path


def _shares_stem(key: str, peers: Iterable[str]) -> bool:
    """Whether another of `peers` in the folder of `key` gives its outputs the same stem."""
    folder, _, name = key.rpartition("/")
    stem = source_stem(name)
    for peer in peers:
        other_folder, _, other = peer.rpartition("/")
        if peer != key and other_folder == folder and source_stem(other) == stem:
            return True
    return False


def upload_outputs(
    bucket: Bucket,
    outputs: Sequence[OutputFile],
    settings: Settings,
    unchanged: list[str] | None = None,
) -> list[str]:
    """Upload remediation outputs with their lineage; the keys, in input order (`unchanged`,
    when given, gets those an identical object already held: nothing was written there).

    Keys are deterministic (prefix + file name), so a re-run uploads nothing new. They hold
    no run's folder, so another input of the same file name makes the same keys: an output
    key holding another file refuses the whole upload (BucketError, nothing uploaded).
    Replacing a corrected file the poller may have imported would send its rows again under
    the same identifiers (billed twice once Stripe's dedupe window is past), or lose those not
    imported yet."""
    planned = [
        (output, output_key(settings, bucket, output.kind, output.path.name)) for output in outputs
    ]
    taken = [key for output, key in planned if _holds_another(bucket, key, output.path)]
    if taken:
        held = "; ".join(f"{key} already holds another file" for key in taken)
        raise BucketError(
            f"{held} (another input of this file name, or of this name with another "
            "extension: `day.csv` and `day.jsonl` make one audit name, `day.csv` and `day.txt` "
            "one corrected name; or this input remediated with other rules or another --now): "
            "meterfix never "
            "replaces an output the poller may have imported; nothing was uploaded. Rename the "
            "input, or remove the object after checking what the poller sent from it"
        )
    keys = []
    for output, key in planned:
        metadata = {name: str(value) for name, value in output.metadata.items()}
        uploaded = bucket.upload(output.path, key, metadata)
        log_event("bucket.output", kind=output.kind, key=key, uploaded=uploaded)
        keys.append(key)
        if not uploaded and unchanged is not None:
            unchanged.append(key)
    return keys


def _holds_another(bucket: Bucket, key: str, path: Path) -> bool:
    existing = bucket.head(key)
    return existing is not None and not is_identical(existing, *file_digests(path))


__all__ = [
    "CHUNK",
    "MULTIPART_BYTES",
    "SHA_KEY",
    "SIDECAR_SUFFIX",
    "TEMP_MARK",
    "BucketError",
    "FileBucket",
    "ObjectNotFound",
    "OutputFile",
    "S3Bucket",
    "file_digests",
    "object_tag",
    "open_bucket",
    "output_key",
    "upload_outputs",
]
