"""The data `bench/pages.py` measures against: what a busy deployment holds after 30 days,
shaped as the service writes it (see the jobs, `service/jobs/runs.py` and the poller).

- runs of every kind, with the run keys the jobs make (`import_set:<id>:<file>`,
  `import_set_failed:<id>`, `poller:<id>`, `error_report:<event>:<object>`,
  `quarantine_rerun:<action>`), a few failed or still running; counts and `by_code` on the run
  agree with its audit and quarantined rows, sizes heavy-tailed (a few runs hold thousands);
- one correction-audit row per correction; quarantined rows in full (`record` as the
  quarantine file holds it, with `mfx_code`/`mfx_reason`), skewed codes, meters and customers;
  rows a re-run took point at it (`rerun_id`);
- the inputs: Stripe's import sets and the poller's local ones (also the many that needed no
  remediation), error reports (some unmatched, some with two objects), bucket objects for the
  sources and for corrected outputs (most imported again, some failed or not yet);
- the inbox: snapshot and thin events with bodies of real size, tasks, a few dead letters and
  pending items; alerts per run and incident with their links, mostly resolved; the admin
  actions on them; heartbeats of a worker, a poller and a scheduler (kept fresh by the bench).
"""

from __future__ import annotations

import hashlib
import itertools
import json
import random
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import Engine, func, insert, select, text, update

# Codes with how often they come (the last two are rare: a filter on them finds few rows).
CODES = {
    "timestamp_in_future": 30,
    "meter_event_invalid_value": 25,
    "meter_event_customer_not_found": 15,
    "no_meter": 12,
    "timestamp_too_far_in_past": 8,
    "meter_event_value_not_found": 6,
    "archived_meter": 3,
    "meter_event_mystery": 1,
}
FIXES = {  # code -> (rule, field, before, after)
    "timestamp_in_future": ("unit_seconds", "timestamp", "1764460800000", "1764460800"),
    "meter_event_invalid_value": ("value_number", "payload.value", "1,234", "1234"),
    "meter_event_customer_not_found": (
        "customer_map",
        "payload.stripe_customer_id",
        "acme-42",
        "cus_Q1a2B3c4",
    ),
    "no_meter": ("event_name_match", "event_name", "API-Requests", "api_requests"),
    "meter_event_value_not_found": ("value_alias", "payload.value", None, "12"),
    "archived_meter": ("meter_successor", "event_name", "tokens_v1", "tokens"),
}
REASONS = {
    "timestamp_in_future": "timestamp 1893456000 is 3 years ahead of the reference time",
    "meter_event_invalid_value": "value 'n/a' is not a number",
    "meter_event_customer_not_found": "customer 'acme-17' is not in the customer map",
    "no_meter": "no active meter has event name 'api-cals' (2 close candidates)",
    "timestamp_too_far_in_past": "timestamp 1759276800 is more than 35 days old",
    "meter_event_value_not_found": "no value under 'value' or an alias",
    "archived_meter": "meter 'tokens_v1' is archived and has no successor",
    "meter_event_mystery": "unclassified: Stripe's code is unknown and the row passes validation",
}
METERS = {"api_requests": 50, "tokens": 25, "storage_gb": 12, "seats": 8, "egress_gb": 5}
CUSTOMERS = 5000
ZIPF = list(itertools.accumulate(1 / (rank + 1) for rank in range(CUSTOMERS)))
KINDS = {
    "import_set": 40,
    "poller": 35,
    "error_report": 16,
    "import_set_failed": 4,
    "quarantine_rerun": 5,
}
TRIGGERS = {
    "import_set": "import_set.succeeded",
    "import_set_failed": "import_set.failed",
    "poller": "poller",
    "error_report": "error_report",
    "quarantine_rerun": "quarantine_rerun",
}
BATCH = 5000
# The big run's id, past the seeded runs and those the bench adds while it measures.
BIG_RUN_OFFSET = 200_000
DAYS = 30
SNAPSHOT_BODY = json.dumps(
    {
        "id": "evt_x",
        "object": "event",
        "type": "data_management.import_set.succeeded",
        "api_version": "2025-03-31.basil",
        "created": 1764460800,
        "livemode": False,
        "data": {
            "object": {
                "id": "impset_x",
                "object": "data_management.import_set",
                "status": "succeeded",
                "created": 1764460800,
                "livemode": False,
                "file": "file_src",
                "result": {
                    "errors": {"file": "file_err", "row_count": 12},
                    "successes": {"row_count": 48123},
                    "rows_processed": 48135,
                },
                "metadata": {"team": "billing", "pipeline": "usage-export-v3"},
            }
        },
        "request": {"id": None, "idempotency_key": None},
        "pending_webhooks": 1,
        "padding": "x" * 900,
    }
)
THIN_BODY = json.dumps(
    {
        "id": "evt_x",
        "object": "v2.core.event",
        "type": "v1.billing.meter.error_report_triggered",
        "created": "2026-11-30T12:00:00.000Z",
        "livemode": False,
        "related_object": {
            "id": "mtr_x",
            "type": "billing.meter",
            "url": "/v1/billing/meters/mtr_x",
        },
        "reason": {"type": "request", "request": {"id": "req_x", "idempotency_key": None}},
    }
)


