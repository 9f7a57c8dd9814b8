"""Customer lookups through the real `stripe` SDK against the bundled sandbox: a file names the
same customers in every batch, and each customer text costs Stripe one search per run, not
one per batch."""

from __future__ import annotations

import csv
import io
from pathlib import Path

import pytest

from remediation import batching
from remediation.engine import remediate
from remediation.formats import FileFormat, read_records
from remediation.meters import Meter
from remediation.rules import load_rules
from service.adapters.customers import StripeCustomerDirectory
from tests.conftest import SandboxServer

NOW = 1_764_000_000
HEADER = ["identifier", "timestamp", "event_name", "payload_stripe_customer_id", "payload_value"]
HEADER += ["error_code", "error_message"]
SEARCH = "/v1/customers/search"


def _searches(sandbox: SandboxServer) -> list[str]:
    return [r["query"]["query"] for r in sandbox.admin.requests() if r["path"] == SEARCH]


def test_each_customer_text_is_searched_once_per_run(
    sandbox_server: SandboxServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    sandbox_server.admin.create_customer("cus_acme", metadata={"external_id": "acme-7"})
    sandbox_server.admin.create_customer("cus_beta", metadata={"external_id": "beta-9"})
    monkeypatch.setattr(batching, "BLOCK_BYTES", 2048)  # many batches, each naming all three
    texts = ["acme-7", "beta-9", "nobody-1"]
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(HEADER)
    for i in range(600):
        code = "meter_event_customer_not_found"
        writer.writerow([f"r{i}", str(NOW - 60), "api_requests", texts[i % 3], "1", code, ""])
    data = buffer.getvalue().encode()
    rules = load_rules('[policy]\ncustomer_metadata_key = "external_id"\n')
    directory = StripeCustomerDirectory(sandbox_server.stripe_client())
    result = remediate(
        read_records(io.BytesIO(data), FileFormat.CSV),
        source="failed.csv",
        fmt=FileFormat.CSV,
        meters=[Meter("m1", "api_requests")],
        rules=rules,
        now=NOW,
        out_dir=tmp_path / "out",
        customers=directory,
        columns=HEADER,
    )
    summary = result.summary
    assert (summary["corrected"], summary["quarantined"]) == (400, 200)
    corrected = Path(summary["outputs"]["corrected"][0]).read_text().splitlines()
    customers = [line.split(",")[3] for line in corrected[1:]]
    assert customers == ["cus_acme", "cus_beta"] * 200
    searches = _searches(sandbox_server)
    # before: one search per text and batch (over 100 batches)
    assert sorted(searches) == [f'metadata["external_id"]:"{t}"' for t in sorted(texts)]
