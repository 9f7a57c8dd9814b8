"""Stripe's three hosts told apart: api.stripe.com, files.stripe.com (file uploads and contents)
and meter-events.stripe.com (the v2 meter event stream). Stripe answers 404 for a path called
on a host it does not belong to; a sandbox that served all three on one URL let a client that
sends a call to the wrong host pass every test (sandbox/DEVIATIONS.md, "Hosts")."""

from __future__ import annotations

import io
import os
import queue
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import requests
import stripe

from sandbox.defaults import SANDBOX_BASE
from service.adapters.meter_events import StripeMeterEventSink
from service.adapters.stripe_client import build_stripe_client
from service.adapters.stripe_files import StripeFileStore
from service.config import Settings
from service.errors import MeterEventSendError, StripeFileError
from tests.conftest import SandboxServer
from tests.servers import free_port

METERFIX = str(Path(sys.executable).with_name("meterfix"))
CSV = b"identifier,error_code\nid-1,no_meter\n"


def _client(server: SandboxServer, api_key: str | None = None, **bases: str) -> Any:
    """A real StripeClient on the sandbox's hosts, with `bases` sent to another host."""
    stripe.enable_telemetry = False
    addresses: Any = {**server.bases, **bases}
    return stripe.StripeClient(api_key or server.api_key, base_addresses=addresses)


def _not_found(
    info: pytest.ExceptionInfo[stripe.InvalidRequestError], method: str, path: str
) -> None:
    assert info.value.http_status == 404
    error = info.value.json_body["error"]  # type: ignore[index]
    assert error["type"] == "invalid_request_error"
    assert error["message"].startswith(f"Unrecognized request URL ({method}: {path})")


def _events(*identifiers: str) -> list[dict[str, Any]]:
    payload = {"stripe_customer_id": "cus_1", "value": "1"}
    return [
        {"event_name": "api_requests", "identifier": i, "payload": payload} for i in identifiers
    ]


def test_the_three_hosts_have_distinct_urls(sandbox_server: SandboxServer) -> None:
    bases = sandbox_server.bases
    assert sorted(bases) == ["api", "files", "meter_events"]
    assert len(set(bases.values())) == 3


def test_file_upload_on_the_api_host_is_404_and_stores_nothing(
    sandbox_server: SandboxServer,
) -> None:
    wrong = _client(sandbox_server, files=sandbox_server.bases["api"])
    with pytest.raises(stripe.InvalidRequestError) as info:
        wrong.v1.files.create({"purpose": "dispute_evidence", "file": io.BytesIO(CSV)})
    _not_found(info, "POST", "/v1/files")
    assert sandbox_server.sandbox.state.files == {}

    created = sandbox_server.stripe_client().v1.files.create(
        {"purpose": "dispute_evidence", "file": io.BytesIO(CSV)}
    )
    assert sandbox_server.sandbox.state.files[created.id].content == CSV


def test_file_metadata_on_the_api_host_contents_on_the_files_host(
    sandbox_server: SandboxServer,
) -> None:
    file_id = sandbox_server.admin.upload_file(CSV, "failed.csv")["id"]
    files, api = sandbox_server.bases["files"], sandbox_server.bases["api"]
    meta = sandbox_server.stripe_client().v1.files.retrieve(file_id)
    assert (meta.id, meta.size) == (file_id, len(CSV))
    assert meta.url == f"{files}/v1/files/{file_id}/contents"  # as Stripe's points at its host
    headers = {"Authorization": f"Bearer {sandbox_server.api_key}"}
    assert requests.get(meta.url, headers=headers, timeout=5).content == CSV

    on_api = requests.get(f"{api}/v1/files/{file_id}/contents", headers=headers, timeout=5)
    assert on_api.status_code == 404
    assert on_api.json()["error"]["type"] == "invalid_request_error"
    assert on_api.json()["error"]["message"].startswith(
        f"Unrecognized request URL (GET: /v1/files/{file_id}/contents)"
    )
    assert on_api.content != CSV
    with pytest.raises(stripe.InvalidRequestError) as info:
        _client(sandbox_server, api=files).v1.files.retrieve(file_id)
    _not_found(info, "GET", f"/v1/files/{file_id}")


def test_meter_event_stream_only_on_the_meter_events_host(sandbox_server: SandboxServer) -> None:
    sandbox_server.admin.create_meter("api_requests")
    bases = sandbox_server.bases
    with pytest.raises(stripe.InvalidRequestError) as info:  # the session is an api call
        _client(sandbox_server, api=bases["meter_events"]).v2.billing.meter_event_session.create()
    _not_found(info, "POST", "/v2/billing/meter_event_session")

    token = sandbox_server.stripe_client().v2.billing.meter_event_session.create()
    wrong = _client(sandbox_server, token.authentication_token, meter_events=bases["api"])
    with pytest.raises(stripe.InvalidRequestError) as info:
        wrong.v2.billing.meter_event_stream.create({"events": _events("on-api")})
    _not_found(info, "POST", "/v2/billing/meter_event_stream")
    assert sandbox_server.admin.meter_events() == []

    right = sandbox_server.stripe_client(token.authentication_token)
    right.v2.billing.meter_event_stream.create({"events": _events("on-meter-events")})
    assert [e["identifier"] for e in sandbox_server.admin.meter_events()] == ["on-meter-events"]