@dataclass
class Plan:
    """What was seeded (ids the bench builds its paths from)."""

    runs: int
    big_run: int = 0  # the run of `--run-corrections` corrections (0: none)
    big_run_middle: int = 0  # the id of an audit row halfway through its list
    big_run_last_named: int = 0  # the id of its last row with an identifier
    big_run_identifier: str = ""  # an identifier of its rows
    run_of_kind: dict[str, int] = field(default_factory=dict)  # a large done run per kind
    rare_code: str = "meter_event_mystery"
    busy_code: str = "meter_event_invalid_value"
    meter: str = "api_requests"
    customer: str = "cus_000042"
    quarantine_ids: tuple[int, int] = (0, 0)
    counts: dict[str, int] = field(default_factory=dict)


def _weights(rng: random.Random, n: int, zero_share: float, sigma: float) -> list[float]:
    return [0.0 if rng.random() < zero_share else rng.lognormvariate(0, sigma) for _ in range(n)]


def _allocate(weights: list[float], total: int) -> list[int]:
    """Split `total` in proportion to `weights` (exact sum)."""
    whole = sum(weights) or 1.0
    counts = [int(w / whole * total) for w in weights]
    order = sorted(range(len(weights)), key=lambda i: -weights[i])
    for i in order[: total - sum(counts)]:
        counts[i] += 1
    return counts


def _split(rng: random.Random, total: int, codes: list[str]) -> dict[str, int]:
    parts = [rng.random() + 0.1 for _ in codes]
    counts = _allocate(parts, total)
    return dict(zip(codes, counts, strict=True))


def _pick(rng: random.Random, table: dict[str, int], k: int = 1) -> list[str]:
    return rng.choices(list(table), weights=list(table.values()), k=k)


def _hex(*parts: object) -> str:
    return hashlib.sha256(":".join(map(str, parts)).encode()).hexdigest()


def _customer(rng: random.Random) -> str:
    # Zipf (s = 1) over CUSTOMERS: the busiest customer has about 11 % of the rows, the
    # second (cus_000042, the bench's filter) about 5 %, most have a handful.
    rank = rng.choices(range(CUSTOMERS), cum_weights=ZIPF)[0]
    return f"cus_{(rank * 42) % CUSTOMERS:06d}"


