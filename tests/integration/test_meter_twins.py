"""An event name with an active meter and an archived one of the same name (Stripe keeps an
archived meter beside the active one made after it, and lists the newest first): its rows are
for the active meter."""

from __future__ import annotations

import csv
import io
from pathlib import Path
from typing import Any

from remediation.engine import remediate
from remediation.formats import FileFormat, read_records
from remediation.rules import load_rules
from service.adapters.stripe_meters import StripeMeterSource
from tests.conftest import SandboxServer

NOW = 1_764_000_000
HEADER = ["identifier", "timestamp", "event_name", "payload_stripe_customer_id", "payload_value"]


def _remediated(sandbox: SandboxServer, rows: list[list[str]], out: Path) -> dict[str, Any]:
    header = HEADER + (["error_code"] if len(rows[0]) > len(HEADER) else [])
    buffer = io.StringIO()
    csv.writer(buffer).writerows([header, *rows])
    result = remediate(
        read_records(io.BytesIO(buffer.getvalue().encode()), FileFormat.CSV),
        source="usage.csv",
        fmt=FileFormat.CSV,
        meters=list(StripeMeterSource(sandbox.stripe_client()).meters()),
        rules=load_rules(None),
        now=NOW,
        out_dir=out,
        columns=header,
    )
    return result.summary


def test_rows_of_an_event_name_with_an_archived_twin_are_for_the_active_meter(
    sandbox_server: SandboxServer, tmp_path: Path
) -> None:
    """Before: the meter listed last (the archived one) was taken for the name, and every row
    of `calls` was quarantined as `archived_meter` ("meter 'calls' is archived and has no
    active successor"): none billed, in the poller's validation too."""
    old = sandbox_server.admin.create_meter("calls")
    sandbox_server.admin.deactivate_meter(old["id"])
    sandbox_server.admin.create_meter("calls")
    listed = StripeMeterSource(sandbox_server.stripe_client()).meters()
    assert [m.active for m in listed if m.event_name == "calls"] == [True, False]
    usage = _remediated(sandbox_server, [["a", str(NOW - 60), "calls", "cus_1", "5"]], tmp_path)
    assert (usage["valid"], usage["quarantined"]) == (1, 0)
    failed = [["b", str((NOW - 60) * 1000), "calls", "cus_1", "5", "timestamp_in_future"]]
    summary = _remediated(sandbox_server, failed, tmp_path / "failed")
    assert (summary["corrected"], summary["quarantined"]) == (1, 0)
    [path] = summary["outputs"]["corrected"]
    [row] = list(csv.DictReader(io.StringIO(Path(path).read_text())))
    assert (row["event_name"], row["timestamp"]) == ("calls", str(NOW - 60))