@pytest.mark.parametrize("host", ["files", "meter_events"])
def test_api_calls_on_the_other_hosts_are_404(sandbox_server: SandboxServer, host: str) -> None:
    sandbox_server.admin.create_meter("api_requests")
    sandbox_server.admin.create_customer("cus_1")
    wrong = _client(sandbox_server, api=sandbox_server.bases[host])
    with pytest.raises(stripe.InvalidRequestError) as info:
        wrong.v1.billing.meters.list()
    _not_found(info, "GET", "/v1/billing/meters")
    with pytest.raises(stripe.InvalidRequestError) as info:
        wrong.v1.billing.meter_events.create(
            {"event_name": "api_requests", "payload": {"stripe_customer_id": "cus_1", "value": "1"}}
        )
    _not_found(info, "POST", "/v1/billing/meter_events")
    assert sandbox_server.admin.meter_events() == []
    with pytest.raises(stripe.InvalidRequestError):  # a wrong host answers 404 before any key check
        _client(sandbox_server, "sk_wrong", api=sandbox_server.bases[host]).v1.customers.retrieve(
            "cus_1"
        )
    assert sandbox_server.stripe_client().v1.customers.retrieve("cus_1").id == "cus_1"


def test_request_log_names_the_host(sandbox_server: SandboxServer) -> None:
    sandbox_server.stripe_client().v1.billing.meters.list()
    with pytest.raises(stripe.InvalidRequestError):
        _client(sandbox_server, api=sandbox_server.bases["files"]).v1.billing.meters.list()
    requests.get(f"{sandbox_server.url}/v1/billing/meters", timeout=5)
    logged = [(r["host"], r["path"]) for r in sandbox_server.admin.requests()]
    assert logged == [
        ("api", "/v1/billing/meters"),
        ("files", "/v1/billing/meters"),
        (None, "/v1/billing/meters"),  # the root URL, every host
    ]


def test_one_url_still_serves_every_host(sandbox_server: SandboxServer) -> None:
    """Users who configured one URL for the three bases keep a working sandbox."""
    sandbox_server.admin.create_meter("api_requests")
    url = sandbox_server.url
    one = _client(sandbox_server, api=url, files=url, meter_events=url)
    created = one.v1.files.create({"purpose": "dispute_evidence", "file": io.BytesIO(CSV)})
    assert one.v1.files.retrieve(created.id).url == f"{url}/v1/files/{created.id}/contents"
    headers = {"Authorization": f"Bearer {sandbox_server.api_key}"}
    contents = requests.get(f"{url}/v1/files/{created.id}/contents", headers=headers, timeout=5)
    assert contents.content == CSV
    token = one.v2.billing.meter_event_session.create().authentication_token
    stream = _client(sandbox_server, token, api=url, files=url, meter_events=url)
    stream.v2.billing.meter_event_stream.create({"events": _events("one-url")})
    assert [e["identifier"] for e in sandbox_server.admin.meter_events()] == ["one-url"]


def test_an_unknown_host_prefix_is_404(sandbox_server: SandboxServer) -> None:
    headers = {"Authorization": f"Bearer {sandbox_server.api_key}"}
    answer = requests.get(
        f"{sandbox_server.url}/_host/connect/v1/billing/meters", headers=headers, timeout=5
    )
    assert answer.status_code == 404
    assert answer.json()["error"]["type"] == "invalid_request_error"


@pytest.fixture
def host_settings(
    sandbox_server: SandboxServer, make_settings: Callable[..., Settings]
) -> Settings:
    bases = sandbox_server.bases
    return make_settings(
        stripe_api_key=sandbox_server.api_key,
        stripe_api_base=bases["api"],
        stripe_files_base=bases["files"],
        stripe_meter_events_base=bases["meter_events"],
    )


