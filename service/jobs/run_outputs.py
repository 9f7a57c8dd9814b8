"""A run's outputs into the bucket, never replacing an object an earlier try made.

Uploaded while the run's audit and quarantined rows load (`upload_while_loading`), each after
a check that the run's locks are held still, and each recorded as an `OutputObject` row. Before
any upload, a corrected object of other bytes at one of the run's keys, or one of its names
this try does not make, fails the run (`OutputKeyTaken`): Stripe's connector would import it
again (billed twice).
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from remediation.filetypes import FileFormat
from remediation.outputs import PlannedOutput, output_name, source_stem
from remediation.ports import ObjectInfo
from service.adapters.bucket import file_digests, output_key
from service.adapters.bucket_base import SHA_KEY, is_identical
from service.errors import OutputKeyTaken
from service.jobs.run_audit import AuditWriter
from service.jobs.run_context import RunContext, RunRequest
from service.jobs.stages import Stage, Stages
from service.logs import log_event
from service.models import OutputKind


def upload_while_loading(
    ctx: RunContext,
    request: RunRequest,
    outputs: Sequence[PlannedOutput],
    audit: AuditWriter,
    stages: Stages,
    uploaded: list[dict[str, Any]],
) -> None:
    """The outputs to the bucket (each appended to `uploaded` once there) while the run's
    audit and quarantined rows go into the database, on a thread of its own: the loads (~5 s
    for 900,000 corrections, sorting and indexing in the database) and the uploads (~4 s of
    network) wait on different things.
    Each upload comes after a check that the run's locks are held still. Before all of them
    and the load, the check that none would replace another object (`_refuse_replacing`):
    refused, nothing is loaded either (a failed run's quarantined rows would wait in
    quarantine, open to a re-run, beside the kept object holding them); a bucket that cannot
    be looked at fails the run as a failed upload does, after the load, uploading nothing.
    Either failing fails the run, after both have ended (the connections the loads use are
    closed only then); a redo starts the run again (its audit and quarantined rows replaced,
    identical objects not uploaded twice)."""
    try:
        _refuse_replacing(ctx, request, outputs, uploaded)
        unchecked: Exception | None = None
    except OutputKeyTaken:
        raise  # before the load: its rows would describe objects that are not in the bucket
    except Exception as exc:  # the bucket could not be looked at: nothing is uploaded unchecked
        unchecked = exc
    with ThreadPoolExecutor(1, "meterfix-audit-load") as pool:  # its exit waits for the load
        loading = pool.submit(audit.finish, ctx.fence)
        with stages.timing(Stage.UPLOAD):
            if unchecked is not None:
                raise unchecked  # the run fails once the load has ended, as an upload's would
            for output in outputs:
                ctx.check_locks()  # a corrected object is imported: billed
                uploaded.append(_upload(ctx, request, output))
        stages.add(Stage.DATABASE, loading.result())


def _upload(ctx: RunContext, request: RunRequest, output: PlannedOutput) -> dict[str, Any]:
    key = _key(ctx, request, output)
    uploaded = ctx.bucket.upload(output.path, key, output.metadata)
    log_event("remediation.output", kind=output.kind, key=key, rows=output.rows, new=uploaded)
    return _output_row(request, output.kind, key, output.rows, output.sha256, uploaded)


def _key(ctx: RunContext, request: RunRequest, output: PlannedOutput) -> str:
    return output_key(ctx.settings, ctx.bucket, output.kind, output.path.name, request.tag)


def _output_row(
    request: RunRequest, kind: str, key: str, rows: int, sha256: str, uploaded: bool
) -> dict[str, Any]:
    """An `OutputObject` of the run, as `fail_run` and `finish_run` record it."""
    return {
        "kind": OutputKind(kind),
        "key": key,
        "rows": rows,
        "sha256": sha256,
        "generation": request.generation,
        "source": request.source,
        "uploaded": uploaded,
    }


def _refuse_replacing(
    ctx: RunContext,
    request: RunRequest,
    outputs: Sequence[PlannedOutput],
    uploaded: list[dict[str, Any]],
) -> None:
    """`OutputKeyTaken`, before anything is uploaded, when a key of the run's corrected outputs
    holds other bytes, or a corrected object of the run's names is in the bucket that this try
    does not make (its rows quarantined now, fewer parts): an earlier try of the run (it
    crashed, or failed, after that upload) made them under other rules, customer map, meters or
    release. Stripe's connector (MFX_POLLER off or index) imports an object again when it is
    replaced: its rows would go out again under the same identifiers (billed twice past
    Stripe's ~24 h dedupe window), and those the object held but this try does not would stay
    billed with no record of them. Kept instead, the run's counts and audit would describe rows
    that are not in the bucket. So the run fails, not retried (a person must look), with the
    objects in the bucket as its outputs: `uploaded` gets them (uploaded: false, as the
    bucket's lineage describes them). Quarantine and audit files (under the quarantine prefix:
    `output_key`) are never imported: replaced, they describe the run's rows."""
    taken: list[str] = []
    unmade: list[str] = []  # of the run's names, made by no output of this try
    held: list[dict[str, Any]] = []
    planned = {_key(ctx, request, output) for output in outputs}
    for listed in _corrected_of_run(ctx, request):  # those this try does not make, too
        if listed.key in planned:
            continue  # checked below, against the bytes this try makes
        unmade.append(listed.key)
        info = ctx.bucket.head(listed.key) or listed
        sha = info.metadata.get(SHA_KEY, "")[:64]
        held.append(
            _output_row(request, OutputKind.CORRECTED, listed.key, _rows_of(info), sha, False)
        )
    for output in outputs:
        key = _key(ctx, request, output)
        existing = ctx.bucket.head(key)
        if existing is None:
            continue
        imported = output.kind == OutputKind.CORRECTED  # the others: the quarantine prefix
        if not imported or is_identical(existing, *file_digests(output.path)):
            held.append(_output_row(request, output.kind, key, output.rows, output.sha256, False))
            continue
        taken.append(key)
        sha = existing.metadata.get(SHA_KEY, "")[:64]
        held.append(_output_row(request, output.kind, key, _rows_of(existing), sha, False))
    if taken or unmade:
        uploaded.extend(held)
        log_event(
            "remediation.output_taken",
            level=logging.WARNING,
            run_key=request.run_key,
            keys=unmade + taken,
        )
        raise OutputKeyTaken(_taken_reason(taken, unmade))


def _taken_reason(taken: Sequence[str], unmade: Sequence[str]) -> str:
    """What the operator is told of the kept objects: one at a key this try writes may be
    removed to have the try's output sent in its place; one this try makes nothing in place
    of may not: its rows went out (probably billed) and this try holds them in quarantine,
    so removing it undoes nothing, and a replay then ends done with those rows waiting for
    a re-run that bills them again."""
    reasons: list[str] = []
    if taken:
        reasons.append(
            f"{'; '.join(taken)}: already holds another object than this run's try makes "
            "(an earlier try of the run uploaded it, under other rules, meters or release): "
            "it may have been imported (billed), and meterfix never replaces an output that "
            "may have been; nothing was uploaded. Check what was imported from it; remove it "
            "only to have this try's output sent in its place (under the same identifiers)"
        )
    if unmade:
        reasons.append(
            f"{'; '.join(unmade)}: an earlier try of the run uploaded it, and this try makes "
            "no object in its place (it quarantines those rows now, under other rules, meters "
            "or release); nothing was uploaded. It was probably imported: its rows billed "
            "already. Removing it undoes nothing and nothing would be sent in its place: keep "
            "it, and do not re-run its rows (under the identifiers it holds, less their -mfxN "
            "suffix): a replay after removing it ends with them quarantined, and a quarantine "
            "re-run bills them again"
        )
    return ". ".join(reasons)


def _corrected_of_run(ctx: RunContext, request: RunRequest) -> Iterator[ObjectInfo]:
    """The corrected objects in the bucket that a try of this run writes (one listing of the
    run's folder): named `<stem>.corrected.r<generation>` (`.layoutN`, `.partNNNN`) and a
    format's extension, exactly as `output_name` names the run's source's outputs, directly
    in the run's folder (a peer object's outputs in a folder under it are not this run's)."""
    folder = output_key(ctx.settings, ctx.bucket, OutputKind.CORRECTED, "", request.tag)
    stem = source_stem(request.source)
    pattern = re.compile(
        rf"(?P<stem>.+)\.corrected\.r{request.generation}(?:\.layout(?P<layout>\d+))?"
        rf"(?:\.part(?P<part>\d{{4}}))?\.(?P<fmt>{'|'.join(f.value for f in FileFormat)})"
    )
    for info in ctx.bucket.list_objects(folder[len(ctx.bucket.prefix) :]):
        name = info.key[len(folder) :] if info.key.startswith(folder) else ""
        found = pattern.fullmatch(name)
        if found is None:
            continue
        layout, part = found["layout"], found["part"]
        ours = output_name(
            stem,
            OutputKind.CORRECTED.value,
            request.generation,
            FileFormat(found["fmt"]),
            int(layout) if layout is not None else 1,
            int(part) if part is not None else None,
        )
        if name == ours:
            yield info


def _rows_of(existing: ObjectInfo) -> int:
    """The rows an object's lineage says it holds (0 when it says nothing readable)."""
    rows = existing.metadata.get("mfx-rows", "")
    return int(rows) if rows.isascii() and rows.isdigit() and len(rows) < 10 else 0
