"""Remediating one input file for `meterfix validate` and `meterfix remediate`: what the input
is (its lineage, failed-records or not, its generation), a progress bar for large files, and
one line for every error. Apart from the commands, which read options, settings and meters."""

from __future__ import annotations

import csv
import errno
import json
import os
import sys
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import click
import pyarrow as pa

from remediation.codes import NEVER_RESENT
from remediation.core.sameids import TakenElsewhere
from remediation.csvlayouts import CsvLayout
from remediation.engine import RemediationResult, remediate
from remediation.errors import MeterfixError
from remediation.filetypes import FileFormat
from remediation.identifiers import Lineage
from remediation.lineage import (
    ObjectLineage,
    Parent,
    input_lineage,
    may_hold,
    object_lineage,
    trace_ancestors,
)
from remediation.meters import Meter
from remediation.outputs import audit_name, is_output_name
from remediation.ports import CustomerDirectory
from remediation.repair import InputPlan, plan_input, read_repaired
from remediation.rowdigest import text_digests
from remediation.rules import Rules
from service.commands._shown import shown
from service.commands._signals import sigterm_interrupts

PROGRESS_MIN_BYTES = 8 * 1024 * 1024


def run(
    file: Path,
    out: Path | None,
    meters: Sequence[Meter],
    rules: Rules,
    now: int,
    identifiers: str,
    audit_output: bool = False,
    customers: CustomerDirectory | None = None,
) -> RemediationResult:
    try:
        with sigterm_interrupts():
            return _remediate_file(
                file, out, meters, rules, now, identifiers, audit_output, customers
            )
    except click.ClickException:
        raise
    except MeterfixError as exc:
        raise click.ClickException(shown(f"{file}: {exc.reason}")) from exc
    except OSError as exc:  # named by the path it concerns: the input, or an output
        # a write that found no room names where it wrote (it named the input read)
        full = exc.errno in (errno.ENOSPC, errno.EFBIG, errno.EDQUOT) and out is not None
        where = exc.filename or (f"--out {out}" if full else file)
        raise click.ClickException(shown(f"{where}: {exc.strerror or exc}")) from exc
    except Exception as exc:  # file edge: one line, never a traceback
        raise click.ClickException(
            shown(f"{file}: cannot remediate: {type(exc).__name__}: {exc}")
        ) from exc


def _remediate_file(
    file: Path,
    out: Path | None,
    meters: Sequence[Meter],
    rules: Rules,
    now: int,
    identifiers: str,
    audit_output: bool,
    customers: CustomerDirectory | None,
) -> RemediationResult:
    """`run` without its error lines: what the input is, then the remediation."""
    plan = plan_input(file, rules)
    lineage, rejected, generation = _input_kind(file, plan, rules)
    earlier: list[Path] = []
    if out is not None:
        _not_into_itself(out, file, generation)
        earlier = _not_anothers(out, file, generation)
    held = _held_before(file, plan)
    with open(file, "rb") as stream, _progress(file) as progress:
        result = remediate(
            read_repaired(stream, plan, rules),
            source=source_name(file),
            fmt=plan.fmt,
            meters=meters,
            rules=rules,
            now=now,
            out_dir=out or Path("."),
            identifiers=identifiers,
            write=out is not None,
            columns=plan.columns or None,
            generation=generation,
            lineage=lineage,
            rejected=rejected,
            on_progress=progress,
            audit_output=audit_output,
            plan=plan,
            customers=customers,
            leave_out=[held] if held is not None else (),
        )
    _drop_earlier(earlier, result)
    return result