def test_meterfix_adapters_call_each_host_for_its_paths(
    sandbox_server: SandboxServer, host_settings: Settings, tmp_path: Path
) -> None:
    file_id = sandbox_server.admin.upload_file(CSV, "failed.csv")["id"]
    sandbox_server.admin.create_meter("api_requests")
    client = build_stripe_client(host_settings)
    store = StripeFileStore(client, host_settings.stripe_files_base, host_settings.stripe_api_key)
    assert store.file_metadata(file_id)["size"] == len(CSV)
    store.download_file(file_id, tmp_path / "failed.csv")
    assert (tmp_path / "failed.csv").read_bytes() == CSV
    StripeMeterEventSink(client, host_settings, workers=1).send(_events("a", "b"))
    assert [e["identifier"] for e in sandbox_server.admin.meter_events()] == ["a", "b"]
    logged = [(r["host"], r["method"], r["path"]) for r in sandbox_server.admin.requests()]
    assert logged == [
        ("api", "GET", f"/v1/files/{file_id}"),
        ("files", "GET", f"/v1/files/{file_id}/contents"),
        ("api", "POST", "/v2/billing/meter_event_session"),
        ("meter_events", "POST", "/v2/billing/meter_event_stream"),
    ]


def test_meterfix_adapters_fail_on_a_swapped_host(
    sandbox_server: SandboxServer, host_settings: Settings, tmp_path: Path
) -> None:
    """The end-to-end tests run on distinct hosts, so a base mixed up in meterfix fails them."""
    file_id = sandbox_server.admin.upload_file(CSV, "failed.csv")["id"]
    sandbox_server.admin.create_meter("api_requests")
    api = host_settings.stripe_api_base
    store = StripeFileStore(build_stripe_client(host_settings), api, host_settings.stripe_api_key)
    with pytest.raises(StripeFileError, match="404"):
        store.download_file(file_id, tmp_path / "failed.csv")
    assert not (tmp_path / "failed.csv").exists()
    swapped = host_settings.model_copy(update={"stripe_meter_events_base": api})
    sink = StripeMeterEventSink(build_stripe_client(swapped), swapped, workers=1)
    with pytest.raises(MeterEventSendError, match="meter event stream request failed: HTTP 404"):
        sink.send(_events("a"))
    assert sandbox_server.admin.meter_events() == []


def test_embedded_defaults_give_each_host_its_sandbox_url(
    make_settings: Callable[..., Settings],
) -> None:
    settings = make_settings()
    assert settings.embedded_sandbox
    assert (
        settings.stripe_api_base,
        settings.stripe_files_base,
        settings.stripe_meter_events_base,
    ) == (
        f"{SANDBOX_BASE}/_host/api",
        f"{SANDBOX_BASE}/_host/files",
        f"{SANDBOX_BASE}/_host/meter_events",
    )


@dataclass
class SandboxProcess:
    """`meterfix sandbox` as a user starts it; `lines` receives what it prints."""

    url: str
    lines: queue.Queue[str]

    def printed_bases(self, timeout: float = 20.0) -> dict[str, str]:
        """The `NAME=url` lines printed, until the third (or the timeout)."""
        found: dict[str, str] = {}
        deadline = time.monotonic() + timeout
        while len(found) < 3 and time.monotonic() < deadline:
            try:
                line = self.lines.get(timeout=max(deadline - time.monotonic(), 0))
            except queue.Empty:
                break
            if "_BASE=" in line:
                name, _, value = line.strip().partition("=")
                found[name] = value
        return found


@pytest.fixture
def sandbox_process(tmp_path: Path) -> Iterator[SandboxProcess]:
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("STRIPE_", "MFX_"))}
    env["DATABASE_URL"] = f"sqlite:///{tmp_path / 'meterfix.db'}"
    args = [METERFIX, "sandbox", "--port", str(port), "--state-file", "", "--no-seed"]
    proc = subprocess.Popen(
        args, env=env, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True
    )
    lines: queue.Queue[str] = queue.Queue()
    stdout = proc.stdout
    assert stdout is not None
    reader = threading.Thread(target=lambda: [lines.put(line) for line in stdout], daemon=True)
    reader.start()
    try:
        yield SandboxProcess(f"http://127.0.0.1:{port}", lines)
    finally:
        proc.terminate()
        proc.wait(timeout=30)
        reader.join(timeout=5)
        stdout.close()


def test_sandbox_command_prints_the_three_host_urls(
    sandbox_process: SandboxProcess,
) -> None:
    url = sandbox_process.url
    bases = sandbox_process.printed_bases()
    assert bases == {
        "STRIPE_API_BASE": f"{url}/_host/api",
        "STRIPE_FILES_BASE": f"{url}/_host/files",
        "STRIPE_METER_EVENTS_BASE": f"{url}/_host/meter_events",
    }
    headers = {"Authorization": "Bearer sk_test_meterfix_sandbox"}
    deadline = time.monotonic() + 20
    while True:
        try:
            meters = requests.get(
                f"{bases['STRIPE_API_BASE']}/v1/billing/meters", headers=headers, timeout=1
            )
            break
        except requests.ConnectionError:
            assert time.monotonic() < deadline, "the sandbox did not come up"
            time.sleep(0.1)
    assert meters.json()["data"] == []
    on_files = requests.get(
        f"{bases['STRIPE_FILES_BASE']}/v1/billing/meters", headers=headers, timeout=5
    )
    assert on_files.status_code == 404
