"""Customer lookups through the real `stripe` SDK against the bundled sandbox: a file names the
same customers in every batch, and each customer text costs Stripe one search per run, not
one per batch."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import pytest
import stripe

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
    rules = '[policy]\ncustomer_metadata_key = "external_id"\n'
    summary, _ = _run(sandbox_server, [texts[i % 3] for i in range(600)], rules, tmp_path / "out")
    assert (summary["corrected"], summary["quarantined"]) == (400, 200)
    corrected = Path(summary["outputs"]["corrected"][0]).read_text().splitlines()
    customers = [line.split(",")[3] for line in corrected[1:]]
    assert customers == ["cus_acme", "cus_beta"] * 200
    searches = _searches(sandbox_server)
    # before: one search per text and batch (over 100 batches)
    assert sorted(searches) == [f'metadata["external_id"]:"{t}"' for t in sorted(texts)]


def _run(
    sandbox: SandboxServer, customers: list[str], rules: str, out: Path
) -> tuple[dict[str, object], list[dict[str, str]]]:
    """`remediate` over one `meter_event_customer_not_found` row a customer text, with a
    directory on the sandbox: the summary and the quarantine file's rows."""
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(HEADER)
    for i, text in enumerate(customers):
        code = "meter_event_customer_not_found"
        writer.writerow([f"r{i}", str(NOW - 60), "api_requests", text, "1", code, ""])
    result = remediate(
        read_records(io.BytesIO(buffer.getvalue().encode()), FileFormat.CSV),
        source="failed.csv",
        fmt=FileFormat.CSV,
        meters=[Meter("m1", "api_requests")],
        rules=load_rules(rules),
        now=NOW,
        out_dir=out,
        customers=StripeCustomerDirectory(sandbox.stripe_client()),
        columns=HEADER,
    )
    quarantine = result.summary["outputs"]["quarantine"]
    text = Path(quarantine[0]).read_text() if quarantine else ""
    rows = list(csv.DictReader(io.StringIO(text))) if text else []
    return result.summary, rows


def _retrievals(sandbox: SandboxServer) -> list[str]:
    paths = (r["path"] for r in sandbox.admin.requests())
    return [p for p in paths if p.startswith("/v1/customers/") and p != SEARCH]


def test_stripe_is_not_asked_whether_a_customer_text_trimming_leaves_alone_exists(
    sandbox_server: SandboxServer, tmp_path: Path
) -> None:
    """The trim/case fix is checked with Stripe only when it changes the text: for a text it
    leaves as it is (Stripe has just said that customer does not exist) no answer could be
    used. Before: every distinct customer text cost a `GET /v1/customers/{id}` as well."""
    sandbox_server.admin.create_customer("cus_acme")
    rules = '[policy]\ncustomer_metadata_key = "external_id"\n'
    summary, rows = _run(sandbox_server, ["nobody-1", "cus_nobody", " CUS_acme "], rules, tmp_path)
    assert (summary["corrected"], summary["quarantined"]) == (1, 2)
    assert sorted(row["payload_stripe_customer_id"] for row in rows) == ["cus_nobody", "nobody-1"]
    assert _retrievals(sandbox_server) == ["/v1/customers/cus_acme"]
    assert len(_searches(sandbox_server)) == 2  # the two texts no trim fixed


def test_a_runs_customer_look_ups_are_bounded_and_the_rest_quarantined_for_a_rerun(
    sandbox_server: SandboxServer, tmp_path: Path
) -> None:
    """A file naming many distinct unknown customers would cost a Stripe search each (searches
    are rate-limited to a few a second): past `customer_lookups` a run asks no more, and the
    rows it did not look up are quarantined saying so, to be found by a re-run of them."""
    for i in range(6):
        sandbox_server.admin.create_customer(f"cus_{i}", metadata={"external_id": f"ext-{i}"})
    texts = [f"ext-{i}" for i in range(6)] * 2  # each text twice: decided once a run
    rules = '[policy]\ncustomer_metadata_key = "external_id"\ncustomer_lookups = 4\n'
    summary, rows = _run(sandbox_server, texts, rules, tmp_path / "first")
    assert (summary["corrected"], summary["quarantined"]) == (8, 4)
    assert len(_searches(sandbox_server)) == 4
    assert sorted(row["payload_stripe_customer_id"] for row in rows) == [
        "ext-4",
        "ext-4",
        "ext-5",
        "ext-5",
    ]
    assert {row["mfx_code"] for row in rows} == {"meter_event_customer_not_found"}
    assert {row["mfx_reason"] for row in rows} == {
        f"customer '{text}' is not in the customer map and was not looked up in Stripe: "
        "this run made the 4 customer look-ups policy customer_lookups allows; "
        "re-run the quarantined rows to look up the rest"
        for text in ("ext-4", "ext-5")
    }
    # a re-run of the quarantined rows has look-ups of its own
    again, left = _run(
        sandbox_server,
        [row["payload_stripe_customer_id"] for row in rows],
        rules,
        tmp_path / "rerun",
    )
    assert (again["corrected"], again["quarantined"], left) == (4, 0, [])


