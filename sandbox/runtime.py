"""The running sandbox: state plus its keys and the places it delivers to and reads from."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol, cast

from flask import current_app

from sandbox.connector import poll_bucket
from sandbox.delivery import delivery_body, post_signed
from sandbox.errors import StripeApiError
from sandbox.events import normalize_event
from sandbox.objects import JSON
from sandbox.reports import build_reports
from sandbox.state import SandboxState


class StateStore(Protocol):
    """Where the state is kept between runs (`sandbox.persistence.StateFile`)."""

    def save(self, state: SandboxState) -> None: ...


@dataclass
class Sandbox:
    state: SandboxState
    api_key: str
    webhook_secret: str
    webhook_url: str | None = None
    bucket_url: str | None = None
    s3_endpoint_url: str | None = None
    state_file: StateStore | None = None

    def persist(self) -> None:
        """Save the state if it is kept in a file (no-op in memory)."""
        if self.state_file is not None:
            self.state_file.save(self.state)

    def add_event(self, event: JSON) -> JSON:
        stored = normalize_event(event)
        with self.state.lock:
            self.state.events[str(stored["id"])] = stored
        return stored

    def deliver(self, event_id: str, url: str, secrets: list[str] | None = None) -> dict[str, Any]:
        """Sign and POST one stored event; raises StripeApiError(404) for an unknown id.
        Connection failures raise requests' exceptions."""
        with self.state.lock:
            event = self.state.events.get(event_id)
        if event is None:
            raise StripeApiError(404, f"No such event: '{event_id}'", "resource_missing")
        signing = secrets or [self.webhook_secret]
        test_mode = not event.get("livemode", False)
        result = post_signed(delivery_body(event), url, signing, test_mode=test_mode)
        with self.state.lock:
            self.state.deliveries.append({"event_id": event_id, "url": url, **result})
        return result

    def deliver_to_webhook(self, events: list[JSON]) -> list[dict[str, Any]]:
        """Deliver freshly created events to the configured webhook URL (if any)."""
        if not self.webhook_url:
            return []
        results = []
        for event in events:
            try:
                result = self.deliver(str(event["id"]), self.webhook_url)
            except OSError as exc:  # requests' ConnectionError is an OSError
                result = {"status": 0, "body": "", "error": f"{type(exc).__name__}: {exc}"}
            results.append({"event_id": event["id"], **result})
        return results

    def flush_reports(self) -> list[JSON]:
        """Close the validation window: report queued invalid meter events, deliver them."""
        events = [self.add_event(event) for event in build_reports(self.state)]
        if events:
            self.persist()  # kept before delivery: the receiver fetches them at once
        self.deliver_to_webhook(events)
        return events

    def poll_connector(self) -> list[JSON]:
        """One pass of the S3 connector over `bucket_url`; returns the delivered events."""
        found = poll_bucket(self.state, self.bucket_url, self.s3_endpoint_url)
        events = [self.add_event(event) for event in found]
        if events:
            self.persist()
        self.deliver_to_webhook(events)
        return events


def current_sandbox() -> Sandbox:
    return cast(Sandbox, current_app.extensions["sandbox"])
