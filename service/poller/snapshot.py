"""The object version a poller pass imports, copied to the work directory first.

A pass reads the version it listed, never a later one: the bucket is asked for that ETag
(`Bucket.open_read(key, etag)`: S3's `IfMatch`; a `file://` object hashed as read), so an
object overwritten between the listing and the read (or while read) is `ObjectChanged`, not
read new and recorded under the old ETag (then imported again under the new one: rows
without an identifier billed twice). The copy is also checked to be UTF-8 from end to end
before any row is sent: a bad byte 2 MB into a CSV failed the import after the rows before it
were billed, and the object was then reported failed with none sent.
"""

from __future__ import annotations

import codecs
import hashlib
import os
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from remediation.errors import UnreadableFile
from remediation.ports import Bucket, ObjectInfo

CHUNK = 1 << 20
BEAT_EVERY = 10.0  # seconds between heartbeats during a long copy
LINE_ENDS = (b"", b"\n", b"\r")


def take_snapshot(
    bucket: Bucket,
    obj: ObjectInfo,
    work_dir: Path,
    ends_mid_line: Callable[[], None],
    beat: Callable[[], None] = lambda: None,
) -> Path:
    """Copy the version `obj` names to `work_dir`; its path. Raises ObjectChanged (the
    version is gone) or UnreadableFile (not UTF-8: nothing of it can be sent as Stripe would
    read it). A copy whose last byte is not a line end calls `ends_mid_line` before its last
    character is checked (a writer's next block would finish it): it raises ObjectNotSettled
    for a version that may still be being written (`service.poller.settling`). `beat` is
    called every BEAT_EVERY seconds of a long copy (a 5 GB object copied for half an hour
    beat nothing: past MFX_HEARTBEAT_SILENCE the critical silence alert said to restart the
    worker)."""
    work_dir.mkdir(parents=True, exist_ok=True)
    digest = hashlib.sha256(f"{obj.key}\n{obj.etag}".encode()).hexdigest()[:24]
    # a name of its own: a pass whose lock dropped, leaving late, removed the copy of the
    # same version that the next pass had just made under the one name a version had
    handle, name = tempfile.mkstemp(
        prefix=f"object-{digest}-", suffix=Path(obj.key).suffix.lower()[:8], dir=work_dir
    )
    path = Path(name)
    utf8 = codecs.getincrementaldecoder("utf-8")()
    done, last = 0, b""  # bytes copied, the last of them
    beaten = time.monotonic()
    try:
        with os.fdopen(handle, "wb") as out, bucket.open_read(obj.key, etag=obj.etag) as source:
            while chunk := source.read(CHUNK):
                _decode(utf8, chunk, done)
                out.write(chunk)
                done, last = done + len(chunk), chunk[-1:]
                if time.monotonic() - beaten >= BEAT_EVERY:
                    beat()
                    beaten = time.monotonic()
            if last not in LINE_ENDS:
                ends_mid_line()
            _decode(utf8, b"", done, final=True)
    except BaseException:
        path.unlink(missing_ok=True)
        raise
    return path


def _decode(utf8: codecs.IncrementalDecoder, chunk: bytes, done: int, final: bool = False) -> None:
    pending = len(utf8.getstate()[0])  # bytes of a character cut by the previous chunk
    try:
        utf8.decode(chunk, final)
    except UnicodeDecodeError as exc:
        at = done - pending + exc.start
        raise UnreadableFile(f"not UTF-8 text: undecodable byte at offset {at}") from exc


def clear_snapshots(work_dir: Path) -> int:
    """Remove the copies a pass that died left behind (one pass runs at a time: none is in
    use); how many there were."""
    if not work_dir.is_dir():
        return 0
    found = [path for path in work_dir.glob("object-*") if path.is_file()]
    for path in found:
        path.unlink(missing_ok=True)
    return len(found)