def _held_before(file: Path, plan: InputPlan) -> TakenElsewhere | None:
    """The identifiers of the rows of a quarantine file fed back whose `mfx_code` says Stripe
    took (`identifier_taken`) or may have taken (`sent_without_answer`) an event under them
    (`codes.NEVER_RESENT`): our `mfx_` notes are not read as the row's, so such a row was
    validated again and corrected to `k1-mfx1`, billed a second time. Its rows going out are
    quarantined again (`identifier_taken`). A CSV or JSON Lines file; None: no such row."""
    found: list[str] = []
    if plan.fmt is FileFormat.CSV:
        lowered = [name.strip().lower() for name in plan.header]
        if "mfx_code" not in lowered or "identifier" not in lowered:
            return None
        at, code_at = lowered.index("identifier"), lowered.index("mfx_code")
        with open(file, encoding="utf-8-sig", errors="replace", newline="") as text:
            rows = csv.reader(text, delimiter=plan.delimiter)
            next(rows, None)
            for row in rows:
                if len(row) > max(at, code_at) and row[code_at].strip() in NEVER_RESENT:
                    found.append(row[at])
    elif plan.fmt is FileFormat.JSONL:
        with open(file, "rb") as lines:
            for line in lines:
                if b"mfx_code" not in line:
                    continue
                try:
                    obj = json.loads(line)
                except ValueError:
                    continue
                if isinstance(obj, dict) and str(obj.get("mfx_code", "")).strip() in NEVER_RESENT:
                    identifier = obj.get("identifier")
                    if isinstance(identifier, str):
                        found.append(identifier)
    found = [identifier for identifier in found if identifier]
    if not found:
        return None
    whose = "a row's Stripe took (this row was quarantined so before: its mfx_code)"
    return TakenElsewhere(text_digests(pa.array(found, pa.string())), str(file), whose)


def source_name(file: Path) -> str:
    """The input's name as its outputs, audit, lineage and derived identifiers hold it: text.
    A name that is not UTF-8 (`us\\xe9.csv` written on a Latin-1 system) is refused with a
    reason: it reached the audit as surrogates no text can hold (`UnicodeEncodeError`), and
    held with U+FFFD for the byte, `us\\xe9.csv` and `us\\xe8.csv` were one name, their rows
    without identifiers given the same `row-…` identifiers (Stripe keeps one) and the second
    run's outputs put over the first's."""
    raw = os.fsencode(file)
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        escaped = raw.decode("utf-8", "backslashreplace")
        raise click.ClickException(
            f"{shown(escaped)}: its name is not UTF-8 (byte 0x{raw[exc.start]:02x}); rename "
            "it: its outputs, audit and derived identifiers are named after it"
        ) from exc


def _not_into_itself(out: Path, file: Path, generation: int) -> None:
    """An input named as one of its own outputs (an edited `day.quarantine.r1.csv` fed back
    into the folder it came from) was replaced by them: its hand-fixed rows lost, exit 0."""
    target = file.resolve()  # a link to one of its outputs is that output
    if target.parent == out.resolve() and is_output_name(
        target.name, source_name(file), generation
    ):
        raise click.ClickException(
            f"{shown(file)} is named as an output of its own run in --out {shown(out)}, which "
            "would replace it: remediate it into another --out"
        )


def _drop_earlier(earlier: list[Path], result: RemediationResult) -> None:
    """The files an earlier run of the same input left in `--out` that this one did not
    write again: left beside the new ones, a row was in an old corrected file and in the new
    quarantine file at once."""
    outputs = result.summary.get("outputs", {})
    written = {
        Path(path).resolve()
        for kind in ("corrected", "quarantine")
        for path in outputs.get(kind, [])
    }
    for path in earlier:
        if path.resolve() not in written:
            path.unlink(missing_ok=True)


def _not_anothers(out: Path, file: Path, generation: int) -> list[Path]:
    """Outputs are named by the input's name without its extension: `day.jsonl` after
    `day.csv` (or `day.txt`, another CSV) into one `--out` replaced the first one's audit (and
    corrected rows), unsaid. Refused when the audit file there names another input (as typed:
    the same file typed otherwise is refused too, never replaced). When it names this one,
    the corrected and quarantine files of that earlier run (which this run replaces)."""
    audit = out / audit_name(source_name(file), generation)
    try:
        with open(audit, encoding="utf-8") as lines:
            first = lines.readline()
    except FileNotFoundError:
        return []
    except (OSError, UnicodeDecodeError) as exc:
        raise click.ClickException(shown(f"{audit}: cannot read it: {exc}")) from exc
    try:
        source = json.loads(first).get("source")
    except (ValueError, AttributeError):
        source = None
    if source != source_name(file):
        held = "another input" if not isinstance(source, str) else source
        raise click.ClickException(
            f"--out {shown(out)} holds the outputs of {shown(held)} ({shown(audit.name)}), which "
            f"{shown(file)} would "
            "replace (one name without its extension): remediate it into another --out"
        )
    return [
        path
        for path in out.iterdir()
        if path.name != audit.name and is_output_name(path.name, source_name(file), generation)
    ]


