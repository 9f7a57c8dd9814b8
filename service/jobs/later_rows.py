"""The rows of an import set's file that a later object version holds (`TakenAgain`): left out
when Stripe's connector may have taken that version's row in their place, run when it refused
that row too. Apart from `file_runs.py` (how the file is run) and `left_out.py` (what else is
left out).
"""

from __future__ import annotations

import shutil
import tempfile
from datetime import UTC, datetime
from pathlib import Path

from sqlalchemy import Engine

from remediation.errors import UnreadableFile
from remediation.ports import Bucket
from remediation.repair import plan_input, read_repaired
from remediation.reported import Taken, always_refused
from remediation.rules import Rules
from remediation.validation import MeterIndex
from service.errors import BucketError
from service.jobs.inputs import JobDeps, candidate_keys, event_time, identifiers_in, local_name
from service.jobs.object_runs import LeftOut, object_sources
from service.jobs.run_context import RunContext
from service.jobs.store.lineage import deferring_among, handled_among, runs_correcting
from service.models import ImportSet
from service.models._types import utcnow
from service.poller.store import LaterVersion, held_since

Holders = dict[str, dict[str, LaterVersion]]  # identifier -> {key: its version holding it}


class TakenAgain(LeftOut):
    """The rows of an import set Stripe's S3 connector refused, without those a later object
    version holds (`left`: how many): the connector takes every version whole, so it took
    them again from it (billed as the customer fixed them by hand, or refused again and then
    handled in their place). Corrected now, such a row would go out a second time under a
    derived identifier. A later version: the one the import set names now, when it is one
    (`inputs.later_version`, downloaded: `later`), and (index mode) any version the poller
    indexed, uploaded after the import set's event.

    Not a row whose every later row in another object Stripe refused and nothing handles in
    its place (`_in_place`): one held under `identifier_taken` beside a row Stripe refused too
    (`deferring_among`: its report's run left it to that row's own run, this one), or one no
    run over its object handled yet that our checks prove Stripe refuses (`ProvenRefused`: its
    report to come would leave it so). This row's own run corrects or quarantines it. Left
    out, day.csv's `k1` (a value that is text) was neither billed nor held when day2.csv's
    `k1` in milliseconds, uploaded a second after the import set's event, was refused and
    held by its report's run naming day.csv's row as the one its own run takes. A row a
    later version of the object itself holds is left out still: refused again, it comes back
    in that version's own import set, whose run handles it."""

    def __init__(self, deps: JobDeps, import_set: ImportSet, later: Path | None) -> None:
        self.engine, self.bucket = deps.run.engine, deps.run.bucket
        self.since = datetime.fromtimestamp(event_time(import_set), UTC)
        self.held = identifiers_in(later, deps.run.rules) if later is not None else set()
        self.own = set(candidate_keys(self.bucket, import_set.source_object))
        self.proof = ProvenRefused(deps.run)
        self._runs: dict[str, list[int]] = {}  # key -> the runs over its object's rows

    def excluded(self, identifiers: set[str]) -> set[str]:
        holders = held_since(self.engine, identifiers, self.since)
        taken = self.held & identifiers
        taken.update(i for i, keys in holders.items() if self.own & keys.keys())
        others = {i: keys for i, keys in holders.items() if i not in taken}
        for identifier, key in _in_place(self.engine, self.bucket, others, self._runs):
            if key is None or not self.proof.all_refused(identifier, key, others[identifier][key]):
                taken.add(identifier)
        return taken

    def outcome(self) -> str:
        what = "left to Stripe's connector: a version of the file uploaded since holds them"
        return self.said("remediation.rows_taken_again", what)


def _in_place(
    engine: Engine, bucket: Bucket, holders: Holders, runs: dict[str, list[int]]
) -> list[tuple[str, str | None]]:
    """Of `holders`, (identifier, key) for a later row not held deferring to another (as
    `TakenAgain` says) since its version was uploaded: key None when a run over its object
    handled it (corrected, or holds it waiting for a fix: in its place), else the key whose
    row none handled yet (`runs`: each key's runs, found once)."""
    asked: dict[str, dict[str, datetime]] = {}  # key -> {identifier: uploaded}
    for identifier, keys in holders.items():
        for key, version in keys.items():
            asked.setdefault(key, {})[identifier] = version.uploaded
    found: list[tuple[str, str | None]] = []
    for key, uploads in asked.items():
        if key not in runs:
            runs[key] = runs_correcting(engine, object_sources(engine, bucket, key))
        ids = sorted(uploads)
        deferring = deferring_among(engine, runs[key], ids)
        rest = [i for i in ids if i not in deferring or deferring[i] < uploads[i]]
        handled = handled_among(engine, runs[key], rest)
        found.extend((i, None if i in handled else key) for i in rest)
    return found


class ProvenRefused:
    """Which identifiers a later object version holds in rows our checks prove Stripe refused
    whenever it took them (`reported.always_refused`, taken between the upload and now), and
    in no other row: Stripe took no event under them from it. Each version read once (twice
    over: the refused rows' identifiers, then those of them a row not refused holds too);
    one gone or rewritten since proves nothing."""

    def __init__(self, run: RunContext) -> None:
        self.bucket, self.rules = run.bucket, run.rules
        limits = run.rules.policy.limits
        self.index = MeterIndex(
            run.meters, value_precision=run.rules.value_precision, limits=limits
        )
        self._refused: dict[tuple[str, str], set[str]] = {}  # (key, ETag) -> identifiers

    def all_refused(self, identifier: str, key: str, version: LaterVersion) -> bool:
        found = self._refused.get((key, version.etag))
        if found is None:
            found = self._refused[(key, version.etag)] = self._read(key, version)
        return identifier in found

    def _read(self, key: str, version: LaterVersion) -> set[str]:
        taken = Taken(int(utcnow().timestamp()), int(version.uploaded.timestamp()))
        with tempfile.TemporaryDirectory(prefix="meterfix-later-") as tmp:
            path = Path(tmp) / local_name(key)
            try:
                with self.bucket.open_read(key, version.etag) as stream, path.open("wb") as out:
                    shutil.copyfileobj(stream, out)
            except BucketError:
                return set()
            return refused_in(path, self.rules, self.index, taken)


def refused_in(path: Path, rules: Rules, index: MeterIndex, taken: Taken) -> set[str]:
    """The identifiers of the usage file `path` whose every row our checks prove Stripe
    refused (`ProvenRefused`); none when it cannot be read."""
    try:
        plan = plan_input(path, rules)
        with path.open("rb") as stream:
            refused = {
                r.identifier
                for r in read_repaired(stream, plan, rules)
                if r.identifier and always_refused(r, index, taken)
            }
        if refused:
            with path.open("rb") as stream:
                for r in read_repaired(stream, plan, rules):
                    if r.identifier in refused and not always_refused(r, index, taken):
                        refused.discard(r.identifier)
        return refused
    except UnreadableFile:
        return set()
