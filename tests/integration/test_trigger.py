"""`meterfix trigger`: sample events created in the sandbox, delivered signed to a receiver."""

from __future__ import annotations

import pytest
import stripe
from click.testing import CliRunner

from service.cli import main
from tests.conftest import SandboxServer
from tests.integration.test_sandbox_delivery import Receiver, receiver
from tests.servers import free_port

__all__ = ["receiver"]


def _trigger(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(main, ["trigger", *args])
    return result.exit_code, result.output


@pytest.mark.parametrize(
    "event_type",
    [
        "v1.billing.meter.error_report_triggered",
        "no_meter_found",
        "import_set.failed",
    ],
)
def test_trigger_delivers_each_type(
    event_type: str, sandbox_server: SandboxServer, receiver: Receiver
) -> None:
    code, output = _trigger(event_type, "--to", receiver.url, "--sandbox", sandbox_server.url)
    assert code == 0, output
    ((raw, header),) = receiver.received
    assert stripe.WebhookSignature.verify_header(
        raw.decode(), header, sandbox_server.webhook_secret, tolerance=300
    )
    (line,) = [text for text in output.splitlines() if "HTTP 200" in text]
    assert f'"id": "{line.split()[0]}"' in raw.decode()


def test_trigger_import_set_succeeded_file_resolves(
    sandbox_server: SandboxServer, receiver: Receiver
) -> None:
    code, output = _trigger(
        "data_management.import_set.succeeded",
        "--to",
        receiver.url,
        "--sandbox",
        sandbox_server.url,
    )
    assert code == 0, output
    ((raw, header),) = receiver.received
    event = stripe.Webhook.construct_event(raw, header, sandbox_server.webhook_secret)
    file_id = event.data.object["result"]["errors"]["file"]
    meta = sandbox_server.stripe_client().v1.files.retrieve(file_id)
    assert meta.size > 0 and str(meta.filename).endswith(".csv")


def test_trigger_fails_clearly(sandbox_server: SandboxServer, receiver: Receiver) -> None:
    dead = f"http://127.0.0.1:{free_port()}"
    code, output = _trigger(
        "no_meter_found", "--to", f"{dead}/webhooks", "--sandbox", sandbox_server.url
    )
    assert code != 0 and "service unreachable" in output
    code, output = _trigger("no_meter_found", "--to", receiver.url, "--sandbox", dead)
    assert code != 0 and "sandbox unreachable" in output
    receiver.status = 400
    code, output = _trigger("no_meter_found", "--to", receiver.url, "--sandbox", sandbox_server.url)
    assert code != 0 and "service answered 400" in output
    code, output = _trigger("bogus", "--to", receiver.url, "--sandbox", sandbox_server.url)
    assert code != 0 and "unknown event type" in output