class _progress:
    """A rich progress bar (rows read) on a terminal for large files; nothing otherwise."""

    def __init__(self, file: Path) -> None:
        self.enabled = sys.stderr.isatty() and file.stat().st_size >= PROGRESS_MIN_BYTES
        self._bar: Any = None

    def __enter__(self) -> Callable[[int], None] | None:
        if not self.enabled:
            return None
        from rich.progress import Progress

        self._bar = Progress(transient=True)
        self._bar.start()
        task = self._bar.add_task("rows", total=None)
        return lambda rows: self._bar.update(task, completed=rows)

    def __exit__(self, *exc: object) -> None:
        if self._bar is not None:
            self._bar.stop()


def _input_kind(file: Path, plan: InputPlan, rules: Rules) -> tuple[Lineage, bool, int]:
    """The file's lineage, whether it is a failed-records file, and the generation its
    corrected rows get. With error columns every row was rejected, so all are re-sent;
    without, it may hold billed rows: only rejected or corrected rows are. A file we wrote
    (its lineage sidecar, as a `file://` bucket keeps it, says so) gives the generation."""

    def rows() -> Iterator[tuple[str | None, int]]:
        with open(file, "rb") as stream:
            for record in read_repaired(stream, plan, rules):
                yield record.identifier, record.row_number

    origin = _sidecar_lineage(file)
    generation = origin.generation + 1
    identifiers = (identifier for identifier, _ in rows() if identifier)
    # no database here: only the object's own lineage (its generation, when its rows carry
    # identifiers it derived) traces identifiers
    ancestors = trace_ancestors(identifiers, origin.generation, _no_audit) if origin.derived else {}
    escapes = plan.fmt is not FileFormat.CSV
    lineage = input_lineage(file, rows, source_name(file), generation, ancestors, escapes)
    return lineage, _failed_records(file, plan, rules), generation


# How an error field's key starts in JSON text (`records.ERROR_FIELDS`: error, error_code,
# error_message, errors; code; message). A file holding none of them (nor a `\u` escape that
# could spell one) has no row carrying an error.
_ERROR_KEYS = (b'"error', b'"code"', b'"message"')


def _failed_records(file: Path, plan: InputPlan, rules: Rules) -> bool:
    """Whether the input is a failed-records file: every row rejected, so every row goes to an
    output. A file is one when ANY of its rows carries an error code or message (a JSON
    file's keys are the columns of all its rows, as a header is a CSV file's), not only its
    first: a first row without one made the rows of a failed-records file "valid, never
    re-sent". A CSV header naming error columns whose cells are all empty is no failed-records
    file (its rows were sent again as `-mfx1`, where the same rows in JSON were not). The
    first row decides at once when it carries one (Stripe's files: every row does); otherwise
    files that cannot carry one (a CSV header without error columns, JSON without an error
    key in its bytes) are told at once, and only the rest are read through."""
    if plan.fmt is FileFormat.CSV and not CsvLayout.from_header(plan.header).errors:
        return False
    with open(file, "rb") as stream:
        records = read_repaired(stream, plan, rules)
        first = next(records, None)
        if first is None:
            return False
        if first.error_code or first.error_message:
            return True
        if plan.fmt is not FileFormat.CSV and not any(may_hold(file, k) for k in _ERROR_KEYS):
            return False
        return any(record.error_code or record.error_message for record in records)


def _no_audit(identifiers: list[str]) -> dict[str, Parent]:
    return {}


def _sidecar_lineage(file: Path) -> ObjectLineage:
    """What the file's lineage sidecar (`<file>.meta.json`, shortened for a long name as the
    file bucket writes it) says of its rows (generation 0: none)."""
    from service.adapters.file_bucket import sidecar_path

    try:
        meta = json.loads(sidecar_path(file).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return ObjectLineage(0, False)
    return object_lineage(meta) if isinstance(meta, dict) else ObjectLineage(0, False)
