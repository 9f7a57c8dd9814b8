"""`meterfix sandbox` keeps its state in a file: a restarted sandbox (even one killed with
SIGKILL) still serves what it had, to the real stripe SDK over HTTP."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
import requests
import stripe
from stripe.events import V1BillingMeterErrorReportTriggeredEvent

from sandbox.client import SandboxAdmin
from sandbox.defaults import SANDBOX_API_KEY, SANDBOX_WEBHOOK_SECRET
from sandbox.persistence import StateFile
from tests.servers import free_port

METERFIX = str(Path(sys.executable).with_name("meterfix"))
PAYLOAD = {"stripe_customer_id": "cus_kept", "value": "3"}
CONTENT = b"identifier,timestamp,event_name\nx,1,api\n"


def _env(tmp_path: Path) -> dict[str, str]:
    return {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": str(tmp_path),
        "DATABASE_URL": f"sqlite:///{tmp_path / 'meterfix.db'}",
        "BUCKET_URL": f"file://{tmp_path / 'bucket'}",
        "STRIPE_API_KEY": SANDBOX_API_KEY,
        "STRIPE_WEBHOOK_SECRETS": SANDBOX_WEBHOOK_SECRET,
    }


@contextmanager
def _sandbox(tmp_path: Path, *extra: str, stop: int = signal.SIGTERM) -> Iterator[str]:
    """A real `meterfix sandbox` process (no timers, no seed) run in `tmp_path` (on another
    free port when another process took the one found free before the sandbox bound it)."""
    for attempt in range(3):
        port = free_port()
        url = f"http://127.0.0.1:{port}"
        args = ["sandbox", "--port", str(port), "--report-interval", "0", "--no-seed", *extra]
        proc = subprocess.Popen(
            [METERFIX, *args], env=_env(tmp_path), cwd=tmp_path, stderr=subprocess.PIPE
        )
        try:
            _wait(url, proc)
            break
        except AssertionError as exc:
            if "Address already in use" not in str(exc) or attempt == 2:
                raise
    try:
        yield url
    finally:
        proc.send_signal(stop)
        proc.communicate(timeout=30)


def _wait(url: str, proc: subprocess.Popen[bytes], timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"sandbox exited: {proc.communicate()[1].decode()[-400:]}")
        try:
            requests.get(f"{url}/_sandbox/meters", timeout=1)
            return
        except requests.ConnectionError:
            time.sleep(0.05)
    raise AssertionError(f"{url} did not come up")


def _client(url: str, api_key: str = SANDBOX_API_KEY) -> stripe.StripeClient:
    stripe.enable_telemetry = False
    bases: stripe._base_address.BaseAddresses = {"api": url, "files": url, "meter_events": url}
    return stripe.StripeClient(api_key, base_addresses=bases)


def _stream(url: str, token: str, events: list[dict[str, object]]) -> None:
    _client(url, token).v2.billing.meter_event_stream.create({"events": events})  # type: ignore[typeddict-item]


def _fill(url: str) -> tuple[str, str, str, str]:
    """A meter, a customer, a file, one accepted and one rejected meter event reported in an
    error report, one rejection still queued; returns (meter id, v2 event id, session token,
    file id)."""
    admin = SandboxAdmin(url)
    meter = admin.create_meter("api_requests")
    admin.create_customer("cus_kept", metadata={"external_id": "acme-42"})
    uploaded = admin.upload_file(CONTENT, "failed.csv")
    token = str(_client(url).v2.billing.meter_event_session.create().authentication_token)
    _stream(
        url,
        token,
        [
            {"event_name": "api_requests", "identifier": "kept-1", "payload": PAYLOAD},
            {"event_name": "api_requests", "identifier": "bad-1", "payload": {"value": "1"}},
        ],
    )
    (report,) = admin.flush()
    _stream(url, token, [{"event_name": "ghost", "identifier": "g-1", "payload": PAYLOAD}])
    return str(meter["id"]), str(report["id"]), token, str(uploaded["id"])


@pytest.mark.parametrize("stop", [signal.SIGTERM, signal.SIGKILL], ids=["terminated", "killed"])
def test_restarted_sandbox_keeps_its_state(tmp_path: Path, stop: int) -> None:
    with _sandbox(tmp_path, stop=stop) as url:
        meter_id, event_id, token, file_id = _fill(url)
    assert (tmp_path / ".meterfix" / "sandbox-state.json").is_file()

    with _sandbox(tmp_path) as url:
        client = _client(url)
        event = client.v2.core.events.retrieve(event_id)  # a pending event's fetch still works
        assert isinstance(event, V1BillingMeterErrorReportTriggeredEvent)
        assert event.related_object.id == meter_id
        (error_type,) = event.data.reason.error_types
        assert error_type.sample_errors[0].request.identifier == "bad-1"
        assert [m.id for m in client.v1.billing.meters.list().data] == [meter_id]
        customer = client.v1.customers.retrieve("cus_kept")
        assert customer.metadata is not None and customer.metadata["external_id"] == "acme-42"
        assert client.v1.files.retrieve(file_id).size == len(CONTENT)
        headers = {"Authorization": f"Bearer {SANDBOX_API_KEY}"}
        contents = requests.get(f"{url}/v1/files/{file_id}/contents", headers=headers, timeout=5)
        assert contents.content == CONTENT
        admin = SandboxAdmin(url)
        assert [e["identifier"] for e in admin.meter_events()] == ["kept-1"]
        # the session and Stripe's identifier dedupe survive too
        _stream(
            url, token, [{"event_name": "api_requests", "identifier": "kept-1", "payload": PAYLOAD}]
        )
        assert [e["identifier"] for e in admin.meter_events()] == ["kept-1"]
        assert [d["identifier"] for d in admin.duplicates()] == ["kept-1"]
        # a rejection queued before the restart is reported after it
        (late,) = admin.flush()
        assert late["type"] == "v1.billing.meter.no_meter_found"
        assert client.v2.core.events.retrieve(late["id"]).id == late["id"]


def test_state_file_option_and_memory_only(tmp_path: Path) -> None:
    elsewhere = tmp_path / "state" / "sandbox.json"
    with _sandbox(tmp_path, "--state-file", str(elsewhere)) as url:
        SandboxAdmin(url).create_meter("api_requests")
    saved = StateFile(elsewhere).load()
    assert [m["event_name"] for m in saved.meters.values()] == ["api_requests"]
    assert not list(elsewhere.parent.glob("*.tmp")), "no temporary file is left behind"
    with _sandbox(tmp_path, "--state-file", "") as url:
        SandboxAdmin(url).create_meter("tokens")
    assert not (tmp_path / ".meterfix").exists()


def test_unreadable_state_file_is_one_clear_error(tmp_path: Path) -> None:
    state = tmp_path / "broken.json"
    state.write_text("{not json")
    result = subprocess.run(
        [METERFIX, "sandbox", "--port", str(free_port()), "--state-file", str(state)],
        env=_env(tmp_path),
        cwd=tmp_path,
        capture_output=True,
        timeout=60,
    )
    assert result.returncode != 0
    assert "broken.json is unreadable" in result.stderr.decode()
    assert "Traceback" not in result.stderr.decode()


def test_meter_events_answered_survive_a_kill_right_after(tmp_path: Path) -> None:
    """Each batch is in the journal before its answer: a sandbox killed (SIGKILL) just after it
    answered, started again on that journal (folded into the state file), killed again just
    after its own batches, still has every accepted event and identifier (the 24 h dedupe)."""
    batches = [
        [
            {"event_name": "api_requests", "identifier": f"k{b}-{i}", "payload": PAYLOAD}
            for i in range(100)
        ]
        for b in range(3)
    ]
    journal = tmp_path / ".meterfix" / "sandbox-state.json.journal"
    with _sandbox(tmp_path, stop=signal.SIGKILL) as url:
        SandboxAdmin(url).create_meter("api_requests")
        SandboxAdmin(url).create_customer("cus_kept")
        token = str(_client(url).v2.billing.meter_event_session.create().authentication_token)
        _stream(url, token, batches[0])
        _stream(url, token, batches[1])
    assert journal.stat().st_size > 200 * 150  # the batches are in the journal

    with _sandbox(tmp_path, stop=signal.SIGKILL) as url:
        assert len(SandboxAdmin(url).meter_events()) == 200
        _stream(url, token, batches[1])  # dropped as duplicates
        _stream(url, token, batches[2])

    with _sandbox(tmp_path) as url:
        admin = SandboxAdmin(url)
        expected = [e["identifier"] for batch in batches for e in batch]
        assert [e["identifier"] for e in admin.meter_events()] == expected
        assert [d["identifier"] for d in admin.duplicates()] == expected[100:200]
        _stream(url, token, batches[2])
        assert len(admin.meter_events()) == 300
        assert [d["identifier"] for d in admin.duplicates()][-100:] == expected[200:]
