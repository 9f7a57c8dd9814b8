"""A quarantine re-run's rows read back from the store: each row as it arrived, as a usage
record with the code it keeps, and the lineage its run writes them with (the generation and
the originals a derived identifier must not equal). Apart from the task because reading a
stored row back is its own set of rules, tested on its own
(tests/unit/jobs/test_rerun_records.py).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from typing import Any, NamedTuple

from sqlalchemy import Engine

from remediation.codes import KNOWN_CODES, NEVER_RESENT, ErrorCode
from remediation.core.rules.keys import holds
from remediation.identifiers import Identifiers, Lineage, row_identifier
from remediation.jsonrecords import record_from_obj
from remediation.lineage import reserved_originals, run_generation, trace_ancestors
from remediation.meters import Meter
from remediation.records import MFX_PREFIX, UsageRecord
from remediation.rules import Rules
from service.jobs.input_lineage import LOOKUP_BATCH, RunLineage, parents
from service.jobs.store.rerun_rows import quarantined_entries

# Codes our own validation decides (from the row and the meters): such a row goes through
# validation again, so a row that now passes (its meter exists now, its time is no longer in
# the future) goes out. Other codes only Stripe can judge: a customer Stripe did not find,
# unknown codes, and a value Stripe refused that our checks pass (the meter's precision, or
# what made a plain `5` invalid, is Stripe's to know): the row keeps its code, and only its
# rule's correction sends it out (README: never sent again unchanged, only to be refused).
# Nor do our checks judge a row's dimensions for a meter that names none (Stripe's own
# settings): a row refused for too many dimensions passed validation and went out as Stripe
# refused it, `region` and all, where a fresh run drops the key (`drop_unused_keys`).
CHECKED_BY_VALIDATION = (
    KNOWN_CODES
    - {
        ErrorCode.CUSTOMER_NOT_FOUND,
        ErrorCode.UNCLASSIFIED,
        ErrorCode.INVALID_VALUE,
        ErrorCode.VALUE_TOO_MANY_DIGITS,
        ErrorCode.DIMENSION_COUNT_TOO_HIGH,
        ErrorCode.MISSING_DIMENSION_KEYS,
    }
    - NEVER_RESENT
)  # Stripe may have billed it (or did): never sent by a re-run


QUARANTINE_CODE = f"{MFX_PREFIX}code"  # a stored row's note of the code it was quarantined with


class _Entry(NamedTuple):
    identifier: str
    code: str
    record: dict[str, Any]
    reason: str


def _identified_rows(engine: Engine, ids: Sequence[int]) -> Iterator[_Entry]:
    """Each row, by id; a row that had no identifier gets the one its first run gave it
    (from its source and row number), as its original."""
    for row in quarantined_entries(engine, ids):
        record = row.record if isinstance(row.record, dict) else {}
        identifier = _text(record.get("identifier")) or _text(row.identifier)
        yield _Entry(
            identifier or row_identifier(str(row.source or ""), int(row.row_number or 0)),
            _text(row.code) or "",
            record,
            _text(row.reason) or "",
        )


def rerun_lineage(
    engine: Engine, ids: Sequence[int], traced_from: int, generation: int, source: str
) -> RunLineage:
    """The generation the re-run writes and which of the rows' identifiers we wrote (a
    quarantined row of a corrected file), with the originals a derived identifier must not
    equal, as the other jobs find them: the rows are those runs of `generation` quarantined
    from an input they traced from `traced_from` (`generation - 1` but for a run raised by
    lineage, whose object's generation was lower: traced from the run's less one, the
    customer's own `c1-mfx1` was taken for our `c1` re-sent). The re-run writes above every
    generation the audit says wrote one of them (`run_generation`): a run from before that
    rule (an import set naming no object ran in generation 1) may have quarantined our own
    `a1-mfx1` in generation 1, which re-sent in it went out as `a1-mfx1`, the identifier just
    refused."""
    identifiers = [entry.identifier for entry in _identified_rows(engine, ids)]
    ancestors = trace_ancestors(
        identifiers, traced_from, lambda batch: parents(engine, batch), LOOKUP_BATCH
    )
    written = run_generation(generation, ancestors)
    lineage = Lineage(ancestors)
    numbered = ((identifier, n) for n, identifier in enumerate(identifiers, start=1))
    reserved = reserved_originals(numbered, Identifiers(source, written, lineage, keep=False))
    return RunLineage(written, Lineage(ancestors, reserved), traced_from)


def stored_records(
    engine: Engine, ids: Sequence[int], rules: Rules | None = None, meters: Sequence[Meter] = ()
) -> Iterator[UsageRecord]:
    """The rows read back; with `rules` and `meters`, a row of a missing customer or amount
    that holds one under its meter's key and another under an alias keeps its code
    (`_disputed`)."""
    index = {meter.event_name: meter for meter in meters if meter.active}
    for number, entry in enumerate(_identified_rows(engine, ids), start=1):
        record = _usage_record(number, entry)
        if (
            rules is not None
            and entry.code in _KEY_CODES
            and _disputed(record, entry, rules, index)
        ):
            record.error_code = entry.code
        yield record


_KEY_CODES = (ErrorCode.NO_CUSTOMER_DEFINED, ErrorCode.VALUE_NOT_FOUND)


def _disputed(
    record: UsageRecord, entry: _Entry, rules: Rules, meters: Mapping[str, Meter]
) -> bool:
    """Whether the row holds its meter's customer (or amount) and an alias of it holding
    another, top-level or in the payload: validation alone passed it (the key is there), and
    it went out billing the key's where a fresh run names both and quarantines it (which one
    is meant is not guessed: `rules.keys`). A row whose key is there and undisputed is
    validated again, as before (the meter's key may have changed since)."""
    meter = meters.get(record.event_name) if isinstance(record.event_name, str) else None
    if meter is None:
        return False
    customer = entry.code == ErrorCode.NO_CUSTOMER_DEFINED
    key = meter.customer_key if customer else meter.value_key
    aliases = rules.customer_keys if customer else rules.value_keys
    held = record.payload.get(key)
    if not holds(held):
        return False
    mine = {meter.customer_key, meter.value_key, *meter.dimension_keys}
    others = [v for k, v in record.payload.items() if k not in mine and k.lower() in aliases]
    others += [v for k, v in record.extra.items() if k.lower() in aliases]
    return any(holds(v) and str(v).strip() != str(held).strip() for v in others)


def _usage_record(number: int, entry: _Entry) -> UsageRecord:
    """The row as it arrived (without the `mfx_*` notes), read as the JSON readers read an
    object (a payload that is no object, an identifier or event name that is one: a malformed
    row again, its values as they came), with the code it arrived with unless our validation
    decides that code (see CHECKED_BY_VALIDATION). A row quarantined under a code of
    `NEVER_RESENT` (its record's `mfx_code`: `identifier_taken` arrived with another code)
    keeps that code and its reason: quarantined again, never sent. A row quarantined
    malformed (its record's `mfx_code`, whatever code it arrived with) stays so, for the
    reason it was: what is stored of it is what could be read, not the row (a CSV row of 7
    fields for 6 columns, its value cut at an unquoted comma, was validated from its first 6
    and sent with the part before the comma; a JSON Lines line that is not JSON came back as
    a row with no meter, under an identifier made up for it)."""
    row = entry.record
    record = record_from_obj(
        number, {key: value for key, value in row.items() if not key.startswith(MFX_PREFIX)}
    )
    record.error_message = None
    if ErrorCode.MALFORMED_ROW in (entry.code, row.get(QUARANTINE_CODE)):
        record.malformed = entry.reason or "malformed row"
        record.error_code = None if entry.code == ErrorCode.MALFORMED_ROW else entry.code or None
        return record
    if "identifier" not in record.extra:  # not an object or list kept as it came
        record.identifier = entry.identifier
    held = row.get(QUARANTINE_CODE)
    if held in NEVER_RESENT:  # quarantined so whatever it arrived with: Stripe billed it
        record.error_code, record.error_message = str(held), entry.reason or None
        return record
    record.error_code = None if entry.code in CHECKED_BY_VALIDATION else entry.code or None
    return record


def _text(value: object) -> str | None:
    return None if value is None else str(value)