class Seeder:
    """Writes the rows of each run (and its inputs) through per-table buffers."""

    ORDER = (
        "import_sets",
        "error_reports",
        "admin_actions",
        "remediation_runs",
        "output_objects",
        "correction_audit",
        "quarantined_rows",
        "bucket_objects",
        "inbox_events",
        "alerts",
        "heartbeats",
    )

    def __init__(self, engine: Engine, rng: random.Random, now: datetime) -> None:
        from sqlmodel import SQLModel

        import service.models  # noqa: F401  (registers the tables)

        self.engine, self.rng, self.now = engine, rng, now
        self.tables = {name: SQLModel.metadata.tables[name] for name in self.ORDER}
        self.buffers: dict[str, list[dict[str, Any]]] = {name: [] for name in self.ORDER}
        self.counts: dict[str, int] = dict.fromkeys(self.ORDER, 0)
        self.action_id = 0
        self.last_report: str | None = None

    def add(self, table: str, row: dict[str, Any]) -> None:
        self.buffers[table].append(row)
        if len(self.buffers[table]) >= BATCH:
            self.flush()

    def flush(self) -> None:
        with self.engine.begin() as connection:
            for name in self.ORDER:
                rows = self.buffers[name]
                if rows:
                    connection.execute(insert(self.tables[name]), rows)
                    self.counts[name] += len(rows)
                    self.buffers[name] = []

    def action(
        self, action: str, target_type: str, target_id: str, detail: dict[str, Any], at: datetime
    ) -> int:
        self.action_id += 1
        self.add(
            "admin_actions",
            {
                "id": self.action_id,
                "action": action,
                "target_type": target_type,
                "target_id": target_id,
                "source_address": "10.0.3.17",
                "via": "dashboard",
                "detail": detail,
                "created_at": at,
            },
        )
        return self.action_id

    # --- one run and everything around it ---------------------------------------------

    def run(
        self,
        run_id: int,
        kind: str,
        at: datetime,
        sizes: tuple[int, int, int],
        status: str = "done",
        took: dict[str, Any] | None = None,
    ) -> None:
        rng = self.rng
        valid, corrected, quarantined = sizes if status == "done" else (0, 0, 0)
        codes = sorted(set(_pick(rng, CODES, rng.randint(1, 3))))
        fixable = [c for c in codes if c in FIXES] or ["timestamp_in_future"]
        by_fix = _split(rng, corrected, fixable)
        by_quar = _split(rng, quarantined, codes)
        by_code = {
            c: {"corrected": by_fix.get(c, 0), "quarantined": by_quar.get(c, 0)}
            for c in sorted(set(fixable) | set(codes))
        }
        run_key, source, tag = self._inputs(run_id, kind, at, valid + corrected + quarantined, took)
        self.add(
            "remediation_runs",
            {
                "id": run_id,
                "run_key": run_key,
                "trigger": TRIGGERS[kind],
                "source": source,
                "source_sha256": _hex(source)[:64],
                "generation": 2 if kind == "quarantine_rerun" else 1,
                "status": status,
                "input_rows": valid + corrected + quarantined,
                "valid": valid,
                "corrected": corrected,
                "quarantined": quarantined,
                "by_code": by_code if status == "done" else {},
                "error": "S3 upload failed: SlowDown (retried 5 times)"
                if status == "failed"
                else None,
                "created_at": at,
                "finished_at": at + timedelta(seconds=3) if status != "running" else None,
            },
        )
        if status != "done":
            return
        stem = source.rsplit("/", 1)[-1].rsplit(".", 1)[0][:200]
        self._outputs(run_id, at, tag, stem, source, corrected, quarantined)
        self._audit(run_id, source, by_fix)
        self._quarantined(run_id, at, source, by_quar)
        if quarantined:
            self._run_alert(run_id, run_key, at, quarantined, codes[0], tag)

    def _inputs(
        self, run_id: int, kind: str, at: datetime, rows: int, took: dict[str, Any] | None
    ) -> tuple[str, str, str]:
        """The run's input rows (import set, error report, re-run action); its key and source."""
        day = at.strftime("%Y/%m/%d")
        obj = f"usage/{day}/export-{run_id:06d}.csv"
        if kind in ("import_set", "import_set_failed"):
            impset = f"impset_{_hex('is', run_id)[:24]}"
            file_id = f"file_{_hex('errs', run_id)[:24]}"
            key = (
                f"import_set:{impset}:{file_id}"
                if kind == "import_set"
                else f"import_set_failed:{impset}"
            )
            self.add(
                "import_sets",
                self._import_set(
                    impset,
                    "stripe",
                    obj,
                    at,
                    rows,
                    key,
                    failed=kind == "import_set_failed",
                    errors_file=file_id,
                ),
            )
            self._event(
                f"evt_{_hex('ise', run_id)[:24]}",
                f"data_management.import_set.{'failed' if 'failed' in kind else 'succeeded'}",
                "snapshot",
                at,
            )
            self._task(
                "import_set_errors" if kind == "import_set" else "import_set_failed", impset, at
            )
            return key, file_id if kind == "import_set" else obj, impset
        if kind == "poller":
            impset = f"impset_local_{_hex('pl', run_id)[:24]}"
            self.add(
                "import_sets", self._import_set(impset, "poller", obj, at, rows, f"poller:{impset}")
            )
            self._object(obj, at, "imported", rows * 40, impset)
            self._task("poller_rows", impset, at)
            return f"poller:{impset}", obj, impset
        if kind == "error_report":
            # A report names one object, or two (then two runs share its event id).
            if self.last_report is not None and self.rng.random() < 0.4:
                event_id, self.last_report = self.last_report, None
            else:
                event_id = self.last_report = f"evt_{_hex('er', run_id)[:24]}"
                self.add("error_reports", self._report(event_id, at, rows, "remediated"))
                self._event(event_id, "v1.billing.meter.error_report_triggered", "thin", at)
                self._task("error_report", event_id, at)
            self._object(obj, at, "imported", rows * 40, None)
            return f"error_report:{event_id}:{obj}", obj, f"report-{event_id}"
        assert took is not None  # quarantine_rerun: the action that asked for it
        action = self.action(
            "rerun",
            "quarantine",
            f"run={took['run']}",
            {"filters": {"run": str(took["run"])}, "rows": took["rows"]},
            at - timedelta(seconds=5),
        )
        self._task("quarantine_rerun", str(action), at)
        return f"quarantine_rerun:{action}", f"quarantine re-run {action}", f"rerun-{action}"

    def _import_set(
        self,
        impset: str,
        origin: str,
        obj: str,
        at: datetime,
        rows: int,
        run_key: str | None,
        failed: bool = False,
        errors_file: str | None = None,
    ) -> dict[str, Any]:
        detail: dict[str, Any] = {} if run_key is None else {"run_key": run_key}
        if origin == "poller" and run_key:
            detail["failed_records_path"] = f"/srv/meterfix/work/poller/{impset}.csv"
        return {
            "import_set_id": impset,
            "origin": origin,
            "last_event_id": None,
            "status": "failed" if failed else "succeeded",
            "failed_reason": "invalid_file: delimiter ';' not recognised" if failed else None,
            "source_file_id": f"file_{_hex('src', impset)[:24]}" if origin == "stripe" else None,
            "source_object": obj,
            "errors_file_id": errors_file,
            "errors_row_count": rows if run_key else 0,
            "successes_row_count": rows * 40,
            "rows_processed": rows * 41,
            "remediation_status": "done" if run_key else "not_needed",
            "detail": detail,
            "created_at": at - timedelta(minutes=2),
            "updated_at": at,
        }

    def _report(self, event_id: str, at: datetime, errors: int, status: str) -> dict[str, Any]:
        return {
            "event_id": event_id,
            "event_type": "v1.billing.meter.error_report_triggered",
            "meter_id": f"mtr_{_hex('m', event_id)[:3]}",
            "livemode": False,
            "validation_start": at - timedelta(hours=1),
            "validation_end": at,
            "summary": f"{errors} errors: timestamp_in_future",
            "error_count": errors,
            "status": status,
            "detail": {},
            "created_at": at - timedelta(minutes=1),
        }

    def _object(self, key: str, at: datetime, status: str, rows: int, impset: str | None) -> None:
        done = status in ("imported", "failed")
        self.add(
            "bucket_objects",
            {
                "key": key,
                "etag": _hex("etag", key)[:32],
                "size": rows * 96,
                "last_modified": at - timedelta(minutes=5),
                "status": status,
                "rows": rows,
                "sent": rows if status == "imported" else 0,
                "failed": 0 if status != "failed" else rows,
                "attempts": 1 if done else 0,
                "acked_batches": (rows + 99) // 100 if status == "imported" else 0,
                "first_sent_at": at - timedelta(minutes=4) if done else None,
                "failing_since": at if status == "failed" else None,
                "next_attempt_at": None,
                "import_set_id": impset,
                "error": "HTTP 500 from Stripe (6 h)" if status == "failed" else None,
                "first_seen": at - timedelta(minutes=5),
                "processed_at": at - timedelta(minutes=3) if done else None,
            },
        )

    def _outputs(
        self,
        run_id: int,
        at: datetime,
        tag: str,
        stem: str,
        source: str,
        corrected: int,
        quarantined: int,
    ) -> None:
        outputs = [("audit", f"quarantine/{tag}/{stem}.r1.audit.jsonl", corrected + quarantined)]
        if corrected:
            outputs.insert(0, ("corrected", f"corrected/{tag}/{stem}.corrected.r1.csv", corrected))
        if quarantined:
            outputs.insert(
                1, ("quarantine", f"quarantine/{tag}/{stem}.quarantine.r1.csv", quarantined)
            )
        for kind, key, rows in outputs:
            self.add(
                "output_objects",
                {
                    "run_id": run_id,
                    "kind": kind,
                    "key": key,
                    "rows": rows,
                    "sha256": _hex(key),
                    "generation": 1,
                    "source": source,
                    "uploaded": True,
                    "created_at": at,
                },
            )
            if kind == "corrected":  # the poller imports corrected files again
                state = self.rng.random()
                status = "imported" if state < 0.85 else "failed" if state < 0.9 else "seen"
                if at > self.now - timedelta(minutes=10):
                    status = "seen"
                self._object(key, at + timedelta(minutes=1), status, rows, None)

    def _audit(self, run_id: int, source: str, by_fix: dict[str, int]) -> None:
        number = 0
        for code, count in by_fix.items():
            rule, column, before, after = FIXES[code]
            for _ in range(count):
                number += 1
                ident = f"u{run_id:05d}-{number:07d}-{_hex(run_id, number)[:10]}"
                self.add(
                    "correction_audit",
                    {
                        "run_id": run_id,
                        "source": source,
                        "row_number": number + 1,
                        "identifier": ident,
                        "new_identifier": f"{ident}-mfx1",
                        "code": code,
                        "rule": rule,
                        "field": column,
                        "before": before,
                        "after": after,
                    },
                )

    def _quarantined(self, run_id: int, at: datetime, source: str, by_quar: dict[str, int]) -> None:
        rng, number = self.rng, 0
        for code, count in by_quar.items():
            for _ in range(count):
                number += 1
                meter = _pick(rng, METERS)[0]
                customer = _customer(rng)
                ident = f"q{run_id:05d}-{number:07d}-{_hex('q', run_id, number)[:10]}"
                record = {
                    "identifier": ident,
                    "timestamp": str(1764460800 + number),
                    "event_name": meter,
                    "payload": {
                        "stripe_customer_id": customer,
                        "value": "n/a" if code.endswith("value") else str(number % 97),
                    },
                    "mfx_code": code,
                    "mfx_reason": REASONS[code],
                }
                self.add(
                    "quarantined_rows",
                    {
                        "run_id": run_id,
                        "source": source,
                        "row_number": number + 1,
                        "identifier": ident,
                        "code": code,
                        "reason": REASONS[code],
                        "meter": meter,
                        "customer": customer,
                        "record": record,
                        "created_at": at + timedelta(milliseconds=number),
                    },
                )

    def _run_alert(
        self, run_id: int, run_key: str, at: datetime, rows: int, code: str, tag: str
    ) -> None:
        critical = rows >= 1000
        age = self.now - at
        status = (
            "open"
            if age < timedelta(days=2)
            else ("acknowledged" if self.rng.random() < 0.2 else "resolved")
        )
        self.add(
            "alerts",
            {
                "alert_key": f"run:{run_key}",
                "severity": "critical" if critical else "warning",
                "status": status,
                "kind": "remediation.quarantine",
                "subject": f"run #{run_id}: {rows} rows quarantined",
                "message": f"{rows} rows quarantined ({code}); see the quarantine page",
                "meter": None,
                "code": code,
                "customer": None,
                "count": 1,
                "rows": rows,
                "links": {"run": run_id, "import_set": tag, "quarantine": f"quarantine/{tag}/"},
                "detail": {"run_key": run_key},
                "created_at": at,
                "last_seen_at": at,
                "acknowledged_at": at + timedelta(hours=1) if status != "open" else None,
                "resolved_at": at + timedelta(hours=3) if status == "resolved" else None,
                "notified_at": at if critical else None,
            },
        )
        if status != "open":
            alert_ref = str(self.counts["alerts"] + len(self.buffers["alerts"]))
            self.action(
                "acknowledge", "alert", alert_ref, {"from": "open"}, at + timedelta(hours=1)
            )

    def _event(
        self, event_id: str, event_type: str, style: str, at: datetime, status: str = "done"
    ) -> None:
        dead = status == "dead"
        self.add(
            "inbox_events",
            {
                "event_id": event_id,
                "event_type": event_type,
                "style": style,
                "livemode": False,
                "body": SNAPSHOT_BODY if style == "snapshot" else THIN_BODY,
                "received_at": at - timedelta(minutes=1),
                "status": status,
                "attempts": 8 if dead else 0 if status == "pending" else 1,
                "next_attempt_at": at if status == "pending" else None,
                "last_error": "StripeError: HTTP 500 from files.stripe.com (8 attempts)"
                if dead
                else None,
                "outcome": None if dead or status == "pending" else "remediated",
                "processed_at": None if status == "pending" else at,
            },
        )

    def _task(self, kind: str, ref: str, at: datetime) -> None:
        self.add(
            "inbox_events",
            {
                "event_id": f"mfx_task_{kind}_{ref}"[:255],
                "event_type": f"meterfix.remediate.{kind}",
                "style": "task",
                "livemode": False,
                "body": json.dumps({"kind": kind, "ref": ref}),
                "received_at": at - timedelta(seconds=30),
                "status": "done",
                "attempts": 1,
                "next_attempt_at": None,
                "last_error": None,
                "outcome": "re-ran",
                "processed_at": at,
            },
        )