def test_the_cli_searches_customers_when_the_rules_name_a_metadata_key(
    sandbox_server: SandboxServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`meterfix remediate` made no Stripe call for customers: with `customer_metadata_key`
    set, `ext-7` was quarantined unsearched ("has no unique match") and `cus_nobody ` was sent
    trimmed, unchecked (Stripe refuses it again), where the worker searches and checks. It
    asks Stripe (here the sandbox) as the worker does."""
    from click.testing import CliRunner

    from service.commands.remediate import remediate_command

    sandbox_server.admin.create_customer("cus_seven", metadata={"external_id": "ext-7"})
    sandbox_server.admin.create_customer("cus_acme")
    for name, value in (
        ("STRIPE_API_KEY", sandbox_server.api_key),
        ("STRIPE_API_BASE", sandbox_server.bases["api"]),
        ("STRIPE_FILES_BASE", sandbox_server.bases["files"]),
        ("STRIPE_METER_EVENTS_BASE", sandbox_server.bases["meter_events"]),
        ("MFX_WORK_DIR", str(tmp_path / "work")),
    ):
        monkeypatch.setenv(name, value)
    failed = tmp_path / "failed.csv"
    with failed.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(HEADER)
        for n, text in enumerate(["ext-7", "cus_nobody ", " CUS_acme"]):
            code = "meter_event_customer_not_found"
            writer.writerow([f"r{n}", str(NOW - 60), "api_requests", text, "1", code, ""])
    meters = tmp_path / "meters.json"
    meters.write_text('[{"id": "m1", "event_name": "api_requests", "status": "active"}]')
    rules = tmp_path / "rules.toml"
    rules.write_text('[policy]\ncustomer_metadata_key = "external_id"\n')
    args = [str(failed), "--out", str(tmp_path / "out"), "--meters", str(meters)]
    args += ["--rules", str(rules), "--now", str(NOW), "--json"]
    result = CliRunner().invoke(remediate_command, args, catch_exceptions=False)
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)  # log lines go to stderr
    corrected = csv.DictReader(io.StringIO(Path(summary["outputs"]["corrected"][0]).read_text()))
    assert {row["identifier"]: row["payload_stripe_customer_id"] for row in corrected} == {
        "r0-mfx1": "cus_seven",
        "r2-mfx1": "cus_acme",
    }
    [quarantined] = csv.DictReader(
        io.StringIO(Path(summary["outputs"]["quarantine"][0]).read_text())
    )
    assert quarantined["identifier"] == "r1"
    assert quarantined["mfx_reason"] == (
        "customer 'cus_nobody ' is not in the customer map and has no unique match"
    )
    assert _searches(sandbox_server) == [
        'metadata["external_id"]:"ext-7"',
        'metadata["external_id"]:"cus_nobody"',
    ]


def test_a_text_stripe_refuses_to_look_up_is_quarantined_and_the_file_goes_on(
    sandbox_server: SandboxServer, tmp_path: Path
) -> None:
    """Stripe answering 400 to one text's search (a query it will not run) failed the whole
    file, every other row's correction with it, retried as if transient and dead-lettered.
    Only that text's rows are quarantined, saying so; a 5xx still fails the file (retried)."""
    sandbox_server.admin.create_customer("cus_acme", metadata={"external_id": "acme-7"})
    rules = '[policy]\ncustomer_metadata_key = "external_id"\n'
    sandbox_server.admin.inject_fault("GET", SEARCH, status=400)  # the first text's search
    texts = ["weird-1", "acme-7", "weird-1"]
    summary, rows = _run(sandbox_server, texts, rules, tmp_path / "refused")
    assert (summary["corrected"], summary["quarantined"]) == (1, 2)
    corrected = Path(summary["outputs"]["corrected"][0]).read_text().splitlines()
    assert [line.split(",")[:4:3] for line in corrected[1:]] == [["r1-mfx1", "cus_acme"]]
    assert [(row["identifier"], row["mfx_code"]) for row in rows] == [
        ("r0", "meter_event_customer_not_found"),
        ("r2", "meter_event_customer_not_found"),
    ]
    assert {row["mfx_reason"] for row in rows} == {
        "customer 'weird-1' is not in the customer map and Stripe refused to look it up "
        "(400: a query it will not run); map it in the rules' customer map and re-run the "
        "quarantined rows"
    }
    sandbox_server.admin.inject_fault("GET", SEARCH, status=500, count=-1)
    with pytest.raises(stripe.APIError):
        _run(sandbox_server, ["weird-2"], rules, tmp_path / "transient")