# The big run's codes: a busy file's, one of them rare (a filter on it reads the run's rows
# page by page); its last rows have no identifier (a file without them).
BIG_RUN_CODES = (("archived_meter", 10_000), ("no_meter", 10), ("meter_event_invalid_value", 4))
BIG_RUN_UNNAMED = 100  # one row in this many has no identifier


def _big_code(number: int) -> str:
    """The code of the big run's row `number`: the first of `BIG_RUN_CODES` whose period
    divides it, else timestamp_in_future."""
    return next(
        (code for code, every in BIG_RUN_CODES if number % every == 0), "timestamp_in_future"
    )


def big_run(seeder: Seeder, run_id: int, at: datetime, corrections: int) -> Plan:
    """One run of `corrections` corrections, as the service loads them: sorted by
    identifier (ids follow), those without one last; its counts and `by_code` agree."""
    seeder.run(run_id, "import_set", at, (400, 0, 20))
    unnamed = corrections // BIG_RUN_UNNAMED
    by_code: dict[str, int] = {}
    plan = Plan(0, big_run=run_id)
    for number in range(corrections):
        code = _big_code(number)
        by_code[code] = by_code.get(code, 0) + 1
        rule, column, before, after = FIXES[code]
        named = number < corrections - unnamed
        ident = f"b{number:07d}-{_hex('big', number)[:10]}" if named else None
        seeder.add(
            "correction_audit",
            {
                "run_id": run_id,
                "source": f"usage/{at:%Y/%m/%d}/export-{run_id:06d}.csv",
                "row_number": (number * 7919) % corrections + 2,  # the file's order is another
                "identifier": ident,
                "new_identifier": f"{ident or 'row-' + _hex('row', number)[:16]}-mfx1",
                "code": code,
                "rule": rule,
                "field": column,
                "before": before,
                "after": after,
            },
        )
        if number == corrections // 3:
            plan.big_run_identifier = ident or ""
    seeder.flush()
    runs, audit = seeder.tables["remediation_runs"], seeder.tables["correction_audit"]
    with seeder.engine.begin() as connection:
        kept = connection.execute(select(runs.c.by_code).where(runs.c.id == run_id)).scalar_one()
        slots = {
            code: {"corrected": by_code.get(code, 0), "quarantined": 0}
            for code in sorted(set(by_code) | set(kept))
        }
        for code, slot in kept.items():
            slots[code]["quarantined"] = slot["quarantined"]
        connection.execute(
            update(runs)
            .where(runs.c.id == run_id)
            .values(input_rows=400 + corrections + 20, corrected=corrections, by_code=slots)
        )
        ids = select(audit.c.id).where(audit.c.run_id == run_id).order_by(audit.c.id)
        plan.big_run_middle = connection.execute(ids.offset(corrections // 2).limit(1)).scalar_one()
        last = corrections - unnamed - 1
        plan.big_run_last_named = connection.execute(ids.offset(last).limit(1)).scalar_one()
    return plan


def seed(engine: Engine, runs: int, audit: int, quarantined: int, run_corrections: int = 0) -> Plan:
    rng = random.Random(7)
    now = datetime.now(UTC)
    start = now - timedelta(days=DAYS)
    seeder = Seeder(engine, rng, now)
    kinds = _pick(rng, KINDS, runs)
    statuses = ["failed" if rng.random() < 0.01 else "done" for _ in range(runs)]
    statuses[-3:] = ["running"] * 3
    done = [s == "done" for s in statuses]
    corrected = _allocate(
        [w * d for w, d in zip(_weights(rng, runs, 0.1, 1.3), done, strict=True)], audit
    )
    quar = _allocate(
        [w * d for w, d in zip(_weights(rng, runs, 0.5, 1.5), done, strict=True)], quarantined
    )
    plan = Plan(runs)
    taken: dict[int, int] = {}  # earlier run -> the re-run that took its rows
    began = time.perf_counter()
    for i in range(runs):
        run_id, kind = i + 1, kinds[i]
        at = start + (now - start) * (i / runs) + timedelta(seconds=rng.random() * 60)
        took = None
        if kind == "quarantine_rerun":
            candidates = [
                j
                for j in range(max(0, i - 200), i)
                if quar[j] and j + 1 not in taken and kinds[j] != "quarantine_rerun"
            ]
            if not candidates:
                kind = "poller"
            else:
                earlier = rng.choice(candidates)
                taken[earlier + 1] = run_id
                took = {"run": earlier + 1, "rows": quar[earlier]}
        seeder.run(
            run_id, kind, at, (rng.randint(0, 400), corrected[i], quar[i]), statuses[i], took
        )
        _background(seeder, start, now, i / runs, (i + 1) / runs)
        if (
            statuses[i] == "done"
            and kind not in plan.run_of_kind
            and i > runs // 2
            and (corrected[i] + quar[i] > 100 and quar[i] > 20)
        ):
            plan.run_of_kind[kind] = run_id
    for i in range(runs):  # small seeds: any done run of a kind that has none yet
        if statuses[i] == "done" and kinds[i] not in plan.run_of_kind and quar[i]:
            plan.run_of_kind[kinds[i]] = i + 1
    _current(seeder, now)
    seeder.flush()
    if run_corrections:
        big = big_run(seeder, runs + BIG_RUN_OFFSET, start + timedelta(days=1), run_corrections)
        plan.big_run, plan.big_run_middle = big.big_run, big.big_run_middle
        plan.big_run_last_named, plan.big_run_identifier = (
            big.big_run_last_named,
            big.big_run_identifier,
        )
    with engine.begin() as connection:
        for earlier, rerun in taken.items():
            connection.execute(
                update(seeder.tables["quarantined_rows"])
                .where(seeder.tables["quarantined_rows"].c.run_id == earlier)
                .values(rerun_id=rerun)
            )
    _finish(engine)
    table = seeder.tables["quarantined_rows"]
    with engine.connect() as connection:
        low, high = connection.execute(select(func.min(table.c.id), func.max(table.c.id))).one()
    plan.quarantine_ids = (int(low or 0), int(high or 0))
    plan.counts = dict(seeder.counts)
    plan.counts["rows taken by re-runs"] = sum(quar[r - 1] for r in taken)
    print(
        f"seeded in {time.perf_counter() - began:.0f} s: "
        + ", ".join(f"{name} {count:,}" for name, count in seeder.counts.items())
    )
    return plan


def _share(total: int, lo: float, hi: float) -> range:
    """The items of `total` whose time falls in the share [lo, hi) of the seeded span."""
    return range(round(total * lo), round(total * hi))


def _background(seeder: Seeder, start: datetime, now: datetime, lo: float, hi: float) -> None:
    """What is there besides the runs, written along with them (so ids follow time): import
    sets and objects that needed no remediation, unmatched error reports, ignored events,
    dead letters and their alerts."""
    span = now - start
    for n in _share(15_000, lo, hi):
        at = start + span * (n / 15_000)
        impset = f"impset_local_{_hex('nn', n)[:24]}"
        obj = f"usage/{at:%Y/%m/%d}/clean-{n:06d}.csv"
        seeder.add("import_sets", seeder._import_set(impset, "poller", obj, at, 0, None))
        seeder._object(obj, at, "imported", 4000 + n % 900, impset)
    for n in _share(800, lo, hi):
        at = start + span * (n / 800)
        event_id = f"evt_{_hex('un', n)[:24]}"
        seeder.add("error_reports", seeder._report(event_id, at, 3, "unmatched"))
        seeder._event(event_id, "v1.billing.meter.no_meter_found", "thin", at)
    for n in _share(5000, lo, hi):
        at = start + span * (n / 5000)
        seeder._event(
            f"evt_{_hex('ig', n)[:24]}", "billing.meter.updated", "snapshot", at, "ignored"
        )
    for n in _share(60, lo, hi):  # dead letters, and their alerts
        at = start + span * (n / 60)
        event_id = f"evt_{_hex('dead', n)[:24]}"
        seeder._event(event_id, "v1.billing.meter.error_report_triggered", "thin", at, "dead")
        seeder.add(
            "alerts",
            {
                "alert_key": f"dead:{event_id}",
                "severity": "critical",
                "status": "open" if n >= 50 else "resolved",
                "kind": "event.dead",
                "subject": f"event {event_id} dead-lettered after 8 attempts",
                "message": "StripeError: HTTP 500 from files.stripe.com",
                "meter": None,
                "code": None,
                "customer": None,
                "count": 1,
                "rows": 0,
                "links": {"event": event_id},
                "detail": {},
                "created_at": at,
                "last_seen_at": at,
                "acknowledged_at": None,
                "resolved_at": None if n >= 50 else at + timedelta(hours=2),
                "notified_at": at,
            },
        )
        if n % 4 == 0:
            seeder.action("replay", "event", event_id, {"from": "dead", "attempts": 8}, at)


def _current(seeder: Seeder, now: datetime) -> None:
    """What is there now: pending items and the processes' heartbeats."""
    for n in range(25):
        seeder._event(
            f"evt_{_hex('pend', n)[:24]}",
            "data_management.import_set.succeeded",
            "snapshot",
            now - timedelta(seconds=40 - n),
            "pending",
        )
    for role, instances in (("worker", 2), ("poller", 1), ("scheduler", 1)):
        for n in range(instances):
            seeder.add(
                "heartbeats",
                {
                    "instance": f"bench-{role}-{n}",
                    "role": role,
                    "started_at": now,
                    "last_beat_at": now,
                    "detail": {"state": "idle"},
                },
            )
    seeder.add(
        "heartbeats",
        {  # a worker that was restarted a week ago
            "instance": "bench-worker-old",
            "role": "worker",
            "started_at": now - timedelta(days=8),
            "last_beat_at": now - timedelta(days=7),
            "detail": {},
        },
    )


def _finish(engine: Engine) -> None:
    """Sequences past the ids given explicitly (PostgreSQL), then fresh statistics."""
    with engine.begin() as connection:
        if engine.dialect.name == "postgresql":
            for table in ("remediation_runs", "admin_actions"):
                connection.execute(
                    text(
                        f"SELECT setval(pg_get_serial_sequence('{table}', 'id'), "
                        f"(SELECT max(id) FROM {table}))"
                    )
                )
    with engine.connect() as connection:
        connection.execution_options(isolation_level="AUTOCOMMIT").execute(
            text("VACUUM ANALYZE" if engine.dialect.name == "postgresql" else "ANALYZE")
        )


def live_run(seeder: Seeder, run_id: int) -> None:
    """One new run now (as a working service adds them), for the bench's background writer."""
    seeder.now = datetime.now(UTC)
    seeder.run(run_id, "poller", seeder.now, (120, 100, 10))
    seeder.flush()
